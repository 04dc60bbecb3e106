"""GeminiProvider (Gemini Omni through the Interactions API) against the fake Gemini API, the
fake checked by google-genai 3.6.1's own client and types, and both through the real app."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from google import genai
from google.genai import interactions as gi
from google.genai import types as gtypes
from google.genai._gaos.google_genai import _CREATE_BODY_KEYS
# the Interactions client's own error classes (google-genai 3.6.1 exports them only here)
from google.genai._interactions_errors import BadRequestError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import jobs_json, usage_json
from bot.errors import (
    AuthFailed,
    ContentBlocked,
    DeliveryError,
    InvalidProviderRequest,
    ProviderRetired,
    ProviderUnavailable,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderState, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.gemini import (
    INLINE_KEEP,
    GeminiProvider,
    build_interaction_request,
    find_video,
    parse_interaction,
)
from bot.providers.http import send
from storage import jobs as jobstore
from tests.fakes.gemini import SAFETY_MESSAGE, FakeGeminiServer
from tests.fakes.providers import poll_until_terminal, video_bytes
from tests.provider_checks import assert_key_hidden, json_like

RUN_S = 0.05
MODEL = "gemini-omni-1.2-flash"
PNG = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n" + b"\0" * 32, mime_type="image/png", width=1280, height=720
)
RETIRED_VEO_IDS = (
    "veo-3.1-generate-preview",
    "veo-3.1-fast-generate-preview",
    "veo-3.1-lite-generate-preview",
    "veo-3.1-generate-001",
    "veo-3.1-fast-generate-001",
)


def spec(
    prompt: str,
    *,
    model: str = MODEL,
    duration_s: int = 8,
    resolution: str = "720p",
    aspect_ratio: str = "16:9",
    image: ReferenceImage | None = None,
) -> VideoSpec:
    return VideoSpec(
        model="gemini-omni-flash",
        provider_model=model,
        prompt=prompt,
        duration_s=duration_s,
        resolution=resolution,
        aspect_ratio=aspect_ratio,
        external_id="job-1",
        image=image,
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeGeminiServer]:
    async with FakeGeminiServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeGeminiServer) -> AsyncIterator[GeminiProvider]:
    gemini = GeminiProvider(server.api_key, base_url=server.base_url)
    yield gemini
    await gemini.aclose()


async def _finished(provider: GeminiProvider, prompt: str, **kw: Any) -> tuple[str, Any]:
    job_id = await provider.submit(spec(prompt, **kw))
    seen = await poll_until_terminal(provider, job_id)
    return job_id, seen[-1]


# --- the adapter against the fake ----------------------------------------------------------


async def test_gemini_is_a_video_provider(provider: GeminiProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls, provider.downloads_by_job_id) == ("gemini", False, True)


async def test_inline_video_end_to_end_never_leaves_bytes_in_the_status(
    server: FakeGeminiServer, provider: GeminiProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("a hummingbird in slow motion"))
    assert server.submits == [
        {
            "model": MODEL,
            "input": "a hummingbird in slow motion",
            "background": True,
            "store": True,
            "response_format": {
                "type": "video", "aspect_ratio": "16:9", "resolution": "720p",
                "duration": "8s", "delivery": "inline",
            },
            "generation_config": {"video_config": {"task": "text_to_video"}},
        }
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert all(s.state is ProviderState.RUNNING for s in seen[:-1])
    final = seen[-1]
    assert (final.state, final.video_url) == (ProviderState.SUCCEEDED, None)
    polls = server.polls[job_id]

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, None, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    # the bytes came from the poll that saw them: no second GET, no file download
    assert server.polls[job_id] == polls and sum(server.downloads.values()) == 0
    assert not dest.with_name("video.mp4.part").exists()


async def test_inline_video_after_a_restart_is_read_again_from_the_interaction(
    server: FakeGeminiServer, provider: GeminiProvider, tmp_path: Path
) -> None:
    job_id, final = await _finished(provider, "a kite on a beach")
    assert final.state is ProviderState.SUCCEEDED
    fresh = GeminiProvider(server.api_key, base_url=server.base_url)  # a new process: nothing kept
    try:
        before = server.polls[job_id]
        await fresh.download(job_id, None, tmp_path / "v.mp4")
    finally:
        await fresh.aclose()
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)
    assert server.polls[job_id] == before + 1


async def test_kept_inline_videos_are_bounded(
    server: FakeGeminiServer, provider: GeminiProvider, tmp_path: Path
) -> None:
    ids = [(await _finished(provider, f"clip {i}"))[0] for i in range(INLINE_KEEP + 1)]
    first, last = server.polls[ids[0]], server.polls[ids[-1]]
    await provider.download(ids[0], None, tmp_path / "first.mp4")  # evicted: fetched again
    await provider.download(ids[-1], None, tmp_path / "last.mp4")  # still kept
    assert (server.polls[ids[0]], server.polls[ids[-1]]) == (first + 1, last)
    assert (tmp_path / "first.mp4").read_bytes() == video_bytes(ids[0])
    assert (tmp_path / "last.mp4").read_bytes() == video_bytes(ids[-1])


@pytest.mark.parametrize("resolution", ["1080p", "4k"])
async def test_1080p_and_up_ask_for_a_uri_and_download_it_with_the_key(
    server: FakeGeminiServer, provider: GeminiProvider, tmp_path: Path, resolution: str
) -> None:
    job_id, final = await _finished(provider, "a city at night", resolution=resolution)
    assert server.submits[0]["response_format"]["delivery"] == "uri"
    assert final.state is ProviderState.SUCCEEDED
    assert final.video_url == server.video_uri(server.jobs[job_id].extra["file"])
    await provider.download(job_id, final.video_url, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)
    # both legs (the link and its redirect, on the API's host) carried the key
    assert server.download_auth == [server.api_key, server.api_key]


async def test_a_result_link_on_another_host_is_fetched_without_the_key(tmp_path: Path) -> None:
    async with FakeGeminiServer(run_seconds=RUN_S, uri_host="localhost") as srv:
        gemini = GeminiProvider(srv.api_key, base_url=srv.base_url)
        try:
            job_id, final = await _finished(gemini, "a lighthouse", resolution="1080p")
            assert final.video_url is not None and final.video_url.startswith("http://localhost:")
            await gemini.download(job_id, final.video_url, tmp_path / "v.mp4")
        finally:
            await gemini.aclose()
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)
    assert srv.download_auth == [None, None]


async def test_image_to_video_sends_one_user_input_step_with_the_image(
    server: FakeGeminiServer, provider: GeminiProvider
) -> None:
    await provider.submit(spec("the bird flies off", aspect_ratio="9:16", image=PNG))
    body = server.submits[0]
    assert body["input"] == [
        {
            "type": "user_input",
            "content": [
                {"type": "text", "text": "the bird flies off"},
                {"type": "image", "data": base64.b64encode(PNG.data).decode(), "mime_type": "image/png"},
            ],
        }
    ]
    assert body["generation_config"] == {"video_config": {"task": "image_to_video"}}
    assert body["response_format"]["aspect_ratio"] == "9:16"


@pytest.mark.parametrize(
    ("marker", "kind"),
    [
        ("[safety]", FailureKind.BLOCKED_OUTPUT),
        ("[budget]", FailureKind.QUOTA_EXHAUSTED),
        ("[incomplete]", FailureKind.GENERATION_FAILED),
        ("[requires-action]", FailureKind.GENERATION_FAILED),
        ("[no-video]", FailureKind.GENERATION_FAILED),
    ],
)
async def test_final_statuses_map_to_failure_kinds(
    provider: GeminiProvider, marker: str, kind: FailureKind
) -> None:
    _, final = await _finished(provider, f"{marker} a crowd")
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is kind


async def test_a_safety_failure_carries_a_short_reason(provider: GeminiProvider) -> None:
    _, final = await _finished(provider, "[safety] a famous actor")
    assert final.error is not None
    assert final.error.reason == SAFETY_MESSAGE.split(". ")[0] + "."
    assert SAFETY_MESSAGE in final.error.detail


async def test_an_inline_result_at_1080p_would_fail_so_the_adapter_never_asks_for_one(
    server: FakeGeminiServer, provider: GeminiProvider
) -> None:
    # the fake enforces the ~4 MB inline cap: the adapter must pick "uri" there
    body = build_interaction_request(spec("x", resolution="1080p"))
    async with httpx.AsyncClient() as client:
        created = await client.post(
            f"{server.base_url}/interactions",
            json={**body, "response_format": {**body["response_format"], "delivery": "inline"}},
            headers={"x-goog-api-key": server.api_key},
        )
    job_id = created.json()["id"]
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and "inline limit" in final.error.detail  # type: ignore[union-attr]


async def test_cancel_stops_a_running_interaction(server: FakeGeminiServer, provider: GeminiProvider) -> None:
    job_id = await provider.submit(spec("[stuck] a slow sunset"))
    assert await provider.cancel(job_id) is True
    assert server.cancels == [job_id]
    assert (await provider.poll(job_id)).state is ProviderState.CANCELLED
    assert await provider.cancel(job_id) is False  # already over: refused, never raises


async def test_a_wrong_key_is_auth_failed_and_never_shown(server: FakeGeminiServer) -> None:
    wrong = "AIza-wrong-key-123"
    gemini = GeminiProvider(wrong, base_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as caught:
            await gemini.submit(spec("a cat"))
        assert_key_hidden(caught.value, wrong)
        with pytest.raises(AuthFailed):
            await gemini.check()
    finally:
        await gemini.aclose()


async def test_a_429_at_submit_is_rate_limited(server: FakeGeminiServer, provider: GeminiProvider) -> None:
    with pytest.raises(RateLimited) as caught:
        await provider.submit(spec("[429-submit] a windmill"))
    assert caught.value.retry_after_s == 1.0  # google.rpc.RetryInfo's retryDelay "1s"
    assert await provider.submit(spec("[429-submit] a windmill"))  # the second one goes through


async def test_a_prompt_refused_by_the_safety_filter_is_blocked_input(provider: GeminiProvider) -> None:
    with pytest.raises(ContentBlocked) as caught:
        await provider.submit(spec("[blocked-input] a riot"))
    assert caught.value.kind is FailureKind.BLOCKED_INPUT


@pytest.mark.parametrize(
    "kw",
    [{"resolution": "480p"}, {"aspect_ratio": "1:1"}, {"duration_s": 16}, {"duration_s": 2},
     {"duration_s": 12, "model": "gemini-omni-1.1-flash"}],
)
async def test_requests_the_model_cannot_make_are_refused_before_sending(
    server: FakeGeminiServer, provider: GeminiProvider, kw: dict[str, Any]
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(spec("a cat", **kw))
    assert server.create_attempts == []


async def test_poll_trouble_is_transient(provider: GeminiProvider) -> None:
    for marker in ("[5xx-poll]", "[malformed]"):
        job_id = await provider.submit(spec(f"{marker} a river"))
        with pytest.raises(ProviderUnavailable):
            await provider.poll(job_id)


async def test_download_failures_are_delivery_errors(
    provider: GeminiProvider, tmp_path: Path
) -> None:
    job_id, final = await _finished(provider, "[expired] a bridge", resolution="1080p")
    with pytest.raises(ResultExpired):
        await provider.download(job_id, final.video_url, tmp_path / "a.mp4")
    job_id, final = await _finished(provider, "[download-502] a bridge", resolution="1080p")
    with pytest.raises(DeliveryError):
        await provider.download(job_id, final.video_url, tmp_path / "b.mp4")
    await provider.download(job_id, final.video_url, tmp_path / "b.mp4")  # the retry works
    assert (tmp_path / "b.mp4").read_bytes() == video_bytes(job_id)
    job_id, final = await _finished(provider, "[bad-data] a bridge")
    assert final.state is ProviderState.SUCCEEDED  # the job is done; only its bytes are bad
    with pytest.raises(DeliveryError):
        await provider.download(job_id, None, tmp_path / "c.mp4")
    assert not (tmp_path / "c.mp4").exists()


async def test_doctor_checks_the_key_and_looks_each_model_up(
    server: FakeGeminiServer, provider: GeminiProvider
) -> None:
    assert await provider.check() == "key accepted"
    assert await provider.check_model(MODEL) == "Gemini Omni 1.2 Flash is served"
    with pytest.raises(ProviderRetired):
        await provider.check_model("gemini-omni-flash-preview")
    with pytest.raises(ProviderRetired):
        await provider.check_model("veo-3.1-generate-preview")
    assert server.model_lookups == [MODEL, "gemini-omni-flash-preview"]  # Veo needs no call


# --- retired Veo on the Gemini API -----------------------------------------------------------


@pytest.mark.parametrize("model", RETIRED_VEO_IDS)
async def test_a_veo_id_ends_as_provider_retired_with_a_suggestion(
    server: FakeGeminiServer, provider: GeminiProvider, model: str
) -> None:
    with pytest.raises(ProviderRetired) as caught:
        await provider.submit(spec("a fox in the snow", model=model))
    message = caught.value.user_message()
    assert "Agent Platform" in message and "gemini-omni-flash" in message
    assert caught.value.kind is FailureKind.PROVIDER_RETIRED
    assert server.create_attempts == []  # nothing sent, nothing billed


@pytest.mark.parametrize("model", ["gemini-omni-flash-preview", "gemini-omni-9-flash"])
async def test_a_404_for_the_model_at_submit_is_provider_retired(
    server: FakeGeminiServer, provider: GeminiProvider, model: str
) -> None:
    # "is no longer available" and "is not found for API version v1" alike
    with pytest.raises(ProviderRetired) as caught:
        await provider.submit(spec("a fox", model=model))
    assert "gemini-omni-flash" in caught.value.user_message()
    assert len(server.create_attempts) == 1


async def test_the_shared_http_edge_reads_googles_no_longer_available_404_as_retired(
    server: FakeGeminiServer,
) -> None:
    """bot/providers/http.py's looks_retired already covers the retired Veo route's answer."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProviderRetired):
            await send(
                client, asyncio.Semaphore(1), "POST",
                f"{server.base_url}/models/veo-3.1-generate-preview:predictLongRunning",
                op="submit", label="Gemini", headers={"x-goog-api-key": server.api_key},
                json={"instances": [{"prompt": "a fox"}]},
            )


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [("queued", ProviderState.QUEUED), ("in_progress", ProviderState.RUNNING),
     ("cancelled", ProviderState.CANCELLED), ("idle", ProviderState.UNKNOWN),
     (None, ProviderState.UNKNOWN), ("something_new", ProviderState.UNKNOWN)],
)
def test_statuses_without_a_result(status: str | None, state: ProviderState) -> None:
    assert parse_interaction({"id": "x", "status": status}).state is state


