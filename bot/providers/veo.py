"""The adapter for Google Veo through the Gemini API's long-running operations (reference §1.5)."""

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
    DeliveryError,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.http import (
    HttpAdapter,
    Op,
    first_non_empty,
    first_text,
    json_object,
    redact,
    send,
    stream_to_file,
    video_url_or_poll,
)

log = logging.getLogger(__name__)

LABEL = "Veo"
KEY_HEADER = "x-goog-api-key"

VEO_DURATIONS_S = (4, 6, 8)
VEO_ASPECTS = ("16:9", "9:16")
# 4k is on Google's Veo 3.1 price list ($0.60/s); like 1080p it comes only at 8 s
VEO_RESOLUTIONS = ("720p", "1080p", "4k")
FULL_HD_DURATION_S = 8  # Veo makes 1080p and 4k only for 8-second videos

# Where the operation puts the first video: the Gemini API's REST shape first, then the
# google-genai SDK's names, so a renamed field does not lose a finished (paid) video.
_SAMPLES = "response.generateVideoResponse.generatedSamples"
URI_PATHS = (
    f"{_SAMPLES}[0].video.uri",
    "response.generatedVideos[0].video.uri",
    "response.generated_videos[0].video.uri",
)
RAI_COUNT_PATHS = (
    "response.generateVideoResponse.raiMediaFilteredCount",
    "response.raiMediaFilteredCount",
)
RAI_REASON_PATHS = (
    "response.generateVideoResponse.raiMediaFilteredReasons",
    "response.raiMediaFilteredReasons",
)

# google.rpc.Code numbers and names an operation's `error` may carry.
_INVALID = {"3", "400", "INVALID_ARGUMENT"}
_EXHAUSTED = {"8", "429", "RESOURCE_EXHAUSTED"}
_CANCELLED = {"1", "CANCELLED"}

# Gemini answers a wrong key with 400 INVALID_ARGUMENT rather than 401.
_BAD_KEY = re.compile(r"API_KEY_INVALID|API key not valid|API key expired", re.IGNORECASE)
_SUPPORT_CODES = re.compile(r"\s*Support codes?:.*$", re.IGNORECASE | re.DOTALL)
_REASON_LIMIT = 160


def build_predict_request(spec: VideoSpec) -> dict[str, Any]:
    """The `predictLongRunning` body; InvalidProviderRequest before anything is sent."""
    if spec.duration_s not in VEO_DURATIONS_S:
        raise InvalidProviderRequest(
            f"{LABEL} makes videos of 4, 6 or 8 seconds, not {spec.duration_s}.",
            detail=f"durationSeconds {spec.duration_s} not in {VEO_DURATIONS_S}",
        )
    if spec.resolution not in VEO_RESOLUTIONS:
        raise InvalidProviderRequest(
            f"{LABEL} makes 720p, 1080p or 4k videos, not {spec.resolution}.",
            detail=f"resolution {spec.resolution!r} not in {VEO_RESOLUTIONS}",
        )
    if spec.resolution != "720p" and spec.duration_s != FULL_HD_DURATION_S:
        raise InvalidProviderRequest(
            f"{LABEL} makes {spec.resolution} videos only at 8 seconds. Pick 8 s, or 720p.",
            detail=f"{spec.resolution} with durationSeconds {spec.duration_s}",
        )
    if spec.aspect_ratio not in VEO_ASPECTS:
        raise InvalidProviderRequest(
            f"{LABEL} makes 16:9 or 9:16 videos, not {spec.aspect_ratio}.",
            detail=f"aspectRatio {spec.aspect_ratio!r} not in {VEO_ASPECTS}",
        )
    instance: dict[str, Any] = {"prompt": spec.prompt}
    if spec.image is not None:
        instance["image"] = {
            "bytesBase64Encoded": base64.b64encode(spec.image.data).decode("ascii"),
            "mimeType": spec.image.mime_type,
        }
    return {
        "instances": [instance],
        "parameters": {
            "aspectRatio": spec.aspect_ratio,
            "resolution": spec.resolution,
            # Google's docs show durationSeconds both as a string and as a number; the
            # reference's contract (§1.5) has the string form, so that is what we send.
            "durationSeconds": str(spec.duration_s),
        },
    }


def rai_reason(reasons: Any) -> str | None:
    """The first RAI filter reason, short enough to show: no support codes, one sentence."""
    if not isinstance(reasons, list):
        return None
    first = next((r for r in reasons if isinstance(r, str) and r.strip()), None)
    if first is None:
        return None
    text = _SUPPORT_CODES.sub("", first).strip()
    sentence = re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0].strip()
    if len(sentence) > _REASON_LIMIT:
        sentence = sentence[: _REASON_LIMIT - 1].rstrip() + "…"
    return sentence or None


def _is_done(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _code_words(error: Mapping[str, Any]) -> set[str]:
    words: set[str] = set()
    for key in ("code", "status"):
        value = error.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, str)):
            words.add(str(value).strip().upper())
    return words


def _error_status(error: Any) -> ProviderStatus:
    words: set[str] = set()
    message = error.strip() if isinstance(error, str) else ""
    if isinstance(error, Mapping):
        words = _code_words(error)
        message = first_text(error, ("message",)) or ""
    code = "/".join(sorted(words))
    detail = (": ".join(t for t in (code, message) if t) or "operation error")[:500]
    if words & _CANCELLED:
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status="done+cancelled")
    if words & _INVALID:
        kind = FailureKind.INVALID_REQUEST
    elif words & _EXHAUSTED:
        kind = FailureKind.RATE_LIMITED
    else:
        kind = FailureKind.GENERATION_FAILED
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind, detail=detail),
        raw_status="done+error",
    )


