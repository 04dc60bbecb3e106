"""OpenAIVideosProvider against the fake OpenAI Videos API."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
import typing
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import Video
from openai.types.image_input_reference_param import ImageInputReferenceParam
from openai.types.video_create_params import VideoCreateParams
from openai.types.video_seconds import VideoSeconds
from openai.types.video_size import VideoSize
from PIL import Image
from pydantic import TypeAdapter

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    ContentBlocked,
    DeliveryError,
    InvalidProviderRequest,
    ProviderError,
    ProviderRetired,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderState, ProviderStatus, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.http import error_for_response
from bot.providers.openai_videos import OpenAIVideosProvider, matches_spec, parse_video
from tests.fakes.providers import (
    INPAINT_MISMATCH,
    FakeOpenAIServer,
    make_spec,
    poll_until_terminal,
    video_bytes,
)
from tests.provider_checks import assert_key_hidden

RUN_S = 0.1


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(run_seconds=RUN_S, slow_seconds=0.2) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeOpenAIServer) -> AsyncIterator[OpenAIVideosProvider]:
    openai = OpenAIVideosProvider(server.base_url, server.api_key)
    yield openai
    await openai.aclose()


async def test_openai_is_a_video_provider(provider: OpenAIVideosProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert provider.name == "openai"


async def test_success_end_to_end(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(make_spec("a lighthouse at dusk", duration_s=8))

    assert server.submits == [
        {"model": "sora-2", "prompt": "a lighthouse at dusk", "seconds": "8", "size": "1280x720"}
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert seen[0].state is ProviderState.QUEUED
    progress = [s.progress or 0 for s in seen]
    assert progress == sorted(progress)
    final = seen[-1]
    assert (final.state, final.progress) == (ProviderState.SUCCEEDED, 100)
    assert final.video_url == f"{server.base_url}/videos/{job_id}/content"
    assert final.expires_at is not None and final.expires_at > datetime.now(UTC)

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, "https://ignored.example/x.mp4", dest)
    assert dest.read_bytes() == video_bytes(job_id)
    assert server.download_auth == [f"Bearer {server.api_key}"]


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [("720p", "9:16", "720x1280"), ("1024p", "16:9", "1792x1024"), ("1024p", "9:16", "1024x1792")],
)
async def test_size_is_mapped_and_seconds_sent_as_string(
    server: FakeOpenAIServer,
    provider: OpenAIVideosProvider,
    resolution: str,
    aspect: str,
    size: str,
) -> None:
    await provider.submit(
        make_spec(
            "x", model="sora-2-pro", duration_s=12, resolution=resolution, aspect_ratio=aspect
        )
    )
    assert server.submits[-1]["size"] == size
    assert server.submits[-1]["seconds"] == "12"


async def test_size_without_openai_equivalent_is_refused_before_any_call(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(make_spec("x", aspect_ratio="1:1"))
    assert server.create_attempts == []


async def test_blocked_input_is_refused_at_submit(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider
) -> None:
    with pytest.raises(ContentBlocked) as info:
        await provider.submit(make_spec("[blocked-input] x"))
    assert (info.value.kind, info.value.reason) == (FailureKind.BLOCKED_INPUT, "violence")
    assert server.submits == []
    assert_key_hidden(info.value, server.api_key)


async def test_moderation_blocked_job_is_blocked_output(provider: OpenAIVideosProvider) -> None:
    job_id = await provider.submit(make_spec("[blocked-output] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.BLOCKED_OUTPUT


async def test_other_failure_code_is_generation_failed(provider: OpenAIVideosProvider) -> None:
    job_id = await provider.submit(make_spec("[fail] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.error is not None and final.error.kind is FailureKind.GENERATION_FAILED
    assert "internal_error" in final.error.detail


async def test_stuck_job_keeps_running(provider: OpenAIVideosProvider) -> None:
    job_id = await provider.submit(make_spec("[stuck] x"))
    await provider.poll(job_id)
    await asyncio.sleep(RUN_S * 1.5)  # past the time a normal job would have finished
    status = await provider.poll(job_id)
    assert (status.state, status.progress) == (ProviderState.RUNNING, 99)


async def test_429_is_rate_limited_with_retry_after(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider
) -> None:
    spec = make_spec("[429-submit] x")
    with pytest.raises(RateLimited) as info:
        await provider.submit(spec)
    assert info.value.retry_after_s == 1.0 and info.value.surely_not_created
    await provider.submit(spec)
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_insufficient_quota_is_quota_exhausted(provider: OpenAIVideosProvider) -> None:
    with pytest.raises(QuotaExhausted) as info:
        await provider.submit(make_spec("[quota] x"))
    assert info.value.kind is FailureKind.QUOTA_EXHAUSTED


async def test_503_at_submit_is_surely_not_created(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider
) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await provider.submit(make_spec("[503-submit] x"))
    assert not isinstance(info.value, AmbiguousSubmit)
    assert server.submits == []


async def test_retired_model_suggests_another(provider: OpenAIVideosProvider) -> None:
    with pytest.raises(ProviderRetired) as info:
        await provider.submit(make_spec("[retired] x"))
    assert "/sora models" in info.value.user_message()
    assert "does not exist" in info.value.detail


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": {"code": "model_not_found", "message": "The model 'sora-2' is gone."}}),
        (404, {"error": {"code": None, "message": "sora-2 has been shut down."}}),
        (400, {"error": {"code": "invalid_model", "message": "This model is no longer available"}}),
    ],
)
def test_retired_answers_map_to_provider_retired(status: int, body: dict[str, Any]) -> None:
    response = httpx.Response(
        status, json=body, request=httpx.Request("POST", "https://x/v1/videos")
    )
    exc = error_for_response(response, op="submit", label="OpenAI")
    assert isinstance(exc, ProviderRetired)
    assert "/sora models" in exc.user_message()


async def test_5xx_and_malformed_polls_are_transient(provider: OpenAIVideosProvider) -> None:
    flaky = await provider.submit(make_spec("[5xx-poll] x"))
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.poll(flaky)
    garbled = await provider.submit(make_spec("[malformed] x"))
    with pytest.raises(ProviderUnavailable):
        await provider.poll(garbled)
    for job_id in (flaky, garbled):
        assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED


async def test_download_502_then_ok(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(make_spec("[download-502] x"))
    await poll_until_terminal(provider, job_id)
    with pytest.raises(DeliveryError) as info:
        await provider.download(job_id, None, tmp_path / "v.mp4")
    assert not isinstance(info.value, ResultExpired)
    await provider.download(job_id, None, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)


async def test_expired_content_is_result_expired(
    provider: OpenAIVideosProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(make_spec("[expired] x"))
    await poll_until_terminal(provider, job_id)
    with pytest.raises(ResultExpired):
        await provider.download(job_id, None, tmp_path / "v.mp4")


async def test_poll_after_header_becomes_a_hint() -> None:
    async with FakeOpenAIServer(run_seconds=RUN_S, poll_after_ms=250) as srv:
        openai = OpenAIVideosProvider(srv.base_url, srv.api_key)
        try:
            job_id = await openai.submit(make_spec("x"))
            assert (await openai.poll(job_id)).retry_after_s == 0.25
        finally:
            await openai.aclose()


async def test_cancel_is_false_without_calling_the_api(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider
) -> None:
    job_id = await provider.submit(make_spec("x"))
    assert await provider.cancel(job_id) is False
    assert server.polls[job_id] == 0 and server.deletes == []


async def test_ambiguous_submit_then_find_existing_finds_the_job(server: FakeOpenAIServer) -> None:
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.05))
    openai = OpenAIVideosProvider(server.base_url, server.api_key, client=client)
    spec = make_spec("[slow-submit] a slow one", duration_s=12)
    since = time.time()
    try:
        await openai.submit(make_spec("a neighbour's job", duration_s=12))
        with pytest.raises(AmbiguousSubmit) as info:
            await openai.submit(spec)
        assert info.value.surely_not_created is False
        (made,) = [j for j in server.jobs.values() if j.prompt == spec.prompt]
        assert await openai.find_existing(spec, since_epoch_s=since) == made.id
        assert await openai.find_existing(make_spec("other"), since_epoch_s=since) is None
        assert (
            await openai.find_existing(make_spec(spec.prompt, duration_s=8), since_epoch_s=since)
            is None
        )
        assert await openai.find_existing(spec, since_epoch_s=time.time() + 60) is None
    finally:
        await openai.aclose()
        await client.aclose()


async def test_find_existing_is_none_when_the_list_fails() -> None:
    async with FakeOpenAIServer() as srv:
        openai = OpenAIVideosProvider(srv.base_url, "wrong-key")
        try:
            assert await openai.find_existing(make_spec("x"), since_epoch_s=0) is None
        finally:
            await openai.aclose()


async def test_wrong_key_is_auth_failed_and_never_echoed(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    secret = "sk-proj-topsecret-999"
    openai = OpenAIVideosProvider(server.base_url, secret)
    try:
        with pytest.raises(AuthFailed) as submit_info:
            await openai.submit(make_spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await openai.poll("video_x")
        with pytest.raises(DeliveryError) as download_info:
            await openai.download("video_x", None, tmp_path / "v.mp4")
    finally:
        await openai.aclose()
    for exc in (submit_info.value, poll_info.value, download_info.value):
        assert_key_hidden(exc, secret)


# --- parsing plain dicts -----------------------------------------------------------------


def test_video_object_fields_are_read() -> None:
    status = parse_video(
        {"id": "video_1", "status": "in_progress", "progress": 33, "expires_at": 1764350690},
        content_url="https://api/v1/videos/video_1/content",
    )
    assert (status.state, status.progress, status.video_url) == (ProviderState.RUNNING, 33, None)
    assert status.expires_at == datetime(2025, 11, 28, 17, 24, 50, tzinfo=UTC)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            {
                "code": "moderation_blocked",
                "message": "Your request was blocked by our moderation system.",
            },
            FailureKind.BLOCKED_OUTPUT,
        ),
        (
            {"code": "internal_error", "message": "Video generation failed."},
            FailureKind.GENERATION_FAILED,
        ),
        (None, FailureKind.GENERATION_FAILED),
        ("a bare string", FailureKind.GENERATION_FAILED),
    ],
)
def test_failed_error_code_picks_the_kind(error: object, kind: FailureKind) -> None:
    status = parse_video({"status": "failed", "error": error}, content_url="u")
    assert status.state is ProviderState.FAILED
    assert status.error is not None and status.error.kind is kind


def test_unknown_status_is_unknown_and_completed_without_content_is_no_output() -> None:
    assert parse_video({"status": "mystery"}, content_url="u").state is ProviderState.UNKNOWN
    no_output = parse_video({"status": "completed"})
    assert no_output.state is ProviderState.FAILED
    assert no_output.error is not None and no_output.error.detail == "no_output"


def test_listed_job_matches_only_the_same_request() -> None:
    spec = make_spec("p", duration_s=8)
    item = {
        "id": "video_1",
        "model": "sora-2",
        "prompt": "p",
        "seconds": "8",
        "size": "1280x720",
        "created_at": 1000,
    }
    assert matches_spec(item, spec, "1280x720", since_epoch_s=1004)
    assert not matches_spec(item, spec, "1280x720", since_epoch_s=1006)
    assert not matches_spec({**item, "size": "720x1280"}, spec, "1280x720", since_epoch_s=0)
    assert not matches_spec({**item, "created_at": None}, spec, "1280x720", since_epoch_s=0)
    assert matches_spec({**item, "created_at": 1_000_000}, spec, "1280x720", since_epoch_s=999)


_WORDS = st.sampled_from(
    [
        "status",
        "progress",
        "error",
        "code",
        "message",
        "expires_at",
        "completed",
        "failed",
        "queued",
        "in_progress",
        "moderation_blocked",
        "expired",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | _WORDS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(_WORDS | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(_WORDS, _JSON, max_size=5) | _JSON, content=st.none() | st.just("u"))
def test_video_parser_never_crashes(body: object, content: str | None) -> None:
    try:
        status = parse_video(body, content_url=content)
    except ProviderError:
        return
    assert isinstance(status, ProviderStatus)
    if status.state is ProviderState.FAILED:
        assert status.error is not None


# --- checked by the openai SDK (3.57) ----------------------------------------------------------

SDK_SECONDS = typing.get_args(VideoSeconds)
SDK_SIZES = typing.get_args(VideoSize)


@pytest.mark.parametrize(
    "change",
    [{"duration_s": 16}, {"duration_s": 20}, {"duration_s": 10}, {"resolution": "1080p"},
     {"resolution": "1080p", "aspect_ratio": "9:16"}],
)
async def test_lengths_and_sizes_outside_the_sdk_types_are_refused_before_any_call(
    server: FakeOpenAIServer, provider: OpenAIVideosProvider, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(make_spec("x", model="sora-2-pro", **change))
    assert server.create_attempts == []


async def _raw_create(server: FakeOpenAIServer, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{server.base_url}/videos", json=body,
                                 headers={"Authorization": f"Bearer {server.api_key}"})


@pytest.mark.parametrize(
    "change",
    [{"seconds": "16"}, {"seconds": "20"}, {"seconds": "10"}, {"seconds": 8},
     {"size": "1920x1080"}, {"size": "1080x1920"}, {"size": "1280x1280"}],
)
async def test_fake_answers_400_to_what_the_sdk_types_refuse(
    server: FakeOpenAIServer, change: dict[str, Any]
) -> None:
    field, value = next(iter(change.items()))
    assert value not in (SDK_SECONDS if field == "seconds" else SDK_SIZES)
    answer = await _raw_create(server, {"model": "sora-2-pro", "prompt": "p", "seconds": "8",
                                        "size": "1280x720", **change})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] in ("invalid_value", "invalid_type")
    assert server.submits == []


async def test_fake_takes_every_value_the_sdk_types_allow(server: FakeOpenAIServer) -> None:
    for seconds in SDK_SECONDS:
        for size in SDK_SIZES:
            answer = await _raw_create(server, {"model": "sora-2-pro", "prompt": "p", "seconds": seconds,
                                                "size": size})
            assert answer.status_code == 200, (seconds, size, answer.text)
            Video.model_validate(answer.json())  # the SDK's own response type


def _sdk(server: FakeOpenAIServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # every videos.* call: Sora shutdown notice
async def test_openai_sdk_drives_the_fake_create_retrieve_download(server: FakeOpenAIServer) -> None:
    async with _sdk(server) as client:
        created = await client.videos.create(prompt="a lighthouse at dusk", model="sora-2",
                                             seconds="8", size="1280x720")
        assert (created.status, created.seconds, created.size) == ("queued", "8", "1280x720")
        async with asyncio.timeout(5):
            while (video := await client.videos.retrieve(created.id)).status != "completed":
                assert video.status in ("queued", "in_progress")
                await asyncio.sleep(0.02)
        content = await client.videos.download_content(created.id)
        raw = await client.videos.with_raw_response.retrieve(created.id)
    assert content.content == video_bytes(created.id)
    assert server.download_auth == [f"Bearer {server.api_key}"]
    # the SDK builds its objects without validating: validate the fake's answer here
    assert Video.model_validate(json.loads(raw.text)).status == "completed"
    # the SDK sends a multipart form; the fake read the same create the adapter sends as JSON
    assert server.submits == [{"prompt": "a lighthouse at dusk", "model": "sora-2", "seconds": "8",
                               "size": "1280x720"}]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_openai_sdk_image_upload_must_match_the_size(server: FakeOpenAIServer) -> None:
    async with _sdk(server) as client:
        await client.videos.create(prompt="animate", seconds="4", size="720x1280",
                                   input_reference=("ref.png", _png(720, 1280), "image/png"))
        with pytest.raises(openai.BadRequestError) as info:
            await client.videos.create(prompt="animate", seconds="4", size="720x1280",
                                       input_reference=("ref.png", _png(1280, 720), "image/png"))
    assert server.submits[0]["_image_size"] == (720, 1280)
    assert INPAINT_MISMATCH in str(info.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("seconds", "size"), [("16", "1280x720"), ("20", "720x1280"), ("8", "1920x1080")])
async def test_openai_sdk_gets_a_400_for_values_outside_its_types(
    server: FakeOpenAIServer, seconds: str, size: str
) -> None:
    async with _sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.videos.create(prompt="p", seconds=seconds, size=size)  # type: ignore[arg-type]
    assert info.value.status_code == 400 and server.submits == []


def _check_against_video_create_params(body: dict[str, Any]) -> None:
    """Each field of a JSON create body against the SDK's VideoCreateParams type, strictly."""
    hints = typing.get_type_hints(VideoCreateParams)
    assert "prompt" in body and set(body) <= set(hints), set(body) - set(hints)
    for key, value in body.items():
        # the JSON form of input_reference is the ImageInputReferenceParam branch (the others
        # are file uploads)
        hint = ImageInputReferenceParam if key == "input_reference" else hints[key]
        TypeAdapter(hint).validate_python(value, strict=True)
        if key == "input_reference":
            assert set(value) <= set(typing.get_type_hints(ImageInputReferenceParam))


