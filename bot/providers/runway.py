"""The adapter for Runway's task API: text or image to video, tasks, signed outputs (§1.3).

Runway's API serves models of other makers too (veo3.1, seedance2, gemini_omni_flash), each
with its own body: `RUNWAY_MODELS` holds what runwayml 5.24's param types
(`types/text_to_video_create_params.py`, `image_to_video_create_params.py`) allow each one.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.errors import (
    AmbiguousSubmit,
    DeliveryError,
    GenerationFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
    ResultExpired,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.http import (
    HttpAdapter,
    Op,
    bearer,
    error_for_exception,
    error_for_response,
    first_text,
    json_object,
    parse_retry_after,
    stream_to_file,
)

log = logging.getLogger(__name__)

LABEL = "Runway"
API_VERSION = "2024-11-06"
# runwayml 5.24: "up to 1000 characters (measured in UTF-16 code units)", so an emoji
# outside the BMP counts twice.
PROMPT_LIMIT_UNITS = 1000
# Runway's input limits: a data URI in the JSON body may be at most 5 MB (URLs allow 16 MB).
DATA_URI_LIMIT_BYTES = 5 * 1000 * 1000
# Runway bills in credits; a credit is $0.01 (reference 2026-12 §3), i.e. 10,000 micros.
MICROS_PER_CREDIT = 10_000

_WIDE = {("720p", "16:9"): "1280:720", ("720p", "9:16"): "720:1280"}


@dataclass(frozen=True, slots=True)
class RunwayModel:
    """What runwayml 5.24's param types allow one model (per TypedDict, text and image)."""

    ratios: Mapping[tuple[str, str], str]  # (resolution, aspect) → `ratio`
    durations: tuple[int, ...] = ()  # () = any; the catalog bounds it
    prompt_limit: int = PROMPT_LIMIT_UNITS  # UTF-16 code units
    # Gen4_5 (image_to_video) types promptText as Required; the others make it optional there
    image_needs_prompt: bool = False
    audio: bool = False  # the params type has an `audio: bool`


RUNWAY_MODELS: dict[str, RunwayModel] = {
    # Gen4_5: duration Required[int] 2-10, ratio Literal["1280:720", "720:1280"] (text; image
    # allows more, the catalog offers these two), no audio field.
    "gen4.5": RunwayModel(ratios=_WIDE, durations=tuple(range(2, 11)), image_needs_prompt=True),
    # Veo3_1: duration Literal[4, 6, 8], four ratios, `audio: bool`.
    "veo3.1": RunwayModel(
        ratios={**_WIDE, ("1080p", "16:9"): "1920:1080", ("1080p", "9:16"): "1080:1920"},
        durations=(4, 6, 8),
        audio=True,
    ),
    # Seedance2: duration int | "auto", promptText up to 3,500 characters, `audio: bool`,
    # ratios from 992:432 to 3840:3840 (these are the 480p, 720p and 1080p ones).
    "seedance2": RunwayModel(
        ratios={
            ("480p", "16:9"): "864:496", ("480p", "9:16"): "496:864", ("480p", "1:1"): "640:640",
            **_WIDE, ("720p", "1:1"): "960:960",
            ("1080p", "16:9"): "1920:1080", ("1080p", "9:16"): "1080:1920",
            ("1080p", "1:1"): "1440:1440",
        },
        durations=tuple(range(4, 16)),
        prompt_limit=3500,
        audio=True,
    ),
    # GeminiOmniFlash: duration int 3-10, ratio 1280:720 | 720:1280, no audio field. Its
    # prompt limit is not stated; Runway's usual 1,000 units is kept.
    "gemini_omni_flash": RunwayModel(ratios=_WIDE, durations=tuple(range(3, 11))),
}
# A model an admin routes here that this table does not know: Runway's common shape.
_OTHER = RunwayModel(ratios=_WIDE)

