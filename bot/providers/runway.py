"""The adapter for Runway's task API: text or image to video, tasks, signed outputs (§1.3)."""

from __future__ import annotations

import base64
import logging
import math
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
    bearer,
    first_text,
    json_object,
    send,
    stream_to_file,
)

log = logging.getLogger(__name__)

LABEL = "Runway"
API_VERSION = "2024-11-06"
PROMPT_LIMIT_CHARS = 1000
# Runway's input limits: a data URI in the JSON body may be at most 5 MB (URLs allow 16 MB).
DATA_URI_LIMIT_BYTES = 5 * 1000 * 1000

# `ratio` Runway expects for this (resolution, aspect ratio).
RUNWAY_RATIOS: dict[tuple[str, str], str] = {
    ("720p", "16:9"): "1280:720",
    ("720p", "9:16"): "720:1280",
}

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


def runway_ratio(resolution: str, aspect_ratio: str) -> str:
    """The `ratio` for this resolution and aspect; InvalidProviderRequest if Runway has none."""
    ratio = RUNWAY_RATIOS.get((resolution, aspect_ratio))
    if ratio is None:
        raise InvalidProviderRequest(
            f"{LABEL} makes 720p videos at 16:9 or 9:16 only, not {resolution} at {aspect_ratio}.",
            detail=f"no RUNWAY_RATIOS entry for ({resolution!r}, {aspect_ratio!r})",
        )
    return ratio


def data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def build_task_request(spec: VideoSpec) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of the create call; InvalidProviderRequest before anything is sent."""
    prompt = spec.prompt.strip()
    if len(prompt) > PROMPT_LIMIT_CHARS:
        raise InvalidProviderRequest(
            f"{LABEL} accepts prompts of up to {PROMPT_LIMIT_CHARS} characters; this one has "
            f"{len(prompt)}. Shorten it and try again.",
            detail=f"promptText has {len(prompt)} characters",
        )
    body: dict[str, Any] = {
        "model": spec.provider_model,
        "ratio": runway_ratio(spec.resolution, spec.aspect_ratio),
        "duration": int(spec.duration_s),
    }
    if prompt:
        body["promptText"] = prompt
    if spec.image is None:
        if not prompt:
            raise InvalidProviderRequest(
                f"{LABEL} needs a prompt to make a video from text.", detail="empty promptText"
            )
        return "/v1/text_to_video", body
    uri = data_uri(spec.image.data, spec.image.mime_type)
    if len(uri) > DATA_URI_LIMIT_BYTES:
        raise InvalidProviderRequest(
            f"{LABEL} accepts reference images of up to 5 MB; use a smaller image.",
            detail=f"promptImage data URI has {len(uri)} bytes",
        )
    body["promptImage"] = uri
    return "/v1/image_to_video", body


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
        response = await send(
            self._client,
            self._sem,
            "POST",
            f"{self._base}{path}",
            op="submit",
            label=LABEL,
            secrets=self._secrets,
            headers=self._headers,
            json=payload,
        )
        task_id = first_text(json_object(response, op="submit", label=LABEL), ("id",))
        if task_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without a task id.", detail="no id in a 2xx answer"
            )
        return task_id

    async def check(self) -> str:
        """GET /v1/organization: authenticated, free, and tells the credit balance."""
        response = await send(self._client, self._sem, "GET", f"{self._base}/v1/organization",
                              op="call", label=LABEL, secrets=self._secrets, headers=self._headers)
        balance = json_object(response, op="call", label=LABEL).get("creditBalance")
        return f"key accepted; {balance} credits left" if balance is not None else "key accepted"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One status call; malformed answers and 5xx are transient (ProviderUnavailable)."""
        response = await send(
            self._client,
            self._sem,
            "GET",
            self._task_url(provider_job_id),
            op="poll",
            label=LABEL,
            secrets=self._secrets,
            headers=self._headers,
        )
        return parse_task(json_object(response, op="poll", label=LABEL))

    async def cancel(self, provider_job_id: str) -> bool:
        """DELETE cancels a pending, throttled or running task (and deletes a finished one)."""
        try:
            await send(
                self._client,
                self._sem,
                "DELETE",
                self._task_url(provider_job_id),
                op="call",
                label=LABEL,
                secrets=self._secrets,
                headers=self._headers,
            )
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
