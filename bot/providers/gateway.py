"""The adapter for OpenAI-compatible reseller gateways (reference §1.2).

Two request styles: the "seed" shape (`POST {base}/videos/generations` with
`{model, prompt, duration, resolution}`) and new-api's task style (`POST
{base}/video/generations` with `{model, prompt, duration, width, height}`); both poll
`…/{id}` unless the create answer says otherwise. Gateways differ in where they put ids,
statuses, URLs and errors, so answers are read loosely whatever the style.

Where to poll follows the create answer, and the provider job id records it so a restarted
bot polls the same place:
- the answer names a status URL (`polling_url`, `status_url`, `poll_url`, as OpenRouter
  does) on the gateway's own host: poll it; the id is `poll:<path>`;
- the answer is xAI's `{request_id}` alone: poll `{base}/videos/{id}` and read `video.url`,
  as xAI does; the id is `xai:<id>`;
- anything else (`{data:{id}}`, `{id, task_id}`): the old `…/{id}`; the id is the bare id,
  so jobs stored before this change poll where they always did.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import httpx

from bot.errors import (
    AmbiguousSubmit,
    ContentBlocked,
    DeliveryError,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.http import (
    HttpAdapter,
    bearer,
    error_parts,
    failure_kind_for,
    first_non_empty,
    first_text,
    is_expired_word,
    json_object,
    looks_blocked,
    looks_retired,
    moderation_reason,
    parse_progress,
    parse_retry_after,
    parse_state,
    parse_timestamp,
    redact,
    retired_error,
    send,
    stream_to_file,
    video_url_or_poll,
)

log = logging.getLogger(__name__)

LABEL = "The video gateway"

STYLES = {"seed": "videos/generations", "newapi": "video/generations"}
# new-api's task style takes pixel sizes instead of a resolution name
SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("480p", "16:9"): (854, 480), ("480p", "9:16"): (480, 854), ("480p", "1:1"): (480, 480),
    ("720p", "16:9"): (1280, 720), ("720p", "9:16"): (720, 1280), ("720p", "1:1"): (720, 720),
    ("1024p", "16:9"): (1792, 1024), ("1024p", "9:16"): (1024, 1792),
    ("1080p", "16:9"): (1920, 1080), ("1080p", "9:16"): (1080, 1920), ("1080p", "1:1"): (1080, 1080),
}

ID_PATHS = ("data.id", "data.task_id", "id", "task_id", "request_id")
STATUS_PATHS = ("data.status", "status")
URL_PATHS = (
    "data.url",
    "data.result_url",
    "metadata.url",
    "data.metadata.url",
    "output_url",
    "video_url",
    "data.video_url",
    "unsigned_urls[0]",
    "data.unsigned_urls[0]",
    "video.url",  # xAI's shape, and gateways that pass it through
    "data.video.url",
    "data.data.video.url",
)
# A status URL named by the create answer (OpenRouter's `polling_url`, others' names).
POLL_URL_PATHS = (
    "polling_url", "status_url", "poll_url", "data.polling_url", "data.status_url", "data.poll_url",
)
XAI_PREFIX = "xai:"
POLL_PREFIX = "poll:"
PROGRESS_PATHS = ("data.progress", "progress")
# new-api nests a failed Seedance task's error one level deeper (reference §1.2).
ERROR_PATHS = ("data.error", "error", "data.data.error")
FAIL_REASON_PATHS = ("data.fail_reason", "fail_reason")
EXPIRES_PATHS = ("data.expires_at", "expires_at")


def parse_job_id(body: Any) -> str | None:
    """The job id of a create answer, wherever this gateway put it."""
    return first_text(body, ID_PATHS)


def is_xai_answer(body: Any) -> bool:
    """xAI answers a create with `{request_id}` and nothing that names another id."""
    return first_text(body, ID_PATHS[:-1]) is None and first_text(body, ("request_id",)) is not None


def parse_generation(body: Any, *, base_url: str | None = None) -> ProviderStatus:
    """One gateway poll body → ProviderStatus. Raises ProviderUnavailable on a non-object.

    A "succeeded" without a URL is a failure (`no_output`); "expired" is RESULT_EXPIRED.
    Relative URLs are resolved against `base_url`.
    """
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"poll body is a {type(body).__name__}, not an object",
        )
    raw = first_text(body, STATUS_PATHS)
    state = parse_state(raw)
    progress = parse_progress(first_non_empty(body, PROGRESS_PATHS))
    url = _video_url(body, base_url)
    expires_at = parse_timestamp(first_non_empty(body, EXPIRES_PATHS))
    error: ProviderErrorInfo | None = None

    video = body.get("video")
    moderated = isinstance(video, dict) and video.get("respect_moderation") is False
    if state is ProviderState.SUCCEEDED and moderated:
        # xAI's `done` with `respect_moderation: false`: held back by its moderation
        state = ProviderState.FAILED
        error = ProviderErrorInfo(kind=FailureKind.BLOCKED_OUTPUT, detail="respect_moderation: false")
    elif state is ProviderState.SUCCEEDED and url is None:
        state = ProviderState.FAILED
        error = ProviderErrorInfo(kind=FailureKind.GENERATION_FAILED, detail="no_output")
    elif state is ProviderState.FAILED:
        if is_expired_word(raw):
            error = ProviderErrorInfo(kind=FailureKind.RESULT_EXPIRED, detail="expired")
        else:
            error = _error_info(body, raw)
    return ProviderStatus(
        state=state,
        progress=progress,
        video_url=url if state is ProviderState.SUCCEEDED else None,
        error=error,
        expires_at=expires_at,
        raw_status=raw,
    )


def _video_url(body: dict[str, Any], base_url: str | None) -> str | None:
    url = first_text(body, URL_PATHS)
    if url is None:
        return None
    if url.startswith(("http://", "https://")):
        return url
    if base_url is None or not url.startswith("/"):
        return None
    try:
        return str(httpx.URL(base_url).join(url))
    except httpx.InvalidURL:
        return None


def _error_info(body: dict[str, Any], raw_status: str | None) -> ProviderErrorInfo:
    code, message = error_parts(first_non_empty(body, ERROR_PATHS))
    reason_text = first_text(body, FAIL_REASON_PATHS) or ""
    text = " ".join(t for t in (message, reason_text) if t)
    detail = ": ".join(t for t in (code, text) if t) or f"status {raw_status}"
    kind = failure_kind_for(code, text)
    reason = moderation_reason(text) if kind is FailureKind.BLOCKED_OUTPUT else None
    return ProviderErrorInfo(kind=kind, detail=detail[:500], reason=reason)


class GatewayProvider(HttpAdapter):
    """A reseller gateway that speaks the seed shape; `base_url` already ends in `/v1`."""

    name = "gateway"
    shareable_urls = True  # result URLs are CDN links a person can open

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 8,
        style: str = "seed",
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown gateway style {style!r} (use {' or '.join(STYLES)})")
        self.style = style
        self._base = base_url.rstrip("/")
        self._jobs_url = f"{self._base}/{STYLES[style]}"
        self._host = httpx.URL(self._base).host
        self._key = api_key
        self._secrets = (api_key,)
        super().__init__(client=client, max_concurrency=max_concurrency)

    async def submit(self, spec: VideoSpec) -> str:
        """Create the job. Never retried here: the caller decides, by the error's class."""
        payload: dict[str, Any] = {
            "model": spec.provider_model,
            "prompt": spec.prompt,
            "duration": int(spec.duration_s),
        }
        if self.style == "newapi":
            size = SIZES.get((spec.resolution, spec.aspect_ratio))
            if size is None:
                raise InvalidProviderRequest(
                    f"{LABEL} can't make {spec.resolution} at {spec.aspect_ratio}.",
                    detail=f"no pixel size for ({spec.resolution!r}, {spec.aspect_ratio!r})",
                )
            payload["width"], payload["height"] = size
        else:
            payload["resolution"] = spec.resolution
            payload["aspect_ratio"] = spec.aspect_ratio
        response = await send(
            self._client,
            self._sem,
            "POST",
            self._jobs_url,
            op="submit",
            label=LABEL,
            secrets=self._secrets,
            headers=bearer(self._key),
            json=payload,
        )
        body = json_object(response, op="submit", label=LABEL)
        job_id = parse_job_id(body)
        if job_id is not None:
            return self._job_ref(body, job_id)
        raise self._refusal_without_id(body)

    def _job_ref(self, body: dict[str, Any], job_id: str) -> str:
        """The provider job id to store: it says where this job is polled (module docstring)."""
        named = first_text(body, POLL_URL_PATHS)
        if named is not None:
            try:
                url = httpx.URL(self._base + "/").join(named)
            except httpx.InvalidURL:
                url = None
            same_origin = url is not None and url.netloc == httpx.URL(self._base).netloc
            if url is not None and same_origin and url.scheme in ("http", "https"):
                # only the path is kept: the key must never follow a stored host elsewhere
                return f"{POLL_PREFIX}{url.raw_path.decode('ascii')}"
            log.warning("gateway named a status URL off its host; polling the usual path for %s", job_id)
        if is_xai_answer(body):
            return f"{XAI_PREFIX}{job_id}"
        return job_id

    def _poll_url(self, provider_job_id: str) -> str:
        if provider_job_id.startswith(POLL_PREFIX):
            path = provider_job_id[len(POLL_PREFIX):].encode("ascii")
            return str(httpx.URL(self._base).copy_with(raw_path=path))
        if provider_job_id.startswith(XAI_PREFIX):
            return f"{self._base}/videos/{provider_job_id[len(XAI_PREFIX):]}"
        return f"{self._jobs_url}/{provider_job_id}"

    def _refusal_without_id(self, body: dict[str, Any]) -> ProviderError:
        # Some gateways answer 200 with `{code: "error", message}` instead of an HTTP error;
        # only such an explicit refusal proves that no job was made.
        error = first_non_empty(body, ("error", "data.error"))
        code_field = body.get("code")
        refused = (
            error is not None
            or body.get("success") is False
            or (isinstance(code_field, str) and code_field.lower() not in ("success", "ok"))
        )
        if not refused:
            return AmbiguousSubmit(
                f"{LABEL} accepted the request without a job id.",
                detail="no job id in a 2xx answer",
            )
        code, message = error_parts(error)
        message = message or first_text(body, ("message", "msg")) or ""
        code = code or (code_field if isinstance(code_field, str) else None)
        detail = redact(": ".join(t for t in (code, message) if t), self._secrets)[:500]
        if looks_blocked(code, message):
            return ContentBlocked(
                "The safety filter rejected the prompt.",
                stage="input",
                detail=detail,
                reason=moderation_reason(message),
            )
        if looks_retired(code, message):
            return retired_error(LABEL, detail)
        return InvalidProviderRequest(f"{LABEL} did not accept the request.", detail=detail)

    async def check(self) -> str:
        """A cheap authenticated call: OpenAI-compatible gateways serve GET /models."""
        await send(self._client, self._sem, "GET", f"{self._base}/models", op="call", label=LABEL,
                   secrets=self._secrets, headers=bearer(self._key))
        return f"{self._base} answered; key accepted"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One status call; malformed answers and 5xx are transient (ProviderUnavailable)."""
        response = await send(
            self._client,
            self._sem,
            "GET",
            self._poll_url(provider_job_id),
            op="poll",
            label=LABEL,
            secrets=self._secrets,
            headers=bearer(self._key),
        )
        status = parse_generation(
            json_object(response, op="poll", label=LABEL), base_url=self._base
        )
        hint = parse_retry_after(response.headers)
        if hint is None:
            return status
        return dataclasses.replace(status, retry_after_s=hint)

    async def cancel(self, provider_job_id: str) -> bool:
        """Best effort: not every gateway has a cancel route, and none is required to."""
        if provider_job_id.startswith((POLL_PREFIX, XAI_PREFIX)):
            return False  # xAI-like and status-URL APIs publish no cancel route
        try:
            await send(
                self._client,
                self._sem,
                "POST",
                f"{self._jobs_url}/{provider_job_id}/cancel",
                op="call",
                label=LABEL,
                secrets=self._secrets,
                headers=bearer(self._key),
            )
        except ProviderError as exc:
            log.info("gateway cancel of %s not accepted: %s", provider_job_id, exc.detail)
            return False
        return True

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream the video; the key goes only to the gateway's own host, never to a CDN."""
        url = await video_url_or_poll(video_url, lambda: self.poll(provider_job_id), label=LABEL)
        try:
            same_host = httpx.URL(url).host == self._host
        except httpx.InvalidURL as exc:
            raise DeliveryError(
                f"{LABEL} gave an unusable video link.", detail="invalid video URL"
            ) from exc
        await stream_to_file(
            self._client,
            self._sem,
            url,
            dest,
            label=LABEL,
            headers=bearer(self._key) if same_host else None,
            secrets=self._secrets,
        )

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """The seed shape has no list or external-id lookup."""
        return None