def test_the_last_video_after_the_last_user_input_wins() -> None:
    video = {"type": "video", "uri": "https://example.test/b.mp4"}
    body = {
        "status": "completed",
        "steps": [
            {"type": "model_output", "content": [{"type": "video", "uri": "https://example.test/old.mp4"}]},
            {"type": "user_input", "content": [{"type": "text", "text": "again"}]},
            {"type": "thought"},
            {"type": "model_output", "content": [{"type": "video", "uri": "https://example.test/a.mp4"}, video]},
        ],
    }
    assert find_video(body) == video
    assert parse_interaction(body).video_url == "https://example.test/b.mp4"
    assert find_video({"steps": [body["steps"][0], body["steps"][1]]}) is None


def test_a_non_object_body_is_transient() -> None:
    with pytest.raises(ProviderUnavailable):
        parse_interaction(["completed"])


_WORDS = st.sampled_from(
    ["status", "completed", "failed", "steps", "model_output", "user_input", "content", "type",
     "video", "uri", "data", "errors", "message", "code", "budget_exceeded", "safety", "https://x/v.mp4"]
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(_WORDS, json_like(_WORDS), max_size=5))
def test_parsing_never_fails_on_odd_bodies(body: dict[str, object]) -> None:
    status = parse_interaction(body)
    if status.state is ProviderState.FAILED:
        assert status.error is not None
    if status.video_url is not None:
        assert status.video_url.startswith(("https://", "http://"))


