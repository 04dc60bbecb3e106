"""XaiProvider against the fake xAI video API, the fake checked against xai-sdk's types, and
a Grok Imagine video through the real app.

xai-sdk speaks gRPC only, so it cannot drive an HTTP fake: its request types check the
adapter's bodies and the fake's refusals instead (skipped where xai-sdk is not installed).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.cli import jobs_json
from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    ContentBlocked,
    GenerationFailed,
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
from bot.providers.xai import XaiProvider, build_request, parse_video
from tests.fakes.providers import make_spec, poll_until_terminal, video_bytes
from tests.fakes.xai import PRICE_USD_PER_S, FakeXaiServer
from tests.provider_checks import assert_key_hidden, json_like

RUN_S = 0.1
MODEL = "grok-imagine-video-1.5"


def _png(width: int = 64, height: int = 36) -> ReferenceImage:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 20)).save(buf, format="PNG")
    return ReferenceImage(data=buf.getvalue(), mime_type="image/png", width=width, height=height)


def xai_spec(prompt: str, **kw: Any) -> VideoSpec:
    image = kw.pop("image", None)
    audio = kw.pop("audio", None)
    spec = make_spec(prompt, model=MODEL, **kw)
    return dataclasses.replace(spec, image=image, audio=audio)


@pytest.fixture
async def server() -> AsyncIterator[FakeXaiServer]:
    async with FakeXaiServer(run_seconds=RUN_S, slow_seconds=0.3) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeXaiServer) -> AsyncIterator[XaiProvider]:
    xai = XaiProvider(server.api_key, base_url=server.base_url)
    yield xai
    await xai.aclose()


# --- end to end against the fake -----------------------------------------------------------


async def test_xai_is_a_video_provider(provider: XaiProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert provider.name == "xai"


async def test_success_end_to_end_reads_video_url_and_cost(
    server: FakeXaiServer, provider: XaiProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(xai_spec("a lantern festival", duration_s=8))

    assert server.submits == [{"model": MODEL, "prompt": "a lantern festival", "duration": 8,
                               "resolution": "720p", "aspect_ratio": "16:9"}]
    seen = await poll_until_terminal(provider, job_id)
    assert seen[0].state is ProviderState.QUEUED
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED and final.raw_status == "done"
    assert final.video_url == server.file_url(job_id)
    # usage.cost_in_usd_ticks (1e-10 USD each) becomes integer micro-dollars
    assert final.cost_micros == round(8 * PRICE_USD_PER_S["720p"] * 1_000_000)

    dest = tmp_path / "v.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    assert server.download_auth == [None]  # a public CDN link: the key never goes there


async def test_download_without_url_polls_for_it_first(
    server: FakeXaiServer, provider: XaiProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(xai_spec("after a restart"))
    await poll_until_terminal(provider, job_id)
    await provider.download(job_id, None, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)


async def test_image_goes_inline_as_a_data_uri_the_fake_decodes(
    server: FakeXaiServer, provider: XaiProvider
) -> None:
    image = _png()
    await provider.submit(xai_spec("animate this", image=image, resolution="480p", aspect_ratio="1:1"))
    sent = server.submits[-1]
    assert sent["image"] == {"url": "data:image/png;base64," + base64.b64encode(image.data).decode()}
    assert (sent["resolution"], sent["aspect_ratio"]) == ("480p", "1:1")


async def test_audio_choice_is_sent_only_when_made(server: FakeXaiServer, provider: XaiProvider) -> None:
    await provider.submit(xai_spec("quiet", audio=False))
    await provider.submit(xai_spec("default"))
    assert server.submits[0]["generate_audio"] is False
    assert "generate_audio" not in server.submits[1]


@pytest.mark.parametrize(
    "change",
    [{"duration_s": 0}, {"duration_s": 16}, {"resolution": "4k"}, {"resolution": "1024p"},
     {"aspect_ratio": "21:9"}],
)
async def test_values_outside_xai_types_are_refused_before_any_call(
    server: FakeXaiServer, provider: XaiProvider, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(xai_spec("x", **change))
    assert server.create_attempts == []


async def test_blocked_input_is_refused_at_submit(server: FakeXaiServer, provider: XaiProvider) -> None:
    with pytest.raises(ContentBlocked) as info:
        await provider.submit(xai_spec("[blocked-input] a riot"))
    assert info.value.stage == "input" and info.value.kind is FailureKind.BLOCKED_INPUT
    assert server.submits == []


async def test_moderated_output_is_blocked_output(provider: XaiProvider) -> None:
    job_id = await provider.submit(xai_spec("[blocked-output] a crowd"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and final.video_url is None
    assert final.error is not None and final.error.kind is FailureKind.BLOCKED_OUTPUT


async def test_failed_job_is_generation_failed_with_its_code(provider: XaiProvider) -> None:
    job_id = await provider.submit(xai_spec("[fail] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and final.raw_status == "failed"
    assert final.error is not None and final.error.kind is FailureKind.GENERATION_FAILED
    assert "internal_error" in final.error.detail


async def test_expired_job_is_result_expired_and_its_file_is_gone(
    provider: XaiProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(xai_spec("[expired] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.RESULT_EXPIRED
    with pytest.raises(ResultExpired):
        await provider.download(job_id, None, tmp_path / "v.mp4")


async def test_slow_render_stays_pending_until_it_is_done(provider: XaiProvider) -> None:
    job_id = await provider.submit(xai_spec("[slow] a long take"))
    started = time.monotonic()
    seen = await poll_until_terminal(provider, job_id)
    assert seen[-1].state is ProviderState.SUCCEEDED
    assert time.monotonic() - started >= RUN_S + 0.2
    assert {s.state for s in seen[:-1]} <= {ProviderState.QUEUED, ProviderState.RUNNING}


async def test_stuck_job_keeps_pending(provider: XaiProvider) -> None:
    job_id = await provider.submit(xai_spec("[stuck] x"))
    await provider.poll(job_id)
    await asyncio.sleep(RUN_S * 1.5)
    status = await provider.poll(job_id)
    assert status.state is ProviderState.RUNNING and status.raw_status == "pending"


async def test_429_is_rate_limited_and_retry_makes_one_job(
    server: FakeXaiServer, provider: XaiProvider
) -> None:
    spec = xai_spec("[429-submit] x")
    with pytest.raises(RateLimited) as info:
        await provider.submit(spec)
    assert info.value.retry_after_s == 1.0 and info.value.surely_not_created
    await provider.submit(spec)
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_credits_used_up_is_quota_exhausted(provider: XaiProvider) -> None:
    with pytest.raises(QuotaExhausted) as info:
        await provider.submit(xai_spec("[quota] x"))
    assert info.value.kind is FailureKind.QUOTA_EXHAUSTED


async def test_unknown_model_is_provider_retired(provider: XaiProvider) -> None:
    with pytest.raises(ProviderRetired) as info:
        await provider.submit(xai_spec("[retired] x"))
    assert "/sora models" in info.value.user_message()


async def test_503_at_submit_is_surely_not_created(server: FakeXaiServer, provider: XaiProvider) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await provider.submit(xai_spec("[503-submit] x"))
    assert not isinstance(info.value, AmbiguousSubmit)
    assert server.submits == []


async def test_wrong_key_answered_with_400_is_auth_failed_and_hidden(server: FakeXaiServer) -> None:
    secret = "xai-live-very-secret-0042"
    xai = XaiProvider(secret, base_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as submit_info:
            await xai.submit(xai_spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await xai.poll("some-request")
        with pytest.raises(AuthFailed):
            await xai.check()
    finally:
        await xai.aclose()
    for exc in (submit_info.value, poll_info.value):
        assert_key_hidden(exc, secret)
        assert "HTTP 400" in exc.detail


async def test_read_timeout_after_sending_is_ambiguous_and_nothing_is_listed(server: FakeXaiServer) -> None:
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.05))
    xai = XaiProvider(server.api_key, base_url=server.base_url, client=client)
    try:
        with pytest.raises(AmbiguousSubmit):
            await xai.submit(xai_spec("[slow-submit] x"))
        assert len(server.submits) == 1  # made anyway: why the caller never resubmits blindly
        assert await xai.find_existing(xai_spec("[slow-submit] x"), since_epoch_s=0) is None
    finally:
        await xai.aclose()
    assert not client.is_closed
    await client.aclose()


async def test_5xx_and_malformed_polls_are_transient(provider: XaiProvider) -> None:
    flaky = await provider.submit(xai_spec("[5xx-poll] x"))
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.poll(flaky)
    garbled = await provider.submit(xai_spec("[malformed] x"))
    with pytest.raises(ProviderUnavailable):
        await provider.poll(garbled)
    for job_id in (flaky, garbled):
        assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED


async def test_unknown_request_on_poll_is_generation_failed(provider: XaiProvider) -> None:
    with pytest.raises(GenerationFailed):
        await provider.poll("no-such-request")


async def test_cancel_is_false_without_calling_xai(server: FakeXaiServer, provider: XaiProvider) -> None:
    job_id = await provider.submit(xai_spec("x"))
    assert await provider.cancel(job_id) is False
    assert server.polls[job_id] == 0


async def test_check_is_one_authenticated_model_list(provider: XaiProvider) -> None:
    text = await provider.check()
    assert "key accepted" in text and "3 models" in text


# --- parsing plain dicts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "state"),
    [
        ({"status": "pending"}, ProviderState.QUEUED),
        ({"status": "pending", "progress": 40}, ProviderState.RUNNING),
        ({"status": "done", "video": {"url": "https://vidgen.x.ai/b/v.mp4"}}, ProviderState.SUCCEEDED),
        ({"status": "failed", "error": {"code": "internal_error", "message": "x"}}, ProviderState.FAILED),
        ({"status": "expired"}, ProviderState.FAILED),
        ({"status": "warming_up"}, ProviderState.UNKNOWN),
        ({"request_id": "abc"}, ProviderState.UNKNOWN),
    ],
)
def test_status_words(body: dict[str, Any], state: ProviderState) -> None:
    assert parse_video(body).state is state


def test_done_without_a_url_is_no_output() -> None:
    status = parse_video({"status": "done", "video": {"duration": 6, "respect_moderation": True}})
    assert status.state is ProviderState.FAILED
    assert status.error is not None and status.error.detail == "no_output"


def test_failure_with_moderation_words_is_blocked_output() -> None:
    status = parse_video({"status": "failed", "error": {"code": "content_moderation",
                                                        "message": "Video rejected by moderation."}})
    assert status.error is not None and status.error.kind is FailureKind.BLOCKED_OUTPUT


def test_cost_is_read_only_when_it_is_a_whole_tick_count() -> None:
    url = {"url": "https://vidgen.x.ai/v.mp4"}
    assert parse_video({"status": "done", "video": url, "usage": {"cost_in_usd_ticks": 500_000_000}}).cost_micros == 50_000
    assert parse_video({"status": "done", "video": url, "usage": {"cost_in_usd_ticks": "5"}}).cost_micros is None
    assert parse_video({"status": "done", "video": url, "usage": {"cost_in_usd_ticks": True}}).cost_micros is None


_WORDS = st.sampled_from(["status", "pending", "done", "failed", "expired", "video", "url", "error",
                          "code", "message", "progress", "usage", "cost_in_usd_ticks", "respect_moderation"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_like(_WORDS))
def test_parser_never_crashes(body: object) -> None:
    status = parse_video(body)
    assert isinstance(status, ProviderStatus)
    if status.state is ProviderState.SUCCEEDED:
        assert status.video_url and status.video_url.startswith(("http://", "https://"))
    if status.state is ProviderState.FAILED:
        assert status.error is not None
    if status.cost_micros is not None:
        assert status.cost_micros >= 0


# --- the fake, checked against xai-sdk's types ---------------------------------------------

# Each: a create body field the SDK's types refuse, and the status the fake answers.
OUTSIDE_TYPES: list[tuple[dict[str, Any], int]] = [
    ({"duration": "8"}, 422),          # proto int, not a string
    ({"duration": 8.5}, 422),
    ({"resolution": "4k"}, 422),       # VideoResolution: 480p | 720p | 1080p
    ({"resolution": "720P"}, 422),
    ({"aspect_ratio": "21:9"}, 422),   # VideoAspectRatio: seven ratios
    ({"image": {"image_url": "https://x/a.png"}}, 400),  # REST names it image.url
    ({"image": "https://x/a.png"}, 400),
    ({"seconds": "8"}, 422),           # OpenAI's word: not a field here
]


async def _raw_create(server: FakeXaiServer, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{server.base_url}/videos/generations", json=body,
                                 headers={"Authorization": f"Bearer {server.api_key}"})


@pytest.mark.parametrize(("change", "status"), OUTSIDE_TYPES)
async def test_fake_refuses_what_xai_types_refuse(
    server: FakeXaiServer, change: dict[str, Any], status: int
) -> None:
    body = {"model": MODEL, "prompt": "p", "duration": 8, "resolution": "720p", "aspect_ratio": "16:9", **change}
    answer = await _raw_create(server, body)
    assert answer.status_code == status, answer.text
    assert server.submits == []


async def test_fake_takes_the_smallest_documented_body(server: FakeXaiServer) -> None:
    answer = await _raw_create(server, {"prompt": "just a prompt"})
    assert answer.status_code == 200 and set(answer.json()) == {"request_id"}


@pytest.mark.parametrize("duration", [0, 16])
async def test_fake_refuses_durations_outside_1_to_15(server: FakeXaiServer, duration: int) -> None:
    assert (await _raw_create(server, {"prompt": "p", "duration": duration})).status_code == 400


def _sdk_prepare(body: dict[str, Any]) -> Any:
    """The adapter's REST body through xai-sdk's own request builder (no network)."""
    xai_sdk = pytest.importorskip("xai_sdk")
    client = xai_sdk.Client(api_key="not-used")  # a lazy gRPC channel: nothing is dialled
    image = body.get("image")
    try:
        return client.video.prepare(
            body["prompt"], body["model"],
            image_url=image["url"] if isinstance(image, dict) and "url" in image else None,
            duration=body.get("duration"), aspect_ratio=body.get("aspect_ratio"),
            resolution=body.get("resolution"), generate_audio=body.get("generate_audio"),
        ).video_request
    finally:
        client.close()


@pytest.mark.parametrize("change", [c for c, _ in OUTSIDE_TYPES if {"duration", "resolution", "aspect_ratio"} & set(c)])
def test_xai_sdk_refuses_the_same_values(change: dict[str, Any]) -> None:
    body = {"model": MODEL, "prompt": "p", "duration": 8, "resolution": "720p", "aspect_ratio": "16:9", **change}
    with pytest.raises((ValueError, TypeError)):
        _sdk_prepare(body)


@pytest.mark.parametrize(
    "spec",
    [
        xai_spec("t2v", duration_s=1, resolution="480p", aspect_ratio="9:16"),
        xai_spec("t2v", duration_s=15, resolution="1080p", aspect_ratio="1:1"),
        xai_spec("i2v", duration_s=8, image=_png(), audio=False),
    ],
)
def test_adapter_bodies_fit_xai_sdk_request_types(spec: VideoSpec) -> None:
    body = build_request(spec)
    request = _sdk_prepare(body)
    from xai_sdk.proto import video_pb2

    fields = video_pb2.GenerateVideoRequest.DESCRIPTOR.fields_by_name
    assert set(body) <= set(fields), set(body) - set(fields)
    assert (request.model, request.prompt, request.duration) == (body["model"], body["prompt"], body["duration"])
    if "image" in body:
        assert request.image.image_url == body["image"]["url"]
    if "generate_audio" in body:
        assert request.generate_audio is body["generate_audio"]


# --- through the app -------------------------------------------------------------------------


@pytest.fixture
async def app_world(make_bot, slack) -> AsyncIterator[tuple[FakeXaiServer, Any]]:
    # the fake's files on another host name, as xAI's CDN is on another host than its API
    async with FakeXaiServer(run_seconds=0.3, files_host="localhost") as srv, httpx.AsyncClient() as client:
        bot = await make_bot(providers={"xai": XaiProvider(srv.api_key, base_url=srv.base_url, client=client)},
                             include_simulator=False, sora_default_model="grok-imagine",
                             sora_daily_budget_usd="20")
        yield srv, bot


async def _jobs(bot: Any) -> list[dict[str, Any]]:
    return json.loads(await jobs_json(bot.deps.db))


async def test_sora_grok_imagine_puts_the_video_in_the_thread_at_its_reported_cost(app_world, slack) -> None:
    server, bot = app_world
    resp = await bot.slash("-m grok-imagine -d 5 -r 1080p a paper boat on a rainy street")
    assert "Got it" in resp.json()["text"], resp.json()["text"]
    await bot.runtime.poller.idle(20)
    (job,) = await _jobs(bot)
    assert (job["status"], job["provider"], job["model"]) == ("succeeded", "xai", "grok-imagine"), job
    (sent,) = server.submits
    assert (sent["model"], sent["duration"], sent["resolution"]) == (MODEL, 5, "1080p")
    # xAI reported 5 s x $0.10 in ticks; below the reserved estimate, so that is charged
    assert job["cost_usd"] == pytest.approx(5 * PRICE_USD_PER_S["1080p"])
    replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
    assert len(replies) == 1 and replies[0].files
    assert server.download_auth == [None]


async def test_sora_grok_imagine_moderated_output_is_not_charged(app_world, slack) -> None:
    server, bot = app_world
    resp = await bot.slash("-m grok-imagine -d 3 [blocked-output] a crowd")
    assert "Got it" in resp.json()["text"], resp.json()["text"]
    await bot.runtime.poller.idle(20)
    (job,) = await _jobs(bot)
    assert (job["status"], job["failure_kind"], job["cost_usd"]) == ("failed", "blocked_output", 0)
