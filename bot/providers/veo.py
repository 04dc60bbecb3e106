"""The adapter for Google Veo on the Agent Platform (formerly Vertex AI), REST v1 (reference 2026-12 §1a).

Submit is `…/publishers/google/models/{model}:predictLongRunning`; the operation is polled with
`…:fetchPredictOperation {"operationName": …}` on the URL made from the part of its name before
`/operations/`, as google-genai's `operations.get` does. Without `storageUri` the video comes
back inside the operation as base64: it is kept in memory for the download that follows, never
stored as a "URL". A `gcsUri` result is read through the Cloud Storage JSON API with the same
bearer token.

A long video's later segments natively extend the one before (`VideoSpec.extend_video`): the
request carries the whole video so far as `instances[0].video`, and the operation's video is
the input plus the 7 seconds it adds (see `build_predict_request`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    DeliveryError,
    GenerationFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
    ResultExpired,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.google_auth import BearerTokenSource
from bot.providers.http import (
    file_base64,
    HttpAdapter,
    Op,
    bearer,
    first_text,
    json_object,
    send,
    stream_to_file,
)

LABEL = "Google's Agent Platform"
STORAGE_BASE_URL = "https://storage.googleapis.com"
CHECK_MODEL = "veo-3.1-fast-generate-001"

VEO_DURATIONS_S = (4, 6, 8)
VEO_ASPECTS = ("16:9", "9:16")
VEO_RESOLUTIONS = ("720p", "1080p", "4k")
LITE_RESOLUTIONS = ("720p", "1080p")  # Veo 3.1 Lite makes no 4k
FULL_HD_DURATION_S = 8  # 1080p and 4k come only as 8-second videos

# Gemini-API operation names ("models/veo-…/operations/…") left by an older version of the bot
GEMINI_API_PREFIX = "models/"
GEMINI_API_RETIRED = (
    "a Gemini API operation: Google shut Veo down on the Gemini API on 2026-10-22, so it can't be "
    "polled any more"
)

# google.rpc.Code numbers and names an operation's `error` may carry.
_CANCELLED = {"1", "CANCELLED"}
_INVALID = {"3", "400", "INVALID_ARGUMENT", "9", "FAILED_PRECONDITION"}
_EXHAUSTED = {"8", "429", "RESOURCE_EXHAUSTED"}
_DENIED = {"7", "403", "PERMISSION_DENIED", "16", "401", "UNAUTHENTICATED"}
_UNAVAILABLE = {"14", "503", "UNAVAILABLE"}
# Veo refuses a prompt inside the operation (code 3) with words like these; medium confidence,
# from the Agent Platform's Responsible-AI docs.
_PROMPT_REFUSED = re.compile(r"usage guidelines|responsible ai|safety|sensitive words", re.IGNORECASE)
_SUPPORT_CODES = re.compile(r"\s*Support codes?:.*$", re.IGNORECASE | re.DOTALL)
_REASON_LIMIT = 160
_DETAIL_LIMIT = 500
# a finished operation carries the whole video as base64: parse big bodies off the loop
_BIG_BODY_BYTES = 256 * 1024
# inline videos kept between the poll that saw them and the download that writes them (a
# video evicted early is fetched again by download(); each can be tens of megabytes)
_KEPT_VIDEOS = 4
# `gcsUri` results remembered so that extending one sends its location, not its bytes
_KEPT_GCS_URIS = 64

# Extension (reference 2026-12 §1a, "Extension", High): the input is a Veo MP4 of 1-30 s at
# 24 fps; each call adds 7 s, for at most 37 s.
EXTEND_ADDS_S = 7
VIDEO_MIME = "video/mp4"


def is_extension(spec: VideoSpec) -> bool:
    """A segment that natively extends the previous one's video."""
    return spec.extend_video is not None or spec.extend_from_job is not None


