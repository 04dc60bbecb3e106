"""A local fake of the Gemini API's Interactions surface (reference 2026-12 §1b, §1c), scripted
by prompt markers.

Routes, under `base_url` = origin + `/v1` (google-genai 3.6.1 posts to `/v1/interactions`):
    POST /v1/interactions                  create (background) → {id, status:"in_progress"}
    GET  /v1/interactions/{id}             the interaction; when done, `steps[]` holds the
                                           model output's video as base64 `data` or a `uri`
    POST /v1/interactions/{id}/cancel      cancel a running interaction
    GET  /v1/models, /v1/models/{model}    the model list and lookup (doctor)
    POST /v1/models/{model}:predictLongRunning   Veo's old route: 404, retired
    GET  /v1/files/{file}:download         a `uri` result; 302 to the bytes at /blobs/…

Validation follows google-genai 3.6.1's declared request types (`_gaos/types/interactions`):
`duration` a string like "8s", `resolution` 360p | 720p | 1080p | 4k, `aspect_ratio`
16:9 | 9:16, `delivery` inline | uri, `task` one of its Literal values, `background`/`store`
booleans, no unknown keys. The SDK's runtime models are lenient (open unions, unknown enum
strings kept in lax mode), so a type the SDK declares but does not enforce is enforced here,
as the live API does. Interactions errors are `{error: {code: <string>, message}}` (the SDK's
`interactions.Error` types `code` as a string); the older routes answer Google's usual
`{error: {code: <int>, message, status}}`.

Markers:
    [safety]          the interaction ends failed: the output was blocked by safety filters
    [budget]          ends budget_exceeded
    [incomplete]      ends incomplete
    [requires-action] ends waiting in requires_action
    [no-video]        ends completed with only text
    [bad-data]        inline `data` that is not base64
    [stuck]           in_progress forever
    [blocked-input]   create → 400: the prompt was blocked (the docs do not show this answer)
    [429-submit]      the first create for this prompt → 429 RESOURCE_EXHAUSTED, retryDelay 1s
    [slow-submit]     create waits `slow_seconds` before answering
    [5xx-poll], [malformed]   the first polls → 502 / not JSON (tests.fakes.providers)
    [download-502]    the first `uri` download → 502
    [expired]         every `uri` download → 404
An inline result at 1080p or 4k, or of more than 4 MB, ends failed (over the ~4 MB inline
cap). `uri_host` serves result links from another host name than the API, to prove the key is
not sent there.

Extension (task `extend`, reference 2026-12 §1c): the video to extend is a `video` input block
(`{type: "video", data: <base64> | uri, mime_type}`, google-genai's `VideoContent`) or, with no
such block, the video of the finished interaction named by `previous_interaction_id`; an
unknown `previous_interaction_id` is refused on any request. It adds 3-10 s, and when the
input's length can be read (an MP4 `mvhd`) the total may not pass 30 s (the Gemini API's
reported cap, Low confidence). The finished interaction's video is `make_video(body)` when a
test sets that callable (e.g. real MP4s of the input's length + the seconds added), else the
usual `video_bytes(id)`; an extension job's `extra` says `input_seconds` and `added_seconds`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.fakes.google_agent import MakeVideo, mp4_seconds, video_of
from tests.fakes.providers import FakeJob, _FakeServer

SERVED = {
    "gemini-omni-1.2-flash": ("Gemini Omni 1.2 Flash", (3, 15)),
    "gemini-omni-1.1-flash": ("Gemini Omni 1.1 Flash", (3, 10)),
}
# Shut down on the Gemini API (reference 2026-12 §1b, §1c): they answer "no longer available".
RETIRED = frozenset({
    "veo-3.1-generate-preview",
    "veo-3.1-fast-generate-preview",
    "veo-3.1-lite-generate-preview",
    "gemini-omni-flash-preview",
})

# google-genai 3.6.1: CreateModelInteraction's fields, and the Literal values of its types.
CREATE_KEYS = frozenset({
    "model", "background", "cached_content", "continuation_token", "environment",
    "generation_config", "input", "labels", "previous_interaction_id", "response_format",
    "response_mime_type", "response_modalities", "safety_settings", "service_tier", "store",
    "stream", "system_instruction", "tools", "webhook_config",
})
VIDEO_FORMAT_KEYS = frozenset({"type", "aspect_ratio", "delivery", "duration", "gcs_uri", "resolution"})
GENERATION_CONFIG_KEYS = frozenset({
    "image_config", "max_output_tokens", "seed", "speech_config", "stop_sequences", "temperature",
    "thinking_level", "thinking_summaries", "tool_choice", "top_p", "transcription_config",
    "video_config",
})
RESOLUTIONS = ("360p", "720p", "1080p", "4k")
ASPECT_RATIOS = ("16:9", "9:16")
DELIVERIES = ("inline", "uri")
TASKS = ("text_to_video", "image_to_video", "reference_to_video", "edit", "extend", "upscale")
MODALITIES = ("text", "image", "audio", "video", "document")
IMAGE_MIMES = (
    "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "image/gif",
    "image/bmp", "image/tiff",
)
# google-genai 3.6.1, _gaos/types/interactions/videocontent.py: VideoContentMimeType
VIDEO_MIMES = (
    "video/mp4", "video/mpeg", "video/mpg", "video/mov", "video/avi", "video/x-flv", "video/webm",
    "video/wmv", "video/3gpp",
)
_MEDIA = {"image": ("image", IMAGE_MIMES), "video": ("video", VIDEO_MIMES)}
INLINE_CAPPED = ("1080p", "4k")
INLINE_CAP_BYTES = 4 * 1024 * 1024
EXTEND_ADDS_S = (3, 10)
EXTEND_TOTAL_S = 30.0
_DURATION = re.compile(r"^(\d+)s$")

SAFETY_MESSAGE = (
    "The generated video was blocked by safety filters because it may depict a real person. "
    "You have not been charged. Support codes: 48211"
)
INLINE_TOO_BIG = "The video is larger than the inline limit of 4 MB; request delivery \"uri\"."
FINAL_MARKERS = {
    "[safety]": ("failed", "SAFETY", SAFETY_MESSAGE),
    "[budget]": ("budget_exceeded", "budget_exceeded", "The project's spend cap for this model was reached."),
    "[incomplete]": ("incomplete", "incomplete", "The model stopped before the video was finished."),
    "[requires-action]": ("requires_action", None, None),
}


def interactions_error(status: int, code: str, message: str) -> web.Response:
    """The Interactions API's error shape, as google-genai 3.6.1 types it."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def google_error(status: int, code_name: str, message: str, **extra: Any) -> web.Response:
    """Google's usual error shape (models, files, predictLongRunning)."""
    return web.json_response(
        {"error": {"code": status, "message": message, "status": code_name, **extra}}, status=status
    )