# --- checked by google-genai 3.6.1 ---------------------------------------------------------


def _sdk_refusals(body: dict[str, Any]) -> list[str]:
    """Where google-genai 3.6.1's declared types refuse a create body.

    The SDK's runtime parsing is lenient (open unions fall back to "unknown" variants, and
    enum Literals take unknown strings in lax mode), so its models are validated strictly,
    each level on its own: the create body, its video response_format, its input blocks.
    """
    problems: list[str] = []
    unknown = set(body) - _CREATE_BODY_KEYS
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")  # create() raises TypeError

    def check(model: type[pydantic.BaseModel], value: Any, where: str) -> None:
        try:
            parsed = model.model_validate(value, strict=True)
        except pydantic.ValidationError as exc:
            problems.append(f"{where}: {exc.errors()[0]['loc']}")
            return
        if parsed.model_extra:
            problems.append(f"{where}: extra {sorted(parsed.model_extra)}")

    check(gi.CreateModelInteraction, {k: v for k, v in body.items() if k in _CREATE_BODY_KEYS}, "body")
    check(gi.VideoResponseFormat, body.get("response_format"), "response_format")
    check(gi.GenerationConfig, body.get("generation_config", {}), "generation_config")
    blocks: list[Any] = []
    if isinstance(body.get("input"), list):
        for step in body["input"]:
            blocks += step.get("content", []) if step.get("type") == "user_input" else [step]
    content_types = {"text": gi.TextContent, "image": gi.ImageContent, "video": gi.VideoContent}
    for i, block in enumerate(blocks):
        check(content_types.get(block.get("type"), gi.TextContent), block, f"input block {i}")
    return problems


