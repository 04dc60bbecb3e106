"""The adapter for Gemini Omni Flash through the Gemini API's Interactions API (reference 2026-12 §1c).

`POST {base}/interactions` with `background: true` answers an interaction `{id, status}`;
`GET {base}/interactions/{id}` reports it until it ends, the video in `steps[]` (the model
output's content of type `video`) as base64 `data` or a `uri`. `POST …/{id}/cancel` stops it.

google-genai 3.6.1 is the check: its Gemini API default version is `v1`, so it posts to
`/v1/interactions` (seen by driving the SDK against a local server), not the docs' `/v1beta`;
its `_gaos/types/interactions` types are the request contract (`duration` a string like
"8s", `resolution` 360p | 720p | 1080p | 4k, `aspect_ratio` 16:9 | 9:16, `delivery`
inline | uri). Where the docs and the SDK disagree, the SDK wins.

Veo is no longer served on the Gemini API (shut down there on 2026-10-22): a `veo-*` model
ends as ProviderRetired with a pointer to Omni or to Veo on Google's Agent Platform.

A long video's later segments natively extend the one before (`VideoSpec.extend_video`):
task `extend` with the whole video so far as a `video` input block; the answer is the input
plus the 3-10 seconds added (see `build_interaction_request`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    DeliveryError,
    GenerationFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderRetired,
    ProviderUnavailable,
    ResultExpired,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.http import (
    file_base64,
    HttpAdapter,
    Op,
    first_text,
    json_object,
    redact,
    send,
    stream_to_file,
)

log = logging.getLogger(__name__)

LABEL = "Gemini"
KEY_HEADER = "x-goog-api-key"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1"

# google-genai 3.6.1, _gaos/types/interactions/videoresponseformat.py: the Literal values.
RESOLUTIONS = ("360p", "720p", "1080p", "4k")
ASPECT_RATIOS = ("16:9", "9:16")
# Inline results are capped near 4 MB (reference 2026-12 §1c): larger videos come as a link.
URI_RESOLUTIONS = frozenset({"1080p", "4k"})
# Lengths per model (reference 2026-12 §1c); another model id is left to the catalog.
DURATIONS_S: dict[str, tuple[int, int]] = {
    "gemini-omni-1.2-flash": (3, 15),
    "gemini-omni-1.1-flash": (3, 10),
}
# Inline videos kept between the poll that saw them and the download that writes them.
INLINE_KEEP = 4
# An extension adds 3-10 s (reference 2026-12 §1c, "Extension"), whatever the model's clips.
EXTEND_DURATIONS_S = (3, 10)
VIDEO_MIME = "video/mp4"

SUGGESTED_MODEL = "gemini-omni-flash"
VEO_MOVED = (
    "Google moved Veo off the Gemini API (it stopped serving it there on 2026-10-22) to its "
    f"Agent Platform. Try `{SUGGESTED_MODEL}` instead, or ask an admin to set up Veo through "
    "Google's Agent Platform."
)
VEO_MOVED_REASON = f"Veo now runs on Google's Agent Platform; try {SUGGESTED_MODEL}"

_VEO = re.compile(r"^(models/)?veo-", re.IGNORECASE)
# Gemini answers a wrong key with 400 INVALID_ARGUMENT rather than 401.
_BAD_KEY = re.compile(r"API_KEY_INVALID|API key not valid|API key expired", re.IGNORECASE)
_SAFETY = re.compile(
    r"safety|moderation|blocked|prohibited|responsible ai|\bRAI\b|content polic|usage polic",
    re.IGNORECASE,
)
_SUPPORT_CODES = re.compile(r"\s*Support codes?:.*$", re.IGNORECASE | re.DOTALL)
_REASON_LIMIT = 160
_DETAIL_LIMIT = 500

# Statuses that end the job without a video, and how (google-genai 3.6.1 InteractionStatus).
# requires_action and requires_continuation wait for a tool result or a continuation call,
# which this bot never makes, so waiting on them only runs into the job timeout: they fail
# at once, uncharged, as generation_failed.
_FAILED_KINDS: dict[str, FailureKind] = {
    "failed": FailureKind.GENERATION_FAILED,
    "incomplete": FailureKind.GENERATION_FAILED,
    "budget_exceeded": FailureKind.QUOTA_EXHAUSTED,
    "requires_action": FailureKind.GENERATION_FAILED,
    "requires_continuation": FailureKind.GENERATION_FAILED,
}


def is_retired_veo(model: str) -> bool:
    """Any `veo-*` id: the Gemini API serves none of them since 2026-10-22."""
    return bool(_VEO.match(model.strip()))


def veo_retired_error(model: str) -> ProviderRetired:
    return ProviderRetired(
        VEO_MOVED,
        detail=f"{model}: Veo is not served on the Gemini API since 2026-10-22",
        reason=VEO_MOVED_REASON,
    )


def is_extension(spec: VideoSpec) -> bool:
    """A segment that natively extends the previous one's video."""
    return spec.extend_video is not None or spec.extend_from_job is not None


