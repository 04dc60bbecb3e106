"""FalProvider against the fake fal.ai queue; fal-client 1.0.3 against the same fake; fal
videos, failures and signed webhooks through the real app."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fal_client
import fal_client.client as fal_sdk
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.surfaces import callbacks
from bot.cli import jobs_json
from bot.deps import Timing
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
from bot.models import FailureKind, JobStatus, ProviderState, ProviderStatus, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.fal import (
    FalJob,
    FalKeysUnavailable,
    FalProvider,
    FalSignatureError,
    FalWebhookVerifier,
    app_id,
    failed_result,
    job_id_for,
    parse_job_id,
    parse_queue_status,
    parse_result,
    request_body,
    retryable_header,
    split_job_id,
)
from storage import jobs as jobstore
from tests.fakes.fal import FakeFalServer, fal_app_id, schema_problem
from tests.fakes.providers import make_spec, poll_until_terminal, video_bytes
from tests.provider_checks import json_like
from tests.slack_requests import SIGNING_SECRET

RUN_S = 0.05
KLING_STD = "fal-ai/kling-video/v3/standard/text-to-video"
KLING_PRO = "fal-ai/kling-video/v3/pro/text-to-video"
KLING_I2V = "fal-ai/kling-video/v3/standard/image-to-video"
VEO31_FAST = "fal-ai/veo3.1/fast"
OTHER = "fal-ai/minimax/video-01"
IMAGE = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n-tiny-", mime_type="image/png", width=1280, height=720
)


def fal_spec(prompt: str, model: str = KLING_STD, **kw: Any) -> VideoSpec:
    audio = kw.pop("audio", None)
    image = kw.pop("image", None)
    kw.setdefault("duration_s", 5)
    spec = make_spec(prompt, **kw)
    return dataclasses.replace(spec, model=f"fal/{model}", provider_model=model, audio=audio, image=image)


@pytest.fixture
async def server() -> AsyncIterator[FakeFalServer]:
    async with FakeFalServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeFalServer) -> AsyncIterator[FalProvider]:
    fal = FalProvider(server.api_key, queue_url=server.base_url, jwks_url=server.jwks_url)
    yield fal
    await fal.aclose()


def assert_hidden(exc: SoraError, *secrets: str) -> None:
    for text in (str(exc), repr(exc), exc.message, exc.detail, getattr(exc, "reason", None)):
        for secret in secrets:
            assert secret not in (text or "")


async def test_fal_is_a_video_provider(provider: FalProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls) == ("fal", True)


# --- the queue -------------------------------------------------------------------------------


async def test_success_end_to_end_keeps_the_urls_fal_answered(
    server: FakeFalServer, provider: FalProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(fal_spec("a snow globe shaking"))

    model_path, request_id = split_job_id(job_id)
    assert model_path == KLING_STD and request_id in server.jobs
    # readable: the endpoint id, the result URL fal answered, the request id
    assert job_id == f"{KLING_STD}|{server.requests_url(server.jobs[request_id])}|{request_id}"
    assert server.submits == [
        {"prompt": "a snow globe shaking", "duration": "5", "aspect_ratio": "16:9", "model": KLING_STD}
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert seen[0].state is ProviderState.QUEUED
    assert seen[0].raw_status is not None and seen[0].raw_status.startswith("IN_QUEUE")
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED
    assert final.video_url == server.file_url(request_id)
    # status lives under the app id, not under the full endpoint id that was posted to
    assert set(server.status_requests) == {f"/fal-ai/kling-video/requests/{request_id}/status"}
    assert server.results[request_id] == 1  # fetched in the same poll that saw COMPLETED

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(request_id)
    assert server.download_auth == [None]  # the CDN never sees the key


@pytest.mark.parametrize("prefix", ["", "/elsewhere"])
async def test_status_result_and_cancel_follow_the_submit_answer(prefix: str, tmp_path: Path) -> None:
    """With "/elsewhere" no path built from the endpoint id exists: only following works,
    and a restarted adapter follows them from the stored job id alone."""
    async with FakeFalServer(run_seconds=RUN_S, url_prefix=prefix) as server:
        first = FalProvider(server.api_key, queue_url=server.base_url)
        job_id = await first.submit(fal_spec("survives restarts"))
        queued = await first.submit(fal_spec("[stuck] cancel me"))
        await first.aclose()
        fresh = FalProvider(server.api_key, queue_url=server.base_url)
        try:
            assert await fresh.cancel(queued) is True
            final = (await poll_until_terminal(fresh, job_id))[-1]
            await fresh.download(job_id, None, tmp_path / "v.mp4")
        finally:
            await fresh.aclose()
    request_id = split_job_id(job_id)[1]
    assert final.state is ProviderState.SUCCEEDED
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(request_id)
    assert server.cancels == [split_job_id(queued)[1]]
    assert all(p.startswith(f"{prefix}/fal-ai/kling-video/requests/") for p in server.status_requests)


async def test_ids_stored_by_the_previous_version_still_poll(
    server: FakeFalServer, provider: FalProvider
) -> None:
    job_id = await provider.submit(fal_spec("stored long ago"))
    old_style = job_id_for(KLING_STD, split_job_id(job_id)[1])  # "<model path>|<request id>"
    assert old_style.count("|") == 1
    assert (await poll_until_terminal(provider, old_style))[-1].state is ProviderState.SUCCEEDED


@pytest.mark.parametrize(
    ("job", "fields"),
    [
        (FalJob(KLING_STD, "r1"), 2),
        (FalJob(KLING_STD, "r1", "https://queue.fal.run/fal-ai/kling-video/requests/r1",
                "https://queue.fal.run/fal-ai/kling-video/requests/r1/status",
                "https://queue.fal.run/fal-ai/kling-video/requests/r1/cancel"), 3),
        (FalJob(VEO31_FAST, "r2", "https://queue.fal.run/fal-ai/veo3.1/requests/r2",
                "https://queue.fal.run/fal-ai/veo3.1/requests/r2/status?x=1",
                "https://queue.fal.run/fal-ai/veo3.1/requests/r2/cancel"), 5),
    ],
)
def test_job_ids_round_trip_and_end_with_the_request_id(job: FalJob, fields: int) -> None:
    encoded = job.encode()
    assert len(encoded.split("|")) == fields
    assert encoded.endswith(f"|{job.request_id}")  # what callbacks and the store match on
    decoded = parse_job_id(encoded)
    assert (decoded.model_path, decoded.request_id, decoded.response_url) == (
        job.model_path, job.request_id, job.response_url,
    )
    if job.response_url is not None:
        assert (decoded.status_url, decoded.cancel_url) == (job.status_url, job.cancel_url)


def test_a_bar_in_a_url_cannot_break_the_job_id() -> None:
    job = FalJob(KLING_STD, "r1", "https://queue.fal.run/a|b/requests/r1")
    assert parse_job_id(job.encode()).response_url == "https://queue.fal.run/a%7Cb/requests/r1"


@pytest.mark.parametrize("bad", ["no separator", "a||b", "a|b|c|d", "|r1", "a|"])
def test_foreign_job_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidProviderRequest):
        parse_job_id(bad)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://queue.fal.run/fal-ai/veo3.1/requests/r", True),
        ("https://queue.falrun.com/fal-ai/veo3.1/requests/r", True),  # fal-client's backup domain
        ("https://rest.alpha.fal.ai/x", True),
        ("http://queue.fal.run/fal-ai/veo3.1/requests/r", False),  # not https
        ("https://queue.fal.run.evil.example/x", False),
        ("https://evilfal.run/x", False),
        ("https://evil.example/?next=queue.fal.run", False),
        ("https://queue.fal.run@evil.example/x", False),
        ("https://user@queue.fal.run/x", False),
        ("https://queue.example/fal-ai/x/requests/r", True),  # the configured queue host
        ("https://queue.example:8443/fal-ai/x/requests/r", False),
        ("ftp://queue.fal.run/x", False),
        ("", False),
    ],
)
def test_only_fals_own_hosts_or_the_configured_queue_get_the_key(url: str, ok: bool) -> None:
    fal = FalProvider("k", queue_url="https://queue.example", client=httpx.AsyncClient())
    assert fal.followable(url) is ok


async def test_a_submit_answer_pointing_elsewhere_is_not_followed() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            evil = "https://collector.example/fal-ai/kling-video/requests/r9"
            return httpx.Response(200, json={
                "request_id": "r9", "response_url": evil, "status_url": f"{evil}/status",
                "cancel_url": f"{evil}/cancel", "queue_position": 0,
            })
        return httpx.Response(200, json={"status": "IN_PROGRESS", "logs": None})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        fal = FalProvider("fal-secret-key:abcdefgh", queue_url="https://queue.fal.run", client=client)
        job_id = await fal.submit(fal_spec("x"))
        await fal.poll(job_id)
        # a stored id naming another host (an old bot's, or an edited row) is not followed either
        await fal.poll(FalJob(KLING_STD, "r9", "https://collector.example/q/r9").encode())
    assert job_id == f"{KLING_STD}|r9"
    assert {r.url.host for r in seen} == {"queue.fal.run"}
    assert [str(r.url) for r in seen[1:]] == [
        "https://queue.fal.run/fal-ai/kling-video/requests/r9/status"
    ] * 2


async def test_status_and_cancel_urls_of_their_own_are_kept_and_followed() -> None:
    seen: list[str] = []
    base = "https://queue.fal.run/fal-ai/veo3.1/requests/r7"

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.method == "POST":
            return httpx.Response(200, json={
                "request_id": "r7", "response_url": base, "status_url": f"{base}/status?v=2",
                "cancel_url": "https://queue.falrun.com/cancel/r7", "queue_position": 0,
            })
        if request.method == "PUT":
            return httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json={"status": "COMPLETED", "logs": None})
        return httpx.Response(200, json={"video": {"url": "https://v3.fal.media/files/r7.mp4"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        fal = FalProvider("k", client=client)
        job_id = await fal.submit(fal_spec("x", VEO31_FAST, duration_s=8))
        status = await fal.poll(job_id)
        assert await fal.cancel(job_id) is True
    assert len(job_id.split("|")) == 5
    assert status.video_url == "https://v3.fal.media/files/r7.mp4"
    assert seen[1:] == [f"GET {base}/status?v=2", f"GET {base}", "PUT https://queue.falrun.com/cancel/r7"]


# --- bodies: what fal's schemas take for today's ids ------------------------------------------


async def test_bodies_suit_each_current_endpoint(server: FakeFalServer, provider: FalProvider) -> None:
    await provider.submit(fal_spec("k", KLING_STD, duration_s=10, audio=False))
    await provider.submit(fal_spec("p", KLING_PRO, duration_s=15, resolution="1080p", aspect_ratio="9:16"))
    await provider.submit(fal_spec("v", VEO31_FAST, duration_s=8, resolution="4k", audio=True))
    await provider.submit(fal_spec("o", OTHER, duration_s=6))
    kling, pro, veo, other = server.submits
    # Kling 3.0 on fal: duration a string "3"-"15", no resolution field (the tier sets it)
    assert kling == {"prompt": "k", "duration": "10", "aspect_ratio": "16:9", "generate_audio": False,
                     "model": KLING_STD}
    assert pro == {"prompt": "p", "duration": "15", "aspect_ratio": "9:16", "model": KLING_PRO}
    # Veo 3.1: duration "8s", resolution 720p/1080p/4k
    assert (veo["duration"], veo["resolution"], veo["generate_audio"]) == ("8s", "4k", True)
    assert other["duration"] == 6 and "generate_audio" not in other


async def test_kling_v3_image_to_video_sends_start_image_url(
    server: FakeFalServer, provider: FalProvider
) -> None:
    job_id = await provider.submit(fal_spec("sway", KLING_I2V, image=IMAGE))
    header, _, data = server.submits[0]["start_image_url"].partition(",")
    assert header == "data:image/png;base64" and base64.b64decode(data) == IMAGE.data
    assert "image_url" not in server.submits[0]
    assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED
    turbo = request_body(fal_spec("t", "fal-ai/kling-video/v3/turbo/standard/image-to-video", image=IMAGE))
    veo = request_body(fal_spec("t", "fal-ai/veo3.1/fast/image-to-video", image=IMAGE))
    assert "image_url" in turbo and "image_url" in veo


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (KLING_STD, {"prompt": "x", "duration": 5}, "duration"),  # fal's enum is a string
        (KLING_STD, {"prompt": "x", "duration": "16"}, "duration"),
        (KLING_STD, {"prompt": "x", "resolution": "1080p"}, "resolution"),  # no such field
        (KLING_PRO, {"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
        (VEO31_FAST, {"prompt": "x", "duration": "8"}, "duration"),
        (VEO31_FAST, {"prompt": "x", "resolution": "4K"}, "resolution"),
        (VEO31_FAST, {"prompt": "x", "aspect_ratio": "1:1"}, "aspect_ratio"),
        (VEO31_FAST, {"prompt": "x", "generate_audio": "yes"}, "generate_audio"),
        (VEO31_FAST, {"duration": "8s"}, "prompt"),
        (KLING_I2V, {"prompt": "x", "image_url": "https://x/y.png"}, "start_image_url"),
    ],
)
async def test_the_fake_refuses_bodies_fals_schemas_refuse(
    model: str, body: dict[str, Any], field: str, server: FakeFalServer
) -> None:
    problem = schema_problem(model, body)
    assert problem is not None and field in problem
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.origin}/{model}", json=body, headers={"Authorization": f"Key {server.api_key}"}
        )
    assert response.status_code == 422 and server.submits == []


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
        await provider.submit(fal_spec("too long", duration_s=16))
    assert "duration" in info.value.detail
    assert server.submits == []


# --- COMPLETED with an error, retry headers, results ---------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "state", "kind"),
    [
        ("content_policy_violation", ProviderState.FAILED, FailureKind.BLOCKED_OUTPUT),
        ("value_error", ProviderState.FAILED, FailureKind.INVALID_REQUEST),
        ("image_too_small", ProviderState.FAILED, FailureKind.INVALID_REQUEST),
        ("runner_disconnected", ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        ("request_timeout", ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        ("no_media_generated", ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        ("client_cancelled", ProviderState.CANCELLED, None),
    ],
)
async def test_completed_with_an_error_is_final_in_one_poll(
    error_type: str, state: ProviderState, kind: FailureKind | None,
    server: FakeFalServer, provider: FalProvider,
) -> None:
    job_id = await provider.submit(fal_spec(f"[completed-error={error_type}] x"))
    request_id = split_job_id(job_id)[1]
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is state
    assert (final.error.kind if final.error else None) is kind
    if final.error is not None:
        assert error_type in final.error.detail
    # the poll that first saw COMPLETED was the last, and no result was asked for (its 500
    # would have been retried until the deadline)
    assert server.polls[request_id] == server.first_completed_poll[request_id]
    assert server.results.get(request_id, 0) == 0


@pytest.mark.parametrize("marker", ["[retryable-503]", "[needs-retry-503]"])
async def test_status_errors_fal_marks_retryable_are_transient(marker: str, provider: FalProvider) -> None:
    job_id = await provider.submit(fal_spec(f"{marker} x"))
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


async def test_a_result_500_with_needs_retry_0_is_final(server: FakeFalServer, provider: FalProvider) -> None:
    job_id = await provider.submit(fal_spec("[result-500-final] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.GENERATION_FAILED
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
        await provider.poll(f"{KLING_STD}|00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidProviderRequest):
        await provider.poll("no separator")


@pytest.mark.parametrize("model", ["kling", "fal-ai/a|b"])
async def test_malformed_model_path_is_refused_before_sending(
    model: str, server: FakeFalServer, provider: FalProvider
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(fal_spec("x", model))
    assert server.create_attempts == []


async def test_wrong_key_is_auth_failed_and_never_echoed(server: FakeFalServer) -> None:
    secret = "fal-key-id-123456:fal-key-secret-abcdef"
    fal = FalProvider(secret, queue_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as info:
            await fal.submit(fal_spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await fal.poll(f"{KLING_STD}|abc")
    finally:
        await fal.aclose()
    for exc in (info.value, poll_info.value):
        assert_hidden(exc, secret, "fal-key-id-123456", "fal-key-secret-abcdef")


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (503, {"X-Fal-Retryable": "true"}, {"detail": "busy"}, ProviderUnavailable),
        (500, {"X-Fal-Retryable": "true"}, {"detail": "runner lost"}, ProviderUnavailable),
        (500, {"X-Fal-Needs-Retry": "1"}, {"detail": "runner lost"}, ProviderUnavailable),
        (400, {"X-Fal-Needs-Retry": "true"}, {"detail": "try again"}, ProviderUnavailable),
        (500, {"X-Fal-Needs-Retry": "0", "X-Fal-Retryable": "true"}, {"detail": "no"}, AmbiguousSubmit),
        (500, {}, {"detail": "internal"}, AmbiguousSubmit),
        (429, {"Retry-After": "3", "X-Fal-Needs-Retry": "1"},
         {"detail": "too many", "error_type": "concurrent_requests_limit"}, RateLimited),
        (401, {"X-Fal-Needs-Retry": "1"}, {"detail": "bad key"}, AuthFailed),
        (422, {}, {"detail": [{"loc": ["body"], "msg": "bad", "type": "value_error"}]}, InvalidProviderRequest),
        (422, {}, {"detail": [{"loc": ["body"], "msg": "flagged", "type": "content_policy_violation"}]},
         ContentBlocked),
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
    ("headers", "expected"),
    [
        ({}, None),
        ({"X-Fal-Needs-Retry": "1"}, True),
        ({"x-fal-needs-retry": "0"}, False),
        ({"X-Fal-Needs-Retry": "true"}, True),
        ({"X-Fal-Needs-Retry": "false"}, False),
        ({"X-Fal-Retryable": "true"}, True),
        ({"X-Fal-Retryable": "false"}, False),
        ({"X-Fal-Retryable": "1"}, None),  # fal documents "true"/"false" for this one
        ({"X-Fal-Needs-Retry": "0", "X-Fal-Retryable": "true"}, False),  # Needs-Retry wins
        ({"X-Fal-Needs-Retry": "maybe", "X-Fal-Retryable": "true"}, True),
    ],
)
def test_retry_headers(headers: dict[str, str], expected: bool | None) -> None:
    assert retryable_header(headers) is expected


@pytest.mark.parametrize(("path", "expected"), [
    (KLING_STD, "fal-ai/kling-video"),
    (VEO31_FAST, "fal-ai/veo3.1"),
    ("fal-ai/veo3/image-to-video", "fal-ai/veo3"),
    ("workflows/someone/my-flow", "workflows/someone/my-flow"),
    ("workflows/someone/my-flow/sub", "workflows/someone/my-flow"),
])
def test_app_id_rule_matches_the_fake_and_fal_client(path: str, expected: str) -> None:
    sdk = fal_sdk.AppId.from_endpoint_id(path)
    assert app_id(path) == expected == fal_app_id(path)
    assert "/".join(p for p in (sdk.namespace, sdk.owner, sdk.alias) if p) == expected


@pytest.mark.parametrize("path", ["kling", "", "/", "workflows/someone"])
def test_short_model_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidProviderRequest):
        app_id(path)


@pytest.mark.parametrize(
    ("status", "body", "retryable", "state", "kind"),
    [
        (422, {"detail": [{"msg": "flagged", "type": "content_policy_violation"}]}, None,
         ProviderState.FAILED, FailureKind.BLOCKED_OUTPUT),
        (422, {"detail": [{"msg": "bad", "type": "value_error"}]}, None,
         ProviderState.FAILED, FailureKind.INVALID_REQUEST),
        (400, {"detail": "crashed"}, None, ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        (400, {"detail": "Request was cancelled"}, None, ProviderState.CANCELLED, None),
        (499, {"detail": "gone", "error_type": "client_cancelled"}, None, ProviderState.CANCELLED, None),
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
        (422, {"detail": [{"msg": "busy", "type": "value_error"}]}, True),  # fal says retry
    ],
)
def test_transient_result_failures_are_no_verdict(status: int, body: Any, retryable: bool | None) -> None:
    assert failed_result(status, body, retryable=retryable) is None


def test_parsers_edge_cases() -> None:
    queued = parse_queue_status({"status": "IN_QUEUE", "queue_position": 3})
    assert (queued.state, queued.raw_status) == (ProviderState.QUEUED, "IN_QUEUE (position 3)")
    assert parse_queue_status({"status": "COMPLETED", "logs": None}).state is ProviderState.RUNNING
    assert parse_queue_status({"status": "COMPLETED", "error": None, "error_type": ""}).state is (
        ProviderState.RUNNING
    )
    failed = parse_queue_status({"status": "COMPLETED", "error": "Invalid status code: 500"})
    assert failed.error is not None and failed.error.kind is FailureKind.GENERATION_FAILED
    assert parse_queue_status({"status": "WHATEVER"}).state is ProviderState.UNKNOWN
    no_video = parse_result({"images": []})
    assert no_video.error is not None and no_video.error.detail == "no_output"
    assert parse_result({"video": {"url": "https://v3.fal.media/x.mp4"}}).video_url
    with pytest.raises(ProviderUnavailable):
        parse_queue_status([])
    with pytest.raises(ProviderUnavailable):
        parse_result("done")


# --- webhook signatures --------------------------------------------------------------------------


def _flip_last_bit(signature_hex: str) -> str:
    # Always a different signature (overwriting the last byte with a constant is a no-op one
    # time in 256).
    return signature_hex[:-1] + format(int(signature_hex[-1], 16) ^ 1, "x")


def _signed(server: FakeFalServer, body: bytes, **kw: Any) -> dict[str, str]:
    return server.signed_headers("req-1", body, **kw)


async def test_the_verifier_accepts_fals_signature_and_refuses_the_rest(server: FakeFalServer) -> None:
    body = b'{"request_id":"req-1","status":"OK"}'
    async with httpx.AsyncClient() as client:
        verifier = FalWebhookVerifier(client, jwks_url=server.jwks_url)
        await verifier.verify(_signed(server, body), body)
        good = _signed(server, body)
        refused = [
            ({}, body),
            ({k: v for k, v in good.items() if k != "X-Fal-Webhook-User-Id"}, body),
            (good, body + b" "),  # the body changed after signing
            ({**good, "X-Fal-Webhook-Request-Id": "req-2"}, body),
            ({**good, "X-Fal-Webhook-User-Id": "someone-else"}, body),
            ({**good, "X-Fal-Webhook-Signature": _flip_last_bit(good["X-Fal-Webhook-Signature"])}, body),
            ({**good, "X-Fal-Webhook-Signature": "zz" * 64}, body),
            (_signed(server, body, timestamp=int(time.time()) - 301), body),
            (_signed(server, body, timestamp=int(time.time()) + 301), body),
            (_signed(server, body, key=Ed25519PrivateKey.generate()), body),
        ]
        for headers, sent in refused:
            with pytest.raises(FalSignatureError):
                await verifier.verify(headers, sent)
        await verifier.verify(_signed(server, body, timestamp=int(time.time()) - 299), body)
    # fetched once, cached, and never with a key; the forged key's refetch waits a minute
    assert server.jwks_auth == [None]


async def test_a_rotated_key_is_fetched_once_and_forgeries_cannot_make_it_fetch_more(
    server: FakeFalServer,
) -> None:
    body = b"{}"
    now = [1_000_000.0]
    async with httpx.AsyncClient() as client:
        verifier = FalWebhookVerifier(client, jwks_url=server.jwks_url, clock=lambda: now[0])
        stamp = int(now[0])
        await verifier.verify(_signed(server, body, timestamp=stamp), body)
        server.rotate_signing_key()
        now[0] += 61  # past the refetch interval: a signature no cached key verifies refetches
        await verifier.verify(_signed(server, body, timestamp=int(now[0])), body)
        assert len(server.jwks_auth) == 2
        for _ in range(20):  # forged signatures within the interval fetch nothing more
            with pytest.raises(FalSignatureError):
                await verifier.verify(
                    _signed(server, body, timestamp=int(now[0]), key=Ed25519PrivateKey.generate()), body
                )
        assert len(server.jwks_auth) == 2
        now[0] += 25 * 3600  # the cache's day is over: fetched again
        await verifier.verify(_signed(server, body, timestamp=int(now[0])), body)
        assert len(server.jwks_auth) == 3


async def test_without_a_key_set_nothing_is_accepted() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/empty":
            return httpx.Response(200, json={"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]})
        return httpx.Response(503, text="down")

    key = Ed25519PrivateKey.generate()
    body = b"{}"
    stamp = str(int(time.time()))
    message = "\n".join(["r", "u", stamp, hashlib.sha256(body).hexdigest()]).encode()
    headers = {"X-Fal-Webhook-Request-Id": "r", "X-Fal-Webhook-User-Id": "u",
               "X-Fal-Webhook-Timestamp": stamp, "X-Fal-Webhook-Signature": key.sign(message).hex()}
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        for path in ("/down", "/empty"):
            verifier = FalWebhookVerifier(client, jwks_url=f"https://keys.example{path}")
            with pytest.raises(FalKeysUnavailable):
                await verifier.verify(headers, body)


# --- fal-client 1.0.3 drives the fake ------------------------------------------------------------


@pytest.fixture
def sdk_queue(monkeypatch: pytest.MonkeyPatch, server: FakeFalServer) -> FakeFalServer:
    """Point fal-client's queue at the fake.

    fal-client reads FAL_QUEUE_RUN_HOST once, at import, and always prefixes https://, so
    the env var can't reach an http server on 127.0.0.1. `QUEUE_URL_FORMAT` is the module
    constant built from it, read at each submit and each rebuilt handle: replacing it is
    the same setting with the scheme the fake speaks. Status, result and cancel then go
    wherever the submit answer says, exactly as they would against fal.
    """
    monkeypatch.setattr(fal_sdk, "QUEUE_URL_FORMAT", f"{server.origin}/")
    return server


async def test_fal_client_submits_polls_fetches_and_cancels_on_the_fake(
    sdk_queue: FakeFalServer, tmp_path: Path
) -> None:
    server = sdk_queue
    client = fal_client.AsyncClient(key=server.api_key)
    try:
        handle = await client.submit(KLING_STD, arguments=request_body(fal_spec("a kite")))
        statuses = [status async for status in handle.iter_events(with_logs=True, interval=0.02)]
        result = await handle.get()
        # a handle rebuilt from the request id alone (fal-client's app-id rule) finds it too
        again = await client.status(KLING_STD, handle.request_id, with_logs=False)
        stuck = await client.submit(KLING_STD, arguments={"prompt": "[stuck] x", "duration": "3"})
        await stuck.cancel()
        failed = await client.submit(VEO31_FAST, arguments={"prompt": "[completed-error=content_policy_violation] x"})
        last = [s async for s in failed.iter_events(interval=0.02)][-1]
    finally:
        await (await client._client).aclose()
    assert isinstance(statuses[0], fal_client.Queued)
    assert isinstance(statuses[-1], fal_client.Completed) and statuses[-1].error is None
    assert isinstance(again, fal_client.Completed)
    assert result["video"]["url"] == server.file_url(handle.request_id)
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(result["video"]["url"])).content == video_bytes(handle.request_id)
    assert server.cancels == [stuck.request_id]
    assert isinstance(last, fal_client.Completed)
    assert (last.error_type, last.error) == ("content_policy_violation", "Request failed: content_policy_violation")
    assert {"logs": "true"} in server.status_queries and {"logs": "false"} in server.status_queries


async def test_fal_client_follows_urls_that_no_built_path_reaches(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeFalServer(run_seconds=RUN_S, url_prefix="/elsewhere") as server:
        monkeypatch.setattr(fal_sdk, "QUEUE_URL_FORMAT", f"{server.origin}/")
        client = fal_client.AsyncClient(key=server.api_key)
        try:
            handle = await client.submit(VEO31_FAST, arguments={"prompt": "x", "duration": "8s"})
            result = await handle.get()
            with pytest.raises(fal_client.FalClientHTTPError) as info:
                await client.status(VEO31_FAST, handle.request_id)  # rebuilt: not where fal said
        finally:
            await (await client._client).aclose()
    assert result["video"]["url"] == server.file_url(handle.request_id)
    assert info.value.status_code == 404


@pytest.mark.parametrize(
    ("sdk_call", "raw"),
    [
        # fal-client refuses these before sending (`Priority` is a Literal, the timeout must
        # be above a second, an app id needs two segments); the fake answers the same raw
        # request with a 4xx
        (lambda c: c.submit(KLING_STD, arguments={"prompt": "x"}, priority="urgent"),
         {"headers": {"X-Fal-Queue-Priority": "urgent"}}),
        (lambda c: c.submit(KLING_STD, arguments={"prompt": "x"}, start_timeout=0.5),
         {"headers": {"X-Fal-Request-Timeout": "0.5"}}),
        (lambda c: c.status("kling", "r"), {"path": "kling"}),
    ],
)
async def test_the_fake_refuses_what_fal_client_refuses(
    sdk_call: Any, raw: dict[str, Any], sdk_queue: FakeFalServer
) -> None:
    server = sdk_queue
    client = fal_client.AsyncClient(key=server.api_key)
    try:
        with pytest.raises(ValueError):
            await sdk_call(client)
    finally:
        await (await client._client).aclose()
    assert server.create_attempts == [] and server.status_requests == []  # nothing was sent
    async with httpx.AsyncClient() as plain:
        response = await plain.post(
            f"{server.origin}/{raw.get('path', KLING_STD)}", json={"prompt": "x"},
            headers={"Authorization": f"Key {server.api_key}", **raw.get("headers", {})},
        )
    assert 400 <= response.status_code < 500 and server.submits == []


async def test_every_status_the_fake_gives_is_one_fal_client_parses(sdk_queue: FakeFalServer) -> None:
    server = sdk_queue
    client = fal_client.AsyncClient(key=server.api_key)
    try:
        handles = [await client.submit(KLING_STD, arguments={"prompt": p, "duration": "5"})
                   for p in ("a", "[stuck] b", "[completed-error=request_timeout] c")]
        seen: set[type] = set()
        for _ in range(6):
            for handle in handles:
                seen.add(type(await handle.status(with_logs=True)))
            await asyncio.sleep(RUN_S)
    finally:
        await (await client._client).aclose()
    assert seen == {fal_client.Queued, fal_client.InProgress, fal_client.Completed}


# --- through the real app ------------------------------------------------------------------------

APP_MODELS = [("fal/" + KLING_STD, "-d 5"), ("fal/" + KLING_PRO, "-d 5"), ("fal/" + VEO31_FAST, "-d 8")]


async def _one_job(bot: Any, text: str) -> dict[str, Any]:
    resp = await bot.slash(text)
    assert "Got it" in resp.json()["text"], resp.json()["text"]
    await bot.runtime.poller.idle(20)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 1
    return jobs[0]


@pytest.mark.parametrize(("model", "options"), APP_MODELS, ids=[m for m, _ in APP_MODELS])
async def test_a_fal_video_lands_in_the_thread_on_a_current_id(model: str, options: str, make_bot, slack) -> None:
    async with FakeFalServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        provider = FalProvider(server.api_key, queue_url=server.base_url, client=client)
        bot = await make_bot(providers={"fal": provider}, include_simulator=False,
                             sora_default_model=model, sora_daily_budget_usd="20")
        job = await _one_job(bot, f"{options} a lantern festival over a river")
    assert job["status"] == "succeeded" and job["model"] == model and job["cost_usd"] > 0, job
    assert len(server.submits) == 1 and server.submits[0]["model"] == model.removeprefix("fal/")
    assert server.download_auth == [None]
    replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
    assert len(replies) == 1 and replies[0].files


@pytest.mark.parametrize(("error_type", "kind"), [
    ("content_policy_violation", "blocked_output"),
    ("value_error", "invalid_request"),
    ("runner_disconnected", "generation_failed"),
])
async def test_completed_with_an_error_ends_the_job_within_one_poll(
    error_type: str, kind: str, make_bot, slack
) -> None:
    async with FakeFalServer(run_seconds=0.1) as server, httpx.AsyncClient() as client:
        provider = FalProvider(server.api_key, queue_url=server.base_url, client=client)
        bot = await make_bot(providers={"fal": provider}, include_simulator=False,
                             sora_default_model="fal/" + KLING_STD, sora_daily_budget_usd="20")
        started = time.monotonic()
        job = await _one_job(bot, f"-d 5 [completed-error={error_type}] a crowd")
    pid = job["provider_job_id"].rpartition("|")[2]
    assert (job["status"], job["failure_kind"]) == ("failed", kind), job
    assert server.polls[pid] == server.first_completed_poll[pid]  # no status call after it
    assert server.results.get(pid, 0) == 0
    assert time.monotonic() - started < 10  # not the 30 s deadline a "stuck" job waits for


SLOW = Timing(poll_interval_s=60.0, max_poll_interval_s=60.0, stall_timeout_s=600.0, job_timeout_s=600.0,
              progress_edit_interval_s=0.0, submit_retry_window_s=20.0, download_attempts=4,
              delivery_retry_max_s=0.5)


async def test_a_signed_webhook_finishes_the_job_and_forged_ones_change_nothing(make_bot, slack) -> None:
    key = callbacks.callback_key(SIGNING_SECRET)
    base: list[str] = []
    async with FakeFalServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        provider = FalProvider(server.api_key, queue_url=server.base_url, client=client, jwks_url=server.jwks_url,
                               callback_url_for=lambda j: callbacks.callback_url(base[0], "fal", j, key))
        bot = await make_bot(providers={"fal": provider}, include_simulator=False,
                             sora_default_model="fal/" + KLING_STD, sora_daily_budget_usd="20", timing=SLOW,
                             sora_public_base_url="https://bot.example.com")
        base.append(bot.url.removesuffix("/slack/events"))
        assert (await bot.slash("-d 5 a tram in the rain")).status_code == 200
        async with asyncio.timeout(5):
            while not (jobs := [j for j in await jobstore.list_jobs(bot.deps.db, user_id="U1") if j.provider_job_id]):
                await asyncio.sleep(0.01)
        job = jobs[0]
        pid = job.provider_job_id.rpartition("|")[2]
        async with asyncio.timeout(5):
            while not server.jobs[pid].finished_ok(server.run_seconds):
                await asyncio.sleep(0.01)

        # the same body each time: a refused one must not be remembered as delivered
        for signing in ("none", "other-key", "stale", "tampered"):
            assert await server.send_callback(pid, signing=signing) == 401, signing
        await asyncio.sleep(0.3)
        still = await jobstore.get_job(bot.deps.db, job.id)
        assert server.polls[pid] == 0 and still is not None and not still.status.terminal

        assert await server.send_callback(pid) == 200
        await slack.wait_for(lambda: any(m.files for m in slack.thread(job.channel_id, job.thread_ts)[1:]), timeout=5)
        done = await jobstore.get_job(bot.deps.db, job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert server.jwks_auth == [None]  # one fetch of fal's keys, with no key of ours


async def test_a_webhook_that_cant_be_checked_is_answered_503_and_changes_nothing(make_bot, slack) -> None:
    key = callbacks.callback_key(SIGNING_SECRET)
    base: list[str] = []
    async with FakeFalServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        provider = FalProvider(server.api_key, queue_url=server.base_url, client=client,
                               jwks_url=f"{server.origin}/.well-known/missing.json",
                               callback_url_for=lambda j: callbacks.callback_url(base[0], "fal", j, key))
        bot = await make_bot(providers={"fal": provider}, include_simulator=False,
                             sora_default_model="fal/" + KLING_STD, sora_daily_budget_usd="20", timing=SLOW,
                             sora_public_base_url="https://bot.example.com")
        base.append(bot.url.removesuffix("/slack/events"))
        assert (await bot.slash("-d 5 a quiet harbour")).status_code == 200
        async with asyncio.timeout(5):
            while not (jobs := [j for j in await jobstore.list_jobs(bot.deps.db, user_id="U1") if j.provider_job_id]):
                await asyncio.sleep(0.01)
        pid = jobs[0].provider_job_id.rpartition("|")[2]
        assert await server.send_callback(pid) == 503  # fal retries a failed delivery later
        await asyncio.sleep(0.3)
        assert server.polls[pid] == 0


# --- fuzz ------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "status", "queue_position", "response_url", "video", "url", "detail", "error", "error_type",
        "msg", "type", "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELED",
        "content_policy_violation", "client_cancelled", "value_error", "https://v3.fal.media/v.mp4",
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


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_job_id_parser_never_crashes(text: str) -> None:
    try:
        job = parse_job_id(text)
    except InvalidProviderRequest:
        return
    assert job.request_id and job.model_path