def _retired_message(model: str) -> str:
    return (
        f"models/{model} is no longer available. Google shut it down on the Gemini API; "
        "see https://ai.google.dev/gemini-api/docs/deprecations."
    )


def _not_found_message(model: str, method: str) -> str:
    return (
        f"models/{model} is not found for API version v1, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods."
    )


def _is_base64(data: Any) -> bool:
    if not isinstance(data, str) or not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content_problem(item: Any, where: str) -> str | None:
    if not isinstance(item, dict):
        return f"{where} must be a content object"
    kind = item.get("type")
    if kind == "text":
        return None if isinstance(item.get("text"), str) else f"{where}.text must be a string"
    if kind in _MEDIA:  # image and video blocks take the same fields, with their own mime types
        noun, mimes = _MEDIA[kind]
        if "data" in item and not _is_base64(item["data"]):
            return f"{where}.data must be base64 {noun} bytes"
        if "uri" in item and not isinstance(item["uri"], str):
            return f"{where}.uri must be a string"
        if "data" not in item and "uri" not in item:
            return f"{where} needs data or uri"
        if "mime_type" in item and item["mime_type"] not in mimes:
            return f"{where}.mime_type must be one of {', '.join(mimes)}"
        return None
    return f"{where}.type {kind!r} is not supported for video generation"


