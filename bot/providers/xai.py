"""The adapter for xAI's Grok Imagine video API (reference 2026-12 §7).

`POST {base}/videos/generations` answers `{request_id}`; `GET {base}/videos/{request_id}`
reports the job until `status` is `done`, with the video at `video.url` (a public link on
xAI's CDN, fetched without the key).

xAI has no official HTTP SDK: xai-sdk (1.21) speaks gRPC. Its request types are the check
here: `xai_sdk.types.video` types `resolution` as "480p" | "720p" | "1080p" and
`aspect_ratio` as seven ratios, the proto types `duration` as an int, and its deferred
status enum is PENDING, DONE, FAILED, EXPIRED. The REST spelling of those statuses
(lower case) and the JSON field names come from xAI's REST docs; where the docs and the SDK
disagree, the SDK wins.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    InvalidProviderRequest,
    ProviderError,
    QuotaExhausted,
    ResultExpired,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.http import (
    HttpAdapter,
    Op,
    bearer,
    error_for_exception,
    error_for_response,
    error_parts,
    failure_kind_for,
    first_text,
    json_object,
    loose_json,
    moderation_reason,
    parse_progress,
    redact,
)

log = logging.getLogger(__name__)

LABEL = "xAI"
DEFAULT_BASE_URL = "https://api.x.ai/v1"

# xai-sdk 1.21, xai_sdk/types/video.py: VideoResolution and VideoAspectRatio.
RESOLUTIONS = ("480p", "720p", "1080p")
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
# xAI's REST docs: `duration` is an integer from 1 to 15.
MIN_DURATION_S = 1
MAX_DURATION_S = 15
# xai-sdk cost.py: one tick is 1e-10 USD, so 10,000 ticks make a micro-dollar.
TICKS_PER_MICRO = 10_000
_DETAIL_LIMIT = 500

# xAI answers a wrong key with HTTP 400, not 401: "Incorrect API key provided: xa***yz. You
# can obtain an API key from https://console.x.ai." (seen in public bug reports).
_BAD_KEY = re.compile(r"incorrect api key|invalid api key|api key (?:is )?(?:missing|blocked|disabled)",
                      re.IGNORECASE)
# A team out of credits gets 403 or 429: "Your team … has either used all available credits
# or reached its monthly spending limit." (public bug reports).
_NO_CREDITS = re.compile(r"used all available credits|spending limit|does(?:n't| not) have any credits",
                         re.IGNORECASE)


def build_request(spec: VideoSpec) -> dict[str, Any]:
    """The create body for `spec`; InvalidProviderRequest for what xAI's types refuse.

    A reference image goes as `image: {url: <data URI>}`: the REST docs name the field
    `image.url`, and xai-sdk documents its `image_url` as "the URL or base64-encoded data
    URL of an input image", so the bytes travel inline and need no public host.
    """
    duration = spec.duration_s
    if isinstance(duration, bool) or not isinstance(duration, int) or not (
        MIN_DURATION_S <= duration <= MAX_DURATION_S
    ):
        raise InvalidProviderRequest(
            f"{LABEL} makes videos of {MIN_DURATION_S} to {MAX_DURATION_S} seconds.",
            detail=f"duration {duration!r} outside {MIN_DURATION_S}-{MAX_DURATION_S}",
        )
    if spec.resolution not in RESOLUTIONS:
        raise InvalidProviderRequest(
            f"{LABEL} has no {spec.resolution} resolution.",
            detail=f"resolution {spec.resolution!r} not in {RESOLUTIONS}",
        )
    if spec.aspect_ratio not in ASPECT_RATIOS:
        raise InvalidProviderRequest(
            f"{LABEL} has no {spec.aspect_ratio} aspect ratio.",
            detail=f"aspect_ratio {spec.aspect_ratio!r} not in {ASPECT_RATIOS}",
        )
    payload: dict[str, Any] = {
        "model": spec.provider_model,
        "prompt": spec.prompt,
        "duration": duration,
        "resolution": spec.resolution,
        "aspect_ratio": spec.aspect_ratio,
    }
    if spec.image is not None:
        encoded = base64.b64encode(spec.image.data).decode("ascii")
        payload["image"] = {"url": f"data:{spec.image.mime_type};base64,{encoded}"}
    if spec.audio is not None:
        # xai-sdk's GenerateVideoRequest has `generate_audio` (default true); the REST docs
        # do not list it yet, so it is sent only when someone chose.
        payload["generate_audio"] = spec.audio
    return payload


def _cost_micros(body: Mapping[str, Any]) -> int | None:
    usage = body.get("usage")
    ticks = usage.get("cost_in_usd_ticks") if isinstance(usage, Mapping) else None
    if isinstance(ticks, bool) or not isinstance(ticks, int) or ticks < 0:
        return None
    return ticks // TICKS_PER_MICRO


def parse_video(body: Any) -> ProviderStatus:
    """One `GET /videos/{request_id}` answer → ProviderStatus.

    Statuses: `pending` → `done` is what the reference confirms; it marks every other state
    UNVERIFIED. `failed` (with `error{code, message}`, HTTP 200) and `expired` are read as
    xAI's docs word them and as xai-sdk's deferred status enum (PENDING, DONE, FAILED,
    EXPIRED) has them, but no live answer was seen. Any other word is UNKNOWN (the poller
    keeps going until its deadline). A `done`
    with `video.respect_moderation: false` is held back by xAI's moderation: treated as
    blocked output (UNVERIFIED: no published example of such an answer).
    """
    if not isinstance(body, dict):
        return ProviderStatus(state=ProviderState.UNKNOWN, raw_status=None)
    raw = first_text(body, ("status",))
    word = (raw or "").lower()
    progress = parse_progress(body.get("progress"))
    video = body.get("video") if isinstance(body.get("video"), Mapping) else {}

    if word == "pending":
        # one word for queued and rendering: progress tells them apart where xAI sends it
        state = ProviderState.RUNNING if progress else ProviderState.QUEUED
        return ProviderStatus(state=state, progress=progress, raw_status=raw)
    if word == "done":
        if video.get("respect_moderation") is False:
            return _failed(raw, FailureKind.BLOCKED_OUTPUT, "respect_moderation: false")
        url = first_text(body, ("video.url",))
        if url is None or not url.startswith(("https://", "http://")):
            return _failed(raw, FailureKind.GENERATION_FAILED, "no_output")
        return ProviderStatus(
            state=ProviderState.SUCCEEDED, progress=100, video_url=url,
            cost_micros=_cost_micros(body), raw_status=raw,
        )
    if word == "failed":
        code, message = error_parts(body.get("error"))
        detail = ": ".join(t for t in (code, message) if t) or "status failed"
        kind = failure_kind_for(code, f"{code or ''} {message}")
        reason = moderation_reason(message) if kind is FailureKind.BLOCKED_OUTPUT else None
        return _failed(raw, kind, detail, reason=reason)
    if word == "expired":
        # the deferred result is gone (xai-sdk: "Deferred request expired.")
        return _failed(raw, FailureKind.RESULT_EXPIRED, "expired")
    return ProviderStatus(state=ProviderState.UNKNOWN, progress=progress, raw_status=raw)


def _failed(raw: str | None, kind: FailureKind, detail: str, *, reason: str | None = None) -> ProviderStatus:
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind, detail=detail[:_DETAIL_LIMIT], reason=reason),
        raw_status=raw,
    )


class XaiProvider(HttpAdapter):
    """`POST {base}/videos/generations`, `GET {base}/videos/{id}` with a Bearer key."""

    name = "xai"
    shareable_urls = True  # video.url is a public CDN link (temporary, lifetime unpublished)

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._secrets = (api_key,)
        super().__init__(client=client, max_concurrency=max_concurrency)

    async def _send(self, method: str, url: str, *, op: Op, json: Any = None) -> httpx.Response:
        """One bounded request; a 2xx response or the mapped ProviderError."""
        async with self._sem:
            try:
                response = await self._client.request(method, url, headers=bearer(self._key), json=json)
            except httpx.HTTPError as exc:
                raise error_for_exception(exc, op=op, label=LABEL, secrets=self._secrets) from exc
        if response.is_success:
            return response
        raise self._error(response, op=op)

    def _error(self, response: httpx.Response, *, op: Op) -> ProviderError:
        """xAI's errors are `{code: <gRPC status text>, error: <message string>}`."""
        body = loose_json(response)
        code = first_text(body, ("code",)) if isinstance(body, Mapping) else None
        _, message = error_parts(body.get("error")) if isinstance(body, Mapping) else (None, "")
        text = f"{code or ''} {message}"
        detail = redact(f"HTTP {response.status_code}: {text.strip()}", self._secrets)[:_DETAIL_LIMIT]
        if response.status_code in (400, 401, 403) and _BAD_KEY.search(text):
            return AuthFailed(f"The bot can't authenticate with {LABEL}.", detail=detail)
        if response.status_code in (402, 403, 429) and _NO_CREDITS.search(text):
            return QuotaExhausted(f"The {LABEL} credits are used up.", detail=detail)
        return error_for_response(response, op=op, label=LABEL, secrets=self._secrets)

    async def submit(self, spec: VideoSpec) -> str:
        """Create the job. xAI takes no idempotency key, so this is never retried here."""
        response = await self._send(
            "POST", f"{self._base}/videos/generations", op="submit", json=build_request(spec)
        )
        request_id = first_text(json_object(response, op="submit", label=LABEL), ("request_id",))
        if request_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without a request id.",
                detail="no request_id in a 2xx answer",
            )
        return request_id

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One status call; 5xx and malformed answers are transient (ProviderUnavailable)."""
        response = await self._send("GET", f"{self._base}/videos/{provider_job_id}", op="poll")
        return parse_video(json_object(response, op="poll", label=LABEL))

    async def cancel(self, provider_job_id: str) -> bool:
        """xAI's REST API has no cancel for a video job."""
        return False

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream `video.url`; it is a public link, so the key is never sent to it."""
        await self._download_unkeyed(video_url, lambda: self._where(provider_job_id), dest, label=LABEL)

    async def _where(self, provider_job_id: str) -> ProviderStatus:
        """The status that says where the video is; an `expired` job's video is gone for good."""
        status = await self.poll(provider_job_id)
        if status.error is not None and status.error.kind is FailureKind.RESULT_EXPIRED:
            raise ResultExpired("The video expired at xAI before it was saved.", detail="status expired")
        return status

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """xAI lists no video jobs to look one up in."""
        return None

    async def check(self) -> str:
        """GET /models: authenticated and free."""
        response = await self._send("GET", f"{self._base}/models", op="call")
        body = loose_json(response)
        listed = body.get("data") if isinstance(body, Mapping) else None
        count = f"; {len(listed)} models listed" if isinstance(listed, list) else ""
        return f"{self._base} answered; key accepted{count}"