def build_predict_request(spec: VideoSpec, *, video_gcs_uri: str | None = None) -> dict[str, Any]:
    """The `predictLongRunning` body; InvalidProviderRequest before anything is sent.

    `durationSeconds` is an integer: google-genai types it `int`, and the SDK that ships today
    wins over the older docs that show "8". An extension (`spec.extend_video` set) reads that
    file, so call this off the event loop then; `video_gcs_uri` sends the input video's
    Cloud Storage location instead of its bytes.
    """
    if is_extension(spec):
        return _build_extension_request(spec, video_gcs_uri)
    if spec.duration_s not in VEO_DURATIONS_S:
        raise InvalidProviderRequest(
            f"Veo makes videos of 4, 6 or 8 seconds, not {spec.duration_s}.",
            detail=f"durationSeconds {spec.duration_s} not in {VEO_DURATIONS_S}",
        )
    _check_resolution(spec)
    if spec.resolution != "720p" and spec.duration_s != FULL_HD_DURATION_S:
        raise InvalidProviderRequest(
            f"Veo makes {spec.resolution} videos only at 8 seconds. Pick 8 s, or 720p.",
            detail=f"{spec.resolution} with durationSeconds {spec.duration_s}",
        )
    if spec.aspect_ratio not in VEO_ASPECTS:
        raise InvalidProviderRequest(
            f"Veo makes 16:9 or 9:16 videos, not {spec.aspect_ratio}.",
            detail=f"aspectRatio {spec.aspect_ratio!r} not in {VEO_ASPECTS}",
        )
    instance: dict[str, Any] = {"prompt": spec.prompt}
    if spec.image is not None:
        instance["image"] = {
            "bytesBase64Encoded": base64.b64encode(spec.image.data).decode("ascii"),
            "mimeType": spec.image.mime_type,
        }
    parameters: dict[str, Any] = {
        "sampleCount": 1,
        "durationSeconds": spec.duration_s,
        "aspectRatio": spec.aspect_ratio,
        "resolution": spec.resolution,
    }
    if spec.audio is not None:
        parameters["generateAudio"] = spec.audio
    return {"instances": [instance], "parameters": parameters}


def _check_resolution(spec: VideoSpec) -> None:
    allowed = LITE_RESOLUTIONS if "-lite-" in spec.provider_model else VEO_RESOLUTIONS
    if spec.resolution not in allowed:
        raise InvalidProviderRequest(
            f"{spec.provider_model} makes {', '.join(allowed)} videos, not {spec.resolution}.",
            detail=f"resolution {spec.resolution!r} not in {allowed}",
        )


def _build_extension_request(spec: VideoSpec, video_gcs_uri: str | None) -> dict[str, Any]:
    """The body that extends `spec.extend_video` (the whole video so far) by 7 seconds.

    The shape is google-genai 3.6.1's for `generate_videos(source=GenerateVideosSource(
    prompt=…, video=Video(video_bytes=… | uri=…, mime_type="video/mp4")))` on the Agent
    Platform: `_GenerateVideosSource_to_vertex` puts the video at `instances[0].video` and
    `_Video_to_vertex` writes it as `{bytesBase64Encoded | gcsUri, mimeType}`; the prompt stays
    (optional there, sent here: it directs this segment). The SDK documents the video as "not
    allowed if image is provided", so an image is refused.

    `durationSeconds` is left out: the Agent Platform docs only say each call adds 7 s (no
    value to ask for), an older Gemini API doc said it "must be 8" for extension, and the
    SDK's own extension tests (tests/models/test_generate_videos.py,
    `…extension_from_source…`) send none, so the SDK that ships today wins and the service's
    fixed 7 s applies. `aspectRatio`
    and `resolution` are sent as for any request: they are the input's, which the plan kept.
    """
    if spec.duration_s != EXTEND_ADDS_S:
        raise InvalidProviderRequest(
            f"Veo extends a video by {EXTEND_ADDS_S} seconds at a time, not {spec.duration_s}.",
            detail=f"extension of {spec.duration_s}s; Veo adds {EXTEND_ADDS_S}s per call",
        )
    _check_resolution(spec)
    if spec.aspect_ratio not in VEO_ASPECTS:
        raise InvalidProviderRequest(
            f"Veo makes 16:9 or 9:16 videos, not {spec.aspect_ratio}.",
            detail=f"aspectRatio {spec.aspect_ratio!r} not in {VEO_ASPECTS}",
        )
    if spec.image is not None:
        raise InvalidProviderRequest(
            "Veo can't start an extension from an image.",
            detail="image and video together (google-genai: video not allowed with image)",
        )
    video: dict[str, Any]
    if video_gcs_uri is not None:
        video = {"gcsUri": video_gcs_uri, "mimeType": VIDEO_MIME}
    elif spec.extend_video is not None:
        video = {"bytesBase64Encoded": file_base64(spec.extend_video), "mimeType": VIDEO_MIME}
    else:
        raise InvalidProviderRequest(
            "The video to extend is missing.",
            detail=f"extension of {spec.extend_from_job!r} without the video file",
        )
    parameters: dict[str, Any] = {
        "sampleCount": 1,
        "aspectRatio": spec.aspect_ratio,
        "resolution": spec.resolution,
    }
    if spec.audio is not None:
        parameters["generateAudio"] = spec.audio
    return {"instances": [{"prompt": spec.prompt, "video": video}], "parameters": parameters}


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