def build_interaction_request(spec: VideoSpec) -> dict[str, Any]:
    """The create body, field for field as google-genai 3.6.1 sends it; InvalidProviderRequest
    before anything is sent.

    The SDK marks `response_modalities` deprecated in 3.6.1 (the `response_format` of type
    video says what comes back), so it is left out. An extension reads `spec.extend_video`:
    call this off the event loop then.
    """
    if spec.resolution not in RESOLUTIONS:
        raise InvalidProviderRequest(
            f"{LABEL} makes 360p, 720p, 1080p or 4k videos, not {spec.resolution}.",
            detail=f"resolution {spec.resolution!r} not in {RESOLUTIONS}",
        )
    if spec.aspect_ratio not in ASPECT_RATIOS:
        raise InvalidProviderRequest(
            f"{LABEL} makes 16:9 or 9:16 videos, not {spec.aspect_ratio}.",
            detail=f"aspect_ratio {spec.aspect_ratio!r} not in {ASPECT_RATIOS}",
        )
    if is_extension(spec):
        return _build_extension_request(spec)
    low, high = DURATIONS_S.get(spec.provider_model, (1, 600))
    if not low <= spec.duration_s <= high:
        raise InvalidProviderRequest(
            f"{spec.provider_model} makes videos of {low} to {high} seconds, not {spec.duration_s}.",
            detail=f"duration {spec.duration_s}s outside {low}-{high}s",
        )
    prompt_input: str | list[dict[str, Any]] = spec.prompt
    task = "text_to_video"
    if spec.image is not None:
        task = "image_to_video"
        # The SDK wraps a list of content blocks into one user_input step before sending.
        prompt_input = [
            {
                "type": "user_input",
                "content": [
                    {"type": "text", "text": spec.prompt},
                    {
                        "type": "image",
                        "data": base64.b64encode(spec.image.data).decode("ascii"),
                        "mime_type": spec.image.mime_type,
                    },
                ],
            }
        ]
    return {
        "model": spec.provider_model,
        "input": prompt_input,
        "background": True,
        "store": True,  # a background interaction is read back later: it must be stored
        "response_format": {
            "type": "video",
            "aspect_ratio": spec.aspect_ratio,
            "resolution": spec.resolution,
            "duration": f"{spec.duration_s}s",
            "delivery": "uri" if spec.resolution in URI_RESOLUTIONS else "inline",
        },
        "generation_config": {"video_config": {"task": task}},
    }


