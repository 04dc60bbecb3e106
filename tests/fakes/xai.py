"""A local fake of xAI's Grok Imagine video API (reference 2026-12 §7), from xAI's REST docs.

Routes: `POST /v1/videos/generations` → `{request_id}`; `GET /v1/videos/{request_id}` →
`{status: pending|done|failed|expired, …}` (HTTP 200 for done and failed alike);
`GET /v1/models`; the finished video at `/files/{id}.mp4` (no key needed, as on xAI's CDN).

The create body is checked the way xai-sdk 1.21's types and xAI's docs describe it: unknown
fields, a non-string prompt or a non-integer duration → 422 (the REST layer cannot
deserialize them); a duration outside 1-15, a resolution or aspect ratio outside the SDK's
Literals, 1080p on `grok-imagine-video`, an `image` that is not `{url}` with an http(s) or
base64 data URI of a jpeg/png/webp → 400. A wrong key → 400 "Incorrect API key provided",
as xAI answers. Errors are `{code, error}` with `error` a bare string.

Markers in the prompt (the lifecycle ones come from `tests.fakes.providers`):
    [blocked-input]   create → 400 rejected by content moderation (message UNVERIFIED)
    [blocked-output]  the job ends `done` with `video.respect_moderation: false` and no URL
    [fail]            the job ends `failed` with `error {code: internal_error, message}`
    [slow]            the render takes `slow_seconds` longer than `run_seconds`
    [slow-submit]     create makes the job, then waits `slow_seconds` before answering
    [stuck]           `pending` forever
    [expired]         the job ends `expired`, and its file is gone
    [429-submit]      the first create for this prompt → 429 with Retry-After: 1
    [503-submit]      the first create for this prompt → 503
    [quota]           create → 429 "used all available credits" (xAI's wording)
    [retired]         create → 404 the model does not exist
    [5xx-poll], [malformed], [download-502], [download-502-always]   as in providers.py
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from PIL import Image, UnidentifiedImageError

from tests.fakes.providers import FakeJob, _FakeServer

XAI_API_KEY = "xai-test-key-0123456789abcdefghij"

MODELS = ("grok-imagine-video", "grok-imagine-video-1.5", "grok-imagine-video-1.5-lite")
# xai-sdk 1.21 xai_sdk/types/video.py
RESOLUTIONS = ("480p", "720p", "1080p")
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
# Reference 2026-12 §7: grok-imagine-video makes 480p/720p; the 1.5 models add 1080p.
NO_1080P = ("grok-imagine-video",)
FIELDS = {
    "model", "prompt", "duration", "resolution", "aspect_ratio", "image", "output", "user", "size",
    "generate_audio", "reference_images", "video", "storage_options",
}
# What the fake bills, in $/s (480p from reference 2026-12 §7; the others invented, and kept
# below the catalog's estimates so a test can see the reported cost charged).
PRICE_USD_PER_S = {"480p": 0.05, "720p": 0.07, "1080p": 0.10}
TICKS_PER_USD = 10**10  # xai-sdk cost.py: 1 tick = 1e-10 USD

INVALID_ARGUMENT = "Client specified an invalid argument"
MODERATION_INPUT = "Generated prompt was rejected by content moderation."
NO_CREDITS = (
    "Your team 0f2f1bd1-1c42-4c6e-8a5c-5b0d2f3d9a11 has either used all available credits or "
    "reached its monthly spending limit. To continue making API requests, please purchase more "
    "credits or raise your spending limit."
)
_IMAGE_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def _xai_error(status: int, message: str, *, code: str = INVALID_ARGUMENT,
               headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "error": message}, status=status, headers=headers)


def _unprocessable(message: str) -> web.Response:
    return web.Response(status=422, text=f"Failed to deserialize the JSON body into the target type: {message}",
                        content_type="text/plain")


def _image_problem(image: Any) -> str | None:
    """Why `image` is not `{url: <http(s) URL or base64 data URI of a jpeg/png/webp>}`."""
    if not isinstance(image, dict) or set(image) - {"url"} or not isinstance(image.get("url"), str):
        return "image must be an object with a string url"
    url = image["url"]
    if url.startswith(("https://", "http://")):
        return None
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        return "image.url must be an http(s) URL or a base64 data URI"
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            fmt = img.format
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError, SyntaxError):
        return "image.url does not hold a decodable image"
    if fmt not in _IMAGE_MIME:
        return f"image format {str(fmt).lower()} is not supported (jpeg, png, webp)"
    if header[len("data:"):-len(";base64")] != _IMAGE_MIME[fmt]:
        return "image.url declares another type than it holds"
    return None


class FakeXaiServer(_FakeServer):
    """xAI's video generation REST API (see the module docstring)."""

    def __init__(self, *, run_seconds: float = 0.5, slow_seconds: float = 0.5,
                 files_host: str = "127.0.0.1") -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.api_key = XAI_API_KEY
        # "localhost" serves video URLs from another host name, as xAI's CDN is
        self.files_host = files_host

    def file_url(self, job_id: str) -> str:
        return f"http://{self.files_host}:{self._port}/files/{job_id}.mp4"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_post("/v1/videos/generations", self._create)
        app.router.add_get("/v1/videos/{id}", self._get)
        app.router.add_get("/files/{name}", self._file)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if sent != self.api_key:
                if request.method == "POST":
                    self.create_attempts.append({"unauthorized": True})
                shown = f"{sent[:2]}***{sent[-2:]}" if len(sent) > 4 else "***"
                return _xai_error(400, f"Incorrect API key provided: {shown}. You can obtain an API key "
                                       "from https://console.x.ai.")
        return await handler(request)

    async def _list_models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "xai"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})

    @staticmethod
    def _problem(body: dict[str, Any]) -> web.Response | None:
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            return _unprocessable(f"unknown field `{unknown[0]}`")
        prompt, duration = body.get("prompt"), body.get("duration", 8)
        if not isinstance(prompt, str):
            return _unprocessable("prompt: invalid type, expected a string")
        if not prompt.strip():
            return _xai_error(400, "Prompt must not be empty.")
        if "model" in body and not isinstance(body["model"], str):
            return _unprocessable("model: invalid type, expected a string")
        if isinstance(duration, bool) or not isinstance(duration, int):
            return _unprocessable("duration: invalid type, expected u32")
        if not 1 <= duration <= 15:
            return _xai_error(400, f"Invalid duration {duration}: must be between 1 and 15 seconds.")
        resolution = body.get("resolution", "720p")
        if resolution not in RESOLUTIONS:
            return _unprocessable(f"resolution: unknown variant `{resolution}`")
        if resolution == "1080p" and body.get("model", MODELS[0]) in NO_1080P:
            return _xai_error(400, f"Resolution 1080p is not supported by {body.get('model', MODELS[0])}.")
        if body.get("aspect_ratio", "16:9") not in ASPECT_RATIOS:
            return _unprocessable(f"aspect_ratio: unknown variant `{body.get('aspect_ratio')}`")
        if "image" in body:
            problem = _image_problem(body["image"])
            if problem is not None:
                return _xai_error(400, problem)
        if "generate_audio" in body and not isinstance(body["generate_audio"], bool):
            return _unprocessable("generate_audio: invalid type, expected a boolean")
        return None

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.create_attempts.append({})
            return _unprocessable("expected a JSON body")
        if not isinstance(body, dict):
            self.create_attempts.append({})
            return _unprocessable("expected a JSON object")
        self.create_attempts.append(body)
        prompt = str(body.get("prompt", ""))
        self._creates_per_prompt[prompt] += 1
        first = self._creates_per_prompt[prompt] == 1
        if "[429-submit]" in prompt and first:
            return _xai_error(429, "Too many requests.", code="Too many requests", headers={"Retry-After": "1"})
        if "[503-submit]" in prompt and first:
            return web.Response(status=503, text="Service Unavailable", content_type="text/html")
        if "[quota]" in prompt:
            return _xai_error(429, NO_CREDITS, code="Too many requests")
        if "[retired]" in prompt:
            model = body.get("model")
            return _xai_error(404, f"The model {model} does not exist or your team does not have access to it.",
                              code="Some requested entity was not found")
        if "[blocked-input]" in prompt:
            return _xai_error(400, MODERATION_INPUT)
        refusal = self._problem(body)
        if refusal is not None:
            self.create_attempts[-1] = {**body, "refused": True}
            return refusal
        if body.get("model", MODELS[0]) not in MODELS:
            return _xai_error(404, f"The model {body['model']} does not exist or your team does not have access to it.",
                              code="Some requested entity was not found")
        job = FakeJob(id=str(uuid.uuid4()), prompt=prompt, model=str(body.get("model", MODELS[0])),
                      body=body, created_at=time.time())
        if job.has("[slow]"):
            job.created_at += self.slow_seconds  # the render finishes that much later
        self.jobs[job.id] = job
        self.submits.append(body)
        await self._slow_if_asked(job)
        return web.json_response({"request_id": job.id})

    def _answer(self, job: FakeJob) -> dict[str, Any]:
        stage = job.stage(self.run_seconds)
        if stage in ("queued", "in_progress", "cancelled"):  # xAI has no cancel: never cancelled
            answer: dict[str, Any] = {"status": "pending"}
            if stage == "in_progress":
                answer["progress"] = job.progress
            return answer
        model = job.model
        duration = int(job.body.get("duration", 8))
        if stage == "failed" and job.has("[blocked-output]"):
            return {"status": "done", "video": {"duration": 0, "respect_moderation": False}, "model": model}
        if stage == "failed":
            return {"status": "failed", "video": {"duration": 0, "respect_moderation": True}, "model": "",
                    "error": {"code": "internal_error", "message": "Video generation failed."}}
        if job.has("[expired]"):
            return {"status": "expired"}
        ticks = round(duration * PRICE_USD_PER_S[str(job.body.get("resolution", "720p"))] * TICKS_PER_USD)
        return {
            "status": "done",
            "video": {"url": self.file_url(job.id), "duration": duration, "respect_moderation": True},
            "model": model,
            "usage": {"cost_in_usd_ticks": ticks},
            "progress": 100,
        }

    async def _get(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None:
            return _xai_error(404, f"Request {job_id} not found.", code="Some requested entity was not found")
        return web.json_response(self._answer(job))

    async def _file(self, request: web.Request) -> web.Response:
        return self._download(request.match_info["name"].removesuffix(".mp4"), request)
