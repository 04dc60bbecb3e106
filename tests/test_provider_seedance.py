"""SeedanceProvider against the fake BytePlus ModelArk task API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_type_hints

import httpx
import pydantic
import pytest
from byteplussdkarkruntime import AsyncArk
from byteplussdkarkruntime._exceptions import ArkBadRequestError, ArkNotFoundError
from byteplussdkarkruntime.resources.content_generation.tasks import AsyncTasks
from byteplussdkarkruntime.types.content_generation.content_generation_task import (
    ContentGenerationTask,
)
from byteplussdkarkruntime.types.content_generation.create_task_content_param import (
    CreateTaskContentParam,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bot.errors import (
    AuthFailed,
    ContentBlocked,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
    SoraError,
)
from bot.models import FailureKind, ProviderState, ProviderStatus, ReferenceImage, VideoSpec
from bot.providers.base import VideoProvider
from bot.providers.seedance import SeedanceProvider, failure_for_code, parse_task
from tests.fakes.kling_seedance_fal import FakeSeedanceServer
from tests.fakes.providers import make_spec, poll_until_terminal, video_bytes
from tests.provider_checks import json_like

RUN_S = 0.05
MODEL = "dreamina-seedance-2-0-260128"
IMAGE = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n-tiny-", mime_type="image/png", width=1280, height=720
)


def seedance_spec(prompt: str, **kw: Any) -> VideoSpec:
    kw.setdefault("duration_s", 5)
    return make_spec(prompt, model=MODEL, **kw)


@pytest.fixture
async def server() -> AsyncIterator[FakeSeedanceServer]:
    async with FakeSeedanceServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def provider(server: FakeSeedanceServer) -> AsyncIterator[SeedanceProvider]:
    seedance = SeedanceProvider(server.api_key, base_url=server.base_url)
    yield seedance
    await seedance.aclose()


def assert_hidden(exc: SoraError, secret: str) -> None:
    for text in (str(exc), repr(exc), exc.message, exc.detail, getattr(exc, "reason", None)):
        assert secret not in (text or "")


async def test_seedance_is_a_video_provider(provider: SeedanceProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert (provider.name, provider.shareable_urls) == ("seedance", True)


async def test_success_end_to_end(
    server: FakeSeedanceServer, provider: SeedanceProvider, tmp_path: Path
) -> None:
    job_id = await provider.submit(seedance_spec("paper boats in the rain"))

    assert server.submits == [
        {
            "model": MODEL,
            "content": [{"type": "text", "text": "paper boats in the rain"}],
            "ratio": "16:9",
            "resolution": "720p",
            "duration": 5,
        }
    ]
    seen = await poll_until_terminal(provider, job_id)
    assert [s.raw_status for s in seen][:1] == ["queued"]
    assert any(s.raw_status == "running" for s in seen)
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED
    assert final.video_url == server.file_url(job_id)
    assert final.expires_at is not None
    assert timedelta(hours=23) < final.expires_at - datetime.now(UTC) <= timedelta(hours=24)

    dest = tmp_path / "video.mp4"
    await provider.download(job_id, final.video_url, dest)
    assert dest.read_bytes() == video_bytes(job_id)
    assert server.download_auth == [None]  # the key never goes to the object store


async def test_audio_choice_is_sent_only_when_made(
    server: FakeSeedanceServer, provider: SeedanceProvider
) -> None:
    await provider.submit(dataclasses.replace(seedance_spec("a"), audio=True))
    await provider.submit(dataclasses.replace(seedance_spec("b"), audio=False))
    await provider.submit(seedance_spec("c", resolution="1080p", aspect_ratio="1:1", duration_s=10))
    assert [s.get("generate_audio") for s in server.submits] == [True, False, None]
    assert "generate_audio" not in server.submits[2]
    assert (server.submits[2]["resolution"], server.submits[2]["ratio"]) == ("1080p", "1:1")
    assert server.submits[2]["duration"] == 10


async def test_image_to_video_sends_a_data_uri(
    server: FakeSeedanceServer, provider: SeedanceProvider
) -> None:
    job_id = await provider.submit(dataclasses.replace(seedance_spec("wave"), image=IMAGE))
    text, image = server.submits[0]["content"]
    assert text == {"type": "text", "text": "wave"}
    assert image["type"] == "image_url"
    header, _, data = image["image_url"]["url"].partition(",")
    assert header == "data:image/png;base64"
    assert base64.b64decode(data) == IMAGE.data
    assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED


async def test_unsupported_resolution_is_refused_before_sending(
    server: FakeSeedanceServer, provider: SeedanceProvider
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(seedance_spec("x", resolution="4k"))
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(seedance_spec("x", aspect_ratio="4:5"))
    assert server.create_attempts == []


async def test_input_sensitive_is_content_blocked_at_submit(
    server: FakeSeedanceServer, provider: SeedanceProvider
) -> None:
    with pytest.raises(ContentBlocked) as info:
        await provider.submit(seedance_spec("[input-sensitive] x"))
    assert (info.value.stage, info.value.kind) == ("input", FailureKind.BLOCKED_INPUT)
    assert "InputTextSensitiveContentDetected" in info.value.detail
    assert server.submits == [] and len(server.create_attempts) == 1


async def test_output_sensitive_is_blocked_output(provider: SeedanceProvider) -> None:
    job_id = await provider.submit(seedance_spec("[output-sensitive] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert final.state is ProviderState.FAILED
    assert final.error is not None and final.error.kind is FailureKind.BLOCKED_OUTPUT
    assert final.error.detail.startswith("OutputVideoSensitiveContentDetected")


async def test_expired_task_is_result_expired(provider: SeedanceProvider) -> None:
    job_id = await provider.submit(seedance_spec("[expired] x"))
    final = (await poll_until_terminal(provider, job_id))[-1]
    assert (final.state, final.raw_status) == (ProviderState.FAILED, "expired")
    assert final.error is not None and final.error.kind is FailureKind.RESULT_EXPIRED


async def test_stuck_task_keeps_running(provider: SeedanceProvider) -> None:
    job_id = await provider.submit(seedance_spec("[stuck] x"))
    assert (await provider.poll(job_id)).state is ProviderState.QUEUED
    await asyncio.sleep(RUN_S * 1.5)
    for _ in range(3):
        assert (await provider.poll(job_id)).state is ProviderState.RUNNING


async def test_5xx_and_malformed_polls_are_transient(provider: SeedanceProvider) -> None:
    job_id = await provider.submit(seedance_spec("[5xx-poll] x"))
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.poll(job_id)
    assert (await poll_until_terminal(provider, job_id))[-1].state is ProviderState.SUCCEEDED
    other = await provider.submit(seedance_spec("[malformed] y"))
    with pytest.raises(ProviderUnavailable):
        await provider.poll(other)


async def test_cancel_queued_task_then_poll_says_cancelled(
    server: FakeSeedanceServer, provider: SeedanceProvider
) -> None:
    job_id = await provider.submit(seedance_spec("[stuck] x"))
    assert await provider.cancel(job_id) is True
    assert server.cancels == [job_id]
    assert (await provider.poll(job_id)).state is ProviderState.CANCELLED


async def test_cancel_running_task_is_refused(provider: SeedanceProvider) -> None:
    job_id = await provider.submit(seedance_spec("[stuck] x"))
    await provider.poll(job_id)
    await provider.poll(job_id)
    assert await provider.cancel(job_id) is False
    assert await provider.cancel("cgt-unknown") is False


async def test_find_existing_is_none(provider: SeedanceProvider) -> None:
    await provider.submit(seedance_spec("x"))
    assert await provider.find_existing(seedance_spec("x"), since_epoch_s=0) is None


async def test_wrong_key_is_auth_failed_and_never_echoed(server: FakeSeedanceServer) -> None:
    secret = "ark-live-very-secret-123456"
    seedance = SeedanceProvider(secret, base_url=server.base_url)
    try:
        with pytest.raises(AuthFailed) as info:
            await seedance.submit(seedance_spec("x"))
        with pytest.raises(AuthFailed) as poll_info:
            await seedance.poll("cgt-1")
    finally:
        await seedance.aclose()
    assert_hidden(info.value, secret)
    assert_hidden(poll_info.value, secret)


async def test_image_moderation_at_submit_carries_its_reason() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        error = {
            "code": "InputImageSensitiveContentDetected.PrivacyInformation",
            "message": "The input image may contain real people.",
        }
        return httpx.Response(400, json={"error": error})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        seedance = SeedanceProvider("k", base_url="https://ark.example", client=client)
        with pytest.raises(ContentBlocked) as info:
            await seedance.submit(dataclasses.replace(seedance_spec("x"), image=IMAGE))
    assert info.value.reason == "privacy information"


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        ("InputTextSensitiveContentDetected", FailureKind.BLOCKED_INPUT, None),
        (
            "InputImageSensitiveContentDetected.PrivacyInformation",
            FailureKind.BLOCKED_INPUT,
            "privacy information",
        ),
        ("OutputVideoSensitiveContentDetected", FailureKind.BLOCKED_OUTPUT, None),
        (
            "OutputVideoSensitiveContentDetected.PolicyViolation",
            FailureKind.BLOCKED_OUTPUT,
            "policy violation",
        ),
        ("InternalServiceError", FailureKind.GENERATION_FAILED, None),
        (None, FailureKind.GENERATION_FAILED, None),
    ],
)
def test_error_codes_map_to_kinds(code: str | None, kind: FailureKind, reason: str | None) -> None:
    assert failure_for_code(code) == (kind, reason)


def test_parse_task_edge_cases() -> None:
    no_url = parse_task({"status": "succeeded", "content": {}})
    assert no_url.error is not None and no_url.error.detail == "no_output"
    input_blocked = parse_task(
        {"status": "failed", "error": {"code": "InputTextSensitiveContentDetected", "message": "m"}}
    )
    assert input_blocked.error is not None
    assert input_blocked.error.kind is FailureKind.BLOCKED_INPUT
    assert parse_task({"status": "cancelled"}).state is ProviderState.CANCELLED
    assert parse_task({"status": "paused"}).state is ProviderState.UNKNOWN
    far = parse_task(
        {
            "status": "succeeded",
            "updated_at": "9999-12-31T00:00:00",
            "content": {"video_url": "https://tos.example/v.mp4"},
        }
    )
    assert far.state is ProviderState.SUCCEEDED and far.expires_at is None
    assert parse_task({"status": "running", "usage": {"total_tokens": 5}}).cost_micros is None
    with pytest.raises(ProviderUnavailable):
        parse_task("queued")


# --- fuzz ------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "id",
        "status",
        "content",
        "video_url",
        "error",
        "code",
        "message",
        "usage",
        "updated_at",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "expired",
        "OutputVideoSensitiveContentDetected",
        "InputTextSensitiveContentDetected.X",
        "https://tos.example/v.mp4",
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


# --- issue 17: current ids, roles, and the Ark SDK's own types and client --------------------

MODELS = {
    "dreamina-seedance-2-0-260128": (4, 15),
    "dreamina-seedance-2-0-fast-260128": (4, 15),
    "dreamina-seedance-2-5-260628": (4, 30),
}
_NOT_BODY = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
# `tasks.create` is wrapped by `async_apikey_required` without functools.wraps: the typed
# function is the wrapper's one closure cell
_CREATE = next(
    cell.cell_contents for cell in AsyncTasks.create.__closure__ or ()
    if inspect.isfunction(cell.cell_contents) and cell.cell_contents.__name__ == "create"
)
CREATE_FIELDS = set(inspect.signature(_CREATE).parameters) - _NOT_BODY


def assert_sdk_accepts(body: dict[str, Any]) -> None:
    """Each field is a keyword of the SDK's `tasks.create()` and has the type it declares."""
    unknown = set(body) - CREATE_FIELDS
    assert not unknown, f"tasks.create() takes no {unknown}"
    hints = get_type_hints(_CREATE)
    for key, value in body.items():
        # `Iterable[...]` validates lazily in pydantic: a list makes it check every item
        hint = list[CreateTaskContentParam] if key == "content" else hints[key]
        TypeAdapter(hint).validate_python(value, strict=True)


