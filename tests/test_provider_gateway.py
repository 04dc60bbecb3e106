"""GatewayProvider against the fake seed-shape gateway, plus the shared HTTP edge helpers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import jobs_json
from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    ContentBlocked,
    DeliveryError,
    GenerationFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderRetired,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderState, ProviderStatus
from bot.providers.base import VideoProvider
from bot.providers.gateway import GatewayProvider, parse_generation, parse_job_id
from bot.providers.http import (
    error_for_exception,
    error_for_response,
    first_non_empty,
    parse_progress,
    parse_retry_after,
    parse_state,
    parse_timestamp,
)
from tests.fakes.providers import (
    FakeGatewayServer,
    make_spec,
    poll_until_terminal,
    video_bytes,
)
from tests.provider_checks import assert_key_hidden, json_like

RUN_S = 0.1


@pytest.fixture
async def server() -> AsyncIterator[FakeGatewayServer]:
    async with FakeGatewayServer(run_seconds=RUN_S, slow_seconds=0.2) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeGatewayServer) -> AsyncIterator[GatewayProvider]:
    gateway = GatewayProvider(server.base_url, server.api_key)
    yield gateway
    await gateway.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- end to end against the fake ---------------------------------------------------------


async def test_gateway_is_a_video_provider(provider: GatewayProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert provider.name == "gateway"


async def test_success_end_to_end(
    server: FakeGatewayServer, provider: GatewayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(make_spec("a cat on a skateboard", duration_s=8))

    assert server.submits == [
        {
            "model": "sora-2",
            "prompt": "a cat on a skateboard",
            "duration": 8,
            "resolution": "720p",
            "aspect_ratio": "16:9",
        }
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert seen[0].state is ProviderState.QUEUED
    progress = [s.progress or 0 for s in seen]
    assert progress == sorted(progress)
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED
    assert final.progress == 100
    assert final.video_url == server.file_url(job_id)

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    assert dest.read_bytes()[4:8] == b"ftyp"
    assert not (tmp_path / "video.mp4.part").exists()
    # the file URL is on the gateway's own host, so the key goes along
    assert server.download_auth == [f"Bearer {server.api_key}"]


async def test_new_api_raw_status_words_are_understood() -> None:
    async with FakeGatewayServer(run_seconds=RUN_S, status_style="raw") as srv:
        gateway = GatewayProvider(srv.base_url, srv.api_key)
        try:
            job_id = await gateway.submit(make_spec("raw words"))
            seen = await poll_until_terminal(gateway, job_id)
        finally:
            await gateway.aclose()
    assert seen[0].raw_status == "SUBMITTED"
    assert seen[-1].state is ProviderState.SUCCEEDED
    assert seen[-1].raw_status == "SUCCESS"


async def test_download_to_another_host_never_carries_the_key(tmp_path: Path) -> None:
    async with FakeGatewayServer(run_seconds=0.0, files_host="localhost") as srv:
        gateway = GatewayProvider(srv.base_url, srv.api_key)
        try:
            job_id = await gateway.submit(make_spec("cdn"))
            final = (await poll_until_terminal(gateway, job_id))[-1]
            assert final.video_url is not None and "localhost" in final.video_url
            await gateway.download(job_id, final.video_url, tmp_path / "v.mp4")
        finally:
            await gateway.aclose()
    assert srv.download_auth == [None]
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)


async def test_download_without_url_asks_the_gateway_first(
    server: FakeGatewayServer, provider: GatewayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(make_spec("resume after restart"))
    await poll_until_terminal(provider, job_id)
    await provider.download(job_id, None, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)


async def test_blocked_input_is_refused_at_submit_with_its_reason(
    server: FakeGatewayServer, provider: GatewayProvider
) -> None:
    with pytest.raises(ContentBlocked) as info:
        await provider.submit(make_spec("[blocked-input] a fight"))
    assert info.value.stage == "input"
    assert info.value.kind is FailureKind.BLOCKED_INPUT
    assert info.value.reason == "violence"
    assert server.submits == [] and len(server.create_attempts) == 1
    assert_key_hidden(info.value, server.api_key)


async def test_blocked_output_ends_failed_as_blocked_output(provider: GatewayProvider) -> None:
    job_id = await provider.submit(make_spec("[blocked-output] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.BLOCKED_OUTPUT


async def test_other_failure_is_generation_failed(provider: GatewayProvider) -> None:
    job_id = await provider.submit(make_spec("[fail] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.GENERATION_FAILED
    assert "upstream render error" in final.error.detail


async def test_stuck_job_stays_running_at_99(provider: GatewayProvider) -> None:
    job_id = await provider.submit(make_spec("[stuck] x"))
    assert (await provider.poll(job_id)).state is ProviderState.QUEUED
    async with asyncio.timeout(3):
        while True:
            status = await provider.poll(job_id)
            # the fake sends "N%" strings; progress climbs while the job says in_progress
            assert status.state is ProviderState.RUNNING and status.progress is not None
            if status.progress == 99:
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(RUN_S)
    status = await provider.poll(job_id)
    assert (status.state, status.progress) == (ProviderState.RUNNING, 99)


async def test_429_at_submit_is_rate_limited_with_retry_after(
    server: FakeGatewayServer, provider: GatewayProvider
) -> None:
    spec = make_spec("[429-submit] busy")
    with pytest.raises(RateLimited) as info:
        await provider.submit(spec)
    assert info.value.retry_after_s == 1.0
    assert info.value.surely_not_created and info.value.retryable
    assert_key_hidden(info.value, server.api_key)
    job_id = await provider.submit(spec)
    assert job_id in server.jobs
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_503_at_submit_is_unavailable_and_surely_not_created(
    server: FakeGatewayServer, provider: GatewayProvider
) -> None:
    spec = make_spec("[503-submit] x")
    with pytest.raises(ProviderUnavailable) as info:
        await provider.submit(spec)
    assert not isinstance(info.value, AmbiguousSubmit)
    assert info.value.surely_not_created
    await provider.submit(spec)
    assert len(server.submits) == 1


async def test_quota_is_quota_exhausted(provider: GatewayProvider) -> None:
    with pytest.raises(QuotaExhausted):
        await provider.submit(make_spec("[quota] x"))


async def test_retired_model_is_provider_retired(provider: GatewayProvider) -> None:
    with pytest.raises(ProviderRetired) as info:
        await provider.submit(make_spec("[retired] x"))
    assert "/sora models" in info.value.user_message()
    assert info.value.kind is FailureKind.PROVIDER_RETIRED


async def test_5xx_polls_are_transient(provider: GatewayProvider) -> None:
    job_id = await provider.submit(make_spec("[5xx-poll] x"))
    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as info:
            await provider.poll(job_id)
        assert not isinstance(info.value, AmbiguousSubmit) and info.value.retryable
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.SUCCEEDED


async def test_malformed_poll_is_transient(provider: GatewayProvider) -> None:
    job_id = await provider.submit(make_spec("[malformed] x"))
    with pytest.raises(ProviderUnavailable):
        await provider.poll(job_id)
    assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED


async def test_unknown_job_on_poll_is_generation_failed(provider: GatewayProvider) -> None:
    with pytest.raises(GenerationFailed):
        await provider.poll("task_missing")


async def test_succeeded_without_url_is_no_output(provider: GatewayProvider) -> None:
    job_id = await provider.submit(make_spec("[no-url] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None
    assert (final.error.kind, final.error.detail) == (FailureKind.GENERATION_FAILED, "no_output")


async def test_download_502_is_retryable_delivery_error(
    server: FakeGatewayServer, provider: GatewayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(make_spec("[download-502] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    dest = tmp_path / "v.mp4"
    with pytest.raises(DeliveryError) as info:
        await provider.download(job_id, final.video_url, dest)
    assert not isinstance(info.value, ResultExpired) and info.value.retryable
    assert not dest.exists()
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    assert server.downloads[job_id] == 2


async def test_expired_download_is_result_expired(
    provider: GatewayProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(make_spec("[expired] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    with pytest.raises(ResultExpired) as info:
        await provider.download(job_id, final.video_url, tmp_path / "v.mp4")
    assert info.value.kind is FailureKind.RESULT_EXPIRED


async def test_read_timeout_after_sending_is_ambiguous(server: FakeGatewayServer) -> None:
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.05))
    gateway = GatewayProvider(server.base_url, server.api_key, client=client)
    try:
        with pytest.raises(AmbiguousSubmit) as info:
            await gateway.submit(make_spec("[slow-submit] x"))
        assert info.value.surely_not_created is False
        assert info.value.kind is FailureKind.PROVIDER_UNAVAILABLE
        # the job was made anyway: exactly why the caller must not submit blindly again
        assert len(server.submits) == 1
        assert await gateway.find_existing(make_spec("[slow-submit] x"), since_epoch_s=0) is None
    finally:
        await gateway.aclose()
    assert not client.is_closed  # an injected client belongs to the caller
    await client.aclose()


async def test_refused_connection_is_unavailable_and_surely_not_created() -> None:
    gateway = GatewayProvider(f"http://127.0.0.1:{free_port()}/v1", "k")
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await gateway.submit(make_spec("x"))
    finally:
        await gateway.aclose()
    assert not isinstance(info.value, AmbiguousSubmit)


async def test_wrong_key_is_auth_failed_and_never_echoed(server: FakeGatewayServer) -> None:
    secret = "sk-live-very-secret-123"
    gateway = GatewayProvider(server.base_url, secret)
    try:
        with pytest.raises(AuthFailed) as info:
            await gateway.submit(make_spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await gateway.poll("task_x")
    finally:
        await gateway.aclose()
    assert_key_hidden(info.value, secret)
    assert_key_hidden(poll_info.value, secret)
    assert info.value.kind is FailureKind.AUTH_FAILED


async def test_cancel_running_job(server: FakeGatewayServer, provider: GatewayProvider) -> None:
    job_id = await provider.submit(make_spec("[stuck] x"))
    await provider.poll(job_id)
    assert await provider.cancel(job_id) is True
    assert (await provider.poll(job_id)).state is ProviderState.CANCELLED
    assert server.cancels == [job_id]


def test_fake_can_serve_from_a_thread_for_blocking_tests() -> None:
    srv = FakeGatewayServer()
    srv.start_in_thread()
    try:
        answer = httpx.post(
            f"{srv.base_url}/videos/generations",
            json={"model": "sora-2", "prompt": "from a subprocess", "duration": 4},
            headers={"Authorization": f"Bearer {srv.api_key}"},
        )
    finally:
        srv.stop_in_thread()
    assert answer.status_code == 200
    assert [j.prompt for j in srv.jobs.values()] == ["from a subprocess"]


async def test_cancel_is_false_when_the_gateway_has_no_cancel() -> None:
    async with FakeGatewayServer(supports_cancel=False) as srv:
        gateway = GatewayProvider(srv.base_url, srv.api_key)
        try:
            job_id = await gateway.submit(make_spec("x"))
            assert await gateway.cancel(job_id) is False
            assert await gateway.cancel("task_unknown") is False
        finally:
            await gateway.aclose()


def _answering(body: object) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"code": "error", "message": "content flagged by moderation"}, ContentBlocked),
        ({"success": False, "message": "model sora-2 not found"}, ProviderRetired),
        (
            {"error": {"code": "bad_duration", "message": "duration too long"}},
            InvalidProviderRequest,
        ),
        ({"code": "success", "message": "ok", "data": {}}, AmbiguousSubmit),
        ({}, AmbiguousSubmit),
    ],
)
async def test_2xx_create_without_id_is_a_refusal_only_when_it_says_so(
    body: dict[str, Any], expected: type[ProviderError]
) -> None:
    async with _answering(body) as client:
        gateway = GatewayProvider("https://gw.example/v1", "k", client=client)
        with pytest.raises(expected):
            await gateway.submit(make_spec("x"))


# --- loose parsing, plain dicts ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"id": "j1"}},
        {"data": {"task_id": "j1"}},
        {"id": "j1"},
        {"task_id": "j1"},
        {"request_id": "j1"},
        {"data": {"id": ""}, "task_id": "j1"},
        {"data": None, "id": "j1"},
    ],
)
def test_job_id_is_taken_from_any_known_place(body: dict[str, Any]) -> None:
    assert parse_job_id(body) == "j1"


def test_numeric_job_id_becomes_a_string() -> None:
    assert parse_job_id({"data": {"task_id": 1234}}) == "1234"


URL = "https://cdn.example/v.mp4"


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"status": "succeeded", "url": URL}},
        {"data": {"status": "SUCCESS", "result_url": URL}},
        {"status": "completed", "metadata": {"url": URL}},
        {"data": {"status": "completed", "metadata": {"url": URL}}},
        {"status": "done", "output_url": URL},
        {"status": "success", "video_url": URL},
        {"data": {"status": "succeeded", "url": "", "video_url": URL}},
        {"status": "completed", "unsigned_urls": [URL, "https://other"]},
        {"status": "done", "video": {"url": URL, "duration": 6, "respect_moderation": True}},
        {"data": {"status": "succeeded", "video": {"url": URL}}},
    ],
)
def test_video_url_is_taken_from_any_known_place(body: dict[str, Any]) -> None:
    status = parse_generation(body)
    assert (status.state, status.video_url) == (ProviderState.SUCCEEDED, URL)


def test_relative_url_is_resolved_against_the_gateway() -> None:
    status = parse_generation(
        {"data": {"status": "succeeded", "url": "/files/a.mp4"}}, base_url="https://gw.example/v1"
    )
    assert status.video_url == "https://gw.example/files/a.mp4"


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("queued", ProviderState.QUEUED),
        ("pending", ProviderState.QUEUED),
        ("NOT_START", ProviderState.QUEUED),
        ("SUBMITTED", ProviderState.QUEUED),
        ("QUEUED", ProviderState.QUEUED),
        ("in_progress", ProviderState.RUNNING),
        ("processing", ProviderState.RUNNING),
        ("running", ProviderState.RUNNING),
        ("IN_PROGRESS", ProviderState.RUNNING),
        ("completed", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),
        ("success", ProviderState.SUCCEEDED),
        ("SUCCESS", ProviderState.SUCCEEDED),
        ("done", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
        ("failure", ProviderState.FAILED),
        ("FAILURE", ProviderState.FAILED),
        ("error", ProviderState.FAILED),
        ("cancelled", ProviderState.CANCELLED),
        ("canceled", ProviderState.CANCELLED),
        ("expired", ProviderState.FAILED),
        ("UNKNOWN", ProviderState.UNKNOWN),
        ("warming_up", ProviderState.UNKNOWN),
        ("", ProviderState.UNKNOWN),
        (3, ProviderState.UNKNOWN),
        (None, ProviderState.UNKNOWN),
    ],
)
def test_status_words_map_loosely(raw: object, state: ProviderState) -> None:
    assert parse_state(raw) is state


def test_status_is_read_from_data_then_top_level() -> None:
    assert parse_generation({"status": "processing"}).state is ProviderState.RUNNING
    assert parse_generation({"data": {"status": "queued"}, "status": "x"}).state is (
        ProviderState.QUEUED
    )
    assert parse_generation({}).state is ProviderState.UNKNOWN


def test_expired_status_is_result_expired() -> None:
    status = parse_generation({"data": {"status": "expired"}})
    assert status.state is ProviderState.FAILED
    assert status.error is not None and status.error.kind is FailureKind.RESULT_EXPIRED


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"code": "moderation_blocked", "message": "Blocked."}, FailureKind.BLOCKED_OUTPUT),
        ("Output rejected by the safety system", FailureKind.BLOCKED_OUTPUT),
        ({"code": "task_failed", "message": "render crashed"}, FailureKind.GENERATION_FAILED),
        ("boom", FailureKind.GENERATION_FAILED),
        (None, FailureKind.GENERATION_FAILED),
    ],
)
def test_failed_error_kind_comes_from_code_or_text(error: object, kind: FailureKind) -> None:
    status = parse_generation({"data": {"status": "failed", "error": error}})
    assert status.state is ProviderState.FAILED
    assert status.error is not None and status.error.kind is kind


def test_fail_reason_and_nested_error_are_read() -> None:
    by_reason = parse_generation({"data": {"status": "FAILURE", "fail_reason": "moderation hit"}})
    assert by_reason.error is not None and by_reason.error.kind is FailureKind.BLOCKED_OUTPUT
    nested = parse_generation(
        {"data": {"status": "failed", "data": {"error": {"code": "X", "message": "deep"}}}}
    )
    assert nested.error is not None and "deep" in nested.error.detail


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (40, 40),
        ("40%", 40),
        (" 40 % ", 40),
        ("40", 40),
        (40.7, 40),
        (150, 100),
        (-3, 0),
        ("abc", None),
        (None, None),
        (True, None),
        ([40], None),
        (float("nan"), None),
        (10**400, 100),
    ],
)
def test_progress_accepts_ints_and_percent_strings(value: object, expected: int | None) -> None:
    assert parse_progress(value) == expected


def test_progress_string_from_poll_body() -> None:
    assert parse_generation({"data": {"status": "processing", "progress": "40%"}}).progress == 40


def test_timestamps_in_seconds_and_milliseconds_agree() -> None:
    expected = datetime(2025, 11, 28, 16, 24, 50, tzinfo=UTC)
    assert parse_timestamp(1764347090) == expected
    assert parse_timestamp(1764347090000) == expected
    assert parse_timestamp("1764347090000") == expected
    assert parse_timestamp("2025-11-28T16:24:50Z") == expected
    assert parse_timestamp("soon") is None
    assert parse_timestamp(-1) is None
    assert parse_timestamp(True) is None
    assert parse_timestamp(10**400) is None


def test_first_non_empty_skips_empty_values_and_walks_lists() -> None:
    body = {"a": {"b": ""}, "c": [], "d": [{"e": "x"}]}
    assert first_non_empty(body, ["a.b", "c", "c[0]", "d[0].e"]) == "x"
    assert first_non_empty(body, ["a.b.z", "nope"]) is None
    assert first_non_empty("not a dict", ["a"]) is None


@pytest.mark.parametrize("body", [[], "text", 7, None, ["status", "completed"]])
def test_non_object_poll_body_is_transient(body: object) -> None:
    with pytest.raises(ProviderUnavailable):
        parse_generation(body)


# --- Retry-After and error mapping --------------------------------------------------------


def test_retry_after_seconds_date_and_ms() -> None:
    assert parse_retry_after({"Retry-After": "1"}) == 1.0
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after(httpx.Headers({"RETRY-AFTER": "3"})) == 3.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": later}, now=now.timestamp()) == pytest.approx(30)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": earlier}, now=now.timestamp()) == 0.0
    assert parse_retry_after({"Retry-After": "whenever"}) is None
    assert parse_retry_after({}) is None


def _response(
    status: int, body: object = None, headers: dict[str, str] | None = None, text: str | None = None
) -> httpx.Response:
    request = httpx.Request("POST", "https://gw.example/v1/videos/generations")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "body", "op", "expected"),
    [
        (429, {"error": {"code": "rate_limit_exceeded", "message": "slow"}}, "submit", RateLimited),
        (
            429,
            {"error": {"code": "insufficient_quota", "message": "pay"}},
            "submit",
            QuotaExhausted,
        ),
        (401, {"error": {"message": "bad key"}}, "poll", AuthFailed),
        (403, {"error": {"message": "forbidden"}}, "submit", AuthFailed),
        (
            400,
            {"error": {"message": "Blocked by our moderation system."}},
            "submit",
            ContentBlocked,
        ),
        (400, {"error": {"message": "Invalid value: '10'."}}, "submit", InvalidProviderRequest),
        (422, {"detail": "bad"}, "submit", InvalidProviderRequest),
        (404, {"error": {"message": "model sora-2 not found"}}, "submit", ProviderRetired),
        (410, {"message": "This model was shut down"}, "submit", ProviderRetired),
        (404, {"message": "model is deprecated and no longer available"}, "poll", ProviderRetired),
        (400, {"error": {"code": "model_not_found", "message": "x"}}, "submit", ProviderRetired),
        (503, None, "submit", ProviderUnavailable),
        (500, None, "submit", AmbiguousSubmit),
        (502, None, "submit", AmbiguousSubmit),
        (504, None, "submit", AmbiguousSubmit),
        (500, None, "poll", ProviderUnavailable),
        (502, None, "poll", ProviderUnavailable),
    ],
)
def test_status_codes_map_to_errors(
    status: int, body: object, op: str, expected: type[ProviderError]
) -> None:
    exc = error_for_response(_response(status, body), op=op, label="GW")  # type: ignore[arg-type]
    assert type(exc) is expected


def test_moderation_reason_is_extracted() -> None:
    exc = error_for_response(
        _response(
            400,
            {
                "error": {
                    "message": "The request is blocked by our moderation system "
                    "when checking inputs. Possible reasons: self-harm"
                }
            },
        ),
        op="submit",
        label="GW",
    )
    assert isinstance(exc, ContentBlocked) and exc.reason == "self-harm"


def test_html_error_pages_map_without_json() -> None:
    exc = error_for_response(_response(502, text="<html>Bad Gateway</html>"), op="poll", label="GW")
    assert type(exc) is ProviderUnavailable and "Bad Gateway" in exc.detail


@pytest.mark.parametrize(
    ("exc", "op", "expected", "surely_not_created"),
    [
        (httpx.ReadTimeout("t"), "submit", AmbiguousSubmit, False),
        (httpx.WriteTimeout("t"), "submit", AmbiguousSubmit, False),
        (httpx.RemoteProtocolError("t"), "submit", AmbiguousSubmit, False),
        (httpx.ConnectError("refused"), "submit", ProviderUnavailable, True),
        (httpx.ConnectTimeout("t"), "submit", ProviderUnavailable, True),
        (httpx.ReadTimeout("t"), "poll", ProviderUnavailable, True),
        (httpx.RemoteProtocolError("t"), "poll", ProviderUnavailable, True),
    ],
)
def test_transport_errors_map_by_whether_the_request_was_sent(
    exc: httpx.HTTPError, op: str, expected: type[ProviderError], surely_not_created: bool
) -> None:
    mapped = error_for_exception(exc, op=op, label="GW")  # type: ignore[arg-type]
    assert type(mapped) is expected
    assert mapped.surely_not_created is surely_not_created


def test_echoed_key_is_redacted_from_mapped_errors() -> None:
    key = "sk-abc123"
    exc = error_for_response(
        _response(401, {"error": {"message": f"Incorrect API key provided: {key}"}}),
        op="submit",
        label="GW",
        secrets=(key,),
    )
    assert_key_hidden(exc, key)


# --- fuzz ------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "data",
        "status",
        "url",
        "result_url",
        "metadata",
        "progress",
        "error",
        "code",
        "message",
        "fail_reason",
        "expires_at",
        "unsigned_urls",
        "video_url",
        "id",
        "task_id",
        "succeeded",
        "failed",
        "expired",
        "SUCCESS",
        "moderation_blocked",
        "100%",
    ]
)
_JSON = json_like(_WORDS)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(_WORDS, _JSON, max_size=6) | _JSON)
def test_status_parser_never_crashes(body: object) -> None:
    try:
        status = parse_generation(body, base_url="https://gw.example/v1")
    except ProviderError:
        return
    assert isinstance(status, ProviderStatus)
    assert status.progress is None or 0 <= status.progress <= 100
    if status.state is ProviderState.SUCCEEDED:
        assert status.video_url
    if status.state is ProviderState.FAILED:
        assert status.error is not None


# --- where to poll follows the create answer -----------------------------------------------


async def test_xai_like_reply_is_polled_at_videos_id_and_its_video_url_delivered(tmp_path: Path) -> None:
    async with FakeGatewayServer(run_seconds=RUN_S, reply_style="xai", files_host="localhost") as srv:
        gateway = GatewayProvider(srv.base_url, srv.api_key)
        try:
            job_ref = await gateway.submit(make_spec("an xAI-like gateway"))
            (job_id,) = srv.jobs
            assert job_ref == f"xai:{job_id}"
            seen = await poll_until_terminal(gateway, job_ref)
            final = seen[-1]
            assert (final.state, final.raw_status) == (ProviderState.SUCCEEDED, "done")
            assert final.video_url == srv.file_url(job_id)
            await gateway.download(job_ref, final.video_url, tmp_path / "v.mp4")
            assert await gateway.cancel(job_ref) is False
        finally:
            await gateway.aclose()
    assert srv.polls[job_id] == len(seen)  # every poll reached /v1/videos/{id}
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)
    assert srv.download_auth == [None]  # the CDN host never sees the key


@pytest.mark.parametrize(
    ("marker", "kind"),
    [("[blocked-output]", FailureKind.BLOCKED_OUTPUT), ("[fail]", FailureKind.GENERATION_FAILED),
     ("[expired]", FailureKind.RESULT_EXPIRED), ("[no-url]", FailureKind.GENERATION_FAILED)],
)
async def test_xai_like_failures_keep_their_kind(marker: str, kind: FailureKind) -> None:
    async with FakeGatewayServer(run_seconds=RUN_S, reply_style="xai") as srv:
        gateway = GatewayProvider(srv.base_url, srv.api_key)
        try:
            final = (await poll_until_terminal(gateway, await gateway.submit(make_spec(f"{marker} x"))))[-1]
        finally:
            await gateway.aclose()
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is kind


async def test_a_restarted_adapter_polls_where_the_stored_id_says() -> None:
    async with FakeGatewayServer(run_seconds=0.0, reply_style="xai") as srv:
        first = GatewayProvider(srv.base_url, srv.api_key)
        job_ref = await first.submit(make_spec("before a restart"))
        await first.aclose()
        second = GatewayProvider(srv.base_url, srv.api_key)
        try:
            final = (await poll_until_terminal(second, job_ref))[-1]
        finally:
            await second.aclose()
    assert final.state is ProviderState.SUCCEEDED


async def test_a_named_polling_url_is_followed(tmp_path: Path) -> None:
    async with FakeGatewayServer(run_seconds=RUN_S, reply_style="polling_url") as srv:
        gateway = GatewayProvider(srv.base_url, srv.api_key)
        try:
            job_ref = await gateway.submit(make_spec("an OpenRouter-like gateway"))
            (job_id,) = srv.jobs
            assert job_ref == f"poll:/v1/jobs/{job_id}"
            final = (await poll_until_terminal(gateway, job_ref))[-1]
            await gateway.download(job_ref, None, tmp_path / "v.mp4")
        finally:
            await gateway.aclose()
    assert final.state is ProviderState.SUCCEEDED
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)


@pytest.mark.parametrize(
    ("answer", "job_ref", "polled"),
    [
        ({"id": "j1", "polling_url": "/v1/jobs/j1/status?x=1"}, "poll:/v1/jobs/j1/status?x=1",
         "https://gw.example/v1/jobs/j1/status?x=1"),
        ({"id": "j1", "status_url": "https://gw.example/v1/q/j1"}, "poll:/v1/q/j1", "https://gw.example/v1/q/j1"),
        # another host would be handed the key: the usual path instead
        ({"id": "j1", "polling_url": "https://elsewhere.example/j1"}, "j1", "https://gw.example/v1/videos/generations/j1"),
        ({"id": "j1", "polling_url": "https://gw.example:8443/j1"}, "j1", "https://gw.example/v1/videos/generations/j1"),
        ({"request_id": "r1"}, "xai:r1", "https://gw.example/v1/videos/r1"),
        ({"request_id": "r1", "data": {"id": "r1"}}, "r1", "https://gw.example/v1/videos/generations/r1"),
        ({"code": "success", "data": {"id": "j1"}}, "j1", "https://gw.example/v1/videos/generations/j1"),
    ],
)
async def test_the_create_answer_decides_where_to_poll(answer: dict[str, Any], job_ref: str, polled: str) -> None:
    seen: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json=answer)
        seen.append(str(request.url))
        return httpx.Response(200, json={"status": "pending"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
        gateway = GatewayProvider("https://gw.example/v1", "k", client=client)
        assert await gateway.submit(make_spec("x")) == job_ref
        await gateway.poll(job_ref)
    assert seen == [polled]


async def test_an_xai_like_gateway_video_lands_in_the_thread(make_bot, slack) -> None:
    async with FakeGatewayServer(run_seconds=0.2, reply_style="xai") as srv, httpx.AsyncClient() as client:
        bot = await make_bot(providers={"gateway": GatewayProvider(srv.base_url, srv.api_key, client=client)},
                             include_simulator=False, sora_default_model="sora-2")
        resp = await bot.slash("-d 8 a kite over the dunes")
        assert "Got it" in resp.json()["text"], resp.json()["text"]
        await bot.runtime.poller.idle(20)
        (job,) = json.loads(await jobs_json(bot.deps.db))
    assert job["status"] == "succeeded", job
    replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
    assert len(replies) == 1 and replies[0].files