# Reference §2: Runway's task statuses. THROTTLED means Runway queued it behind our
# concurrency cap itself; it is not an error.
_STATES: dict[str, ProviderState] = {
    "PENDING": ProviderState.QUEUED,
    "THROTTLED": ProviderState.QUEUED,
    "RUNNING": ProviderState.RUNNING,
    "SUCCEEDED": ProviderState.SUCCEEDED,
    "FAILED": ProviderState.FAILED,
    "CANCELLED": ProviderState.CANCELLED,
}


def runway_model(provider_model: str) -> RunwayModel:
    return RUNWAY_MODELS.get(provider_model, _OTHER)


def runway_ratio(resolution: str, aspect_ratio: str, provider_model: str = "gen4.5") -> str:
    """The `ratio` for this model, resolution and aspect; InvalidProviderRequest if it has none."""
    rules = runway_model(provider_model)
    ratio = rules.ratios.get((resolution, aspect_ratio))
    if ratio is None:
        offered = ", ".join(f"{r} at {a}" for r, a in rules.ratios)
        raise InvalidProviderRequest(
            f"{LABEL} makes {provider_model} videos at {offered} only, not {resolution} at "
            f"{aspect_ratio}.",
            detail=f"no ratio for ({resolution!r}, {aspect_ratio!r}) on {provider_model}",
        )
    return ratio


def _lengths(durations: tuple[int, ...]) -> str:
    """(4, 6, 8) → "4, 6 or 8"; a run such as 2..10 → "2 to 10"."""
    first, last = durations[0], durations[-1]
    if len(durations) > 3 and durations == tuple(range(first, last + 1)):
        return f"{first} to {last}"
    if len(durations) == 1:
        return str(first)
    return ", ".join(map(str, durations[:-1])) + f" or {last}"


def utf16_units(text: str) -> int:
    """Length as Runway counts it: UTF-16 code units (a character beyond U+FFFF is two)."""
    return len(text.encode("utf-16-le")) // 2


def data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def build_task_request(spec: VideoSpec) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of the create call; InvalidProviderRequest before anything is sent.

    The body has exactly the fields the model's runwayml params type has (camelCase, as
    the SDK sends them): `audio` only where the type has it, and only when asked.
    """
    rules = runway_model(spec.provider_model)
    prompt = spec.prompt.strip()
    units = utf16_units(prompt)
    if units > rules.prompt_limit:
        raise InvalidProviderRequest(
            f"{LABEL} accepts prompts of up to {rules.prompt_limit} characters (an emoji "
            f"counts as two); this one has {units}. Shorten it and try again.",
            detail=f"promptText has {units} UTF-16 code units, limit {rules.prompt_limit}",
        )
    duration = int(spec.duration_s)
    if rules.durations and duration not in rules.durations:
        raise InvalidProviderRequest(
            f"{LABEL} makes {spec.provider_model} videos of {_lengths(rules.durations)} "
            f"seconds, not {duration}.",
            detail=f"duration {duration} not in {rules.durations}",
        )
    body: dict[str, Any] = {
        "model": spec.provider_model,
        "ratio": runway_ratio(spec.resolution, spec.aspect_ratio, spec.provider_model),
        "duration": duration,
    }
    if prompt:
        body["promptText"] = prompt
    if rules.audio and spec.audio is not None:
        body["audio"] = spec.audio
    if spec.image is None:
        if not prompt:
            raise InvalidProviderRequest(
                f"{LABEL} needs a prompt to make a video from text.", detail="empty promptText"
            )
        return "/v1/text_to_video", body
    if rules.image_needs_prompt and not prompt:
        raise InvalidProviderRequest(
            f"{LABEL} needs a prompt with the image for {spec.provider_model}: describe what "
            "should happen in the video.",
            detail="image_to_video without promptText",
        )
    uri = data_uri(spec.image.data, spec.image.mime_type)
    if len(uri) > DATA_URI_LIMIT_BYTES:
        raise InvalidProviderRequest(
            f"{LABEL} accepts reference images of up to 5 MB; use a smaller image.",
            detail=f"promptImage data URI has {len(uri)} bytes",
        )
    # every model's params type accepts a plain URI string as the first frame
    body["promptImage"] = uri
    return "/v1/image_to_video", body


def cost_micros(body: Mapping[str, Any]) -> int | None:
    """A finished task's `cost.credits` (runwayml: `SucceededCost.credits: int`) in micros."""
    cost = body.get("cost")
    credits = cost.get("credits") if isinstance(cost, Mapping) else None
    if isinstance(credits, bool) or not isinstance(credits, int | float):
        return None
    if not math.isfinite(credits) or credits < 0 or credits > 10**9:
        return None
    return round(credits * MICROS_PER_CREDIT)