def model_spec(model: str, prompt: str = "a lantern festival", **kw: Any) -> VideoSpec:
    audio = kw.pop("audio", None)
    image = kw.pop("image", None)
    kw.setdefault("duration_s", 5)
    return dataclasses.replace(make_spec(prompt, model=model, **kw), audio=audio, image=image)


async def test_the_image_is_the_first_frame_and_says_so(
    server: FakeSeedanceServer, provider: SeedanceProvider
) -> None:
    await provider.submit(model_spec(MODEL, image=IMAGE))
    image = server.submits[0]["content"][1]
    assert (image["type"], image["role"]) == ("image_url", "first_frame")


@pytest.mark.parametrize("image", [None, IMAGE], ids=["text", "image"])
@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("dreamina-seedance-2-0-260128", {"resolution": "1080p", "duration_s": 15}),
        ("dreamina-seedance-2-0-fast-260128", {"resolution": "480p", "audio": False}),
        ("dreamina-seedance-2-5-260628", {"duration_s": 30, "aspect_ratio": "9:16", "audio": True}),
        ("dreamina-seedance-2-5-260628", {"duration_s": 4, "aspect_ratio": "1:1"}),
    ],
)
async def test_each_body_is_what_the_ark_sdk_types_allow(
    server: FakeSeedanceServer, provider: SeedanceProvider,
    model: str, options: dict[str, Any], image: ReferenceImage | None,
) -> None:
    await provider.submit(model_spec(model, image=image, **options))
    body = server.submits[0]
    assert_sdk_accepts(body)
    assert body["model"] == model and isinstance(body["duration"], int)
    # the SDK, handed the same fields, sends the same body (its nulls mean "not set")
    async with ark(server) as client:
        await client.content_generation.tasks.create(**body)
    assert server.submits[1] == body