def _build_extension_request(spec: VideoSpec) -> dict[str, Any]:
    """The create body that extends the previous segment's video by `spec.duration_s`.

    google-genai 3.6.1's types offer two ways to hand Omni a video to work on, and nothing in
    the SDK says which one `task: "extend"` reads: a `video` content block in `input`
    (`_gaos/types/interactions/videocontent.py`: `{type: "video", data: <base64>, mime_type}`)
    or `previous_interaction_id` (`createmodelinteraction.py`, "The ID of the previous
    interaction"), which chains onto a stored interaction's context. The input block is the
    one used when the file is here: the Agent Platform's extend-videos page describes
    extension as "provide an input video", it needs nothing kept at Google (a stored
    interaction can expire), and sending both would put the video in the context twice. It
    goes inline, not as a Files API link, because Omni reportedly fails on Files links as
    input (reference 2026-12 §1c, "Known bug"). `previous_interaction_id` (= the job that made
    the video) is sent only when the file is missing. UNVERIFIED against the live API: probe
    one extension before relying on it.

    The result is the whole video (input + extension), over the ~4 MB inline cap for all but
    the shortest, so it is always asked for as a link (`delivery: "uri"`).
    """
    low, high = EXTEND_DURATIONS_S
    if not low <= spec.duration_s <= high:
        raise InvalidProviderRequest(
            f"{LABEL} extends a video by {low} to {high} seconds at a time, not {spec.duration_s}.",
            detail=f"extension of {spec.duration_s}s outside {low}-{high}s",
        )
    if spec.image is not None:
        raise InvalidProviderRequest(
            f"{LABEL} can't start an extension from an image.",
            detail="image and extend_video together",
        )
    body: dict[str, Any] = {"model": spec.provider_model}
    if spec.extend_video is not None:
        video = {"type": "video", "data": file_base64(spec.extend_video), "mime_type": VIDEO_MIME}
        body["input"] = [
            {"type": "user_input", "content": [{"type": "text", "text": spec.prompt}, video]}
        ]
    elif spec.extend_from_job is not None:
        body["previous_interaction_id"] = spec.extend_from_job
        body["input"] = spec.prompt
    body.update(
        background=True,
        store=True,
        response_format={
            "type": "video",
            "aspect_ratio": spec.aspect_ratio,
            "resolution": spec.resolution,
            "duration": f"{spec.duration_s}s",
            "delivery": "uri",
        },
        generation_config={"video_config": {"task": "extend"}},
    )
    return body


def find_video(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The video content block of the model's last output, as google-genai reads it
    (`output_video`): steps after the last user input, the last `video` item wins."""
    steps = body.get("steps")
    if not isinstance(steps, list):
        return None
    for step in reversed(steps):
        if not isinstance(step, Mapping):
            continue
        if step.get("type") == "user_input":
            return None
        content = step.get("content")
        if step.get("type") != "model_output" or not isinstance(content, list):
            continue
        for item in reversed(content):
            if isinstance(item, Mapping) and item.get("type") == "video":
                return item
    return None


def _error_text(body: Mapping[str, Any]) -> str:
    """Every error message an interaction carries: its `errors[]` and its steps' `error`."""
    parts: list[str] = []
    errors = body.get("errors")
    sources: list[Any] = list(errors) if isinstance(errors, list) else []
    steps = body.get("steps")
    if isinstance(steps, list):
        sources += [s.get("error") for s in steps if isinstance(s, Mapping)]
    for error in sources:
        if isinstance(error, Mapping):
            words = [first_text(error, ("code",)), first_text(error, ("message",))]
            parts.append(": ".join(w for w in words if w))
        elif isinstance(error, str) and error.strip():
            parts.append(error.strip())
    return "; ".join(p for p in parts if p)


def _short_reason(text: str) -> str | None:
    """The first sentence of a provider's message, short enough to show, no support codes."""
    first = text.split("; ")[0]
    first = first.split(": ", 1)[-1] if ": " in first else first
    first = _SUPPORT_CODES.sub("", first).strip()
    sentence = re.split(r"(?<=[.!?])\s+", first, maxsplit=1)[0].strip()
    if len(sentence) > _REASON_LIMIT:
        sentence = sentence[: _REASON_LIMIT - 1].rstrip() + "…"
    return sentence or None


def _failed(kind: FailureKind, detail: str, raw: str, *, reason: str | None = None) -> ProviderStatus:
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind, detail=detail[:_DETAIL_LIMIT], reason=reason),
        raw_status=raw,
    )


def _blocked_or(kind: FailureKind, text: str, raw: str) -> ProviderStatus:
    if _SAFETY.search(text):
        return _failed(FailureKind.BLOCKED_OUTPUT, text, raw, reason=_short_reason(text))
    return _failed(kind, text or raw, raw)