def _failed(kind: FailureKind, detail: str, raw: str, reason: str | None = None) -> ProviderStatus:
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind, detail=detail[:_DETAIL_LIMIT], reason=reason),
        raw_status=raw,
    )


def _error_status(error: Any) -> ProviderStatus:
    words: set[str] = set()
    message = error.strip() if isinstance(error, str) else ""
    if isinstance(error, Mapping):
        words = _code_words(error)
        message = first_text(error, ("message",)) or ""
    code = "/".join(sorted(words))
    detail = ": ".join(t for t in (code, message) if t) or "operation error"
    if words & _CANCELLED:
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status="done+cancelled")
    reason = None
    if words & _INVALID and _PROMPT_REFUSED.search(message):
        kind, reason = FailureKind.BLOCKED_INPUT, rai_reason([message])
    elif words & _INVALID:
        kind = FailureKind.INVALID_REQUEST
    elif words & _EXHAUSTED:
        kind = FailureKind.RATE_LIMITED
    elif words & _DENIED:
        kind = FailureKind.AUTH_FAILED
    elif words & _UNAVAILABLE:
        kind = FailureKind.PROVIDER_UNAVAILABLE
    else:
        kind = FailureKind.GENERATION_FAILED
    return _failed(kind, detail, "done+error", reason)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value) if value == value else 0  # NaN counts as none


def parse_operation(body: Any) -> tuple[ProviderStatus, bytes | None]:
    """One operation body → (status, the inline video when it has one).

    Raises ProviderUnavailable on a non-object. Until `done` the job reads as RUNNING (Veo
    reports no progress). Done with a video → SUCCEEDED: `video_url` is the `gcsUri`, or None
    with the decoded bytes beside it; with `error` → FAILED; with no video → BLOCKED_OUTPUT
    when the RAI filter says so, else `no_output`.
    """
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"operation body is a {type(body).__name__}, not an object",
        )
    error = body.get("error")
    if (isinstance(error, Mapping) and error) or (isinstance(error, str) and error.strip()):
        return _error_status(error), None
    if not _is_done(body.get("done")):
        return ProviderStatus(state=ProviderState.RUNNING, raw_status="running"), None
    response = body.get("response")
    response = response if isinstance(response, Mapping) else {}
    videos = response.get("videos")
    first = videos[0] if isinstance(videos, list) and videos else None
    if isinstance(first, Mapping):
        data = first.get("bytesBase64Encoded")
        if isinstance(data, str) and data:
            try:
                video = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return _failed(FailureKind.GENERATION_FAILED, "video bytes are not base64", "done"), None
            if video:
                return ProviderStatus(state=ProviderState.SUCCEEDED, progress=100, raw_status="done"), video
        uri = first.get("gcsUri")
        if isinstance(uri, str) and uri.startswith("gs://"):
            status = ProviderStatus(
                state=ProviderState.SUCCEEDED, progress=100, video_url=uri, raw_status="done"
            )
            return status, None
    reasons = response.get("raiMediaFilteredReasons")
    count = _count(response.get("raiMediaFilteredCount"))
    if (isinstance(reasons, list) and reasons) or count > 0:
        if isinstance(reasons, list) and reasons:
            detail = "; ".join(r for r in reasons if isinstance(r, str))
        else:
            detail = f"raiMediaFilteredCount {count}"
        reason = rai_reason(reasons)
        return _failed(FailureKind.BLOCKED_OUTPUT, detail or "raiMediaFiltered", "done+filtered", reason), None
    return _failed(FailureKind.GENERATION_FAILED, "no_output", "done"), None