def test_an_image_without_its_role_is_what_the_sdk_types_refuse() -> None:
    no_role = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(pydantic.ValidationError):
        assert_sdk_accepts({"model": MODEL, "content": [{"type": "text", "text": "x"}, no_role]})


@pytest.mark.parametrize(
    ("model", "seconds", "resolution"),
    [("dreamina-seedance-2-0-260128", 16, "720p"), ("dreamina-seedance-2-0-260128", 3, "720p"),
     ("dreamina-seedance-2-5-260628", 31, "720p"), ("dreamina-seedance-2-0-fast-260128", 5, "1080p")],
)
async def test_lengths_and_resolutions_a_model_lacks_are_refused_before_sending(
    server: FakeSeedanceServer, provider: SeedanceProvider,
    model: str, seconds: int, resolution: str,
) -> None:
    with pytest.raises(InvalidProviderRequest):
        await provider.submit(model_spec(model, duration_s=seconds, resolution=resolution))
    assert server.create_attempts == []


@contextlib.asynccontextmanager
async def ark(server: FakeSeedanceServer) -> AsyncIterator[AsyncArk]:
    client = AsyncArk(api_key=server.api_key, base_url=f"{server.base_url}/api/v3", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def test_the_ark_sdk_creates_gets_and_downloads_from_the_fake(
    server: FakeSeedanceServer,
) -> None:
    url = "data:image/png;base64," + base64.b64encode(IMAGE.data).decode()
    async with ark(server) as client:
        created = await client.content_generation.tasks.create(
            model="dreamina-seedance-2-5-260628",
            content=[
                {"type": "text", "text": "a lantern festival"},
                {"type": "image_url", "image_url": {"url": url}, "role": "first_frame"},
            ],
            ratio="16:9", resolution="720p", duration=20, generate_audio=True,
        )
        for _ in range(200):
            task = await client.content_generation.tasks.get(task_id=created.id)
            if task.status not in ("queued", "running"):
                break
            await asyncio.sleep(0.01)
    assert isinstance(task, ContentGenerationTask)
    assert (task.status, task.model, task.duration) == ("succeeded", "dreamina-seedance-2-5-260628", 20)
    async with httpx.AsyncClient() as http:
        video = await http.get(task.content.video_url)
    assert video.content == video_bytes(created.id)


@pytest.mark.parametrize(
    "fields",
    [
        {"duration": "5"},  # create() types duration as an int
        {"generate_audio": "yes"},  # and generate_audio as a bool
        {"content": [{"type": "text", "text": "x"},
                     {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},  # no role
        {"content": [{"type": "text", "text": "x"},
                     {"type": "image_url", "image_url": {"url": "https://x/a.png"}, "role": 1}]},
    ],
)
async def test_the_fake_refuses_what_the_sdk_types_refuse(
    server: FakeSeedanceServer, fields: dict[str, Any]
) -> None:
    body = {"model": MODEL, "content": [{"type": "text", "text": "x"}], "duration": 5, **fields}
    with pytest.raises(pydantic.ValidationError):
        assert_sdk_accepts(body)
    async with ark(server) as client:
        with pytest.raises(ArkBadRequestError):
            # the SDK does not check types at run time: it sends what it is given
            await client.content_generation.tasks.create(**body)
    assert server.submits == []


async def test_the_fake_answers_an_unknown_model_404(server: FakeSeedanceServer) -> None:
    async with ark(server) as client:
        with pytest.raises(ArkNotFoundError):
            await client.content_generation.tasks.create(
                model="seedance-1-0-pro-250528", content=[{"type": "text", "text": "x"}]
            )
