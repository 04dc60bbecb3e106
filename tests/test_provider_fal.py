"""FalProvider against the fake fal.ai queue."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    ContentBlocked,
    GenerationFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    SoraError,
)
from bot.models import FailureKind, ProviderState, ProviderStatus, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.fal import (
    FalProvider,
    app_id,
    failed_result,
    parse_queue_status,
    parse_result,
    split_job_id,
)
from tests.fakes.kling_seedance_fal import FakeFalServer, fal_app_id
from tests.fakes.providers import make_spec, poll_until_terminal, video_bytes
from tests.provider_checks import json_like

RUN_S = 0.05
KLING_T2V = "fal-ai/kling-video/v2.1/standard/text-to-video"
KLING_I2V = "fal-ai/kling-video/v2.1/standard/image-to-video"
VEO3 = "fal-ai/veo3"
OTHER = "fal-ai/minimax/video-01"
IMAGE = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n-tiny-", mime_type="image/png", width=1280, height=720
)


def fal_spec(prompt: str, model: str = KLING_T2V, **kw: Any) -> VideoSpec:
    kw.setdefault("duration_s", 5)
    return dataclasses.replace(make_spec(prompt, **kw), model=f"fal/{model}", provider_model=model)


@pytest.fixture
async def server() -> AsyncIterator[FakeFalServer]:
    async with FakeFalServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeFalServer) -> AsyncIterator[FalProvider]:
    fal = FalProvider(server.api_key, queue_url=server.base_url)
    yield fal
    await fal.aclose()


def assert_hidden(exc: SoraError, *secrets: str) -> None:
    for text in (str(exc), repr(exc), exc.message, exc.detail, getattr(exc, "reason", None)):
        for secret in secrets:
            assert secret not in (text or "")


async def test_fal_is_a_video_provider(provider: FalProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls) == ("fal", True)


async def test_success_end_to_end(
    server: FakeFalServer, provider: FalProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(fal_spec("a snow globe shaking"))

    model_path, request_id = split_job_id(job_id)
    assert model_path == KLING_T2V and request_id in server.jobs
    assert server.submits == [
        {
            "prompt": "a snow globe shaking",
            "duration": "5",
            "aspect_ratio": "16:9",
            "model": KLING_T2V,
        }
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert seen[0].state is ProviderState.QUEUED
    assert seen[0].raw_status is not None and seen[0].raw_status.startswith("IN_QUEUE")
    assert any(s.raw_status == "IN_PROGRESS" for s in seen)
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED
    assert final.video_url == server.file_url(request_id)
    # status lives under the app id, not under the full model path that was posted to
    assert set(server.status_requests) == {f"/fal-ai/kling-video/requests/{request_id}/status"}

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(request_id)
    assert server.download_auth == [None]


async def test_a_restarted_provider_polls_from_the_job_id_alone(
    server: FakeFalServer, provider: FalProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(fal_spec("survives restarts"))
    fresh = FalProvider(server.api_key, queue_url=server.base_url)
    try:
        final = (await poll_until_terminal(fresh, job_id))[-1]
        await fresh.download(job_id, None, tmp_path / "v.mp4")
    finally:
        await fresh.aclose()
    assert final.state is ProviderState.SUCCEEDED
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(split_job_id(job_id)[1])


async def test_durations_follow_the_route_table(
    server: FakeFalServer, provider: FalProvider
) -> None:
    await provider.submit(fal_spec("k", duration_s=10))
    await provider.submit(
        dataclasses.replace(fal_spec("v", VEO3, duration_s=8, resolution="1080p"), audio=True)
    )
    await provider.submit(fal_spec("o", OTHER, duration_s=6))
    kling, veo, other = server.submits
    assert kling["duration"] == "10" and "resolution" not in kling
    assert (veo["duration"], veo["resolution"], veo["generate_audio"]) == ("8s", "1080p", True)
    assert other["duration"] == 6 and "generate_audio" not in other


async def test_image_to_video_sends_a_data_uri(
    server: FakeFalServer, provider: FalProvider
) -> None:
    job_id = await provider.submit(dataclasses.replace(fal_spec("sway", KLING_I2V), image=IMAGE))
    header, _, data = server.submits[0]["image_url"].partition(",")
    assert header == "data:image/png;base64"
    assert base64.b64decode(data) == IMAGE.data
    assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED


async def test_content_policy_at_submit_is_blocked_input(
    server: FakeFalServer, provider: FalProvider
) -> None:
    with pytest.raises(ContentBlocked) as info:
        await provider.submit(fal_spec("[content-policy] x"))
    assert (info.value.stage, info.value.kind) == ("input", FailureKind.BLOCKED_INPUT)
    assert "content_policy_violation" in info.value.detail
    assert server.submits == []


async def test_other_422_is_invalid_request(server: FakeFalServer, provider: FalProvider) -> None:
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(fal_spec("too long", duration_s=7))
    assert "duration" in info.value.detail
    assert server.submits == []


async def test_retryable_503_on_status_is_transient(provider: FalProvider) -> None:
    job_id = await provider.submit(fal_spec("[retryable-503] x"))
    with pytest.raises(ProviderUnavailable) as info:
        await provider.poll(job_id)
    assert info.value.retryable and not isinstance(info.value, AmbiguousSubmit)
    assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED


async def test_result_422_is_blocked_output(server: FakeFalServer, provider: FalProvider) -> None:
    job_id = await provider.submit(fal_spec("[result-422] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.BLOCKED_OUTPUT
    assert server.results[split_job_id(job_id)[1]] == 1


async def test_stuck_request_stays_in_progress(provider: FalProvider) -> None:
    job_id = await provider.submit(fal_spec("[stuck] x"))
    assert (await provider.poll(job_id)).state is ProviderState.QUEUED
    await asyncio.sleep(RUN_S * 1.5)
    for _ in range(3):
        status = await provider.poll(job_id)
        assert (status.state, status.raw_status) == (ProviderState.RUNNING, "IN_PROGRESS")


async def test_cancel_works_only_while_queued(server: FakeFalServer, provider: FalProvider) -> None:
    queued = await provider.submit(fal_spec("[stuck] a"))
    assert await provider.cancel(queued) is True
    assert server.cancels == [split_job_id(queued)[1]]
    assert (await provider.poll(queued)).state is ProviderState.CANCELLED

    running = await provider.submit(fal_spec("[stuck] b"))
    await provider.poll(running)
    await provider.poll(running)
    assert await provider.cancel(running) is False
    assert await provider.cancel("not-a-job-id") is False


async def test_find_existing_is_none(provider: FalProvider) -> None:
    await provider.submit(fal_spec("x"))
    assert await provider.find_existing(fal_spec("x"), since_epoch_s=0) is None


async def test_unknown_request_on_poll_is_generation_failed(provider: FalProvider) -> None:
    with pytest.raises(GenerationFailed):
        await provider.poll(f"{KLING_T2V}|00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidProviderRequest):
        await provider.poll("no separator")


async def test_malformed_model_path_is_refused_before_sending(
    server: FakeFalServer, provider: FalProvider
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(fal_spec("x", "kling"))
    assert server.create_attempts == []


async def test_wrong_key_is_auth_failed_and_never_echoed(server: FakeFalServer) -> None:
    secret = "fal-key-id-123456:fal-key-secret-abcdef"
    fal = FalProvider(secret, queue_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as info:
            await fal.submit(fal_spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await fal.poll(f"{KLING_T2V}|abc")
    finally:
        await fal.aclose()
    for exc in (info.value, poll_info.value):
        assert_hidden(exc, secret, "fal-key-id-123456", "fal-key-secret-abcdef")


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (503, {"X-Fal-Retryable": "true"}, {"detail": "busy"}, ProviderUnavailable),
        (500, {"X-Fal-Retryable": "true"}, {"detail": "runner lost"}, ProviderUnavailable),
        (500, {}, {"detail": "internal"}, AmbiguousSubmit),
        (429, {"Retry-After": "3"}, {"detail": "too many"}, RateLimited),
        (401, {}, {"detail": "bad key"}, AuthFailed),
        (
            422,
            {},
            {"detail": [{"loc": ["body"], "msg": "bad", "type": "value_error"}]},
            InvalidProviderRequest,
        ),
        (
            422,
            {},
            {"detail": [{"loc": ["body"], "msg": "flagged", "type": "content_policy_violation"}]},
            ContentBlocked,
        ),
    ],
)
async def test_http_answers_at_submit(
    status: int, headers: dict[str, str], body: Any, expected: type[ProviderError]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        fal = FalProvider("k", queue_url="https://queue.example", client=client)
        with pytest.raises(ProviderError) as info:
            await fal.submit(fal_spec("x"))
    assert type(info.value) is expected
    if expected is ProviderUnavailable:
        assert info.value.surely_not_created and info.value.retryable


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (KLING_T2V, "fal-ai/kling-video"),
        (VEO3, "fal-ai/veo3"),
        ("fal-ai/veo3/image-to-video", "fal-ai/veo3"),
        ("workflows/someone/my-flow", "workflows/someone/my-flow"),
        ("workflows/someone/my-flow/sub", "workflows/someone/my-flow"),
    ],
)
def test_app_id_rule_matches_the_fake(path: str, expected: str) -> None:
    assert app_id(path) == expected == fal_app_id(path)


@pytest.mark.parametrize("path", ["kling", "", "/", "workflows/someone"])
def test_short_model_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidProviderRequest):
        app_id(path)


@pytest.mark.parametrize(
    ("status", "body", "retryable", "state", "kind"),
    [
        (
            422,
            {"detail": [{"msg": "flagged", "type": "content_policy_violation"}]},
            None,
            ProviderState.FAILED,
            FailureKind.BLOCKED_OUTPUT,
        ),
        (
            422,
            {"detail": [{"msg": "bad", "type": "value_error"}]},
            None,
            ProviderState.FAILED,
            FailureKind.INVALID_REQUEST,
        ),
        (400, {"detail": "crashed"}, None, ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        (400, {"detail": "Request was cancelled"}, None, ProviderState.CANCELLED, None),
        (500, {"detail": "crashed"}, False, ProviderState.FAILED, FailureKind.GENERATION_FAILED),
    ],
)
def test_refused_results_are_verdicts(
    status: int, body: Any, retryable: bool | None, state: ProviderState, kind: FailureKind | None
) -> None:
    verdict = failed_result(status, body, retryable=retryable)
    assert verdict is not None and verdict.state is state
    assert (verdict.error.kind if verdict.error else None) is kind


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (500, {"detail": "runner error"}, True),
        (500, {"detail": "runner error"}, None),
        (502, "<html>bad gateway</html>", False),
        (401, {"detail": "bad key"}, None),
        (429, {"detail": "slow down"}, None),
    ],
)
def test_transient_result_failures_are_no_verdict(
    status: int, body: Any, retryable: bool | None
) -> None:
    assert failed_result(status, body, retryable=retryable) is None


def test_parsers_edge_cases() -> None:
    queued = parse_queue_status({"status": "IN_QUEUE", "queue_position": 3})
    assert (queued.state, queued.raw_status) == (ProviderState.QUEUED, "IN_QUEUE (position 3)")
    assert parse_queue_status({"status": "COMPLETED"}).state is ProviderState.RUNNING
    assert parse_queue_status({"status": "WHATEVER"}).state is ProviderState.UNKNOWN
    no_video = parse_result({"images": []})
    assert no_video.error is not None and no_video.error.detail == "no_output"
    assert parse_result({"video": {"url": "https://v3.fal.media/x.mp4"}}).video_url
    with pytest.raises(ProviderUnavailable):
        parse_queue_status([])
    with pytest.raises(ProviderUnavailable):
        parse_result("done")


# --- fuzz ------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "status",
        "queue_position",
        "response_url",
        "video",
        "url",
        "detail",
        "error",
        "msg",
        "type",
        "IN_QUEUE",
        "IN_PROGRESS",
        "COMPLETED",
        "FAILED",
        "CANCELED",
        "content_policy_violation",
        "https://v3.fal.media/v.mp4",
    ]
)
_JSON = json_like(_WORDS)


def _check(status: ProviderStatus | None) -> None:
    if status is None:
        return
    assert isinstance(status, ProviderStatus)
    if status.state is ProviderState.SUCCEEDED:
        assert status.video_url
    if status.state is ProviderState.FAILED:
        assert status.error is not None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(_WORDS, _JSON, max_size=6) | _JSON,
    code=st.integers(min_value=100, max_value=599),
    retryable=st.none() | st.booleans(),
)
def test_status_parsers_never_crash(body: object, code: int, retryable: bool | None) -> None:
    for parse in (parse_queue_status, parse_result):
        try:
            _check(parse(body))
        except ProviderError:
            pass
    _check(failed_result(code, body, retryable=retryable))