def runway_error(
    response: httpx.Response, *, op: Op, secrets: tuple[str, ...] = ()
) -> ProviderError:
    """A non-2xx answer as runwayml's retry rules read it, fitted to ours.

    The SDK (`_base_client._should_retry`) obeys `x-should-retry: true|false` first, then
    retries 408, 409 (a lock timeout), 429 and 5xx. A refusal (4xx) made nothing, so a
    409, or a 4xx the server marks retryable, is retried here too. A 5xx at submit stays
    ambiguous whatever the header says: the SDK would resend it, but with no idempotency
    key (runwayml sets none), so a resend after a 5xx could make a second paid task.
    """
    exc = error_for_response(response, op=op, label=LABEL, secrets=secrets)
    status = response.status_code
    header = response.headers.get("x-should-retry", "").strip().lower()
    if header == "false":
        exc.retryable = False
        return exc
    if (status == 409 or header == "true") and status < 500 and not exc.retryable:
        return ProviderUnavailable(
            f"{LABEL} is busy; trying again.",
            detail=exc.detail,
            retry_after_s=parse_retry_after(response.headers),
        )
    return exc


def runway_progress(value: Any) -> int | None:
    """Runway's progress is a 0-1 float; → an int percent, clamped, None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = float(min(max(value, -1), 2))  # huge ints do not fit a float
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number):
        return None
    return int(min(1.0, max(0.0, number)) * 100)


def failure_kind(code: str | None) -> FailureKind:
    """A task's `failureCode` → FailureKind (Runway's task-failure docs)."""
    parts = (code or "").strip().upper().split(".")
    if "SAFETY" in parts:
        after = parts[parts.index("SAFETY") + 1 :]
        return FailureKind.BLOCKED_OUTPUT if after[:1] == ["OUTPUT"] else FailureKind.BLOCKED_INPUT
    if parts[0] == "ASSET":
        return FailureKind.INVALID_REQUEST
    return FailureKind.GENERATION_FAILED


def parse_task(body: Any) -> ProviderStatus:
    """One `GET /v1/tasks/{id}` body → ProviderStatus. Raises ProviderUnavailable on a non-object.

    A SUCCEEDED task without an output URL is a failure (`no_output`). Runway asks that
    failure codes and prose never reach users, so both go to `detail` only.
    """
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"task body is a {type(body).__name__}, not an object",
        )
    raw = first_text(body, ("status",))
    state = _STATES.get(raw.upper(), ProviderState.UNKNOWN) if raw else ProviderState.UNKNOWN
    progress = runway_progress(body.get("progress"))
    video_url: str | None = None
    error: ProviderErrorInfo | None = None
    if state is ProviderState.SUCCEEDED:
        url = first_text(body, ("output[0]",))
        if url is not None and url.startswith(("https://", "http://")):
            video_url = url
            progress = 100
        else:
            state = ProviderState.FAILED
            error = ProviderErrorInfo(kind=FailureKind.GENERATION_FAILED, detail="no_output")
    elif state is ProviderState.FAILED:
        code = first_text(body, ("failureCode",))
        prose = first_text(body, ("failure",))
        detail = ": ".join(t for t in (code, prose) if t) or f"status {raw}"
        error = ProviderErrorInfo(kind=failure_kind(code), detail=detail[:500])
    return ProviderStatus(
        state=state,
        progress=progress if state in (ProviderState.RUNNING, ProviderState.SUCCEEDED) else None,
        video_url=video_url,
        error=error,
        # what Runway charged: flow.finish_success bills it when below the reservation
        cost_micros=cost_micros(body) if video_url is not None else None,
        raw_status=raw,
    )


class RunwayProvider(HttpAdapter):
    """Runway's API: create a task, poll `/v1/tasks/{id}`, fetch the signed output URL."""

    name = "runway"
    shareable_urls = True  # output URLs are signed CDN links (valid 24-48 h), no key needed

    def __init__(
        self,
        api_secret: str,
        *,
        base_url: str = "https://api.dev.runwayml.com",
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._secrets = (api_secret,)
        self._headers = {**bearer(api_secret), "X-Runway-Version": API_VERSION}
        super().__init__(client=client, max_concurrency=max_concurrency)

    async def submit(self, spec: VideoSpec) -> str:
        """Create the task; a 429 is Runway's rolling 24 h generation quota (RateLimited)."""
        path, payload = build_task_request(spec)
        response = await self._send("POST", f"{self._base}{path}", op="submit", json=payload)
        task_id = first_text(json_object(response, op="submit", label=LABEL), ("id",))
        if task_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without a task id.", detail="no id in a 2xx answer"
            )
        return task_id

    async def check(self) -> str:
        """GET /v1/organization: authenticated, free, and tells the credit balance."""
        response = await self._send("GET", f"{self._base}/v1/organization", op="call")
        balance = json_object(response, op="call", label=LABEL).get("creditBalance")
        return f"key accepted; {balance} credits left" if balance is not None else "key accepted"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One status call; malformed answers and 5xx are transient (ProviderUnavailable)."""
        response = await self._send("GET", self._task_url(provider_job_id), op="poll")
        return parse_task(json_object(response, op="poll", label=LABEL))

    async def cancel(self, provider_job_id: str) -> bool:
        """DELETE cancels a pending, throttled or running task (and deletes a finished one)."""
        try:
            await self._send("DELETE", self._task_url(provider_job_id), op="call")
        except ProviderError as exc:
            log.info("runway cancel of %s not accepted: %s", provider_job_id, exc.detail)
            return False
        return True

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream the output; an expired link (403/404/410) gets one fresh URL from the task.

        Output URLs expire 24-48 h after the task ends and Runway's answer is to fetch the
        task again. Only when the fresh URL fails too is it ResultExpired. The CDN link is
        signed, so the API secret is never sent to it.
        """
        fresh = video_url is None
        url = video_url if video_url is not None else await self._fresh_url(provider_job_id)
        try:
            await self._stream(url, dest)
            return
        except ResultExpired:
            if fresh:
                raise
            log.info("runway output link for %s expired; fetching the task again", provider_job_id)
        await self._stream(await self._fresh_url(provider_job_id), dest)

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """Runway has no task list and no external id to look one up by."""
        return None

    async def _send(
        self, method: str, url: str, *, op: Op, json: Any = None
    ) -> httpx.Response:
        """One bounded API call: a 2xx response, or the error as `runway_error` reads it."""
        async with self._sem:
            try:
                response = await self._client.request(
                    method, url, headers=self._headers, json=json
                )
            except httpx.HTTPError as exc:
                raise error_for_exception(exc, op=op, label=LABEL, secrets=self._secrets) from exc
        if response.is_success:
            return response
        raise runway_error(response, op=op, secrets=self._secrets)

    def _task_url(self, provider_job_id: str) -> str:
        return f"{self._base}/v1/tasks/{provider_job_id}"

    async def _stream(self, url: str, dest: Path) -> None:
        await stream_to_file(
            self._client, self._sem, url, dest, label=LABEL, secrets=self._secrets
        )

    async def _fresh_url(self, provider_job_id: str) -> str:
        """The task's current output URL; ResultExpired when the task has none any more."""
        try:
            status = await self.poll(provider_job_id)
        except GenerationFailed as exc:
            # 404: the task was deleted, so its output is gone for good.
            raise ResultExpired(
                "The video is no longer available from Runway.", detail=exc.detail
            ) from exc
        except ProviderError as exc:
            raise DeliveryError(
                f"{LABEL} did not say where the video is.", detail=exc.detail
            ) from exc
        if status.video_url is None:
            raise ResultExpired(
                "The video is no longer available from Runway.",
                detail=f"task {status.raw_status} without an output URL",
            )
        return status.video_url
