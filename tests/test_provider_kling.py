"""KlingProvider against the fake Kling API: JWT handling, business codes, external ids."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
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
    QuotaExhausted,
    RateLimited,
    SoraError,
)
from bot.models import FailureKind, ProviderState, ProviderStatus, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.kling import (
    KlingProvider,
    error_for_code,
    make_token,
    parse_task,
    split_job_id,
)
from tests.fakes.kling_seedance_fal import KLING_RISK_MESSAGE, FakeKlingServer
from tests.fakes.providers import make_spec, poll_until_terminal, video_bytes
from tests.provider_checks import json_like

RUN_S = 0.05
SK = "sk-0123456789-0123456789-0123456789"  # HS256 keys under 32 bytes draw warnings
ECHOED_SK = "sk-echoed-0123456789-0123456789-0123"
IMAGE = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n-tiny-", mime_type="image/png", width=1280, height=720
)


def kling_spec(prompt: str, **kw: Any) -> VideoSpec:
    kw.setdefault("duration_s", 5)
    return make_spec(prompt, model="kling-v3", **kw)


@pytest.fixture
async def server() -> AsyncIterator[FakeKlingServer]:
    async with FakeKlingServer(run_seconds=RUN_S, slow_seconds=0.2) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeKlingServer) -> AsyncIterator[KlingProvider]:
    kling = KlingProvider(server.access_key, server.secret_key, base_url=server.base_url)
    yield kling
    await kling.aclose()


def assert_hidden(exc: SoraError, *secrets: str) -> None:
    for text in (str(exc), repr(exc), exc.message, exc.detail, getattr(exc, "reason", None)):
        for secret in secrets:
            assert secret not in (text or "")


# --- end to end ------------------------------------------------------------------------------


async def test_kling_is_a_video_provider(provider: KlingProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls) == ("kling", True)


async def test_success_end_to_end(
    server: FakeKlingServer, provider: KlingProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(kling_spec("a red kite over dunes"))

    assert job_id.startswith("t2v:")
    task_id = job_id.removeprefix("t2v:")
    assert server.submits == [
        {
            "model_name": "kling-v3",
            "prompt": "a red kite over dunes",
            "mode": "std",
            "duration": "5",
            "external_task_id": "job-1",
            "aspect_ratio": "16:9",
            "kind": "text2video",
        }
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert seen[0].state is ProviderState.QUEUED and seen[0].raw_status == "submitted"
    assert any(s.state is ProviderState.RUNNING for s in seen)
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED
    assert final.video_url == server.file_url(task_id)
    assert final.expires_at is not None
    assert final.expires_at - datetime.now(UTC) > timedelta(days=29)

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(task_id)
    assert server.download_auth == [None]  # the CDN link needs no token


async def test_1080p_is_pro_mode_and_duration_is_a_string(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    await provider.submit(kling_spec("x", duration_s=10, resolution="1080p", aspect_ratio="9:16"))
    sent = server.submits[0]
    assert (sent["mode"], sent["duration"], sent["aspect_ratio"]) == ("pro", "10", "9:16")
    assert isinstance(sent["duration"], str)


async def test_audio_choice_is_sent_as_sound(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    await provider.submit(dataclasses.replace(kling_spec("loud"), audio=True))
    quiet = kling_spec("quiet", external_id="job-2")
    await provider.submit(dataclasses.replace(quiet, audio=False))
    assert [s["sound"] for s in server.submits] == ["on", "off"]


async def test_image_to_video_goes_to_image2video_with_plain_base64(
    server: FakeKlingServer, provider: KlingProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(dataclasses.replace(kling_spec("she turns"), image=IMAGE))

    assert job_id.startswith("i2v:")
    sent = server.submits[0]
    assert sent["kind"] == "image2video"
    assert base64.b64decode(sent["image"]) == IMAGE.data
    assert not sent["image"].startswith("data:")
    assert "aspect_ratio" not in sent  # the image's own shape decides
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.SUCCEEDED
    await provider.download(job_id, None, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id.removeprefix("i2v:"))


async def test_long_prompt_is_refused_before_sending(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(kling_spec("x" * 2501))
    assert info.value.kind is FailureKind.INVALID_REQUEST
    assert server.create_attempts == []
    await provider.submit(kling_spec("x" * 2500))
    assert len(server.submits) == 1


async def test_cancel_is_not_offered(provider: KlingProvider) -> None:
    job_id = await provider.submit(kling_spec("x"))
    assert await provider.cancel(job_id) is False


# --- tokens ----------------------------------------------------------------------------------


async def test_token_claims_follow_klings_recipe(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    before = int(time.time())
    await provider.submit(kling_spec("x"))
    after = int(time.time())

    token = server.tokens[0]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, server.secret_key, algorithms=["HS256"])
    assert claims["iss"] == server.access_key
    assert before + 1800 <= claims["exp"] <= after + 1800
    assert claims["exp"] - claims["nbf"] == 1805
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-of-at-least-32-bytes", algorithms=["HS256"])


async def test_token_is_reused_across_calls(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    job_id = await provider.submit(kling_spec("x"))
    for _ in range(3):
        await provider.poll(job_id)
    await provider.find_existing(kling_spec("x"), since_epoch_s=0)
    assert len(server.tokens) == 5
    assert len(set(server.tokens)) == 1


async def test_token_is_refreshed_when_under_five_minutes_are_left() -> None:
    now = [1_900_000_000.0]
    async with FakeKlingServer(run_seconds=RUN_S, clock=lambda: now[0]) as srv:
        kling = KlingProvider(
            srv.access_key, srv.secret_key, base_url=srv.base_url, clock=lambda: now[0]
        )
        try:
            job_id = await kling.submit(kling_spec("x"))
            now[0] += 1499  # 301 s left: still good
            await kling.poll(job_id)
            now[0] += 2  # 299 s left: sign a new one before Kling says 1004
            await kling.poll(job_id)
            await kling.poll(job_id)
        finally:
            await kling.aclose()
    first, reused, fresh, again = srv.tokens
    assert reused == first and fresh != first and again == fresh
    claims = jwt.decode(
        fresh,
        srv.secret_key,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims["exp"] == 1_900_000_000 + 1501 + 1800
    assert srv.auth_failures == []


async def test_expired_token_is_refreshed_once_and_the_call_succeeds(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    server.expire_tokens_now()
    job_id = await provider.submit(kling_spec("x"))
    assert server.auth_failures == [1004]
    assert len(server.create_attempts) == 2 and len(server.submits) == 1
    assert job_id.removeprefix("t2v:") in server.jobs

    server.expire_tokens_now()
    assert (await provider.poll(job_id)).state is ProviderState.QUEUED
    assert server.auth_failures == [1004, 1004]


async def test_second_expired_answer_is_auth_failed(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    server.expire_tokens_now(2)
    with pytest.raises(AuthFailed) as info:
        await provider.submit(kling_spec("x"))
    assert info.value.kind is FailureKind.AUTH_FAILED
    assert not info.value.retryable
    assert server.auth_failures == [1004, 1004] and server.submits == []
    assert_hidden(info.value, server.access_key, server.secret_key, *server.tokens)

    job_id = await provider.submit(kling_spec("y", external_id="job-2"))
    server.expire_tokens_now(2)
    with pytest.raises(AuthFailed):
        await provider.poll(job_id)


async def test_wrong_secret_is_auth_failed_and_never_shown(server: FakeKlingServer) -> None:
    secret = "sk-wrong-very-secret-9876543210-abcdef"
    kling = KlingProvider(server.access_key, secret, base_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as info:
            await kling.submit(kling_spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await kling.poll("t2v:123")
    finally:
        await kling.aclose()
    assert server.auth_failures == [1002] * 4  # each call re-signed once, then gave up
    for exc in (info.value, poll_info.value):
        assert_hidden(exc, secret, server.access_key)


def test_fake_can_serve_from_a_thread_for_blocking_tests() -> None:
    srv = FakeKlingServer()
    srv.start_in_thread()
    try:
        token, _ = make_token(srv.access_key, srv.secret_key, now=time.time())
        answer = httpx.post(
            f"{srv.base_url}/v1/videos/text2video",
            json={"model_name": "kling-v3", "prompt": "from a subprocess", "duration": "5"},
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        srv.stop_in_thread()
    assert answer.status_code == 200 and answer.json()["code"] == 0
    assert [j.prompt for j in srv.jobs.values()] == ["from a subprocess"]


async def test_echoed_keys_and_token_are_redacted() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        message = f"token {token} of access key ak-echoed-123456 is not valid"
        return httpx.Response(401, json={"code": 1002, "message": message})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        kling = KlingProvider(
            "ak-echoed-123456", ECHOED_SK, base_url="https://k.example", client=client
        )
        with pytest.raises(AuthFailed) as info:
            await kling.submit(kling_spec("x"))
    assert "***" in info.value.detail
    assert_hidden(info.value, "ak-echoed-123456", ECHOED_SK, "eyJ")


# --- markers ---------------------------------------------------------------------------------


async def test_1301_is_content_blocked_at_input(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    with pytest.raises(ContentBlocked) as info:
        await provider.submit(kling_spec("[1301] x"))
    assert (info.value.stage, info.value.kind) == ("input", FailureKind.BLOCKED_INPUT)
    assert "1301" in info.value.detail
    assert server.submits == []


async def test_1303_is_rate_limited_then_the_retry_works(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    spec = kling_spec("[1303] busy")
    with pytest.raises(RateLimited) as info:
        await provider.submit(spec)
    assert info.value.retryable and info.value.surely_not_created
    job_id = await provider.submit(spec)
    assert job_id.removeprefix("t2v:") in server.jobs
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_1302_is_rate_limited_without_a_retry_after(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    # bot.lifecycle.flow._backoff gives such a refusal its floor (tests/test_loop_runway_kling_seedance.py)
    with pytest.raises(RateLimited) as info:
        await provider.submit(kling_spec("[1302] rush"))
    assert info.value.retry_after_s is None and "1302" in info.value.detail
    assert info.value.retryable and info.value.surely_not_created
    await provider.submit(kling_spec("[1302] rush"))
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


@pytest.mark.parametrize("seconds", [3, 9, 15])
async def test_kling_v3_takes_three_to_fifteen_seconds_as_strings(
    server: FakeKlingServer, provider: KlingProvider, seconds: int
) -> None:
    # kling-v3 and "3"-"15": Kling's docs and the Vercel AI SDK's Kling provider agree
    await provider.submit(kling_spec("x", duration_s=seconds))
    assert server.submits[0]["model_name"] == "kling-v3"
    assert server.submits[0]["duration"] == str(seconds)


async def test_fake_refuses_lengths_kling_v3_lacks(server: FakeKlingServer) -> None:
    kling = KlingProvider(server.access_key, server.secret_key, base_url=server.base_url)
    try:
        for seconds in (2, 16):
            with pytest.raises(InvalidProviderRequest):
                await kling.submit(kling_spec("x", duration_s=seconds))
    finally:
        await kling.aclose()
    assert server.submits == []


async def test_1102_is_quota_exhausted(provider: KlingProvider) -> None:
    with pytest.raises(QuotaExhausted) as info:
        await provider.submit(kling_spec("[1102] x"))
    assert info.value.kind is FailureKind.QUOTA_EXHAUSTED and not info.value.retryable


async def test_failed_risk_task_is_blocked_output(provider: KlingProvider) -> None:
    job_id = await provider.submit(kling_spec("[failed-risk] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.BLOCKED_OUTPUT
    assert final.error.detail == KLING_RISK_MESSAGE


async def test_stuck_task_keeps_processing(provider: KlingProvider) -> None:
    job_id = await provider.submit(kling_spec("[stuck] x"))
    assert (await provider.poll(job_id)).state is ProviderState.QUEUED
    await asyncio.sleep(RUN_S * 1.5)
    for _ in range(3):
        status = await provider.poll(job_id)
        assert (status.state, status.raw_status) == (ProviderState.RUNNING, "processing")


async def test_5xx_polls_are_transient(provider: KlingProvider) -> None:
    job_id = await provider.submit(kling_spec("[5xx-poll] x"))
    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as info:
            await provider.poll(job_id)
        assert info.value.retryable
    assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED


async def test_unknown_task_on_poll_is_generation_failed(provider: KlingProvider) -> None:
    with pytest.raises(GenerationFailed):
        await provider.poll("t2v:404404")


# --- external ids ----------------------------------------------------------------------------


async def test_external_task_id_is_sent_and_found(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    spec = kling_spec("find me", external_id="job-42")
    job_id = await provider.submit(spec)
    await provider.submit(kling_spec("another", external_id="job-43"))
    image_job = await provider.submit(
        dataclasses.replace(kling_spec("moving picture", external_id="job-44"), image=IMAGE)
    )

    assert [s["external_task_id"] for s in server.submits] == ["job-42", "job-43", "job-44"]
    assert await provider.find_existing(spec, since_epoch_s=0) == job_id
    assert (
        await provider.find_existing(
            dataclasses.replace(kling_spec("moving picture", external_id="job-44"), image=IMAGE),
            since_epoch_s=0,
        )
        == image_job
    )
    missing = kling_spec("x", external_id="job-99")
    assert await provider.find_existing(missing, since_epoch_s=0) is None


async def test_ambiguous_submit_is_found_by_external_id(server: FakeKlingServer) -> None:
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.05))
    kling = KlingProvider(
        server.access_key, server.secret_key, base_url=server.base_url, client=client
    )
    spec = kling_spec("[slow-submit] x", external_id="job-slow")
    try:
        with pytest.raises(AmbiguousSubmit) as info:
            await kling.submit(spec)
        assert info.value.surely_not_created is False
        found = await kling.find_existing(spec, since_epoch_s=time.time() - 5)
    finally:
        await kling.aclose()
        await client.aclose()
    assert found is not None and found.removeprefix("t2v:") in server.jobs
    assert len(server.submits) == 1


async def test_find_existing_is_none_on_any_error(
    server: FakeKlingServer, provider: KlingProvider
) -> None:
    await provider.submit(kling_spec("x", external_id="job-7"))
    server.expire_tokens_now(2)
    spec = kling_spec("x", external_id="job-7")
    assert await provider.find_existing(spec, since_epoch_s=0) is None


# --- codes and parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "op", "expected"),
    [
        *[(c, "submit", AuthFailed) for c in (1000, 1001, 1002, 1003, 1004, 1100, 1103, 1304)],
        (1101, "submit", QuotaExhausted),
        (1102, "submit", QuotaExhausted),
        *[(c, "submit", InvalidProviderRequest) for c in (1200, 1201, 1202, 1203)],
        (1203, "poll", GenerationFailed),
        (1301, "submit", ContentBlocked),
        (1302, "submit", RateLimited),
        (1303, "poll", RateLimited),
        (5000, "submit", AmbiguousSubmit),
        (5002, "submit", AmbiguousSubmit),
        (5001, "submit", ProviderUnavailable),
        (5000, "poll", ProviderUnavailable),
        (5002, "poll", ProviderUnavailable),
    ],
)
def test_business_codes_map_to_errors(code: int, op: str, expected: type[ProviderError]) -> None:
    exc = error_for_code(code, op=op, detail="d")  # type: ignore[arg-type]
    assert type(exc) is expected


def test_maintenance_is_surely_not_created_but_internal_errors_are_ambiguous() -> None:
    maintenance = error_for_code(5001, op="submit", detail="d")
    internal = error_for_code(5000, op="submit", detail="d")
    assert maintenance is not None and maintenance.surely_not_created and maintenance.retryable
    assert internal is not None and not internal.surely_not_created
    assert error_for_code(4242, op="submit", detail="d") is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, {"code": 5000, "message": "internal error"}, AmbiguousSubmit),
        (504, {"code": 5002, "message": "backlog timeout"}, AmbiguousSubmit),
        (503, {"code": 5001, "message": "maintenance"}, ProviderUnavailable),
        (200, {"code": 1301, "message": "content security"}, ContentBlocked),
        (200, {"code": 777, "message": "new code"}, AmbiguousSubmit),
        (502, None, AmbiguousSubmit),
        (503, None, ProviderUnavailable),
        (429, {"code": 1302, "message": "slow down"}, RateLimited),
    ],
)
async def test_http_answers_at_submit(
    status: int, body: Any, expected: type[ProviderError]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text="<html>bad gateway</html>")
        return httpx.Response(status, json=body, headers={"Retry-After": "2"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        kling = KlingProvider("ak", SK, base_url="https://k.example", client=client)
        with pytest.raises(ProviderError) as info:
            await kling.submit(kling_spec("x"))
    assert type(info.value) is expected
    if expected is RateLimited:
        assert info.value.retry_after_s == 2.0


def test_make_token_is_hs256_with_the_documented_claims() -> None:
    token, expires = make_token("ak", SK, now=1_700_000_000.7)
    claims = jwt.decode(
        token, SK, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False}
    )
    assert claims == {"iss": "ak", "exp": 1_700_001_800, "nbf": 1_699_999_995}
    assert expires == 1_700_001_800.0


def test_job_ids_carry_the_endpoint() -> None:
    assert split_job_id("t2v:123") == ("text2video", "123")
    assert split_job_id("i2v:456") == ("image2video", "456")
    assert split_job_id("789") == ("text2video", "789")


def test_parse_task_edge_cases() -> None:
    no_url = parse_task(
        {"code": 0, "data": {"task_status": "succeed", "task_result": {"videos": []}}}
    )
    assert no_url.state is ProviderState.FAILED
    assert no_url.error is not None and no_url.error.detail == "no_output"
    sensitive = parse_task(
        {"data": {"task_status": "failed", "task_status_msg": "Output contains sensitive content"}}
    )
    assert sensitive.error is not None and sensitive.error.kind is FailureKind.BLOCKED_OUTPUT
    plain = parse_task({"data": {"task_status": "failed", "task_status_msg": "render error"}})
    assert plain.error is not None and plain.error.kind is FailureKind.GENERATION_FAILED
    assert parse_task({"data": {"task_status": "paused"}}).state is ProviderState.UNKNOWN
    assert parse_task({}).state is ProviderState.UNKNOWN
    far = parse_task(
        {
            "data": {
                "task_status": "succeed",
                "updated_at": "9999-12-31T00:00:00",
                "task_result": {"videos": [{"url": "https://cdn.example/v.mp4"}]},
            }
        }
    )
    assert far.state is ProviderState.SUCCEEDED and far.expires_at is None
    with pytest.raises(ProviderUnavailable):
        parse_task(["not", "an", "object"])


# --- fuzz ------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "code",
        "data",
        "task_id",
        "task_status",
        "task_status_msg",
        "task_result",
        "videos",
        "url",
        "created_at",
        "updated_at",
        "submitted",
        "processing",
        "succeed",
        "failed",
        "risk control",
        "https://cdn.example/v.mp4",
        "9999-12-31T00:00:00",
    ]
)
_JSON = json_like(_WORDS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(_WORDS, _JSON, max_size=6) | _JSON)
def test_task_parser_never_crashes(body: object) -> None:
    try:
        status = parse_task(body)
    except ProviderError:
        return
    assert isinstance(status, ProviderStatus)
    if status.state is ProviderState.SUCCEEDED:
        assert status.video_url
    if status.state is ProviderState.FAILED:
        assert status.error is not None