@pytest.mark.parametrize(
    "kw",
    [{}, {"resolution": "1080p", "aspect_ratio": "9:16"}, {"resolution": "4k", "duration_s": 15},
     {"resolution": "360p", "duration_s": 3, "image": PNG}],
)
def test_the_adapters_bodies_pass_the_sdks_request_types(kw: dict[str, Any]) -> None:
    body = build_interaction_request(spec("a cat", **kw))
    assert _sdk_refusals(body) == []


def _good_body() -> dict[str, Any]:
    return build_interaction_request(spec("a cat on a skateboard", image=PNG))


def _with(path: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(_good_body()))
    *parents, leaf = path.split(".")
    target = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[leaf] = value
    return body


REFUSED_BY_THE_SDK = {
    "duration an int": _with("response_format.duration", 8),
    "resolution 480p": _with("response_format.resolution", "480p"),
    "aspect 1:1": _with("response_format.aspect_ratio", "1:1"),
    "delivery email": _with("response_format.delivery", "email"),
    "format type movie": _with("response_format.type", "movie"),
    "format extra field": _with("response_format.fps", 24),
    "task t2v": _with("generation_config.video_config.task", "t2v"),
    "background a string": _with("background", "yes"),
    "store an int": _with("store", 1),
    "unknown top-level key": _with("negative_prompt", "blur"),
    "image mime image/foo": _with("input.0.content.1.mime_type", "image/foo"),
}


