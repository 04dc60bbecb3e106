"""VeoProvider against the fake Gemini API (Veo operations), plus its pure parsers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
from bot.providers.veo import VeoProvider, parse_operation, rai_reason
from tests.fakes.providers import poll_until_terminal, video_bytes
from tests.fakes.runway_veo import VEO_RAI_REASON, FakeVeoServer
from tests.provider_checks import assert_key_hidden, json_like

RUN_S = 0.05
MODEL = "veo-3.1-generate-preview"
PNG = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n" + b"\0" * 32, mime_type="image/png", width=1280, height=720
)


def spec(
    prompt: str,
    *,
    duration_s: int = 8,
    resolution: str = "720p",
    aspect_ratio: str = "16:9",
    image: ReferenceImage | None = None,
) -> VideoSpec:
    return VideoSpec(
        model="veo-3.1",
        provider_model=MODEL,
        prompt=prompt,
        duration_s=duration_s,
        resolution=resolution,
        aspect_ratio=aspect_ratio,
        external_id="job-1",
        image=image,
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeVeoServer]:
    async with FakeVeoServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeVeoServer) -> AsyncIterator[VeoProvider]:
    veo = VeoProvider(server.api_key, base_url=server.base_url)
    yield veo
    await veo.aclose()


# --- end to end against the fake ---------------------------------------------------------


async def test_veo_is_a_video_provider(provider: VeoProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls) == ("veo", False)


async def test_success_end_to_end(
    server: FakeVeoServer, provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("a hummingbird in slow motion"))

    assert job_id.startswith(f"models/{MODEL}/operations/")
    assert server.submits == [
        {
            "instances": [{"prompt": "a hummingbird in slow motion"}],
            "parameters": {"aspectRatio": "16:9", "resolution": "720p", "durationSeconds": "8"},
        }
    ]
    seen = await poll_until_terminal(provider, job_id)
    # no status words and no progress until done: it reads as rendering
    assert all((s.state, s.progress) == (ProviderState.RUNNING, None) for s in seen[:-1])
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED
    assert final.video_url == server.video_uri(server.jobs[job_id].extra["file"])

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    # both legs, the URI and the redirect target, carried the key
    assert server.download_auth == [server.api_key, server.api_key]
    assert server.downloads[job_id] == 1


async def test_image_to_video_sends_inline_image_bytes(
    server: FakeVeoServer, provider: VeoProvider
) -> None:
    await provider.submit(spec("the bird flies off", aspect_ratio="9:16", image=PNG))
    instance = server.submits[0]["instances"][0]
    assert instance["image"] == {
        "bytesBase64Encoded": base64.b64encode(PNG.data).decode(),
        "mimeType": "image/png",
    }
    assert server.submits[0]["parameters"]["aspectRatio"] == "9:16"


async def test_requests_carry_the_key_header_only() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": f"models/{MODEL}/operations/op1"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        veo = VeoProvider("g-key", base_url="https://gl.example/v1beta/", client=client)
        name = await veo.submit(spec("x"))
        assert (await veo.poll(name)).state is ProviderState.RUNNING
        assert await veo.cancel(name) is True
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", f"/v1beta/models/{MODEL}:predictLongRunning"),
        ("GET", f"/v1beta/models/{MODEL}/operations/op1"),
        ("POST", f"/v1beta/models/{MODEL}/operations/op1:cancel"),
    ]
    for request in seen:
        assert request.headers["x-goog-api-key"] == "g-key"
        assert "authorization" not in request.headers


async def test_1080p_at_8_seconds_is_accepted(server: FakeVeoServer, provider: VeoProvider) -> None:
    await provider.submit(spec("x", resolution="1080p", duration_s=8))
    assert server.submits[0]["parameters"]["resolution"] == "1080p"


# --- pre-send validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"duration_s": 5}, "4, 6 or 8"),
        ({"duration_s": 10}, "4, 6 or 8"),
        ({"resolution": "1080p", "duration_s": 4}, "only at 8 seconds"),
        ({"resolution": "480p"}, "720p, 1080p or 4k"),
        ({"resolution": "4k", "duration_s": 6}, "only at 8 seconds"),
        ({"aspect_ratio": "1:1"}, "16:9 or 9:16"),
    ],
)
async def test_unsupported_settings_are_refused_before_sending(
    server: FakeVeoServer, provider: VeoProvider, kw: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(spec("x", **kw))
    assert words in info.value.user_message()
    assert server.create_attempts == []


# --- scripted behaviour --------------------------------------------------------------------


async def test_rai_filtered_video_is_blocked_output_with_a_short_reason(
    provider: VeoProvider,
) -> None:
    job_id = await provider.submit(spec("[rai] a famous actor dancing"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and final.error is not None
    assert final.error.kind is FailureKind.BLOCKED_OUTPUT
    assert final.error.reason == (
        "Unable to generate videos because the prompt contains a celebrity likeness."
    )
    assert "Support codes" in final.error.detail


async def test_operation_error_is_generation_failed(provider: VeoProvider) -> None:
    job_id = await provider.submit(spec("[op-error] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and final.error is not None
    assert final.error.kind is FailureKind.GENERATION_FAILED
    assert "13" in final.error.detail


async def test_403_on_operation_poll_is_auth_failed(
    server: FakeVeoServer, provider: VeoProvider
) -> None:
    job_id = await provider.submit(spec("[403-poll] x"))
    for _ in range(2):
        with pytest.raises(AuthFailed) as info:
            await provider.poll(job_id)
        assert info.value.kind is FailureKind.AUTH_FAILED
        assert_key_hidden(info.value, server.api_key)
    assert server.polls[job_id] == 2


async def test_429_at_submit_is_rate_limited(server: FakeVeoServer, provider: VeoProvider) -> None:
    with pytest.raises(RateLimited) as info:
        await provider.submit(spec("[429-submit] x"))
    assert info.value.retryable and info.value.surely_not_created
    assert "RESOURCE_EXHAUSTED" in info.value.detail or "quota" in info.value.detail
    await provider.submit(spec("[429-submit] x"))
    assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_stuck_operation_stays_running_and_can_be_cancelled(
    server: FakeVeoServer, provider: VeoProvider
) -> None:
    job_id = await provider.submit(spec("[stuck] x"))
    await asyncio.sleep(RUN_S * 1.5)
    assert (await provider.poll(job_id)).state is ProviderState.RUNNING
    assert await provider.cancel(job_id) is True
    assert (await provider.poll(job_id)).state is ProviderState.CANCELLED
    assert server.cancels == [job_id]


async def test_cancel_is_best_effort_and_never_raises(provider: VeoProvider) -> None:
    assert await provider.cancel(f"models/{MODEL}/operations/missing") is False
    job_id = await provider.submit(spec("x"))
    await poll_until_terminal(provider, job_id)
    assert await provider.cancel(job_id) is False  # already done
    unreachable = VeoProvider("k", base_url="http://127.0.0.1:9/v1beta")
    try:
        assert await unreachable.cancel(job_id) is False
    finally:
        await unreachable.aclose()


async def test_download_without_uri_asks_for_the_operation_first(
    provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("resume after restart"))
    await poll_until_terminal(provider, job_id)
    await provider.download(job_id, None, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)


async def test_key_is_not_sent_to_another_host(
    server: FakeVeoServer, provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.video_url is not None
    elsewhere = final.video_url.replace("127.0.0.1", "localhost")
    with pytest.raises(ResultExpired):  # the fake wants the key, so it answers 403
        await provider.download(job_id, elsewhere, tmp_path / "v.mp4")
    assert server.download_auth == [None]


async def test_fake_download_needs_the_key(server: FakeVeoServer, provider: VeoProvider) -> None:
    job_id = await provider.submit(spec("x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.video_url is not None
    async with httpx.AsyncClient() as client:
        answer = await client.get(final.video_url)
    assert answer.status_code == 403


async def test_wrong_key_is_auth_failed_and_never_echoed(server: FakeVeoServer) -> None:
    secret = "AIzaSy-very-secret-123"
    veo = VeoProvider(secret, base_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as submit_info:
            await veo.submit(spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await veo.poll(f"models/{MODEL}/operations/x")
    finally:
        await veo.aclose()
    for exc in (submit_info.value, poll_info.value):
        assert_key_hidden(exc, secret)
        assert exc.__cause__ is None or secret not in str(exc.__cause__)


async def test_5xx_poll_is_transient(provider: VeoProvider) -> None:
    job_id = await provider.submit(spec("[5xx-poll] x"))
    with pytest.raises(ProviderUnavailable):
        await provider.poll(job_id)


# --- pure parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"name": "op"}, {"name": "op", "done": False}, {"done": None}])
def test_unfinished_operation_is_running_without_progress(body: dict[str, Any]) -> None:
    status = parse_operation(body)
    assert (status.state, status.progress) == (ProviderState.RUNNING, None)


@pytest.mark.parametrize(
    ("error", "state", "kind"),
    [
        ({"code": 3, "message": "bad"}, ProviderState.FAILED, FailureKind.INVALID_REQUEST),
        ({"code": 400, "status": "INVALID_ARGUMENT"}, ProviderState.FAILED,
         FailureKind.INVALID_REQUEST),
        ({"code": 8, "message": "x"}, ProviderState.FAILED, FailureKind.RATE_LIMITED),
        ({"code": 429, "status": "RESOURCE_EXHAUSTED"}, ProviderState.FAILED,
         FailureKind.RATE_LIMITED),
        ({"code": 13, "message": "internal"}, ProviderState.FAILED,
         FailureKind.GENERATION_FAILED),
        ("boom", ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        ({"code": 1, "message": "cancelled"}, ProviderState.CANCELLED, None),
    ],
)
def test_operation_errors(
    error: object, state: ProviderState, kind: FailureKind | None
) -> None:
    status = parse_operation({"done": True, "error": error})
    assert status.state is state
    assert (status.error.kind if status.error else None) is kind


def test_sdk_style_sample_path_is_understood() -> None:
    body = {"done": True, "response": {"generatedVideos": [{"video": {"uri": "https://g/v"}}]}}
    assert parse_operation(body).video_url == "https://g/v"


def test_done_without_samples_or_filter_is_no_output() -> None:
    status = parse_operation({"done": True, "response": {"generateVideoResponse": {}}})
    assert status.state is ProviderState.FAILED and status.error is not None
    assert (status.error.kind, status.error.detail) == (FailureKind.GENERATION_FAILED, "no_output")


def test_filter_count_without_reasons_is_still_blocked_output() -> None:
    body = {"done": True, "response": {"generateVideoResponse": {"raiMediaFilteredCount": 1}}}
    status = parse_operation(body)
    assert status.error is not None
    assert (status.error.kind, status.error.reason) == (FailureKind.BLOCKED_OUTPUT, None)


def test_rai_reason_is_short_and_drops_support_codes() -> None:
    assert rai_reason([VEO_RAI_REASON]) == (
        "Unable to generate videos because the prompt contains a celebrity likeness."
    )
    assert rai_reason(["", "Audio was filtered. Support codes: 123"]) == "Audio was filtered."
    long = rai_reason(["x" * 500])
    assert long is not None and len(long) <= 160
    assert rai_reason([]) is None and rai_reason("text") is None


@pytest.mark.parametrize("body", [[], "text", 7, None])
def test_non_object_operation_is_transient(body: object) -> None:
    with pytest.raises(ProviderUnavailable):
        parse_operation(body)


_WORDS = st.sampled_from(
    ["name", "done", "error", "code", "message", "status", "response", "generateVideoResponse",
     "generatedSamples", "video", "uri", "raiMediaFilteredCount", "raiMediaFilteredReasons",
     "generatedVideos", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "https://g.example/v"]
)
_JSON = json_like(_WORDS)

# Operation-shaped bodies, so the fuzz also reaches the nested sample and filter fields.
_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "done": _JSON,
        "error": _JSON,
        "response": st.fixed_dictionaries(
            {},
            optional={
                "generateVideoResponse": st.fixed_dictionaries(
                    {},
                    optional={
                        "generatedSamples": st.lists(
                            st.fixed_dictionaries({}, optional={"video": st.fixed_dictionaries(
                                {}, optional={"uri": _JSON})}) | _JSON,
                            max_size=2,
                        ),
                        "raiMediaFilteredCount": _JSON,
                        "raiMediaFilteredReasons": _JSON,
                    },
                ),
            },
        ),
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_SHAPED | st.dictionaries(_WORDS, _JSON, max_size=6) | _JSON)
def test_operation_parser_never_crashes(body: object) -> None:
    try:
        status = parse_operation(body)
    except ProviderError:
        return
    assert isinstance(status, ProviderStatus)
    assert status.progress is None or 0 <= status.progress <= 100
    if status.state is ProviderState.SUCCEEDED:
        assert status.video_url
    if status.state is ProviderState.FAILED:
        assert status.error is not None


async def test_the_key_header_does_not_follow_a_redirect_to_another_host(tmp_path) -> None:
    """A cross-host redirect must not carry x-goog-api-key (httpx only strips Authorization)."""
    import asyncio

    import httpx
    from aiohttp import web

    from bot.providers.http import stream_to_file

    seen: dict[str, str | None] = {}

    async def other_host(request: web.Request) -> web.Response:
        seen["key"] = request.headers.get("x-goog-api-key")
        return web.Response(body=b"video-bytes")

    async def start(app: web.Application) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    cdn = web.Application()
    cdn.router.add_get("/blob", other_host)
    cdn_runner, cdn_port = await start(cdn)

    async def redirect(request: web.Request) -> web.Response:
        # "localhost" is a different host name from 127.0.0.1, as a CDN would be
        raise web.HTTPFound(f"http://localhost:{cdn_port}/blob")

    api = web.Application()
    api.router.add_get("/file", redirect)
    api_runner, api_port = await start(api)
    try:
        async with httpx.AsyncClient() as client:
            size = await stream_to_file(
                client, asyncio.Semaphore(1), f"http://127.0.0.1:{api_port}/file", tmp_path / "v.mp4",
                label="Veo", headers={"x-goog-api-key": "secret-key"},
            )
        assert size == len(b"video-bytes") and seen["key"] is None
    finally:
        await api_runner.cleanup()
        await cdn_runner.cleanup()
