"""RunwayProvider against the fake Runway task API, plus its pure parsers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Required, get_args, get_origin, get_type_hints

import httpx
import pydantic
import pytest
import runwayml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from runwayml._utils import PropertyInfo
from runwayml._utils import transform as sdk_transform
from runwayml.types import image_to_video_create_params, text_to_video_create_params
from runwayml.types.task_retrieve_response import Succeeded

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderState, ProviderStatus, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.runway import (
    API_VERSION,
    MICROS_PER_CREDIT,
    RUNWAY_MODELS,
    RunwayProvider,
    build_task_request,
    failure_kind,
    parse_task,
    runway_error,
    runway_progress,
    runway_ratio,
    utf16_units,
)
from tests.fakes.providers import poll_until_terminal, video_bytes
from tests.fakes.runway_veo import FakeRunwayServer
from tests.provider_checks import assert_key_hidden, json_like

RUN_S = 0.05
PNG = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n" + b"\0" * 32, mime_type="image/png", width=1280, height=720
)


def spec(
    prompt: str,
    *,
    duration_s: int = 5,
    resolution: str = "720p",
    aspect_ratio: str = "16:9",
    image: ReferenceImage | None = None,
) -> VideoSpec:
    return VideoSpec(
        model="gen4.5",
        provider_model="gen4.5",
        prompt=prompt,
        duration_s=duration_s,
        resolution=resolution,
        aspect_ratio=aspect_ratio,
        external_id="job-1",
        image=image,
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeRunwayServer]:
    async with FakeRunwayServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeRunwayServer) -> AsyncIterator[RunwayProvider]:
    runway = RunwayProvider(server.api_key, base_url=server.base_url)
    yield runway
    await runway.aclose()


# --- end to end against the fake ---------------------------------------------------------


async def test_runway_is_a_video_provider(provider: RunwayProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls) == ("runway", True)


async def test_success_end_to_end(tmp_path: Path) -> None:
    # long enough that a few polls see RUNNING with its progress fraction
    async with FakeRunwayServer(run_seconds=0.25) as server:
        provider = RunwayProvider(server.api_key, base_url=server.base_url)
        try:
            await _success_end_to_end(server, provider, tmp_path)
        finally:
            await provider.aclose()


async def _success_end_to_end(
    server: FakeRunwayServer, provider: RunwayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("a paper boat in the rain"))

    assert server.submits == [
        {
            "model": "gen4.5",
            "ratio": "1280:720",
            "duration": 5,
            "promptText": "a paper boat in the rain",
        }
    ]
    assert server.jobs[job_id].extra["path"] == "/v1/text_to_video"
    seen = await poll_until_terminal(provider, job_id)
    assert (seen[0].state, seen[0].raw_status) == (ProviderState.QUEUED, "PENDING")
    running = [s for s in seen if s.state is ProviderState.RUNNING]
    assert running and all(s.progress is not None and 0 < s.progress < 100 for s in running)
    final = seen[-1]
    assert (final.state, final.progress) == (ProviderState.SUCCEEDED, 100)
    assert final.video_url == server.output_url(server.jobs[job_id])

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    assert not (tmp_path / "video.mp4.part").exists()
    # the output link is signed: the API secret never goes to it
    assert server.download_auth == [None]


async def test_image_to_video_sends_a_data_uri(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    job_id = await provider.submit(spec("the boat sails off", aspect_ratio="9:16", image=PNG))

    assert server.jobs[job_id].extra["path"] == "/v1/image_to_video"
    body = server.submits[0]
    assert body["promptImage"] == "data:image/png;base64," + base64.b64encode(PNG.data).decode()
    assert (body["ratio"], body["promptText"]) == ("720:1280", "the boat sails off")


async def test_requests_carry_bearer_and_version_headers() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(200, json={"id": "task-1"})
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json={"id": "task-1", "status": "PENDING"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        runway = RunwayProvider("rw-secret", base_url="https://rw.example/", client=client)
        assert await runway.submit(spec("x")) == "task-1"
        await runway.poll("task-1")
        assert await runway.cancel("task-1") is True
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/v1/text_to_video"),
        ("GET", "/v1/tasks/task-1"),
        ("DELETE", "/v1/tasks/task-1"),
    ]
    for request in seen:
        assert request.headers["Authorization"] == "Bearer rw-secret"
        assert request.headers["X-Runway-Version"] == API_VERSION == "2024-11-06"


async def test_fake_rejects_a_request_without_the_version_header(server: FakeRunwayServer) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{server.base_url}/v1/text_to_video",
            json={"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5},
            headers={"Authorization": f"Bearer {server.api_key}"},
        )
    assert answer.status_code == 400 and "X-Runway-Version" in answer.text
    assert server.submits == []


# --- pre-send validation -------------------------------------------------------------------


async def test_prompt_over_1000_chars_is_refused_before_sending(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(spec("x" * 1001))
    assert "1000 characters" in info.value.user_message()
    assert "1001" in info.value.user_message()
    assert server.create_attempts == []
    await provider.submit(spec("y" * 1000))
    assert len(server.submits) == 1


@pytest.mark.parametrize(
    ("resolution", "aspect"), [("1080p", "16:9"), ("720p", "1:1"), ("4k", "9:16")]
)
async def test_unsupported_ratio_is_refused_before_sending(
    server: FakeRunwayServer, provider: RunwayProvider, resolution: str, aspect: str
) -> None:
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(spec("x", resolution=resolution, aspect_ratio=aspect))
    assert resolution in info.value.user_message() and aspect in info.value.user_message()
    assert server.create_attempts == []


async def test_oversized_reference_image_is_refused_before_sending(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    big = ReferenceImage(data=b"\0" * 4_000_000, mime_type="image/png", width=1280, height=720)
    with pytest.raises(InvalidProviderRequest, match="5 MB"):
        await provider.submit(spec("x", image=big))
    assert server.create_attempts == []


def test_ratio_table() -> None:
    assert runway_ratio("720p", "16:9") == "1280:720"
    assert runway_ratio("720p", "9:16") == "720:1280"


# --- scripted behaviour --------------------------------------------------------------------


async def test_throttled_task_is_queued_not_an_error(provider: RunwayProvider) -> None:
    job_id = await provider.submit(spec("[throttled] x"))
    seen = await poll_until_terminal(provider, job_id)
    assert [(s.state, s.raw_status) for s in seen[:2]] == [(ProviderState.QUEUED, "THROTTLED")] * 2
    assert seen[-1].state is ProviderState.SUCCEEDED


@pytest.mark.parametrize(
    ("marker", "kind", "code"),
    [
        ("[safety-input]", FailureKind.BLOCKED_INPUT, "SAFETY.INPUT.TEXT"),
        ("[safety-output]", FailureKind.BLOCKED_OUTPUT, "SAFETY.OUTPUT.VIDEO"),
        ("[internal]", FailureKind.GENERATION_FAILED, "INTERNAL.BAD_OUTPUT.CODE01"),
    ],
)
async def test_failure_codes_map_to_kinds(
    provider: RunwayProvider, marker: str, kind: FailureKind, code: str
) -> None:
    job_id = await provider.submit(spec(f"{marker} x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and final.error is not None
    assert final.error.kind is kind
    # Runway: codes and prose are diagnostics, never for users
    assert code in final.error.detail and final.error.reason is None


async def test_429_at_submit_is_rate_limited_without_retry_after(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    with pytest.raises(RateLimited) as info:
        await provider.submit(spec("[429-submit] x"))
    assert info.value.retry_after_s is None
    assert info.value.retryable and info.value.surely_not_created
    assert_key_hidden(info.value, server.api_key)
    await provider.submit(spec("[429-submit] x"))
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_429_retry_after_header_is_honoured() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": "daily limit"}, headers={"Retry-After": "120"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        runway = RunwayProvider("k", base_url="https://rw.example", client=client)
        with pytest.raises(RateLimited) as info:
            await runway.submit(spec("x"))
    assert info.value.retry_after_s == 120.0


async def test_stale_output_url_is_refreshed_once(
    server: FakeRunwayServer, provider: RunwayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("[stale-url] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    polls_before = server.polls[job_id]

    await provider.download(job_id, final.video_url, tmp_path / "v.mp4")

    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)
    assert server.downloads[job_id] == 2
    assert server.polls[job_id] == polls_before + 1


async def test_url_that_stays_expired_is_result_expired_after_one_refresh(
    server: FakeRunwayServer, provider: RunwayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("[expired] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    polls_before = server.polls[job_id]
    with pytest.raises(ResultExpired) as info:
        await provider.download(job_id, final.video_url, tmp_path / "v.mp4")
    assert info.value.kind is FailureKind.RESULT_EXPIRED
    assert (server.downloads[job_id], server.polls[job_id]) == (2, polls_before + 1)
    assert not (tmp_path / "v.mp4").exists()


async def test_download_without_url_asks_for_the_task_first(
    server: FakeRunwayServer, provider: RunwayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("resume after restart"))
    await poll_until_terminal(provider, job_id)
    await provider.download(job_id, None, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)


async def test_download_of_a_deleted_task_is_result_expired(
    server: FakeRunwayServer, provider: RunwayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert await provider.cancel(job_id) is True  # DELETE on a finished task deletes it
    with pytest.raises(ResultExpired):
        await provider.download(job_id, final.video_url, tmp_path / "v.mp4")


async def test_stuck_task_runs_below_100_and_can_be_cancelled(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    job_id = await provider.submit(spec("[stuck] x"))
    await provider.poll(job_id)
    await asyncio.sleep(RUN_S * 1.5)
    status = await provider.poll(job_id)
    assert status.state is ProviderState.RUNNING and status.progress == 99
    assert await provider.cancel(job_id) is True
    assert (await provider.poll(job_id)).state is ProviderState.CANCELLED
    assert server.cancels == [job_id]
    assert await provider.cancel("no-such-task") is False


async def test_5xx_poll_is_transient(provider: RunwayProvider) -> None:
    job_id = await provider.submit(spec("[5xx-poll] x"))
    with pytest.raises(ProviderUnavailable):
        await provider.poll(job_id)


async def test_wrong_secret_is_auth_failed_and_never_echoed(server: FakeRunwayServer) -> None:
    secret = "key_live_very-secret-123"
    runway = RunwayProvider(secret, base_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as submit_info:
            await runway.submit(spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await runway.poll("task-x")
    finally:
        await runway.aclose()
    assert_key_hidden(submit_info.value, secret)
    assert_key_hidden(poll_info.value, secret)


# --- pure parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("PENDING", ProviderState.QUEUED),
        ("THROTTLED", ProviderState.QUEUED),
        ("RUNNING", ProviderState.RUNNING),
        ("CANCELLED", ProviderState.CANCELLED),
        ("running", ProviderState.RUNNING),
        ("WARMING", ProviderState.UNKNOWN),
        (None, ProviderState.UNKNOWN),
    ],
)
def test_task_statuses(raw: str | None, state: ProviderState) -> None:
    assert parse_task({"status": raw}).state is state


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 50), (0, 0), (1, 100), (1.7, 100), (-0.2, 0), ("0.25", 25), (None, None),
     (True, None), ("half", None), (float("nan"), None), (10**400, 100)],
)
def test_progress_is_a_fraction(value: object, expected: int | None) -> None:
    assert runway_progress(value) == expected


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("SAFETY.INPUT.IMAGE", FailureKind.BLOCKED_INPUT),
        ("SAFETY.OUTPUT.TEXT", FailureKind.BLOCKED_OUTPUT),
        ("INPUT_PREPROCESSING.SAFETY.TEXT", FailureKind.BLOCKED_INPUT),
        ("INTERNAL.BAD_OUTPUT.CODE01", FailureKind.GENERATION_FAILED),
        ("INTERNAL", FailureKind.GENERATION_FAILED),
        ("ASSET.INVALID", FailureKind.INVALID_REQUEST),
        ("SOMETHING.NEW", FailureKind.GENERATION_FAILED),
        (None, FailureKind.GENERATION_FAILED),
    ],
)
def test_failure_code_kinds(code: str | None, kind: FailureKind) -> None:
    assert failure_kind(code) is kind


def test_failed_task_keeps_prose_in_detail_only() -> None:
    status = parse_task({"status": "FAILED", "failureCode": "ASSET.INVALID", "failure": "bad png"})
    assert status.error is not None
    assert status.error.kind is FailureKind.INVALID_REQUEST
    assert status.error.detail == "ASSET.INVALID: bad png" and status.error.reason is None


@pytest.mark.parametrize("output", [None, [], [""], ["not-a-url"], "https://x/v.mp4"])
def test_succeeded_without_an_output_url_is_no_output(output: object) -> None:
    status = parse_task({"status": "SUCCEEDED", "output": output})
    assert status.state is ProviderState.FAILED and status.error is not None
    assert (status.error.kind, status.error.detail) == (FailureKind.GENERATION_FAILED, "no_output")


@pytest.mark.parametrize("body", [[], "text", 7, None])
def test_non_object_task_is_transient(body: object) -> None:
    with pytest.raises(ProviderUnavailable):
        parse_task(body)


_WORDS = st.sampled_from(
    ["id", "status", "progress", "output", "failure", "failureCode", "createdAt", "PENDING",
     "THROTTLED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "SAFETY.INPUT.TEXT",
     "SAFETY.OUTPUT.VIDEO", "INTERNAL", "ASSET.INVALID", "https://cdn.example/v.mp4"]
)
_JSON = json_like(_WORDS)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(_WORDS, _JSON, max_size=6) | _JSON)
def test_task_parser_never_crashes(body: object) -> None:
    try:
        status = parse_task(body)
    except ProviderError:
        return
    assert isinstance(status, ProviderStatus)
    assert status.progress is None or 0 <= status.progress <= 100
    if status.state is ProviderState.SUCCEEDED:
        assert status.video_url
    if status.state is ProviderState.FAILED:
        assert status.error is not None


# --- issue 17: limits, cost, retries and the other makers' models ----------------------------


def model_spec(model: str, prompt: str = "a kite over dunes", **kw: Any) -> VideoSpec:
    kw.setdefault("duration_s", {"veo3.1": 8, "gemini_omni_flash": 6}.get(model, 5))
    audio = kw.pop("audio", None)
    return dataclasses.replace(
        spec(prompt, **kw), model=f"runway/{model}", provider_model=model, audio=audio
    )


async def test_prompt_limit_counts_utf16_units_so_an_emoji_counts_twice(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    assert utf16_units("x😀") == 3
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(spec("x" * 999 + "😀"))  # 1,000 characters, 1,001 units
    assert "1000 characters" in info.value.user_message()
    assert "emoji counts as two" in info.value.user_message()
    assert "1001" in info.value.user_message()
    assert server.create_attempts == []
    await provider.submit(spec("x" * 998 + "😀"))  # exactly 1,000 units: the fake agrees
    assert len(server.submits) == 1


async def test_fake_counts_prompts_in_utf16_units_too(server: FakeRunwayServer) -> None:
    body = {"model": "gen4.5", "ratio": "1280:720", "duration": 5, "promptText": "😀" * 501}
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{server.base_url}/v1/text_to_video", json=body,
            headers={"Authorization": f"Bearer {server.api_key}", "X-Runway-Version": API_VERSION},
        )
    assert answer.status_code == 400 and "1000" in answer.text
    assert server.submits == []


async def test_gen45_image_to_video_needs_a_prompt(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(spec("  ", image=PNG))
    assert "prompt" in info.value.user_message()
    assert server.create_attempts == []
    # veo3.1 types promptText as optional for image_to_video: an image alone is fine
    await provider.submit(model_spec("veo3.1", "", image=PNG))
    assert "promptText" not in server.submits[0]


@pytest.mark.parametrize(
    ("model", "duration", "resolution", "aspect"),
    [("veo3.1", 5, "720p", "16:9"), ("gen4.5", 11, "720p", "16:9"),
     ("gemini_omni_flash", 12, "720p", "9:16"), ("gemini_omni_flash", 6, "1080p", "16:9")],
)
async def test_what_a_model_lacks_is_refused_before_sending(
    server: FakeRunwayServer, provider: RunwayProvider,
    model: str, duration: int, resolution: str, aspect: str,
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(
            model_spec(model, duration_s=duration, resolution=resolution, aspect_ratio=aspect)
        )
    assert server.create_attempts == []


async def test_a_finished_task_reports_its_cost_in_micros(provider: RunwayProvider) -> None:
    default = await provider.submit(spec("x"))  # gen4.5: 12 credits/s for 5 s at the fake
    told = await provider.submit(spec("[credits=30] x"))
    assert (await poll_until_terminal(provider, default))[-1].cost_micros == 60 * 10_000
    final = (await poll_until_terminal(provider, told))[-1]
    assert final.cost_micros == 300_000  # 30 credits at $0.01
    assert final.cost_micros == 30 * MICROS_PER_CREDIT


@pytest.mark.parametrize(
    ("cost", "micros"),
    [({"credits": 12}, 120_000), ({"credits": 0}, 0), ({"credits": 2.5}, 25_000),
     ({"credits": True}, None), ({"credits": -3}, None), ({"credits": "12"}, None),
     ({}, None), (None, None), ({"credits": float("inf")}, None), ({"credits": 10**30}, None)],
)
def test_cost_is_read_from_cost_credits_only(cost: object, micros: int | None) -> None:
    body = {"status": "SUCCEEDED", "output": ["https://cdn.example/v.mp4"], "cost": cost}
    assert parse_task(body).cost_micros == micros
    # a waiting task's estimate is not a charge
    assert parse_task({"status": "RUNNING", "estimatedCost": {"credits": 60}}).cost_micros is None


def _answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": "x"}, headers=headers or {})


@pytest.mark.parametrize(
    ("status", "header", "op", "expected", "retryable", "not_created"),
    [
        # the SDK retries 409 (lock timeout): a refusal made nothing, so we retry it too
        (409, None, "submit", ProviderUnavailable, True, True),
        (409, None, "poll", ProviderUnavailable, True, True),
        # a refusal the server marks retryable
        (400, "true", "submit", ProviderUnavailable, True, True),
        (404, "true", "poll", ProviderUnavailable, True, True),
        # a 5xx at submit may have made the task: never resent, whatever the header says
        (500, "true", "submit", AmbiguousSubmit, False, False),
        (502, "true", "submit", AmbiguousSubmit, False, False),
        (500, "true", "poll", ProviderUnavailable, True, True),
        # `false` overrides what the status alone would do
        (429, "false", "submit", RateLimited, False, True),
        (503, "false", "submit", ProviderUnavailable, False, True),
        (409, "false", "submit", InvalidProviderRequest, False, True),
        # no header: our usual reading
        (429, None, "submit", RateLimited, True, True),
        (400, None, "submit", InvalidProviderRequest, False, True),
        (500, None, "submit", AmbiguousSubmit, False, False),
    ],
)
def test_runway_errors_follow_the_sdks_retry_rules(
    status: int, header: str | None, op: str, expected: type[ProviderError],
    retryable: bool, not_created: bool,
) -> None:
    headers = {"x-should-retry": header} if header else {}
    error = runway_error(_answer(status, headers), op=op)  # type: ignore[arg-type]
    assert type(error) is expected
    assert (error.retryable, error.surely_not_created) == (retryable, not_created)


async def test_409_at_submit_is_retryable_and_the_retry_makes_one_task(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await provider.submit(spec("[409-submit] x"))
    assert info.value.retryable and info.value.surely_not_created
    await provider.submit(spec("[409-submit] x"))
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_500_with_should_retry_at_submit_is_ambiguous_not_retried(
    server: FakeRunwayServer, provider: RunwayProvider
) -> None:
    with pytest.raises(AmbiguousSubmit) as info:
        await provider.submit(spec("[500-after-create] x"))
    assert not info.value.retryable and not info.value.surely_not_created
    assert len(server.submits) == 1  # the task exists: resending would make a second


# --- the bodies, checked against runwayml 5.24's own param types -----------------------------

T2V = text_to_video_create_params.TextToVideoCreateParams
I2V = image_to_video_create_params.ImageToVideoCreateParams


def _unwrap(hint: Any) -> tuple[Any, str | None]:
    """(the bare type, its JSON alias) of a TypedDict field's annotation."""
    alias = None
    while True:
        origin = get_origin(hint)
        if origin in (Required, NotRequired):
            hint = get_args(hint)[0]
        elif origin is Annotated:
            alias = next(
                (m.alias for m in hint.__metadata__ if isinstance(m, PropertyInfo) and m.alias),
                alias,
            )
            hint = get_args(hint)[0]
        else:
            return hint, alias