def parse_interaction(body: Any) -> ProviderStatus:
    """One interaction body → ProviderStatus. Raises ProviderUnavailable on a non-object.

    completed with a `uri` → SUCCEEDED with that link; with inline `data` → SUCCEEDED with no
    link (the bytes never go to the database: `download` writes them); with neither →
    FAILED (blocked_output when the errors speak of safety, else no_output). budget_exceeded
    → quota_exhausted; failed, incomplete and the statuses that wait for a caller's action →
    generation_failed, or blocked_output for a safety reason. The API reports no progress.
    """
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"interaction body is a {type(body).__name__}, not an object",
        )
    raw = body.get("status")
    word = raw.strip().lower() if isinstance(raw, str) else ""
    if word == "queued":
        return ProviderStatus(state=ProviderState.QUEUED, raw_status=word)
    if word == "in_progress":
        return ProviderStatus(state=ProviderState.RUNNING, raw_status=word)
    if word == "cancelled":
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status=word)
    if word == "completed":
        video = find_video(body)
        uri = video.get("uri") if video is not None else None
        if isinstance(uri, str) and uri.startswith(("https://", "http://")):
            return ProviderStatus(
                state=ProviderState.SUCCEEDED, progress=100, video_url=uri, raw_status=word
            )
        data = video.get("data") if video is not None else None
        if isinstance(data, str) and data.strip():
            return ProviderStatus(state=ProviderState.SUCCEEDED, progress=100, raw_status=word)
        text = _error_text(body)
        return _blocked_or(FailureKind.GENERATION_FAILED, text or "no_output", word)
    if word in _FAILED_KINDS:
        text = _error_text(body) or word
        if word == "budget_exceeded":
            return _failed(FailureKind.QUOTA_EXHAUSTED, text, word)
        return _blocked_or(_FAILED_KINDS[word], text, word)
    # idle, a word newer than this adapter, or none: still going until the job's deadline
    return ProviderStatus(state=ProviderState.UNKNOWN, raw_status=word or None)


def decode_video(data: Any) -> bytes | None:
    """Inline base64 video bytes (standard or URL-safe alphabet); None when unreadable."""
    if not isinstance(data, str):
        return None
    text = "".join(data.split())
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        return raw or None
    return None