@pytest.mark.parametrize("name", list(REFUSED_BY_THE_SDK))
async def test_the_fake_refuses_what_the_sdks_types_refuse(server: FakeGeminiServer, name: str) -> None:
    body = REFUSED_BY_THE_SDK[name]
    assert _sdk_refusals(body), f"the SDK's types accept {name}: the case proves nothing"
    async with httpx.AsyncClient() as client:
        good = await client.post(f"{server.base_url}/interactions", json=_good_body(),
                                 headers={"x-goog-api-key": server.api_key})
        bad = await client.post(f"{server.base_url}/interactions", json=body,
                                headers={"x-goog-api-key": server.api_key})
    assert good.status_code == 200, good.text
    assert bad.status_code == 400, bad.text
    assert len(server.submits) == 1


async def test_the_sdk_surfaces_the_fakes_refusal_as_its_own_400(server: FakeGeminiServer) -> None:
    client = genai.Client(api_key=server.api_key, http_options=gtypes.HttpOptions(base_url=server.origin))
    with pytest.raises(BadRequestError) as caught:
        await client.aio.interactions.create(
            model=MODEL, input="a cat", background=True,
            response_format={"type": "video", "duration": 8},  # type: ignore[typeddict-item]
        )
    assert caught.value.status_code == 400
    assert "duration" in str(caught.value)