def sdk_params_type(union: Any, model: str) -> type:
    """The member of runwayml's params union whose `model` Literal is `model`."""
    for typed_dict in get_args(union):
        bare, _ = _unwrap(get_type_hints(typed_dict, include_extras=True)["model"])
        if model in get_args(bare):
            return typed_dict
    raise AssertionError(f"runwayml has no params type for {model}")


def sdk_kwargs(union: Any, body: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """(params type, snake_case kwargs) for a JSON body; fails on a key the type lacks."""
    typed_dict = sdk_params_type(union, body["model"])
    names = {}
    for name, hint in get_type_hints(typed_dict, include_extras=True).items():
        names[_unwrap(hint)[1] or name] = name
    unknown = set(body) - set(names)
    assert not unknown, f"{typed_dict.__name__} has no {unknown}"
    return typed_dict, {names[key]: value for key, value in body.items()}


def assert_sdk_accepts(union: Any, body: dict[str, Any]) -> None:
    """The SDK's TypedDict accepts `body` (strictly), and the SDK would send exactly it."""
    typed_dict, kwargs = sdk_kwargs(union, body)
    TypeAdapter(typed_dict).validate_python(kwargs, strict=True)
    assert sdk_transform(kwargs, typed_dict) == body


MODEL_CASES = [
    ("gen4.5", {}),
    ("veo3.1", {"resolution": "1080p", "aspect_ratio": "9:16"}),
    ("veo3.1", {"duration_s": 4, "audio": False}),
    ("seedance2", {"aspect_ratio": "1:1", "duration_s": 12, "audio": True}),
    ("seedance2", {"resolution": "480p"}),
    ("seedance2", {"resolution": "1080p", "aspect_ratio": "9:16"}),
    ("gemini_omni_flash", {"aspect_ratio": "9:16", "duration_s": 3}),
    ("gemini_omni_flash", {"audio": True}),  # it has no audio flag: none is sent
]


@pytest.mark.parametrize("image", [None, PNG], ids=["text", "image"])
@pytest.mark.parametrize(("model", "options"), MODEL_CASES)
async def test_each_models_body_is_what_its_sdk_type_allows(
    server: FakeRunwayServer, provider: RunwayProvider,
    model: str, options: dict[str, Any], image: ReferenceImage | None,
) -> None:
    path, body = build_task_request(model_spec(model, image=image, **options))
    assert path == ("/v1/image_to_video" if image else "/v1/text_to_video")
    assert_sdk_accepts(I2V if image else T2V, body)
    assert ("audio" in body) == (model in ("veo3.1", "seedance2") and "audio" in options)
    # and the fake, written from the same types, takes it
    await provider.submit(model_spec(model, image=image, **options))
    assert server.submits == [body]


def test_the_sdk_types_tell_the_ratios_the_adapter_uses() -> None:
    for model, rules in RUNWAY_MODELS.items():
        for union in (T2V, I2V):
            hints = get_type_hints(sdk_params_type(union, model), include_extras=True)
            allowed = get_args(_unwrap(hints["ratio"])[0])
            assert set(rules.ratios.values()) <= set(allowed), (model, union)
            duration = _unwrap(hints["duration"])[0]
            if get_origin(duration) is Literal:
                assert set(rules.durations) == set(get_args(duration)), model


# --- the fake, checked by runwayml's own client ----------------------------------------------


@pytest.fixture
async def sdk(server: FakeRunwayServer) -> AsyncIterator[runwayml.AsyncRunwayML]:
    client = runwayml.AsyncRunwayML(api_key=server.api_key, base_url=server.base_url, max_retries=1)
    yield client
    await client.close()


async def _sdk_until_done(sdk: runwayml.AsyncRunwayML, task_id: str) -> Any:
    for _ in range(200):
        task = await sdk.tasks.retrieve(task_id)
        if task.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the task never finished")


async def test_runways_sdk_creates_retrieves_and_downloads_from_the_fake(
    server: FakeRunwayServer, sdk: runwayml.AsyncRunwayML
) -> None:
    created = await sdk.text_to_video.create(
        model="gen4.5", prompt_text="a paper boat in the rain", ratio="1280:720", duration=5
    )
    first = await sdk.tasks.retrieve(created.id)
    assert first.status == "PENDING" and first.estimated_cost.credits == 60
    task = await _sdk_until_done(sdk, created.id)
    assert isinstance(task, Succeeded) and task.cost.credits == 60
    async with httpx.AsyncClient() as client:
        video = await client.get(task.output[0])
    assert video.content == video_bytes(created.id)

    image = await sdk.image_to_video.create(
        model="veo3.1", prompt_image="data:image/png;base64," + base64.b64encode(PNG.data).decode(),
        ratio="1920:1080", duration=8, audio=False,
    )
    assert (await _sdk_until_done(sdk, image.id)).status == "SUCCEEDED"
    assert server.jobs[image.id].extra["path"] == "/v1/image_to_video"


BAD_BODIES = [
    {"model": "gen4.5", "promptText": "x", "ratio": "1920:1080", "duration": 5},  # ratio Literal
    {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": "5"},  # int
    {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5, "audio": True},
    {"model": "gen4.5", "ratio": "1280:720", "duration": 5},  # promptText Required
    {"model": "veo3.1", "promptText": "x", "ratio": "1280:720", "duration": 5},  # Literal[4, 6, 8]
    {"model": "veo3.1", "promptText": "x", "ratio": "1280:720", "audio": "yes"},  # bool
    {"model": "seedance2", "promptText": "x", "ratio": "16:9"},  # ratios are pixel pairs
    {"model": "gemini_omni_flash", "promptText": "x", "ratio": "1920:1080"},
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_the_fake_refuses_what_the_sdk_types_refuse(
    server: FakeRunwayServer, sdk: runwayml.AsyncRunwayML, body: dict[str, Any]
) -> None:
    with pytest.raises((pydantic.ValidationError, AssertionError)):
        assert_sdk_accepts(T2V, body)
    with pytest.raises(runwayml.BadRequestError):
        # the SDK does not check types at run time; sent as it would send them
        await sdk.post("/v1/text_to_video", body=body, cast_to=object)
    assert server.submits == []


async def test_the_sdk_retries_a_409_and_the_fake_makes_one_task(
    server: FakeRunwayServer, sdk: runwayml.AsyncRunwayML
) -> None:
    await sdk.text_to_video.create(
        model="gen4.5", prompt_text="[409-submit] x", ratio="1280:720", duration=5
    )
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_why_we_do_not_resend_a_5xx_create_the_sdk_does_and_pays_twice(
    server: FakeRunwayServer, sdk: runwayml.AsyncRunwayML, provider: RunwayProvider
) -> None:
    await sdk.text_to_video.create(
        model="gen4.5", prompt_text="[500-after-create] x", ratio="1280:720", duration=5
    )
    assert len(server.submits) == 2  # two paid tasks from one call
    with pytest.raises(AmbiguousSubmit):
        await provider.submit(spec("[500-after-create] y"))
    assert len(server.submits) == 3  # ours made exactly one
