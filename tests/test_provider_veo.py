"""Veo on Google's Agent Platform: the token source (real google-auth), VeoProvider against the
fake, the fake checked by google-genai 3.6's own client and types, and one job through the app."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import threading
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import models as genai_models
from google.genai import types as genai_types
from google.auth.credentials import AnonymousCredentials
from google.oauth2 import service_account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import jobs_json
from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    DeliveryError,
    InvalidProviderRequest,
    ProviderError,
    ProviderRetired,
    ProviderUnavailable,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderState, ProviderStatus, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.google_auth import CLOUD_PLATFORM_SCOPE, GoogleTokenSource
from bot.providers.http import error_for_response, rpc_retry_delay
from bot.providers.veo import (
    VeoProvider,
    build_predict_request,
    gcs_media_url,
    parse_operation,
    rai_reason,
)
from tests.fakes.google_agent import (
    CLIENT_EMAIL,
    GOOGLE_TOKEN_AUDIENCE,
    RAI_REASON,
    FakeAgentPlatformServer,
    make_veo_provider,
    new_rsa_key,
)
from tests.fakes.providers import poll_until_terminal, video_bytes
from tests.provider_checks import json_like

RUN_S = 0.05
MODEL = "veo-3.1-generate-001"
PNG = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n" + b"\0" * 32, mime_type="image/png", width=1280, height=720
)


def spec(
    prompt: str,
    *,
    model: str = MODEL,
    duration_s: int = 8,
    resolution: str = "720p",
    aspect_ratio: str = "16:9",
    image: ReferenceImage | None = None,
    audio: bool | None = None,
) -> VideoSpec:
    return VideoSpec(
        model="veo-3.1",
        provider_model=model,
        prompt=prompt,
        duration_s=duration_s,
        resolution=resolution,
        aspect_ratio=aspect_ratio,
        external_id="job-1",
        image=image,
        audio=audio,
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeAgentPlatformServer]:
    async with FakeAgentPlatformServer(run_seconds=RUN_S) as srv:
        yield srv


def make_provider(server: FakeAgentPlatformServer, **kw: Any) -> VeoProvider:
    return make_veo_provider(server, **kw)


@pytest.fixture
async def provider(server: FakeAgentPlatformServer) -> AsyncIterator[VeoProvider]:
    veo = make_provider(server)
    yield veo
    await veo.aclose()


def _private_key_parts(server: FakeAgentPlatformServer) -> list[str]:
    """Lines of the private key: none may appear in any error text."""
    pem = server.service_account_info()["private_key"]
    return [line for line in pem.splitlines() if line and "PRIVATE KEY" not in line]


def assert_no_secret(exc: BaseException, secrets: list[str]) -> None:
    texts = [str(exc), repr(exc), getattr(exc, "detail", ""), getattr(exc, "reason", None) or ""]
    if exc.__cause__ is not None:
        texts.append(str(exc.__cause__))
    for secret in secrets:
        for text in texts:
            assert secret not in text


# --- the token source, with real google-auth ----------------------------------------------


async def test_a_service_account_token_is_minted_by_a_signed_grant_and_cached(
    server: FakeAgentPlatformServer,
) -> None:
    tokens = GoogleTokenSource(server.credentials_file)
    try:
        # the fake answers from this same event loop: a refresh that blocked the loop would
        # never get its answer, and this would time out
        async with asyncio.timeout(10):
            first = await tokens.token()
            second = await tokens.token()
    finally:
        await tokens.aclose()
    assert first == second and first.startswith("ya29.fake-")
    assert len(server.tokens_issued) == 1  # the fake verified signature, kid, iss and aud
    claims = server.tokens_issued[0]
    assert claims["iss"] == CLIENT_EMAIL and claims["aud"] == GOOGLE_TOKEN_AUDIENCE
    assert claims["scope"] == CLOUD_PLATFORM_SCOPE


async def test_a_token_is_refreshed_shortly_before_it_expires(
    server: FakeAgentPlatformServer,
) -> None:
    now = [1_000_000.0]
    tokens = GoogleTokenSource(server.credentials_file, refresh_margin_s=300, clock=lambda: now[0])
    try:
        first = await tokens.token()
        now[0] += server.token_lifetime_s - 310  # still outside the margin
        assert await tokens.token() == first
        now[0] += 20  # now inside it
        second = await tokens.token()
    finally:
        await tokens.aclose()
    assert second != first and len(server.tokens_issued) == 2


async def test_many_callers_share_one_refresh(server: FakeAgentPlatformServer) -> None:
    tokens = GoogleTokenSource(server.credentials_file)
    try:
        got = await asyncio.gather(*(tokens.token() for _ in range(20)))
    finally:
        await tokens.aclose()
    assert len(set(got)) == 1 and len(server.tokens_issued) == 1


async def test_refresh_runs_in_a_worker_thread(
    server: FakeAgentPlatformServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = service_account.Credentials.refresh

    def spy(self: Any, request: Any) -> None:
        seen.append(threading.current_thread() is threading.main_thread())
        original(self, request)

    monkeypatch.setattr(service_account.Credentials, "refresh", spy)
    tokens = GoogleTokenSource(server.credentials_file)
    try:
        await tokens.token()
    finally:
        await tokens.aclose()
    assert seen == [False]


async def test_a_refused_grant_is_auth_failed_and_names_no_secret(
    server: FakeAgentPlatformServer,
) -> None:
    server.refuse_grants = "invalid_grant"
    tokens = GoogleTokenSource(server.credentials_file)
    try:
        with pytest.raises(AuthFailed) as info:
            await tokens.token()
    finally:
        await tokens.aclose()
    assert "refused the bot's credentials" in info.value.user_message()
    assert "invalid_grant" in info.value.detail
    assert_no_secret(info.value, _private_key_parts(server))


async def test_a_key_the_token_endpoint_does_not_know_is_auth_failed(
    server: FakeAgentPlatformServer, tmp_path: Path
) -> None:
    path = server.write_service_account(tmp_path / "other.json", key=new_rsa_key())
    tokens = GoogleTokenSource(path)
    try:
        with pytest.raises(AuthFailed) as info:
            await tokens.token()
    finally:
        await tokens.aclose()
    assert "Invalid JWT Signature" in info.value.detail
    assert server.token_refusals == 1 and server.tokens_issued == []


def _bad_file(server: FakeAgentPlatformServer, tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "key.json"
    info = server.service_account_info()
    if kind == "missing":
        return tmp_path / "nowhere.json"
    if kind == "not json":
        path.write_text(info["private_key"][:200])  # a pasted key, not the JSON file
    elif kind == "a list":
        path.write_text("[]")
    elif kind == "user credentials":
        path.write_text(json.dumps({"type": "authorized_user", "client_secret": "s3cr3t-value"}))
    elif kind == "no email":
        del info["client_email"]
        path.write_text(json.dumps(info))
    elif kind == "broken key":
        info["private_key"] = info["private_key"][:120] + "\n-----END PRIVATE KEY-----\n"
        path.write_text(json.dumps(info))
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "can't be read"),
        ("not json", "is not JSON"),
        ("a list", "is not a JSON object"),
        ("user credentials", "is not a service-account key"),
        ("no email", "is not a usable service-account key"),
        ("broken key", "is not a usable service-account key"),
    ],
)
async def test_an_unusable_credentials_file_is_auth_failed_with_a_clear_message(
    server: FakeAgentPlatformServer, tmp_path: Path, kind: str, words: str
) -> None:
    path = _bad_file(server, tmp_path, kind)
    tokens = GoogleTokenSource(path)
    with pytest.raises(AuthFailed) as info:
        await tokens.token()
    assert words in info.value.user_message() and str(path) in info.value.user_message()
    assert_no_secret(info.value, [*_private_key_parts(server), "s3cr3t-value"])
    assert server.tokens_issued == [] and server.token_refusals == 0


async def test_application_default_credentials_come_from_the_environment(
    server: FakeAgentPlatformServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.credentials_file))
    tokens = GoogleTokenSource()
    try:
        token = await tokens.token()
    finally:
        await tokens.aclose()
    assert token.startswith("ya29.fake-") and len(server.tokens_issued) == 1
    assert tokens.source == "application default credentials"


async def test_application_default_credentials_that_point_nowhere_are_auth_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "gone.json"))
    with pytest.raises(AuthFailed) as info:
        await GoogleTokenSource().token()
    assert "application default credentials" in info.value.user_message()


async def test_an_unreachable_token_endpoint_is_transient(
    server: FakeAgentPlatformServer, tmp_path: Path
) -> None:
    info = server.service_account_info()
    info["token_uri"] = "http://127.0.0.1:9/token"
    path = tmp_path / "key.json"
    path.write_text(json.dumps(info))
    tokens = GoogleTokenSource(path)
    try:
        with pytest.raises(ProviderUnavailable) as exc_info:
            await tokens.token()
    finally:
        await tokens.aclose()
    assert exc_info.value.retryable
    assert_no_secret(exc_info.value, _private_key_parts(server))


# --- the adapter against the fake ------------------------------------------------------------


async def test_veo_is_a_video_provider(provider: VeoProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls, provider.downloads_by_job_id) == ("veo", False, True)
    assert await provider.find_existing(spec("x"), since_epoch_s=0) is None


async def test_an_inline_video_is_kept_in_memory_and_written_by_download(
    server: FakeAgentPlatformServer, provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("a hummingbird in slow motion"))

    assert job_id.startswith(f"projects/test-project/locations/us-central1/publishers/google/models/{MODEL}/operations/")
    assert server.submits == [
        {
            "instances": [{"prompt": "a hummingbird in slow motion"}],
            "parameters": {"sampleCount": 1, "durationSeconds": 8, "aspectRatio": "16:9", "resolution": "720p"},
        }
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert all((s.state, s.progress) == (ProviderState.RUNNING, None) for s in seen[:-1])
    final = seen[-1]
    # the bytes are not a URL: nothing for the database to keep
    assert (final.state, final.video_url) == (ProviderState.SUCCEEDED, None)
    polls = server.polls[job_id]

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, None, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    assert server.polls[job_id] == polls and sum(server.downloads.values()) == 0
    assert not dest.with_name("video.mp4.part").exists()


async def test_a_download_after_a_restart_fetches_the_operation_again(
    server: FakeAgentPlatformServer, provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("resume after restart"))
    await poll_until_terminal(provider, job_id)
    fresh = make_provider(server)  # a new process: nothing in memory
    try:
        polls = server.polls[job_id]
        await fresh.download(job_id, None, tmp_path / "v.mp4")
    finally:
        await fresh.aclose()
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)
    assert server.polls[job_id] == polls + 1


async def test_only_a_few_inline_videos_are_kept_and_an_evicted_one_is_fetched_again(
    server: FakeAgentPlatformServer, provider: VeoProvider, tmp_path: Path
) -> None:
    ids = [await provider.submit(spec(f"clip {n}")) for n in range(6)]
    for job_id in ids:
        await poll_until_terminal(provider, job_id)
    assert len(provider._videos) == 4 and ids[0] not in provider._videos
    polls = server.polls[ids[0]]
    await provider.download(ids[0], None, tmp_path / "first.mp4")
    assert (tmp_path / "first.mp4").read_bytes() == video_bytes(ids[0])
    assert server.polls[ids[0]] == polls + 1
    last_polls = server.polls[ids[-1]]
    await provider.download(ids[-1], None, tmp_path / "last.mp4")  # still in memory
    assert ids[-1] not in provider._videos and server.polls[ids[-1]] == last_polls
    assert (tmp_path / "last.mp4").read_bytes() == video_bytes(ids[-1])


async def test_a_download_of_an_unfinished_operation_is_a_delivery_error(
    provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("[stuck] x"))
    with pytest.raises(DeliveryError) as info:
        await provider.download(job_id, None, tmp_path / "v.mp4")
    assert not isinstance(info.value, ResultExpired)


async def test_a_gcs_result_is_downloaded_through_the_json_api_with_the_token(
    server: FakeAgentPlatformServer, provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("[gcs] a lighthouse"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.video_url == server.gcs_uri(server.jobs[job_id])  # gs://bucket/veo/<id>/sample_0.mp4
    await provider.download(job_id, final.video_url, tmp_path / "v.mp4")
    # the object name holds slashes: the fake's route matches only when they are %2F-encoded
    assert (tmp_path / "v.mp4").read_bytes() == video_bytes(job_id)
    assert len(server.download_auth) == 1 and str(server.download_auth[0]).startswith("Bearer ya29.fake-")


async def test_a_gone_gcs_object_is_result_expired(
    server: FakeAgentPlatformServer, provider: VeoProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(spec("[expired] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    with pytest.raises(ResultExpired):
        await provider.download(job_id, final.video_url, tmp_path / "v.mp4")


async def test_requests_carry_a_bearer_token_and_polls_use_the_sdks_url() -> None:
    seen: list[httpx.Request] = []
    name = f"projects/p1/locations/europe-west4/publishers/google/models/{MODEL}/operations/op-1"

    class Tokens:
        async def token(self) -> str:
            return "tok-123"

        def invalidate(self) -> None: ...

        async def aclose(self) -> None: ...

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": name})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        veo = VeoProvider(project="p1", location="europe-west4", token=Tokens(), client=client)
        assert await veo.submit(spec("x")) == name
        assert (await veo.poll(name)).state is ProviderState.RUNNING
        assert await veo.cancel(name) is False  # no cancel exists: no request either
    host = "https://europe-west4-aiplatform.googleapis.com/v1"
    # google-genai's operations.get: the URL is the name's part before /operations/
    resource = name.rpartition("/operations/")[0]
    assert [(r.method, str(r.url)) for r in seen] == [
        ("POST", f"{host}/projects/p1/locations/europe-west4/publishers/google/models/{MODEL}:predictLongRunning"),
        ("POST", f"{host}/{resource}:fetchPredictOperation"),
    ]
    assert json.loads(seen[1].content) == {"operationName": name}
    assert all(r.headers["authorization"] == "Bearer tok-123" for r in seen)


async def test_image_to_video_and_audio_are_sent_as_the_api_expects(
    server: FakeAgentPlatformServer, provider: VeoProvider
) -> None:
    await provider.submit(spec("the bird flies off", aspect_ratio="9:16", image=PNG, audio=False))
    await provider.submit(spec("with sound", audio=True, duration_s=4))
    first, second = server.submits
    assert first["instances"][0]["image"] == {
        "bytesBase64Encoded": base64.b64encode(PNG.data).decode(),
        "mimeType": "image/png",
    }
    assert first["parameters"]["aspectRatio"] == "9:16" and first["parameters"]["generateAudio"] is False
    assert second["parameters"]["generateAudio"] is True
    assert second["parameters"]["durationSeconds"] == 4  # an integer, as the SDK types it


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"duration_s": 5}, "4, 6 or 8"),
        ({"duration_s": 10}, "4, 6 or 8"),
        ({"resolution": "1080p", "duration_s": 4}, "only at 8 seconds"),
        ({"resolution": "480p"}, "720p, 1080p, 4k"),
        ({"resolution": "4k", "model": "veo-3.1-lite-generate-001"}, "720p, 1080p videos"),
        ({"resolution": "4k", "duration_s": 6}, "only at 8 seconds"),
        ({"aspect_ratio": "1:1"}, "16:9 or 9:16"),
    ],
)
async def test_unsupported_settings_are_refused_before_sending(
    server: FakeAgentPlatformServer, provider: VeoProvider, kw: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidProviderRequest) as info:
        await provider.submit(spec("x", **kw))
    assert words in info.value.user_message()
    assert server.create_attempts == []


async def test_4k_and_1080p_at_8_seconds_are_accepted(
    server: FakeAgentPlatformServer, provider: VeoProvider
) -> None:
    await provider.submit(spec("x", resolution="4k"))
    await provider.submit(spec("x", resolution="1080p", model="veo-3.1-lite-generate-001"))
    assert [s["parameters"]["resolution"] for s in server.submits] == ["4k", "1080p"]


async def test_rai_filtered_video_is_blocked_output_with_a_short_reason(provider: VeoProvider) -> None:
    job_id = await provider.submit(spec("[rai] a famous actor dancing"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and final.error is not None
    assert final.error.kind is FailureKind.BLOCKED_OUTPUT
    assert final.error.reason == "Unable to generate videos because the prompt contains a celebrity likeness."
    assert "Support codes" in final.error.detail


@pytest.mark.parametrize(
    ("marker", "kind"),
    [("[op-error]", FailureKind.GENERATION_FAILED), ("[prompt-refused]", FailureKind.BLOCKED_INPUT)],
)
async def test_an_operation_error_is_the_right_kind(
    provider: VeoProvider, marker: str, kind: FailureKind
) -> None:
    job_id = await provider.submit(spec(f"{marker} x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED and final.error is not None
    assert final.error.kind is kind


async def test_a_429_with_retry_info_is_rate_limited_for_that_long() -> None:
    async with FakeAgentPlatformServer(run_seconds=RUN_S, retry_delay="1.5s") as server:
        veo = make_provider(server)
        try:
            with pytest.raises(RateLimited) as info:
                await veo.submit(spec("[429-submit] x"))
            assert info.value.retry_after_s == 1.5 and info.value.surely_not_created
            await veo.submit(spec("[429-submit] x"))
        finally:
            await veo.aclose()
        assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_403_on_a_poll_is_auth_failed_and_hides_the_token(
    server: FakeAgentPlatformServer, provider: VeoProvider
) -> None:
    job_id = await provider.submit(spec("[403-poll] x"))
    with pytest.raises(AuthFailed):
        await provider.poll(job_id)
    assert server.polls[job_id] == 1


async def test_a_revoked_token_is_auth_failed_once_then_replaced(
    server: FakeAgentPlatformServer, provider: VeoProvider
) -> None:
    await provider.submit(spec("first"))
    server.revoke_tokens()
    with pytest.raises(AuthFailed) as info:
        await provider.submit(spec("second"))
    # the fake echoes the refused header; the adapter redacts the token
    assert "Bearer ***" in info.value.detail and "ya29.fake-" not in info.value.detail
    await provider.submit(spec("third"))
    assert len(server.tokens_issued) == 2 and len(server.submits) == 2


async def test_a_refused_grant_makes_no_job(server: FakeAgentPlatformServer, provider: VeoProvider) -> None:
    server.refuse_grants = "invalid_grant"
    with pytest.raises(AuthFailed) as info:
        await provider.submit(spec("x"))
    assert info.value.surely_not_created and server.create_attempts == []


async def test_the_wrong_project_is_auth_failed(server: FakeAgentPlatformServer) -> None:
    veo = VeoProvider(
        project="someone-else", token=GoogleTokenSource(server.credentials_file), base_url=server.base_url
    )
    try:
        with pytest.raises(AuthFailed):
            await veo.submit(spec("x"))
    finally:
        await veo.aclose()


async def test_an_unknown_model_is_retired(server: FakeAgentPlatformServer, provider: VeoProvider) -> None:
    with pytest.raises(ProviderRetired):
        await provider.submit(spec("x", model="veo-3.0-generate-001"))
    with pytest.raises(ProviderRetired):
        await provider.check_model("veo-3.1-generate-preview")
    assert server.submits == []


async def test_a_gemini_api_operation_from_an_older_version_is_retired_without_a_request(
    tmp_path: Path,
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected, got {request.url}")

    class Tokens:
        async def token(self) -> str:
            raise AssertionError("no token needed")

        def invalidate(self) -> None: ...

        async def aclose(self) -> None: ...

    old = "models/veo-3.1-generate-preview/operations/abc123"
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        veo = VeoProvider(project="p", token=Tokens(), client=client)
        status = await veo.poll(old)
        assert status.state is ProviderState.FAILED and status.error is not None
        assert status.error.kind is FailureKind.PROVIDER_RETIRED
        assert "2026-10-22" in status.error.detail
        with pytest.raises(ResultExpired):
            await veo.download(old, "https://generativelanguage.googleapis.com/v1beta/files/x", tmp_path / "v.mp4")


async def test_check_mints_a_token_and_looks_the_model_up(
    server: FakeAgentPlatformServer, provider: VeoProvider
) -> None:
    assert await provider.check() == "veo-3.1-fast-generate-001 found in us-central1 (GA)"
    assert "PUBLIC_PREVIEW" in await provider.check_model("veo-3.1-lite-generate-001")
    assert len(server.tokens_issued) == 1


async def test_5xx_and_unreadable_polls_are_transient(provider: VeoProvider) -> None:
    for marker in ("[5xx-poll]", "[malformed]"):
        job_id = await provider.submit(spec(f"{marker} x"))
        with pytest.raises(ProviderUnavailable):
            await provider.poll(job_id)


async def test_a_submit_that_times_out_after_sending_is_ambiguous(server: FakeAgentPlatformServer) -> None:
    server.slow_seconds = 0.2
    async with httpx.AsyncClient(timeout=0.1) as client:
        veo = make_provider(server, client=client)
        try:
            await veo._token.token()  # mint first: only the create should be slow
            with pytest.raises(AmbiguousSubmit):
                await veo.submit(spec("[slow-submit] x"))
        finally:
            await veo.aclose()
    assert len(server.submits) == 1


# --- pure parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"name": "op"}, {"name": "op", "done": False}, {"done": None}])
def test_unfinished_operation_is_running_without_progress(body: dict[str, Any]) -> None:
    status, video = parse_operation(body)
    assert (status.state, status.progress, video) == (ProviderState.RUNNING, None, None)


@pytest.mark.parametrize(
    ("error", "state", "kind"),
    [
        ({"code": 3, "message": "bad"}, ProviderState.FAILED, FailureKind.INVALID_REQUEST),
        ({"code": 3, "message": "violates the usage guidelines"}, ProviderState.FAILED, FailureKind.BLOCKED_INPUT),
        ({"code": 8, "message": "x"}, ProviderState.FAILED, FailureKind.RATE_LIMITED),
        ({"code": 429, "status": "RESOURCE_EXHAUSTED"}, ProviderState.FAILED, FailureKind.RATE_LIMITED),
        ({"code": 7, "message": "denied"}, ProviderState.FAILED, FailureKind.AUTH_FAILED),
        ({"code": 14, "message": "unavailable"}, ProviderState.FAILED, FailureKind.PROVIDER_UNAVAILABLE),
        ({"code": 13, "message": "internal"}, ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        ("boom", ProviderState.FAILED, FailureKind.GENERATION_FAILED),
        ({"code": 1, "message": "cancelled"}, ProviderState.CANCELLED, None),
    ],
)
def test_operation_errors(error: object, state: ProviderState, kind: FailureKind | None) -> None:
    status, _ = parse_operation({"done": True, "error": error})
    assert status.state is state
    assert (status.error.kind if status.error else None) is kind


def test_inline_and_gcs_videos_are_read() -> None:
    data = base64.b64encode(b"mp4-bytes").decode()
    status, video = parse_operation({"done": True, "response": {"videos": [{"bytesBase64Encoded": data}]}})
    assert (status.state, status.video_url, video) == (ProviderState.SUCCEEDED, None, b"mp4-bytes")
    status, video = parse_operation({"done": True, "response": {"videos": [{"gcsUri": "gs://b/o.mp4"}]}})
    assert (status.state, status.video_url, video) == (ProviderState.SUCCEEDED, "gs://b/o.mp4", None)


def test_undecodable_video_bytes_are_a_failed_generation() -> None:
    status, video = parse_operation({"done": True, "response": {"videos": [{"bytesBase64Encoded": "%%%"}]}})
    assert status.error is not None and status.error.kind is FailureKind.GENERATION_FAILED and video is None


def test_done_without_video_or_filter_is_no_output() -> None:
    status, _ = parse_operation({"done": True, "response": {"raiMediaFilteredCount": 0}})
    assert status.error is not None
    assert (status.error.kind, status.error.detail) == (FailureKind.GENERATION_FAILED, "no_output")


def test_filter_count_without_reasons_is_still_blocked_output() -> None:
    status, _ = parse_operation({"done": True, "response": {"raiMediaFilteredCount": 1}})
    assert status.error is not None
    assert (status.error.kind, status.error.reason) == (FailureKind.BLOCKED_OUTPUT, None)


def test_rai_reason_is_short_and_drops_support_codes() -> None:
    assert rai_reason([RAI_REASON]) == (
        "Unable to generate videos because the prompt contains a celebrity likeness."
    )
    assert rai_reason(["", "Audio was filtered. Support codes: 123"]) == "Audio was filtered."
    long = rai_reason(["x" * 500])
    assert long is not None and len(long) <= 160
    assert rai_reason([]) is None and rai_reason("text") is None


def test_gcs_media_urls_encode_the_object_name_as_one_segment() -> None:
    assert gcs_media_url("https://storage.googleapis.com", "gs://my-bucket/veo/a b/sample_0.mp4") == (
        "https://storage.googleapis.com/storage/v1/b/my-bucket/o/veo%2Fa%20b%2Fsample_0.mp4?alt=media"
    )
    for bad in ("gs://bucket-only", "gs:///obj", "gs://b/"):
        with pytest.raises(DeliveryError):
            gcs_media_url("https://storage.googleapis.com", bad)


@pytest.mark.parametrize("body", [[], "text", 7, None])
def test_non_object_operation_is_transient(body: object) -> None:
    with pytest.raises(ProviderUnavailable):
        parse_operation(body)


_WORDS = st.sampled_from(
    ["name", "done", "error", "code", "message", "status", "response", "videos",
     "bytesBase64Encoded", "gcsUri", "mimeType", "raiMediaFilteredCount", "raiMediaFilteredReasons",
     "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "gs://b/o.mp4", "bXA0"]
)
_JSON = json_like(_WORDS)
_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "done": _JSON,
        "error": _JSON,
        "response": st.fixed_dictionaries(
            {},
            optional={
                "videos": st.lists(
                    st.fixed_dictionaries(
                        {}, optional={"bytesBase64Encoded": _JSON, "gcsUri": _JSON, "mimeType": _JSON}
                    ) | _JSON,
                    max_size=2,
                ),
                "raiMediaFilteredCount": _JSON,
                "raiMediaFilteredReasons": _JSON,
            },
        ),
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_SHAPED | st.dictionaries(_WORDS, _JSON, max_size=6) | _JSON)
def test_operation_parser_never_crashes(body: object) -> None:
    try:
        status, video = parse_operation(body)
    except ProviderError:
        return
    assert isinstance(status, ProviderStatus)
    if status.state is ProviderState.SUCCEEDED:
        assert (video is not None) != (status.video_url is not None)
    if status.state is ProviderState.FAILED:
        assert status.error is not None


# --- the shared HTTP edge: Google's RetryInfo ---------------------------------------------


def _google_429(delay: Any, *, status: int = 429, headers: dict[str, str] | None = None) -> httpx.Response:
    details = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
    ]
    body = {"error": {"code": status, "status": "RESOURCE_EXHAUSTED", "message": "slow down", "details": details}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("delay", "seconds"), [("12s", 12.0), ("1.5s", 1.5), ("0s", 0.0), ("12", None), (12, None), ("-1s", None)]
)
def test_a_429s_retry_info_becomes_retry_after(delay: Any, seconds: float | None) -> None:
    error = error_for_response(_google_429(delay), op="submit", label="Google")
    assert isinstance(error, RateLimited) and error.retry_after_s == seconds


def test_a_retry_after_header_wins_over_retry_info_and_a_503_honours_it_too() -> None:
    headered = error_for_response(_google_429("12s", headers={"Retry-After": "3"}), op="poll", label="G")
    assert headered.retry_after_s == 3.0
    unavailable = error_for_response(_google_429("2s", status=503), op="poll", label="G")
    assert isinstance(unavailable, ProviderUnavailable) and unavailable.retry_after_s == 2.0
    assert rpc_retry_delay({"error": {"details": "not a list"}}) is None
    assert rpc_retry_delay(["no", "object"]) is None


# --- google-genai 3.6 drives the fake, and its types check our bodies -------------------------


def sdk_client(server: FakeAgentPlatformServer) -> genai.Client:
    credentials = service_account.Credentials.from_service_account_info(
        server.service_account_info(), scopes=[CLOUD_PLATFORM_SCOPE]
    )
    return genai.Client(
        enterprise=True,
        project=server.project,
        location=server.location,
        credentials=credentials,
        # REST v1, as the reference pins it (the SDK's own default is v1beta1)
        http_options=genai_types.HttpOptions(base_url=server.origin, api_version="v1"),
    )


async def _sdk_until_done(client: genai.Client, operation: Any) -> Any:
    async with asyncio.timeout(10):
        while not operation.done:
            await asyncio.sleep(0.02)
            operation = await client.aio.operations.get(operation)
    return operation


async def test_google_genai_makes_polls_and_gets_the_video_from_the_fake(
    server: FakeAgentPlatformServer,
) -> None:
    client = sdk_client(server)
    operation = await client.aio.models.generate_videos(
        model="veo-3.1-fast-generate-001",
        source=genai_types.GenerateVideosSource(prompt="a paper boat in the rain"),
        config=genai_types.GenerateVideosConfig(
            number_of_videos=1, duration_seconds=6, aspect_ratio="9:16", resolution="720p",
            generate_audio=True,
        ),
    )
    assert operation.name in server.jobs and len(server.tokens_issued) == 1
    assert server.submits[0]["parameters"]["durationSeconds"] == 6
    done = await _sdk_until_done(client, operation)
    video = done.response.generated_videos[0].video
    assert (video.video_bytes, video.mime_type) == (video_bytes(operation.name), "video/mp4")
    assert server.polls[operation.name] >= 1

    filtered = await client.aio.models.generate_videos(
        model=MODEL, source=genai_types.GenerateVideosSource(prompt="[rai] a celebrity")
    )
    filtered = await _sdk_until_done(client, filtered)
    assert filtered.response.rai_media_filtered_count == 1
    assert filtered.response.rai_media_filtered_reasons == [RAI_REASON]

    model = await client.aio.models.get(model="veo-3.1-lite-generate-001")
    assert model.name == "publishers/google/models/veo-3.1-lite-generate-001"


async def test_google_genai_reads_a_gcs_result_and_the_sdks_image_body_is_accepted(
    server: FakeAgentPlatformServer,
) -> None:
    client = sdk_client(server)
    operation = await client.aio.models.generate_videos(
        model=MODEL,
        source=genai_types.GenerateVideosSource(
            prompt="the bird flies off", image=genai_types.Image(image_bytes=PNG.data, mime_type="image/png")
        ),
        config=genai_types.GenerateVideosConfig(output_gcs_uri="gs://fake-veo-output/veo/"),
    )
    done = await _sdk_until_done(client, operation)
    assert done.response.generated_videos[0].video.uri == server.gcs_uri(server.jobs[operation.name])


# wire name → google-genai field, as `_GenerateVideosConfig_to_vertex` maps them
WIRE_TO_SDK = {
    "sampleCount": "number_of_videos",
    "durationSeconds": "duration_seconds",
    "aspectRatio": "aspect_ratio",
    "resolution": "resolution",
    "generateAudio": "generate_audio",
    "storageUri": "output_gcs_uri",
    "negativePrompt": "negative_prompt",
    "seed": "seed",
}


@functools.cache
def _converter_client() -> genai.Client:
    # only the SDK's converter runs: nothing is sent, so no real credentials are needed
    return genai.Client(
        enterprise=True, project="p", location="us-central1", credentials=AnonymousCredentials()
    )


def sdk_body(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """What google-genai would send for the same request, after validating it strictly with
    its own types (pydantic strict mode: "8" is no int, "yes" no bool)."""
    params = body.get("parameters", {})
    unknown = set(params) - set(WIRE_TO_SDK)
    if unknown:
        raise AssertionError(f"GenerateVideosConfig has no {unknown}")
    config = genai_types.GenerateVideosConfig.model_validate(
        {WIRE_TO_SDK[k]: v for k, v in params.items()}, strict=True
    )
    instance = body["instances"][0]
    image = None
    if "image" in instance:
        image = genai_types.Image.model_validate(
            {"image_bytes": base64.b64decode(instance["image"]["bytesBase64Encoded"]),
             "mime_type": instance["image"]["mimeType"]},
            strict=True,
        )
    video = None
    if "video" in instance:  # an extension: the video so far, by its bytes or its location
        wire = instance["video"]
        video = genai_types.Video.model_validate(
            {"uri": wire.get("gcsUri"),
             "video_bytes": base64.b64decode(wire["bytesBase64Encoded"]) if "bytesBase64Encoded" in wire else None,
             "mime_type": wire["mimeType"]},
            strict=True,
        )
    source = genai_types.GenerateVideosSource.model_validate(
        {"prompt": instance.get("prompt"), "image": image, "video": video}, strict=True
    )
    parameters = genai_types._GenerateVideosParameters(model=model, source=source, config=config)
    sent = genai_models._GenerateVideosParameters_to_vertex(
        _converter_client()._api_client, parameters, None, parameters
    )
    sent.pop("_url", None)
    return json.loads(json.dumps(sent))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"duration_s": 4, "aspect_ratio": "9:16"},
        {"resolution": "4k", "audio": True},
        {"resolution": "1080p", "audio": False, "image": PNG},
    ],
)
async def test_the_adapters_body_is_exactly_what_google_genai_would_send(
    server: FakeAgentPlatformServer, provider: VeoProvider, options: dict[str, Any]
) -> None:
    request = spec("a lantern festival", **options)
    body = build_predict_request(request)
    assert sdk_body(MODEL, body) == body
    await provider.submit(request)  # and the fake, written from the same types, takes it
    assert server.submits == [body]


BAD_PARAMETERS = [
    {"durationSeconds": "8"},  # int
    {"durationSeconds": 8.0},  # int, not float
    {"sampleCount": "1"},
    {"generateAudio": "yes"},  # bool
    {"durationSecs": 8},  # no such field
    {"resolution": 1080},  # str
]


@pytest.mark.parametrize("parameters", BAD_PARAMETERS)
async def test_the_fake_refuses_what_the_sdk_types_refuse(
    server: FakeAgentPlatformServer, parameters: dict[str, Any]
) -> None:
    body = {"instances": [{"prompt": "x"}], "parameters": parameters}
    with pytest.raises((pydantic.ValidationError, AssertionError)):
        sdk_body(MODEL, body)
    client = sdk_client(server)
    with pytest.raises(genai_errors.ClientError) as info:
        # the SDK's own transport, sending the body as written (its models would coerce it)
        await client.aio._api_client.async_request(
            "post", f"publishers/google/models/{MODEL}:predictLongRunning", body
        )
    assert info.value.code == 400
    assert server.submits == []


def test_the_sdk_coerces_a_string_duration_which_is_why_we_send_an_int() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lax = genai_types.GenerateVideosConfig(duration_seconds="8")  # type: ignore[arg-type]
    assert lax.duration_seconds == 8
    with pytest.raises(pydantic.ValidationError):
        genai_types.GenerateVideosConfig.model_validate({"duration_seconds": "8"}, strict=True)


# --- through the app -----------------------------------------------------------------------


async def test_sora_m_veo_puts_the_video_in_the_thread_without_storing_it_as_a_url(
    make_bot, slack
) -> None:
    async with FakeAgentPlatformServer(run_seconds=0.3) as server, httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"veo": make_provider(server, client=client)}, include_simulator=False,
            sora_default_model="veo-3.1", sora_daily_budget_usd="20",
        )
        resp = await bot.slash("-m veo-3.1 -d 8 -r 1080p a lantern festival over a river")
        assert "Got it" in resp.json()["text"], resp.json()["text"]
        await bot.runtime.poller.idle(20)
        jobs = json.loads(await jobs_json(bot.deps.db))
        assert len(jobs) == 1
        job = jobs[0]
        assert (job["status"], job["provider"], job["model"]) == ("succeeded", "veo", "veo-3.1")
        assert job["video_url"] is None  # the base64 video never reached the database
        assert job["cost_usd"] == pytest.approx(3.2)  # 8 s at $0.40
        (name,) = server.jobs
        assert server.submits[0]["parameters"] == {
            "sampleCount": 1, "durationSeconds": 8, "aspectRatio": "16:9", "resolution": "1080p",
        }
        replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
        assert len(replies) == 1 and replies[0].files
        (upload,) = slack.uploads.values()
        assert upload.sha256 == hashlib.sha256(video_bytes(name)).hexdigest()