def _with_image(spec: VideoSpec, width: int, height: int) -> VideoSpec:
    image = ReferenceImage(data=_png(width, height), mime_type="image/png", width=width, height=height)
    return dataclasses.replace(spec, image=image)


@pytest.mark.parametrize(
    "spec",
    [
        make_spec("a", duration_s=4, aspect_ratio="9:16"),
        make_spec("b", duration_s=8),
        make_spec("c", model="sora-2-pro", duration_s=12, resolution="1024p", aspect_ratio="9:16"),
        make_spec("d", model="sora-2-pro", duration_s=12, resolution="1024p"),
        _with_image(make_spec("e", duration_s=4), 1280, 720),
    ],
    ids=["4s-portrait", "8s", "pro-1024x1792", "pro-1792x1024", "image"],
)
async def test_adapter_bodies_fit_the_sdk_video_create_params(spec: VideoSpec) -> None:
    bodies: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "video_1", "object": "video", "status": "queued"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
        adapter = OpenAIVideosProvider("https://api.example/v1", "k", client=client)
        assert await adapter.submit(spec) == "video_1"
    (body,) = bodies
    _check_against_video_create_params(body)
    assert body["seconds"] in SDK_SECONDS and body["size"] in SDK_SIZES


def test_the_video_create_params_check_can_fail() -> None:
    for bad in ({"prompt": "p", "seconds": "16"}, {"prompt": "p", "seconds": 8},
                {"prompt": "p", "size": "1920x1080"}, {"prompt": "p", "duration": 8}):
        with pytest.raises((ValueError, AssertionError)):
            _check_against_video_create_params(bad)