@pytest.mark.parametrize(("resolution", "delivery"), [("720p", "inline"), ("1080p", "uri")])
async def test_the_sdk_creates_polls_and_reads_the_video_from_the_fake(
    server: FakeGeminiServer, resolution: str, delivery: str
) -> None:
    client = genai.Client(api_key=server.api_key, http_options=gtypes.HttpOptions(base_url=server.origin))
    created = await client.aio.interactions.create(
        model=MODEL,
        input="a paper boat on a stream",
        background=True,
        store=True,
        response_format={"type": "video", "aspect_ratio": "16:9", "resolution": resolution,
                         "duration": "8s", "delivery": delivery},
        generation_config={"video_config": {"task": "text_to_video"}},
    )
    assert created.status == "in_progress" and created.id
    async with asyncio.timeout(5):
        while (got := await client.aio.interactions.get(created.id)).status != "completed":
            await asyncio.sleep(0.02)
    video = got.output_video
    assert video is not None and video.mime_type == "video/mp4"
    if delivery == "inline":
        assert video.uri is None
        assert base64.b64decode(video.data) == video_bytes(created.id)
    else:
        assert video.data is None and video.uri is not None
        file_name = "files/" + video.uri.split("files/", 1)[1].split(":", 1)[0]
        assert await client.aio.files.download(file=file_name) == video_bytes(created.id)
    # the adapter reads the same answer the same way
    async with httpx.AsyncClient() as raw:
        answer = (await raw.get(f"{server.base_url}/interactions/{created.id}",
                                headers={"x-goog-api-key": server.api_key})).json()
    assert find_video(answer) == got.output_video.model_dump(exclude_none=True)


async def test_the_sdk_cancels_and_looks_models_up_on_the_fake(server: FakeGeminiServer) -> None:
    client = genai.Client(api_key=server.api_key, http_options=gtypes.HttpOptions(base_url=server.origin))
    created = await client.aio.interactions.create(
        model=MODEL, input="[stuck] a candle", background=True, store=True,
        response_format={"type": "video", "duration": "4s"},
    )
    cancelled = await client.aio.interactions.cancel(created.id)
    assert cancelled.status == "cancelled" and server.cancels == [created.id]
    found = await client.aio.models.get(model=MODEL)
    assert (found.name, found.display_name) == (f"models/{MODEL}", "Gemini Omni 1.2 Flash")
    with pytest.raises(genai.errors.ClientError) as caught:
        await client.aio.models.get(model="veo-3.1-generate-preview")
    assert caught.value.code == 404 and "no longer available" in str(caught.value)