def parse_operation(body: Any) -> ProviderStatus:
    """One operation body → ProviderStatus. Raises ProviderUnavailable on a non-object.

    Veo has no status words and no progress: until `done` the job reads as RUNNING (so it
    shows as rendering). Done with a sample → SUCCEEDED; with `error` → FAILED; with no
    sample → BLOCKED_OUTPUT when the RAI filter says so, else `no_output`.
    """
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"operation body is a {type(body).__name__}, not an object",
        )
    error = body.get("error")
    if (isinstance(error, Mapping) and error) or (isinstance(error, str) and error.strip()):
        return _error_status(error)
    if not _is_done(body.get("done")):
        return ProviderStatus(state=ProviderState.RUNNING, raw_status="running")
    uri = first_text(body, URI_PATHS)
    if uri is not None and uri.startswith(("https://", "http://")):
        return ProviderStatus(
            state=ProviderState.SUCCEEDED, progress=100, video_url=uri, raw_status="done"
        )
    reasons = first_non_empty(body, RAI_REASON_PATHS)
    count = first_non_empty(body, RAI_COUNT_PATHS)
    filtered = isinstance(reasons, list) or (
        isinstance(count, (int, float)) and not isinstance(count, bool) and count > 0
    )
    if filtered:
        if isinstance(reasons, list):
            detail = "; ".join(r for r in reasons if isinstance(r, str))
        else:
            detail = f"raiMediaFilteredCount {count}"
        return ProviderStatus(
            state=ProviderState.FAILED,
            error=ProviderErrorInfo(
                kind=FailureKind.BLOCKED_OUTPUT,
                detail=(detail or "raiMediaFiltered")[:500],
                reason=rai_reason(reasons),
            ),
            raw_status="done+filtered",
        )
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=FailureKind.GENERATION_FAILED, detail="no_output"),
        raw_status="done",
    )


class VeoProvider(HttpAdapter):
    """Veo via the Gemini API: `predictLongRunning`, then poll the operation by its name."""

    name = "veo"
    shareable_urls = False  # the file URI needs the API key: never show it as a link

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://generativelanguage.googleapis.com/v1beta",
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._host = httpx.URL(self._base).host
        self._secrets = (api_key,)
        self._headers = {KEY_HEADER: api_key}
        super().__init__(client=client, max_concurrency=max_concurrency)

    async def submit(self, spec: VideoSpec) -> str:
        """Start the operation; its name ("models/…/operations/…") is the provider job id."""
        payload = build_predict_request(spec)
        response = await self._send(
            "POST",
            f"{self._base}/models/{spec.provider_model}:predictLongRunning",
            op="submit",
            json=payload,
        )
        name = first_text(json_object(response, op="submit", label=LABEL), ("name",))
        if name is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without an operation name.",
                detail="no name in a 2xx answer",
            )
        return name

    async def check(self) -> str:
        """GET /models?pageSize=1 with the key: free and authenticated."""
        await self._send("GET", f"{self._base}/models?pageSize=1", op="call")
        return "key accepted"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One operation GET. A 403 here is AuthFailed (Google reports PERMISSION_DENIED)."""
        response = await self._send("GET", self._operation_url(provider_job_id), op="poll")
        return parse_operation(json_object(response, op="poll", label=LABEL))

    async def cancel(self, provider_job_id: str) -> bool:
        """Best effort `:cancel`; never raises."""
        try:
            await self._send("POST", f"{self._operation_url(provider_job_id)}:cancel", op="call")
        except ProviderError as exc:
            log.info("veo cancel of %s not accepted: %s", provider_job_id, exc.detail)
            return False
        return True

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream the file URI with the key, following Google's redirect to the bytes.

        The key goes only to the API's own host; a URI elsewhere is fetched without it.
        """
        url = await video_url_or_poll(video_url, lambda: self.poll(provider_job_id), label=LABEL)
        try:
            same_host = httpx.URL(url).host == self._host
        except httpx.InvalidURL as exc:
            raise DeliveryError(
                f"{LABEL} gave an unusable video link.", detail="invalid video URI"
            ) from exc
        await stream_to_file(
            self._client,
            self._sem,
            url,
            dest,
            label=LABEL,
            headers=self._headers if same_host else None,
            secrets=self._secrets,
        )

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """The Gemini API has no listing of video operations to search."""
        return None


    def _operation_url(self, name: str) -> str:
        return f"{self._base}/{name.lstrip('/')}"

    async def _send(
        self, method: str, url: str, *, op: Op, json: Any = None
    ) -> httpx.Response:
        try:
            return await send(
                self._client,
                self._sem,
                method,
                url,
                op=op,
                label=LABEL,
                secrets=self._secrets,
                headers=self._headers,
                json=json,
            )
        except InvalidProviderRequest as exc:
            if _BAD_KEY.search(exc.detail):
                raise AuthFailed(
                    f"The bot can't authenticate with {LABEL}.",
                    detail=redact(exc.detail, self._secrets),
                ) from exc
            raise
