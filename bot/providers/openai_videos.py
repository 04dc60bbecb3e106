"""The adapter for the OpenAI Videos API shape (`/videos`, reference §1.1).

OpenAI shut its own Sora 2 API down on 2026-09-24; the shape lives on at gateways that mimic
it, so a "model not found" answer is reported as ProviderRetired.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import httpx

from bot.catalog import OPENAI_SIZES
from bot.errors import AmbiguousSubmit, InvalidProviderRequest, ProviderError, ProviderUnavailable
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.http import (
    HttpAdapter,
    bearer,
    error_parts,
    first_text,
    header_ms,
    json_object,
    moderation_reason,
    parse_progress,
    parse_retry_after,
    parse_state,
    parse_timestamp,
    send,
    stream_to_file,
)

log = logging.getLogger(__name__)

LABEL = "OpenAI"

# openai 3.57's VideoSeconds Literal. OpenAI's March-2026 guide also named "16" and "20"
# (and 1920x1080 sizes); the SDK that ships today wins, and the API answered them with a 400.
OPENAI_SECONDS = ("4", "8", "12")

# A list answer's created_at may trail our own clock a little.
_CLOCK_SLACK_S = 5.0
_LIST_LIMIT = 20


def openai_size(resolution: str, aspect_ratio: str) -> str:
    """The `size` OpenAI expects for this resolution and aspect; InvalidProviderRequest if none."""
    size = OPENAI_SIZES.get((resolution, aspect_ratio))
    if size is None:
        raise InvalidProviderRequest(
            f"{LABEL} has no size for {resolution} at {aspect_ratio}.",
            detail=f"no OPENAI_SIZES entry for ({resolution!r}, {aspect_ratio!r})",
        )
    return size


def openai_seconds(duration_s: int) -> str:
    """`seconds` as OpenAI takes it, a string; InvalidProviderRequest for other lengths."""
    seconds = str(duration_s)
    if seconds not in OPENAI_SECONDS:
        raise InvalidProviderRequest(
            f"{LABEL} makes videos of {', '.join(OPENAI_SECONDS)} seconds.",
            detail=f"seconds {seconds!r} not in {OPENAI_SECONDS}",
        )
    return seconds


def parse_video(
    body: Any, *, content_url: str | None = None, poll_after_s: float | None = None
) -> ProviderStatus:
    """An OpenAI video object → ProviderStatus. Raises ProviderUnavailable on a non-object.

    The object carries no URL: a completed job's video lives at `content_url`
    (`/videos/{id}/content`, which needs the API key).
    """
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"poll body is a {type(body).__name__}, not an object",
        )
    raw = first_text(body, ("status",))
    state = parse_state(raw)
    error: ProviderErrorInfo | None = None
    video_url: str | None = None
    if state is ProviderState.SUCCEEDED:
        if content_url is None:
            state = ProviderState.FAILED
            error = ProviderErrorInfo(kind=FailureKind.GENERATION_FAILED, detail="no_output")
        else:
            video_url = content_url
    elif state is ProviderState.FAILED:
        error = _error_info(body.get("error"), raw)
    return ProviderStatus(
        state=state,
        progress=parse_progress(body.get("progress")),
        video_url=video_url,
        error=error,
        retry_after_s=poll_after_s,
        expires_at=parse_timestamp(body.get("expires_at")),
        raw_status=raw,
    )


def _error_info(error: Any, raw_status: str | None) -> ProviderErrorInfo:
    if raw_status is not None and raw_status.strip().lower() == "expired":
        return ProviderErrorInfo(kind=FailureKind.RESULT_EXPIRED, detail="expired")
    code, message = error_parts(error)
    detail = ": ".join(t for t in (code, message) if t) or f"status {raw_status}"
    if code == "moderation_blocked":
        return ProviderErrorInfo(
            kind=FailureKind.BLOCKED_OUTPUT, detail=detail[:500], reason=moderation_reason(message)
        )
    return ProviderErrorInfo(kind=FailureKind.GENERATION_FAILED, detail=detail[:500])


def matches_spec(item: Any, spec: VideoSpec, size: str, *, since_epoch_s: float) -> bool:
    """Whether a listed video object is the job this spec made after `since_epoch_s`."""
    if not isinstance(item, dict):
        return False
    created = parse_timestamp(item.get("created_at"))
    return (
        item.get("model") == spec.provider_model
        and item.get("prompt") == spec.prompt
        and str(item.get("seconds")) == str(spec.duration_s)
        and item.get("size") == size
        and created is not None
        and created.timestamp() >= since_epoch_s - _CLOCK_SLACK_S
    )


class OpenAIVideosProvider(HttpAdapter):
    """`POST /videos`, `GET /videos/{id}`, `GET /videos/{id}/content`; base ends in `/v1`."""

    name = "openai"
    shareable_urls = False  # /content needs the API key: never show it as a link

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
        calls_back: bool = False,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        # OpenAI's webhooks are set up once in its dashboard, not per job: the app, which
        # serves their route, says whether they reach us
        self.calls_back = calls_back
        self._secrets = (api_key,)
        super().__init__(client=client, max_concurrency=max_concurrency)

    async def submit(self, spec: VideoSpec) -> str:
        """Create the job. `seconds` must be a string: OpenAI rejects an integer. Lengths and
        sizes outside the SDK's Literals are refused here, before anything is sent.

        A reference image goes as `input_reference: {image_url: <data URL>}` (the JSON form);
        it must already be exactly `size` (bot.media.images pads it), or OpenAI answers 400.
        """
        payload: dict[str, Any] = {
            "model": spec.provider_model,
            "prompt": spec.prompt,
            "seconds": openai_seconds(spec.duration_s),
            "size": openai_size(spec.resolution, spec.aspect_ratio),
        }
        if spec.image is not None:
            encoded = base64.b64encode(spec.image.data).decode("ascii")
            payload["input_reference"] = {"image_url": f"data:{spec.image.mime_type};base64,{encoded}"}
        response = await send(
            self._client,
            self._sem,
            "POST",
            f"{self._base}/videos",
            op="submit",
            label=LABEL,
            secrets=self._secrets,
            headers=bearer(self._key),
            json=payload,
        )
        body = json_object(response, op="submit", label=LABEL)
        job_id = first_text(body, ("id",))
        if job_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without a job id.",
                detail="no id in a 2xx answer",
            )
        return job_id

    async def check(self) -> str:
        """GET /models: cheap and authenticated (the Videos API itself is shut down)."""
        await send(self._client, self._sem, "GET", f"{self._base}/models", op="call", label=LABEL,
                   secrets=self._secrets, headers=bearer(self._key))
        return f"{self._base} answered; key accepted"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One status call; `openai-poll-after-ms` becomes the retry_after_s hint."""
        response = await send(
            self._client,
            self._sem,
            "GET",
            self._video_url(provider_job_id),
            op="poll",
            label=LABEL,
            secrets=self._secrets,
            headers=bearer(self._key),
        )
        hint = header_ms(response.headers, "openai-poll-after-ms")
        if hint is None:
            hint = parse_retry_after(response.headers)
        return parse_video(
            json_object(response, op="poll", label=LABEL),
            content_url=f"{self._video_url(provider_job_id)}/content",
            poll_after_s=hint,
        )

    async def cancel(self, provider_job_id: str) -> bool:
        """The API cannot stop a running job (DELETE only removes finished ones)."""
        return False

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream `/videos/{id}/content`; `video_url` is ignored (that route needs the key)."""
        await stream_to_file(
            self._client,
            self._sem,
            f"{self._video_url(provider_job_id)}/content",
            dest,
            label=LABEL,
            headers=bearer(self._key),
            secrets=self._secrets,
        )

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """The newest listed job with this model, prompt, seconds and size; None when unsure."""
        try:
            size = openai_size(spec.resolution, spec.aspect_ratio)
            response = await send(
                self._client,
                self._sem,
                "GET",
                f"{self._base}/videos",
                op="call",
                label=LABEL,
                secrets=self._secrets,
                headers=bearer(self._key),
                params={"limit": _LIST_LIMIT, "order": "desc"},
            )
            body = json_object(response, op="call", label=LABEL)
        except ProviderError as exc:
            log.info("OpenAI list for find_existing failed: %s", exc.detail)
            return None
        items = body.get("data")
        if not isinstance(items, list):
            return None
        for item in items:
            if matches_spec(item, spec, size, since_epoch_s=since_epoch_s):
                return first_text(item, ("id",))
        return None


    def _video_url(self, provider_job_id: str) -> str:
        return f"{self._base}/videos/{provider_job_id}"