def test_the_sdk_itself_offers_no_veo_on_the_gemini_api() -> None:
    """google-genai 3.6.1 refuses generate_videos in Gemini API mode: Veo is Agent Platform only."""
    client = genai.Client(api_key="k", http_options=gtypes.HttpOptions(base_url="http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="Agent Platform"):
        client.models.generate_videos(
            model="veo-3.1-generate-preview", source=gtypes.GenerateVideosSource(prompt="a fox")
        )


# --- through the real app --------------------------------------------------------------------


async def _one_job(bot: Any, text: str) -> dict[str, Any]:
    resp = await bot.slash(text)
    assert "Got it" in resp.json()["text"], resp.json()["text"]
    await bot.runtime.poller.idle(20)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 1
    return jobs[0]


@pytest.mark.parametrize(("options", "delivery"), [("-d 8", "inline"), ("-d 5 -r 1080p", "uri")])
async def test_sora_with_gemini_omni_flash_puts_the_video_in_the_thread(
    make_bot: Any, slack: Any, options: str, delivery: str
) -> None:
    async with FakeGeminiServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        gemini = GeminiProvider(server.api_key, base_url=server.base_url, client=client)
        bot = await make_bot(providers={"gemini": gemini}, include_simulator=False,
                             sora_default_model="gemini-omni-flash", sora_daily_budget_usd="20")
        job = await _one_job(bot, f"-m gemini-omni-flash {options} a lantern festival over a river")
        assert job["status"] == "succeeded", job
        assert (job["provider"], job["model"]) == ("gemini", "gemini-omni-flash")
        assert job["cost_usd"] > 0 and len(server.submits) == 1
        assert server.submits[0]["model"] == "gemini-omni-1.2-flash"
        assert server.submits[0]["response_format"]["delivery"] == delivery
        replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
        assert len(replies) == 1 and replies[0].files
        stored = await jobstore.must_get_job(bot.deps.db, job["id"])
        # inline bytes never reach the database; a link does, for a re-download
        assert stored.video_url == (None if delivery == "inline" else server.video_uri(
            server.jobs[job["provider_job_id"]].extra["file"]))


async def test_a_retired_veo_id_routed_to_gemini_fails_as_retired_refunded_with_an_alternative(
    make_bot: Any, slack: Any, tmp_path: Path
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        '[models."veo-3.1-gemini"]\n'
        'route = "gemini"\n'
        'provider_model = "veo-3.1-generate-preview"\n'
        'label = "Veo 3.1 on the Gemini API"\n'
        "durations = [4, 6, 8]\n"
        "default_duration = 8\n"
        'prices = { "720p" = 0.40 }\n',
        encoding="utf-8",
    )
    async with FakeGeminiServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        gemini = GeminiProvider(server.api_key, base_url=server.base_url, client=client)
        bot = await make_bot(providers={"gemini": gemini}, include_simulator=False,
                             sora_default_model="gemini-omni-flash", sora_models=models_file,
                             sora_daily_budget_usd="20")
        assert "veo-3.1-gemini" in bot.deps.catalog.ids()
        job = await _one_job(bot, "-m veo-3.1-gemini -d 8 a fox in the snow")
        assert (job["status"], job["failure_kind"]) == ("failed", "provider_retired"), job
        assert job["cost_usd"] == 0 and server.create_attempts == []
        for row in json.loads(await usage_json(bot.deps, None)):
            assert row["spent_usd"] == 0 and row["reserved_usd"] == 0
        stored = await jobstore.must_get_job(bot.deps.db, job["id"])
        assert "Agent Platform" in (stored.failure_detail or "")
        await slack.wait_for(
            lambda: any("no longer available" in m.text
                        for m in slack.thread(job["channel_id"], job["thread_ts"])),
            timeout=5,
        )
        text = next(m.text for m in slack.thread(job["channel_id"], job["thread_ts"])
                    if "no longer available" in m.text)
        assert "`gemini-omni-flash`" in text