def gcs_media_url(storage_base_url: str, gcs_uri: str) -> str:
    """`gs://bucket/a/b.mp4` → the JSON API's media URL (the object name is one path segment)."""
    bucket, sep, name = gcs_uri.removeprefix("gs://").partition("/")
    if not bucket or not sep or not name:
        raise DeliveryError(f"{LABEL} gave an unusable video location.", detail="malformed gcsUri")
    return (
        f"{storage_base_url.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}"
        f"/o/{quote(name, safe='')}?alt=media"
    )


class VeoProvider(HttpAdapter):
    """Veo on the Agent Platform: predictLongRunning, then fetchPredictOperation by name."""

    name = "veo"
    shareable_urls = False  # a gs:// URI needs the bearer token: never a link for people
    downloads_by_job_id = True  # a success may carry no URL: download() finds the video

    def __init__(
        self,
        *,
        project: str,
        location: str = "us-central1",
        token: BearerTokenSource,
        base_url: str | None = None,
        storage_base_url: str = STORAGE_BASE_URL,
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self._project = project
        self._location = location
        self._token = token  # closed with this adapter
        self._base = (base_url or f"https://{location}-aiplatform.googleapis.com/v1").rstrip("/")
        self._storage = storage_base_url.rstrip("/")
        self._videos: OrderedDict[str, bytes] = OrderedDict()
        self._gcs_uris: OrderedDict[str, str] = OrderedDict()  # operation name → its gcsUri
        self._secrets = ()
        super().__init__(client=client, max_concurrency=max_concurrency)

    def _model_path(self, model: str) -> str:
        return f"projects/{self._project}/locations/{self._location}/publishers/google/models/{model}"

    async def submit(self, spec: VideoSpec) -> str:
        """Start the operation; its full name ("projects/…/operations/…") is the job id.

        An extension sends the previous video's `gcsUri` when its poll here saw one, else the
        file's bytes, read and encoded in a worker thread."""
        if is_extension(spec):
            gcs_uri = self._gcs_uris.get(spec.extend_from_job) if spec.extend_from_job else None
            payload = await asyncio.to_thread(build_predict_request, spec, video_gcs_uri=gcs_uri)
        else:
            payload = build_predict_request(spec)
        url = f"{self._base}/{self._model_path(spec.provider_model)}:predictLongRunning"
        response = await self._send("POST", url, op="submit", json=payload)
        name = first_text(json_object(response, op="submit", label=LABEL), ("name",))
        if name is None or "/operations/" not in name:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without an operation name.",
                detail=f"operation name {name!r} in a 2xx answer",
            )
        return name

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One fetchPredictOperation. A Gemini-API name from an older version is retired."""
        status, video = await self._fetch(provider_job_id)
        if video is not None:
            self._keep(provider_job_id, video)
        if status.video_url is not None and status.video_url.startswith("gs://"):
            self._gcs_uris[provider_job_id] = status.video_url
            self._gcs_uris.move_to_end(provider_job_id)
            while len(self._gcs_uris) > _KEPT_GCS_URIS:
                self._gcs_uris.popitem(last=False)
        return status

    async def cancel(self, provider_job_id: str) -> bool:
        """Not offered: google-genai has no cancel for Veo operations, and the REST reference
        documents none for publisher-model operations. The job is dropped on our side only."""
        return False

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Write the inline video seen by the last poll, else fetch the operation again; a
        `gcsUri` is streamed from Cloud Storage with the bearer token."""
        if provider_job_id.startswith(GEMINI_API_PREFIX):
            raise ResultExpired("This video is no longer available.", detail=GEMINI_API_RETIRED)
        video = self._videos.pop(provider_job_id, None)
        if video is None and video_url is None:
            try:
                status, video = await self._fetch(provider_job_id)
            except ProviderError as exc:
                raise DeliveryError(f"{LABEL} did not hand over the video.", detail=exc.detail) from exc
            video_url = status.video_url
            if video is None and video_url is None:
                raise DeliveryError(
                    f"{LABEL} did not hand over the video.",
                    detail=f"operation is {status.raw_status}: no video in it",
                )
        if video is not None:
            await _write_file(video, dest)
            return
        assert video_url is not None
        if not video_url.startswith("gs://"):
            raise DeliveryError(f"{LABEL} gave an unusable video location.", detail="not a gs:// URI")
        url = gcs_media_url(self._storage, video_url)
        try:
            token = await self._token.token()
        except ProviderError as exc:
            raise DeliveryError(f"{LABEL} did not hand over the video.", detail=exc.detail) from exc
        await stream_to_file(
            self._client, self._sem, url, dest, label=LABEL, headers=bearer(token), secrets=(token,)
        )

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """Veo operations can't be listed, so an unclear submit can't be matched."""
        return None

    async def check(self) -> str:
        """Mint a token and look up one publisher model: authenticated and free."""
        return await self.check_model(CHECK_MODEL)

    async def check_model(self, provider_model: str) -> str:
        """GET the publisher model (a 404 there reads as retired)."""
        url = f"{self._base}/publishers/google/models/{provider_model}"
        response = await self._send("GET", url, op="call")
        body = json_object(response, op="call", label=LABEL)
        stage = first_text(body, ("launchStage",))
        return f"{provider_model} found in {self._location}" + (f" ({stage})" if stage else "")

    async def aclose(self) -> None:
        await super().aclose()
        await self._token.aclose()

    # --- internals ---

    async def _fetch(self, name: str) -> tuple[ProviderStatus, bytes | None]:
        if name.startswith(GEMINI_API_PREFIX):
            # no request: the Gemini API serves no Veo model any more (reference 2026-12 §1b)
            status = _failed(FailureKind.PROVIDER_RETIRED, f"{name[:120]}: {GEMINI_API_RETIRED}", "retired")
            return status, None
        resource, sep, _ = name.rpartition("/operations/")
        if not sep or not resource:
            raise GenerationFailed(  # polling this id again cannot work
                f"{LABEL} can't poll this job.", detail=f"not an operation name: {name[:120]!r}"
            )
        response = await self._send(
            "POST", f"{self._base}/{resource}:fetchPredictOperation", op="poll",
            json={"operationName": name},
        )
        if len(response.content) > _BIG_BODY_BYTES:
            return await asyncio.to_thread(_read_operation, response)
        return _read_operation(response)

    def _keep(self, name: str, video: bytes) -> None:
        self._videos[name] = video
        self._videos.move_to_end(name)
        while len(self._videos) > _KEPT_VIDEOS:
            self._videos.popitem(last=False)

    async def _send(self, method: str, url: str, *, op: Op, json: Any = None) -> httpx.Response:
        token = await self._token.token()
        try:
            return await send(
                self._client, self._sem, method, url, op=op, label=LABEL,
                secrets=(token,), headers=bearer(token), json=json,
            )
        except AuthFailed as exc:
            if exc.detail.startswith("HTTP 401"):
                self._token.invalidate()  # revoked or expired early: mint a new one next time
            raise


def _read_operation(response: httpx.Response) -> tuple[ProviderStatus, bytes | None]:
    return parse_operation(json_object(response, op="poll", label=LABEL))


async def _write_file(data: bytes, dest: Path) -> None:
    part = dest.with_name(dest.name + ".part")

    def write() -> None:
        part.write_bytes(data)
        part.replace(dest)

    try:
        await asyncio.to_thread(write)
    except OSError as exc:
        await asyncio.to_thread(part.unlink, missing_ok=True)
        raise DeliveryError("Saving the video failed.", detail=f"{type(exc).__name__}: {exc}") from exc