class GeminiProvider(HttpAdapter):
    """Gemini Omni Flash via the Interactions API, with a Gemini API key."""

    name = "gemini"
    shareable_urls = False  # a result link needs the API key: never show it as a link
    # an inline result has no URL: `download` writes it from the poll (or fetches it again)
    downloads_by_job_id = True

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._host = httpx.URL(self._base).host
        self._secrets = (api_key,)
        self._headers = {KEY_HEADER: api_key}
        self._inline: OrderedDict[str, bytes] = OrderedDict()
        super().__init__(client=client, max_concurrency=max_concurrency)

    async def submit(self, spec: VideoSpec) -> str:
        """Create a background interaction; its id is the provider job id.

        A `veo-*` model is refused here, without a call; a 404 for the model (no longer
        available, not found) is ProviderRetired too.
        """
        if is_retired_veo(spec.provider_model):
            raise veo_retired_error(spec.provider_model)
        if spec.extend_video is not None:  # reads and encodes the file: off the event loop
            payload = await asyncio.to_thread(build_interaction_request, spec)
        else:
            payload = build_interaction_request(spec)
        try:
            response = await self._send(
                "POST", f"{self._base}/interactions", op="submit", json=payload
            )
        except (ProviderRetired, InvalidProviderRequest) as exc:
            if isinstance(exc, ProviderRetired) or exc.detail.startswith("HTTP 404"):
                raise ProviderRetired(
                    f"{LABEL} no longer serves `{spec.provider_model}`. Try `{SUGGESTED_MODEL}`, "
                    "or pick another model with `/sora models`.",
                    detail=exc.detail,
                    reason=f"{LABEL} no longer serves {spec.provider_model}",
                ) from exc
            raise
        interaction_id = first_text(json_object(response, op="submit", label=LABEL), ("id",))
        if interaction_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without an interaction id.",
                detail="no id in a 2xx answer",
            )
        return interaction_id

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One interaction GET; an inline video is kept in memory for `download`."""
        body = await self._get_interaction(provider_job_id)
        status = parse_interaction(body)
        if status.state is ProviderState.SUCCEEDED and status.video_url is None:
            video = find_video(body)
            raw = decode_video(video.get("data") if video is not None else None)
            if raw is not None:
                self._keep(provider_job_id, raw)
        return status

    async def cancel(self, provider_job_id: str) -> bool:
        """Best effort `…/cancel`; never raises."""
        try:
            await self._send("POST", f"{self._interaction_url(provider_job_id)}/cancel", op="call")
        except ProviderError as exc:
            log.info("gemini cancel of %s not accepted: %s", provider_job_id, exc.detail)
            return False
        self._inline.pop(provider_job_id, None)
        return True

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Write the video to `dest`: inline bytes from the last poll (or one more GET of the
        interaction after a restart), else the link, with the key only on the API's host."""
        if video_url is None:
            raw = self._inline.pop(provider_job_id, None)
            if raw is None:
                video_url, raw = await self._refetch(provider_job_id)
            if raw is not None:
                await _write_file(dest, raw)
                return
        assert video_url is not None
        try:
            same_host = httpx.URL(video_url).host == self._host
        except httpx.InvalidURL as exc:
            raise DeliveryError(
                f"{LABEL} gave an unusable video link.", detail="invalid video URI"
            ) from exc
        await stream_to_file(
            self._client,
            self._sem,
            video_url,
            dest,
            label=LABEL,
            headers=self._headers if same_host else None,
            secrets=self._secrets,
        )

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """The Interactions API has no listing to search (google-genai 3.6.1: create, get,
        cancel, delete)."""
        return None

    async def check(self) -> str:
        """GET /models?pageSize=1 with the key: free and authenticated."""
        await self._send("GET", f"{self._base}/models?pageSize=1", op="call")
        return "key accepted"

    async def check_model(self, model: str) -> str:
        """One model lookup (`GET /models/{model}`); a retired or unknown model is
        ProviderRetired, Veo without a call."""
        if is_retired_veo(model):
            raise veo_retired_error(model)
        name = model if model.startswith("models/") else f"models/{model}"
        try:
            response = await self._send("GET", f"{self._base}/{name}", op="call")
        except (ProviderRetired, InvalidProviderRequest) as exc:
            if isinstance(exc, ProviderRetired) or exc.detail.startswith("HTTP 404"):
                raise ProviderRetired(
                    f"{LABEL} does not serve `{model}`.", detail=exc.detail
                ) from exc
            raise
        shown = first_text(json_object(response, op="call", label=LABEL), ("displayName", "name"))
        return f"{shown or model} is served"

    # --- internals ---

    def _keep(self, provider_job_id: str, raw: bytes) -> None:
        self._inline[provider_job_id] = raw
        self._inline.move_to_end(provider_job_id)
        while len(self._inline) > INLINE_KEEP:
            self._inline.popitem(last=False)

    async def _refetch(self, provider_job_id: str) -> tuple[str | None, bytes | None]:
        """(link, inline bytes) of a finished interaction, read once more."""
        try:
            body = await self._get_interaction(provider_job_id)
        except GenerationFailed as exc:  # a 404: the stored interaction is gone
            raise ResultExpired(
                "The video is no longer stored at the provider.", detail=exc.detail
            ) from exc
        except ProviderError as exc:
            raise DeliveryError(f"{LABEL} did not say where the video is.", detail=exc.detail) from exc
        video = find_video(body)
        if video is None:
            raise DeliveryError(f"{LABEL} did not say where the video is.", detail="no video in steps")
        uri = video.get("uri")
        if isinstance(uri, str) and uri.startswith(("https://", "http://")):
            return uri, None
        raw = decode_video(video.get("data"))
        if raw is None:
            raise DeliveryError(
                f"{LABEL} sent a video that could not be read.", detail="inline data is not base64"
            )
        return None, raw

    async def _get_interaction(self, provider_job_id: str) -> dict[str, Any]:
        response = await self._send("GET", self._interaction_url(provider_job_id), op="poll")
        return json_object(response, op="poll", label=LABEL)

    def _interaction_url(self, interaction_id: str) -> str:
        return f"{self._base}/interactions/{interaction_id}"

    async def _send(self, method: str, url: str, *, op: Op, json: Any = None) -> httpx.Response:
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


async def _write_file(dest: Path, raw: bytes) -> None:
    """Write to `dest.part`, then rename, so a failed write never looks like a video."""
    part = dest.with_name(dest.name + ".part")
    try:
        await asyncio.to_thread(part.write_bytes, raw)
        await asyncio.to_thread(part.replace, dest)
    except OSError as exc:
        await asyncio.to_thread(part.unlink, missing_ok=True)
        raise DeliveryError("Saving the video failed.", detail=f"{type(exc).__name__}: {exc}") from exc
