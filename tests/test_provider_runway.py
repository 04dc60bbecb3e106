"""RunwayProvider against the fake Runway task API, plus its pure parsers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import (
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
    RunwayProvider,
    failure_kind,
    parse_task,
    runway_progress,
    runway_ratio,
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