def _input_parts(value: Any) -> tuple[list[dict[str, Any]], str | None]:
    """(content blocks, problem) of an `input`: a string, content blocks or user_input steps."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}], None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        return [], "input must be a string, a content object or a non-empty list"
    blocks: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and item.get("type") == "user_input":
            content = item.get("content")
            if not isinstance(content, list):
                return [], f"input[{i}].content must be a list"
            for j, block in enumerate(content):
                problem = _content_problem(block, f"input[{i}].content[{j}]")
                if problem:
                    return [], problem
                blocks.append(block)
        else:
            problem = _content_problem(item, f"input[{i}]")
            if problem:
                return [], problem
            blocks.append(item)
    return blocks, None


def request_problem(body: dict[str, Any]) -> str | None:
    """Why the create body is refused, or None (the checks of the module docstring)."""
    unknown = sorted(set(body) - CREATE_KEYS)
    if unknown:
        return f"Invalid JSON payload received. Unknown name {unknown[0]!r}: Cannot find field."
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model is required"
    for flag in ("background", "store", "stream"):
        if flag in body and not isinstance(body[flag], bool):
            return f"Invalid value at {flag!r}: {body[flag]!r} is not a boolean"
    blocks, problem = _input_parts(body.get("input"))
    if problem:
        return problem
    if not any(b.get("type") == "text" and str(b.get("text", "")).strip() for b in blocks):
        return "input needs a text prompt"
    modalities = body.get("response_modalities")
    if modalities is not None and (
        not isinstance(modalities, list) or any(m not in MODALITIES for m in modalities)
    ):
        return f"response_modalities must be a list of {', '.join(MODALITIES)}"
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "video":
        return "response_format must be an object of type \"video\" for a video model"
    extra = sorted(set(fmt) - VIDEO_FORMAT_KEYS)
    if extra:
        return f"response_format has an unknown field {extra[0]!r}"
    for key, allowed in (("aspect_ratio", ASPECT_RATIOS), ("resolution", RESOLUTIONS), ("delivery", DELIVERIES)):
        if key in fmt and fmt[key] not in allowed:
            return f"response_format.{key} must be one of {', '.join(allowed)}, not {fmt[key]!r}"
    duration = fmt.get("duration", "8s")
    match = _DURATION.match(duration) if isinstance(duration, str) else None
    if match is None:
        return f"response_format.duration must be a string like \"8s\", not {duration!r}"
    config = body.get("generation_config", {})
    video_config = config.get("video_config", {}) if isinstance(config, dict) else {}
    extending = isinstance(video_config, dict) and video_config.get("task") == "extend"
    served = SERVED.get(model)
    if extending:
        low, high = EXTEND_ADDS_S
        if not low <= int(match.group(1)) <= high:
            return f"response_format.duration must be from {low}s to {high}s to extend a video"
    elif served is not None:
        low, high = served[1]
        if not low <= int(match.group(1)) <= high:
            return f"response_format.duration must be from {low}s to {high}s for {model}"
    if "gcs_uri" in fmt and not isinstance(fmt["gcs_uri"], str):
        return "response_format.gcs_uri must be a string"
    config = body.get("generation_config", {})
    if not isinstance(config, dict) or set(config) - GENERATION_CONFIG_KEYS:
        return "generation_config has an unknown field"
    video_config = config.get("video_config", {})
    if not isinstance(video_config, dict) or set(video_config) - {"task"}:
        return "generation_config.video_config has an unknown field"
    task = video_config.get("task")
    if task is not None and task not in TASKS:
        return f"generation_config.video_config.task must be one of {', '.join(TASKS)}"
    if task == "image_to_video" and not any(b.get("type") == "image" for b in blocks):
        return "image_to_video needs an image in the input"
    if task == "extend" and any(b.get("type") == "image" for b in blocks):
        return "extend takes a video to extend, not an image"
    if task == "extend" and sum(b.get("type") == "video" for b in blocks) > 1:
        return "extend takes one video to extend"
    if task == "extend" and not any(b.get("type") == "video" for b in blocks) and not body.get(
        "previous_interaction_id"
    ):
        return "extend needs a video in the input or a previous_interaction_id"
    prev = body.get("previous_interaction_id")
    if prev is not None and (not isinstance(prev, str) or not prev):
        return "previous_interaction_id must be a string"
    return None


def prompt_of(body: dict[str, Any]) -> str:
    blocks, _ = _input_parts(body.get("input"))
    return " ".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")


class FakeGeminiServer(_FakeServer):
    """The Gemini API's Interactions surface, plus model lookups and `uri` result files.

    Job ids (keys of `.jobs`, `.polls`, `.downloads`) are interaction ids. `.download_auth`
    records the key sent on each leg of a `uri` download (the link and the redirect target).
    """

    def __init__(
        self, *, run_seconds: float = 0.5, slow_seconds: float = 0.5, uri_host: str = "127.0.0.1"
    ) -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.uri_host = uri_host
        self.model_lookups: list[str] = []
        self._files: dict[str, str] = {}  # file id → interaction id
        # the bytes of each finished video: set it to make real MP4s; None = video_bytes(id)
        self.make_video: MakeVideo | None = None

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/interactions", self._create)
        app.router.add_get("/v1/interactions/{id}", self._interaction)
        app.router.add_post("/v1/interactions/{id}/cancel", self._cancel)
        app.router.add_get("/v1/models", self._model_list)
        app.router.add_post("/v1/models/{model}:predictLongRunning", self._predict)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_get("/v1/files/{file}:download", self._file)
        app.router.add_get("/blobs/{file}.mp4", self._blob)

    def video_uri(self, file_id: str) -> str:
        return f"http://{self.uri_host}:{self.origin.rsplit(':', 1)[1]}/v1/files/{file_id}:download?alt=media"

    # --- auth ---

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(("/v1/files/", "/blobs/")):
            self.download_auth.append(request.headers.get("x-goog-api-key"))
        # a result link on another host is signed, so it needs no key
        foreign = self.uri_host != "127.0.0.1" and request.host.split(":")[0] == self.uri_host
        if path.startswith("/v1/") and not (path.startswith("/v1/files/") and foreign):
            sent = request.headers.get("x-goog-api-key")
            shape = interactions_error if path.startswith("/v1/interactions") else None
            refusal: web.Response | None = None
            if not sent:
                message = (
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity."
                )
                refusal = (
                    shape(403, "PERMISSION_DENIED", message)
                    if shape
                    else google_error(403, "PERMISSION_DENIED", message)
                )
            elif sent != self.api_key:
                # Google does not echo the key; this fake does, so tests prove redaction.
                message = f"API key not valid. Please pass a valid API key. (got {sent})"
                refusal = (
                    shape(400, "API_KEY_INVALID", message)
                    if shape
                    else google_error(
                        400, "INVALID_ARGUMENT", message,
                        details=[{"reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
                    )
                )
            if refusal is not None:
                if path == "/v1/interactions" and request.method == "POST":
                    self.create_attempts.append({"refused": "key"})
                return refusal
        return await handler(request)

    # --- interactions ---

    async def _create(self, request: web.Request) -> web.Response:
        try:
            # read to the end from the stream: request.json() stops at aiohttp's 1 MB default
            body = json.loads(await request.content.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.create_attempts.append({})
            return interactions_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            self.create_attempts.append({})
            return interactions_error(400, "INVALID_ARGUMENT", "The body must be a JSON object.")
        self.create_attempts.append(body)
        prompt = prompt_of(body)
        self._creates_per_prompt[prompt] += 1
        if "[429-submit]" in prompt and self._creates_per_prompt[prompt] == 1:
            return web.json_response(
                {"error": {
                    "code": "RESOURCE_EXHAUSTED",
                    "message": "You exceeded your current quota, please check your plan and billing details.",
                    "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}],
                }},
                status=429,
            )
        model = body.get("model")
        if isinstance(model, str) and model in RETIRED:
            return interactions_error(404, "NOT_FOUND", _retired_message(model))
        if isinstance(model, str) and model and model not in SERVED:
            return interactions_error(404, "NOT_FOUND", _not_found_message(model, "interactions"))
        problem = request_problem(body)
        extra: dict[str, Any] = {}
        if problem is None:
            problem, extra = self._extension_problem(body)
        if problem is not None:
            self.create_attempts[-1] = {**body, "refused": problem}
            return interactions_error(400, "INVALID_ARGUMENT", problem)
        if "[blocked-input]" in prompt:
            return interactions_error(
                400, "INVALID_ARGUMENT", "The prompt was blocked by safety filters (prohibited content)."
            )
        now = time.time()
        job = FakeJob(
            id=f"v1_{uuid.uuid4().hex[:20]}",
            prompt=prompt,
            model=str(body["model"]),
            body=body,
            created_at=now,
            extra={"file": f"vid{uuid.uuid4().hex[:12]}", **extra},
        )
        self.jobs[job.id] = job
        self._files[job.extra["file"]] = job.id
        self.submits.append(body)
        await self._slow_if_asked(job)
        return web.json_response(self._body(job, "in_progress"))

    def _extension_problem(self, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """(why a previous interaction or a video to extend is refused, what the job records)."""
        prev = body.get("previous_interaction_id")
        source = self.jobs.get(prev) if isinstance(prev, str) else None
        if prev is not None and source is None:
            return f"previous_interaction_id {prev!r}: no such interaction", {}
        if body.get("generation_config", {}).get("video_config", {}).get("task") != "extend":
            return None, {}
        blocks, _ = _input_parts(body.get("input"))
        if not any(b.get("type") == "video" for b in blocks) and self.input_video(body) is None:
            return f"previous_interaction_id {prev!r} has no finished video to extend", {}
        data = self.input_video(body)  # None for a link: its length can't be told cheaply
        seconds = mp4_seconds(data) if data is not None else None
        added = int(_DURATION.match(body["response_format"].get("duration", "8s")).group(1))  # type: ignore[union-attr]
        if seconds is not None and seconds + added > EXTEND_TOTAL_S:
            return (f"The extended video would be {seconds + added:.1f} s long; the longest is "
                    f"{EXTEND_TOTAL_S:g} s."), {}
        return None, {"input_seconds": seconds, "added_seconds": added}

    def input_video(self, body: dict[str, Any]) -> bytes | None:
        """The bytes of the video a create body works on: its inline `video` block, else the
        video of the finished interaction `previous_interaction_id` names; None for neither."""
        blocks, _ = _input_parts(body.get("input"))
        video = next((b for b in blocks if b.get("type") == "video"), None)
        if video is not None:
            return base64.b64decode(video["data"]) if "data" in video else None
        source = self.jobs.get(str(body.get("previous_interaction_id")))
        if source is None or self._status(source) != "completed" or source.has("[no-video]"):
            return None
        return self.video_of(source)

    def video_of(self, job: FakeJob) -> bytes:
        return video_of(job, self.make_video)

    def _done(self, job: FakeJob) -> bool:
        return not job.has("[stuck]") and time.time() - job.created_at >= self.run_seconds

    def _status(self, job: FakeJob) -> str:
        if job.cancelled:
            return "cancelled"
        if not self._done(job):
            return "in_progress"
        for marker, (status, _, _) in FINAL_MARKERS.items():
            if job.has(marker):
                return status
        if self._inline_too_big(job):
            return "failed"
        return "completed"

    def _delivery(self, job: FakeJob) -> str:
        return str(job.body["response_format"].get("delivery", "inline"))

    def _inline_too_big(self, job: FakeJob) -> bool:
        fmt = job.body["response_format"]
        if self._delivery(job) != "inline":
            return False
        return fmt.get("resolution", "720p") in INLINE_CAPPED or len(self.video_of(job)) > INLINE_CAP_BYTES

    def _body(self, job: FakeJob, status: str) -> dict[str, Any]:
        blocks, _ = _input_parts(job.body.get("input"))
        answer: dict[str, Any] = {
            "id": job.id,
            "object": "interaction",
            "model": job.model,
            "status": status,
            "created": _iso(job.created_at),
            "updated": _iso(time.time()),
            "steps": [{"type": "user_input", "content": blocks}],
        }
        marker = next((m for m in FINAL_MARKERS if job.has(m)), None)
        if status in ("failed", "budget_exceeded", "incomplete") and marker is not None:
            _, code, message = FINAL_MARKERS[marker]
            answer["errors"] = [{"code": code, "message": message}]
        elif status == "failed":
            answer["errors"] = [{"code": "INVALID_ARGUMENT", "message": INLINE_TOO_BIG}]
        elif status == "completed":
            if job.has("[no-video]"):
                content: dict[str, Any] = {"type": "text", "text": "I could not make that video."}
            elif self._delivery(job) == "uri":
                content = {"type": "video", "mime_type": "video/mp4", "uri": self.video_uri(job.extra["file"])}
            else:
                data = "not base64 !!" if job.has("[bad-data]") else base64.b64encode(self.video_of(job)).decode()
                content = {"type": "video", "mime_type": "video/mp4", "data": data}
            answer["steps"].append({"type": "model_output", "content": [content]})
            answer["usage"] = {"total_tokens": 58_000}
        return answer

    async def _interaction(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None:
            return interactions_error(404, "NOT_FOUND", f"Interaction {job_id} not found.")
        return web.json_response(self._body(job, self._status(job)))

    async def _cancel(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None:
            return interactions_error(404, "NOT_FOUND", f"Interaction {job_id} not found.")
        if self._status(job) != "in_progress":
            return interactions_error(400, "FAILED_PRECONDITION", "Only a running interaction can be cancelled.")
        job.cancelled = True
        self.cancels.append(job_id)
        return web.json_response(self._body(job, "cancelled"))

    # --- models ---

    def _model_resource(self, model: str) -> dict[str, Any]:
        label, _ = SERVED[model]
        return {
            "name": f"models/{model}",
            "version": model.split("-")[2],
            "displayName": label,
            "description": "Video generation through the Interactions API.",
            "supportedGenerationMethods": ["createInteraction"],
        }

    async def _model_list(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self._model_resource(m) for m in SERVED]})

    async def _model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        self.model_lookups.append(model)
        if model in RETIRED:
            return google_error(404, "NOT_FOUND", _retired_message(model))
        if model not in SERVED:
            return google_error(404, "NOT_FOUND", _not_found_message(model, "get"))
        return web.json_response(self._model_resource(model))

    async def _predict(self, request: web.Request) -> web.Response:
        """Veo's old route: every Veo id is gone from the Gemini API."""
        model = request.match_info["model"]
        self.create_attempts.append({"path": request.path})
        if model in RETIRED:
            return google_error(404, "NOT_FOUND", _retired_message(model))
        return google_error(404, "NOT_FOUND", _not_found_message(model, "predictLongRunning"))

    # --- uri results ---

    def _ready_job(self, file_id: str) -> FakeJob | None:
        job = self.jobs.get(self._files.get(file_id, ""))
        if job is None or self._status(job) != "completed" or self._delivery(job) != "uri":
            return None
        return job

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file"]
        job = self._ready_job(file_id)
        if job is None:
            return google_error(404, "NOT_FOUND", "File not found.")
        self.downloads[job.id] += 1
        if job.has("[expired]"):
            return google_error(404, "NOT_FOUND", "File has expired.")
        if job.has("[download-502]") and self.downloads[job.id] == 1:
            return google_error(502, "UNAVAILABLE", "Bad Gateway")
        raise web.HTTPFound(f"/blobs/{file_id}.mp4")

    async def _blob(self, request: web.Request) -> web.Response:
        job = self._ready_job(request.match_info["file"])
        if job is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=self.video_of(job), content_type="video/mp4")
