"""Local fake video providers (reference §1.1, §1.2, §6): a seed-shape gateway and the OpenAI shape.

Each fake is an aiohttp server on 127.0.0.1 whose whole state lives in the server object, so a
test can drive a bot in a subprocess and still count what the provider received. Behaviour is
scripted by markers in the prompt:

    [blocked-input]   create → 400 input moderation ("Possible reasons: violence")
    [blocked-output]  the job ends failed with moderation_blocked
    [fail]            the job ends failed with another code
    [stuck]           progress climbs to 99 and the job stays in_progress forever
    [429-submit]      the first create for this prompt → 429 with Retry-After: 1
    [503-submit]      the first create for this prompt → 503
    [quota]           every create → 429 insufficient_quota
    [slow-submit]     create makes the job, then waits `slow_seconds` before answering
    [5xx-poll]        the first two polls → 502
    [malformed]       the first poll → a body that is not JSON
    [retired]         create → 404 model_not_found
    [no-url]          (gateway) succeeds without a URL
    [download-502]    the first download → 502, later ones succeed
    [429-always] / [503-always]   every create → 429 / 503
    [401] / [400]     create → 401 invalid key / 400 invalid value
    [cancelled]       the job is reported cancelled after its first poll
    [download-502-always]  every download → 502
    [expired]         every download → 404

Timeline: the first poll of a job says queued, later polls say in_progress with rising
progress, and the job is finished once `run_seconds` of wall-clock time have passed since its
creation, so a restarted bot sees the same timeline.

Callbacks: webhooks are set per account, as in OpenAI's dashboard:
`FakeOpenAIServer.configure_webhooks(url, secret)`, then `send_callback(job_id)` posts a
Standard-Webhooks-signed `video.completed` / `video.failed` event. A job a provider calls
back about has left its queue, so from then on its first poll no longer says queued.
`callbacks_sent` records (url, HTTP status) of each delivery.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import httpx
from aiohttp import web
from aiohttp.typedefs import Handler
from standardwebhooks import Webhook
from PIL import Image, UnidentifiedImageError

from bot.models import ProviderState, ProviderStatus, VideoSpec
from bot.providers.base import VideoProvider

API_KEY = "test-key"

MODERATION_INPUT = (
    "The request is blocked by our moderation system when checking inputs. "
    "Possible reasons: violence"
)
MODERATION_OUTPUT = "Your request was blocked by our moderation system."
RETIRED_MESSAGE = "The model 'sora-2' does not exist or you do not have access to it."
# openai 3.57's VideoSeconds and VideoSize Literals. OpenAI's March-2026 guide also named
# "16"/"20" and 1920x1080/1080x1920 (reference §1.1); the SDK that ships today wins, and the
# API answered those with a 400.
OPENAI_SECONDS = ("4", "8", "12")
OPENAI_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
INPAINT_MISMATCH = "Inpaint image must match the requested width and height"
MAX_IMAGE_URL_CHARS = 20 * 1024 * 1024  # "max 20 MB string" (reference §1.1)
_IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def decode_data_url_image(url: Any) -> tuple[int, int] | str:
    """(width, height) of a `data:image/...;base64,` jpeg/png/webp; otherwise why not, as text."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return "must be a data URL"
    if len(url) > MAX_IMAGE_URL_CHARS:
        return "is longer than 20 MB"
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        return "must be a base64 data URL"
    mime = header[len("data:") : -len(";base64")]
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64"
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            fmt, size = img.format, img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "is not an image"
    if fmt not in _IMAGE_FORMATS:
        return f"must be jpeg, png or webp, not {str(fmt).lower()}"
    if _IMAGE_FORMATS[fmt] != mime:
        return f"declares {mime} but holds {_IMAGE_FORMATS[fmt]}"
    return size


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart create (the openai SDK uploads `input_reference` so)."""

    data: bytes
    content_type: str
    filename: str | None


async def _form_body(request: web.Request) -> dict[str, Any]:
    """A multipart/form-data create as a dict: text fields as strings, files as Upload."""
    body: dict[str, Any] = {}
    for name, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            body[name] = Upload(value.file.read(), value.content_type, value.filename)
        else:
            body[name] = str(value)
    return body


def video_bytes(job_id: str, size: int = 4096) -> bytes:
    """Deterministic bytes for a job's video: an MP4 `ftyp` box, then an `mdat` of filler."""
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isommp41"
    seed = hashlib.sha256(job_id.encode()).digest()
    filler_len = max(0, size - len(ftyp) - 8)
    filler = (seed * (filler_len // len(seed) + 1))[:filler_len]
    return ftyp + struct.pack(">I", filler_len + 8) + b"mdat" + filler


def _error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    type_: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class FakeJob:
    """One job at a fake provider. Its stage follows the wall clock (see the module docstring)."""

    id: str
    prompt: str
    model: str
    body: dict[str, Any]
    created_at: float
    served_polls: int = 0
    progress: int = 0
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def has(self, marker: str) -> bool:
        return marker in self.prompt

    def stage(self, run_seconds: float, *, now: float | None = None) -> str:
        """queued | in_progress | completed | failed | cancelled, updating `progress`."""
        if self.cancelled or (self.has("[cancelled]") and self.served_polls > 1):
            return "cancelled"
        if self.served_polls <= 1:
            return "queued"
        elapsed = (time.time() if now is None else now) - self.created_at
        share = 1.0 if run_seconds <= 0 else elapsed / run_seconds
        if self.has("[stuck]") or share < 1.0:
            self.progress = max(self.progress, min(99, max(1, int(share * 100))))
            return "in_progress"
        if self.has("[blocked-output]") or self.has("[fail]"):
            return "failed"
        self.progress = 100
        return "completed"

    def finished_ok(self, run_seconds: float) -> bool:
        """Whether the video exists now, independent of how often the job was polled."""
        return (
            not self.cancelled
            and not self.has("[stuck]")
            and not self.has("[blocked-output]")
            and not self.has("[fail]")
            and time.time() - self.created_at >= run_seconds
        )


class _FakeServer:
    """Shared plumbing: start/stop, auth, counters and the create-time markers."""

    def __init__(self, *, run_seconds: float = 0.5, slow_seconds: float = 0.5) -> None:
        self.run_seconds = run_seconds
        self.slow_seconds = slow_seconds
        self.api_key = API_KEY
        self.submits: list[dict[str, Any]] = []  # accepted create bodies
        self.create_attempts: list[dict[str, Any]] = []  # every create, refused ones too
        self.polls: Counter[str] = Counter()  # status requests per job id
        self.downloads: Counter[str] = Counter()  # download requests per job id
        self.download_auth: list[str | None] = []  # Authorization header of each download
        self.cancels: list[str] = []
        self.jobs: dict[str, FakeJob] = {}
        self.callbacks_sent: list[tuple[str, int]] = []  # (url, HTTP status) per callback
        self._creates_per_prompt: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---

    @property
    def origin(self) -> str:
        if self._port is None:
            raise RuntimeError("the fake server is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> None:
        """Serve from a thread with its own loop, for tests that block (e.g. subprocess.run)."""
        loop = asyncio.new_event_loop()
        self._thread_loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-provider", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)

    def stop_in_thread(self) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._thread_loop = self._thread = None

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def _models(self, request: web.Request) -> web.Response:
        """The cheap authenticated call `sora-bot doctor` makes (auth is checked upstream)."""
        return web.json_response({"object": "list", "data": [{"id": "sora-2"}, {"id": "sora-2-pro"}]})

    # --- shared behaviour ---

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            sent = request.headers.get("Authorization", "")
            if sent != f"Bearer {self.api_key}":
                if request.method == "POST" and request.path.rstrip("/").endswith(
                    ("/videos", "/generations")
                ):
                    self.create_attempts.append({"unauthorized": True})
                # Echo the key the way careless providers do, so tests prove adapters redact.
                shown = sent.removeprefix("Bearer ") or "(none)"
                return _error(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
        return await handler(request)

    async def _read_create(
        self, request: web.Request
    ) -> tuple[dict[str, Any], web.Response | None]:
        """Record a create attempt and apply the create-time markers; a Response means refused."""
        try:
            if request.content_type == "multipart/form-data":
                body = await _form_body(request)  # how the openai SDK sends a create
            else:
                body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            self.create_attempts.append({})
            return {}, _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            self.create_attempts.append({})
            return {}, _error(400, "The body must be a JSON object.")
        self.create_attempts.append(body)
        prompt = str(body.get("prompt", ""))
        self._creates_per_prompt[prompt] += 1
        first = self._creates_per_prompt[prompt] == 1
        if "[429-submit]" in prompt and first:
            return body, _error(
                429,
                "Rate limit reached for requests.",
                code="rate_limit_exceeded",
                type_="requests",
                headers={"Retry-After": "1"},
            )
        if "[503-submit]" in prompt and first:
            return body, web.Response(
                status=503, text="Service Unavailable", content_type="text/html"
            )
        if "[429-always]" in prompt:
            return body, _error(429, "Rate limit reached for requests.", code="rate_limit_exceeded",
                                type_="requests", headers={"Retry-After": "1"})
        if "[503-always]" in prompt:
            return body, web.Response(status=503, text="Service Unavailable", content_type="text/html")
        if "[401]" in prompt:
            return body, _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if "[400]" in prompt:
            return body, _error(400, "Invalid value: 'x'. Supported values are: '4', '8', and '12'.",
                                code="invalid_value")
        if "[quota]" in prompt:
            return body, _error(
                429,
                "You exceeded your current quota.",
                code="insufficient_quota",
                type_="insufficient_quota",
            )
        if "[retired]" in prompt:
            return body, _error(404, RETIRED_MESSAGE, code="model_not_found")
        if "[blocked-input]" in prompt:
            return body, _error(400, MODERATION_INPUT, code="moderation_blocked")
        if not prompt.strip():
            return body, _error(400, "Missing required parameter: 'prompt'.")
        return body, None

    def _new_job(self, prefix: str, body: dict[str, Any]) -> FakeJob:
        job = FakeJob(
            id=f"{prefix}{uuid.uuid4().hex[:16]}",
            prompt=str(body.get("prompt", "")),
            model=str(body.get("model", "")),
            body=body,
            created_at=time.time(),
        )
        self.jobs[job.id] = job
        self.submits.append(body)
        return job

    async def _slow_if_asked(self, job: FakeJob) -> None:
        if job.has("[slow-submit]"):
            await asyncio.sleep(self.slow_seconds)

    def _poll_fault(self, job_id: str) -> web.Response | None:
        """Count the poll and apply the poll-time markers."""
        self.polls[job_id] += 1
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.has("[5xx-poll]") and self.polls[job_id] <= 2:
            return web.Response(
                status=502, text="<html>502 Bad Gateway</html>", content_type="text/html"
            )
        if job.has("[malformed]") and self.polls[job_id] == 1:
            return web.Response(
                status=200, text="upstream says: {not json", content_type="application/json"
            )
        job.served_polls += 1
        return None

    # --- callbacks ---

    @staticmethod
    def _skip_queue(job: FakeJob) -> None:
        """A provider calls back about a job that has left its queue: from now on its stage
        follows the clock alone (the next poll no longer answers "queued")."""
        job.served_polls = max(job.served_polls, 2)

    async def _post_callback(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        """POST a callback the way a provider does; the receiver's HTTP status."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                url, content=body, headers={"Content-Type": "application/json", **(headers or {})}
            )
        self.callbacks_sent.append((url, response.status_code))
        return response.status_code

    def _download(self, job_id: str, request: web.Request) -> web.Response:
        self.downloads[job_id] += 1
        self.download_auth.append(request.headers.get("Authorization"))
        job = self.jobs.get(job_id)
        if job is None or job.has("[expired]"):
            return _error(404, "Not found.", code="not_found")
        if job.has("[download-502-always]") or (job.has("[download-502]") and self.downloads[job_id] == 1):
            return web.Response(
                status=502, text="<html>502 Bad Gateway</html>", content_type="text/html"
            )
        if not job.finished_ok(self.run_seconds):
            return _error(404, "Video is not ready.", code="not_found")
        return web.Response(body=video_bytes(job_id), content_type="video/mp4")


class FakeGatewayServer(_FakeServer):
    """A reseller gateway in the seed shape: `{code:"success", data:{id,status,progress,url}}`.

    `status_style="simple"` answers queued/processing/succeeded/failed; `"raw"` answers new-api's
    SUBMITTED/IN_PROGRESS/SUCCESS/FAILURE. `files_host="localhost"` serves video URLs from
    another host name than the API, to check the key is not sent there. An optional `image`
    (a URL or data URL) is accepted and kept in the submit; a data URL's decoded size is
    recorded as `submits[-1]["_image_size"]`.

    `reply_style` says how a create is answered and where the job is then polled: "seed"
    (`{code, data:{id}}`, polled at `…/generations/{id}`), "xai" (xAI's `{request_id}`,
    polled at `/v1/videos/{id}` with `{status: pending|done|failed|expired, video:{url}}`,
    `[expired]` ending it `expired`, and nothing at the old path), or "polling_url"
    (`{id, status, polling_url}` naming `/v1/jobs/{id}`, the only place the job is polled).
    """

    _WORDS: ClassVar[dict[str, dict[str, str]]] = {
        "simple": {
            "queued": "queued",
            "in_progress": "processing",
            "completed": "succeeded",
            "failed": "failed",
            "cancelled": "cancelled",
        },
        "raw": {
            "queued": "SUBMITTED",
            "in_progress": "IN_PROGRESS",
            "completed": "SUCCESS",
            "failed": "FAILURE",
            "cancelled": "CANCELLED",
        },
    }

    def __init__(
        self,
        *,
        run_seconds: float = 0.5,
        slow_seconds: float = 0.5,
        status_style: str = "simple",
        files_host: str = "127.0.0.1",
        supports_cancel: bool = True,
        api_style: str = "seed",
        retired_models: frozenset[str] = frozenset(),
        reply_style: str = "seed",
    ) -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.reply_style = reply_style
        self.retired_models = retired_models  # models this gateway stopped serving: create → 404
        self.api_style = api_style  # "seed": /videos/generations; "newapi": /video/generations
        self.status_style = status_style
        self.files_host = files_host
        self.supports_cancel = supports_cancel

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        jobs = "/v1/video/generations" if self.api_style == "newapi" else "/v1/videos/generations"
        app.router.add_post(jobs, self._create)
        if self.reply_style == "xai":
            app.router.add_get("/v1/videos/{id}", self._poll_xai)
        elif self.reply_style == "polling_url":
            app.router.add_get("/v1/jobs/{id}", self._poll)
        else:
            app.router.add_get(f"{jobs}/{{id}}", self._poll)
        app.router.add_post(f"{jobs}/{{id}}/cancel", self._cancel)
        app.router.add_get("/files/{name}", self._file)

    def file_url(self, job_id: str) -> str:
        return f"http://{self.files_host}:{self._port}/files/{job_id}.mp4"

    async def _create(self, request: web.Request) -> web.Response:
        body, refusal = await self._read_create(request)
        if refusal is not None:
            return refusal
        if body.get("model") in self.retired_models:
            return _error(404, RETIRED_MESSAGE.replace("sora-2", str(body["model"])), code="model_not_found")
        if isinstance(body.get("duration"), bool) or not isinstance(body.get("duration"), int):
            self.create_attempts[-1] = {**body, "refused": "duration"}
            return _error(400, "duration must be an integer number of seconds")
        if self.api_style == "newapi" and not all(
            isinstance(body.get(k), int) and not isinstance(body.get(k), bool) for k in ("width", "height")
        ):
            self.create_attempts[-1] = {**body, "refused": "size"}
            return _error(400, "width and height must be integers")
        image = body.get("image")
        if image is not None:
            # new-api's task shape: `image` is a URL or a data URL (the first frame)
            if not isinstance(image, str) or not image:
                self.create_attempts[-1] = {**body, "refused": "image"}
                return _error(400, "image must be a URL or a data URL")
            if image.startswith("data:"):
                decoded = decode_data_url_image(image)
                if isinstance(decoded, str):
                    self.create_attempts[-1] = {**body, "refused": "image"}
                    return _error(400, f"image {decoded}")
                body = {**body, "_image_size": decoded}
        job = self._new_job("task_", body)
        await self._slow_if_asked(job)
        if self.reply_style == "xai":
            return web.json_response({"request_id": job.id})
        if self.reply_style == "polling_url":
            return web.json_response(
                {"id": job.id, "status": "pending", "polling_url": f"{self.origin}/v1/jobs/{job.id}"}
            )
        if self.api_style == "newapi":
            # new-api answers with an OpenAI-style object carrying both ids
            return web.json_response({"id": job.id, "task_id": job.id, "object": "video", "status": "queued"})
        return web.json_response(
            {"code": "success", "message": "", "data": {"id": job.id, "status": "queued"}}
        )

    async def _poll(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None:
            return web.json_response(
                {"code": "error", "message": "task_not_exist", "data": None}, status=404
            )
        stage = job.stage(self.run_seconds)
        data: dict[str, Any] = {
            "id": job.id,
            "task_id": job.id,
            "status": self._WORDS[self.status_style][stage],
            "progress": f"{job.progress}%",
            "url": "",
            "error": None,
            "format": "mp4",
            "created_at": int(job.created_at * 1000),  # new-api reports milliseconds
        }
        if stage == "completed" and not job.has("[no-url]"):
            data["url"] = self.file_url(job.id)
        if stage == "failed" and job.has("[blocked-output]"):
            data["error"] = {"code": "moderation_blocked", "message": MODERATION_OUTPUT}
        elif stage == "failed":
            data["error"] = "upstream render error"
            data["fail_reason"] = "task_failed: upstream render error"
        return web.json_response({"code": "success", "message": "", "data": data})

    async def _poll_xai(self, request: web.Request) -> web.Response:
        """xAI's deferred video answer (reference 2026-12 §7)."""
        job_id = request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None:
            return web.json_response({"code": "Some requested entity was not found",
                                      "error": f"Request {job_id} not found."}, status=404)
        stage = job.stage(self.run_seconds)
        if stage in ("queued", "in_progress", "cancelled"):
            return web.json_response({"status": "pending"})
        if stage == "failed" and job.has("[blocked-output]"):
            return web.json_response({"status": "done", "model": job.model,
                                      "video": {"duration": 0, "respect_moderation": False}})
        if stage == "failed":
            return web.json_response({"status": "failed", "model": "", "video": {"duration": 0},
                                      "error": {"code": "internal_error", "message": "upstream render error"}})
        if job.has("[expired]"):
            return web.json_response({"status": "expired"})
        video: dict[str, Any] = {"duration": job.body.get("duration"), "respect_moderation": True}
        if not job.has("[no-url]"):
            video["url"] = self.file_url(job.id)
        return web.json_response({"status": "done", "model": job.model, "video": video})

    async def _cancel(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        if not self.supports_cancel:
            return web.json_response({"code": "error", "message": "method not allowed"}, status=405)
        job = self.jobs.get(job_id)
        if job is None:
            return web.json_response({"code": "error", "message": "task_not_exist"}, status=404)
        if job.stage(self.run_seconds) in ("completed", "failed"):
            return web.json_response(
                {"code": "error", "message": "task already finished"}, status=400
            )
        job.cancelled = True
        self.cancels.append(job_id)
        return web.json_response({"code": "success", "data": {"id": job_id, "status": "cancelled"}})

    async def _file(self, request: web.Request) -> web.Response:
        return self._download(request.match_info["name"].removesuffix(".mp4"), request)


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for `body`: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = Webhook(secret).sign(webhook_id, when, body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


class FakeOpenAIServer(_FakeServer):
    """The OpenAI Videos API: create, retrieve, list, content, delete (reference §1.1).

    `poll_after_ms` adds an `openai-poll-after-ms` header to retrieve answers. A create with
    `input_reference: {image_url: <data URL>}` is decoded; unless the image is exactly `size`
    the answer is 400 "Inpaint image must match the requested width and height", and an
    accepted one records the decoded size as `submits[-1]["_image_size"]`.
    """

    def __init__(
        self,
        *,
        run_seconds: float = 0.5,
        slow_seconds: float = 0.5,
        poll_after_ms: int | None = None,
    ) -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.poll_after_ms = poll_after_ms
        self.deletes: list[str] = []
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None

    def configure_webhooks(self, url: str, secret: str) -> None:
        """The endpoint and its whsec_ signing secret, as set up in OpenAI's dashboard."""
        self.webhook_url, self.webhook_secret = url, secret

    async def send_callback(
        self,
        job_id: str,
        *,
        event_type: str | None = None,
        webhook_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
        body: bytes | None = None,
    ) -> int:
        """Deliver a signed event about `job_id` to the configured URL; the receiver's status.

        By default the event tells the truth (`video.completed` once the video exists, else
        `video.failed`). The keywords forge or replay one: another `event_type`, a reused
        `webhook_id`, an old `timestamp`, the wrong `secret`, or a `body` other than the
        one signed.
        """
        if self.webhook_url is None or self.webhook_secret is None:
            raise RuntimeError("configure_webhooks(url, secret) first")
        job = self.jobs.get(job_id)
        if event_type is None:
            if job is None:
                raise KeyError(f"no job {job_id!r}: pass event_type to send one about it anyway")
            self._skip_queue(job)
            event_type = "video.completed" if job.finished_ok(self.run_seconds) else "video.failed"
        event = {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "created_at": int(time.time()),
            "type": event_type,
            "data": {"id": job_id},
        }
        signed = json.dumps(event).encode()
        headers = sign_webhook(
            secret or self.webhook_secret,
            webhook_id or f"wh_{uuid.uuid4().hex}",
            int(time.time()) if timestamp is None else timestamp,
            signed,
        )
        return await self._post_callback(self.webhook_url, signed if body is None else body, headers)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/videos", self._create)
        app.router.add_get("/v1/videos", self._list)
        app.router.add_get("/v1/videos/{id}", self._retrieve)
        app.router.add_delete("/v1/videos/{id}", self._delete)
        app.router.add_get("/v1/videos/{id}/content", self._content)

    def _video(self, job: FakeJob, stage: str) -> dict[str, Any]:
        done = stage in ("completed", "failed")
        finished_at = int(job.created_at + self.run_seconds)
        error = None
        if stage == "failed" and job.has("[blocked-output]"):
            error = {"code": "moderation_blocked", "message": MODERATION_OUTPUT}
        elif stage == "failed":
            error = {"code": "internal_error", "message": "Video generation failed."}
        return {
            "id": job.id,
            "object": "video",
            "model": job.model,
            "status": stage,
            "progress": job.progress if stage != "queued" else 0,
            "created_at": int(job.created_at),
            "completed_at": finished_at if done else None,
            "expires_at": finished_at + 3600 if stage == "completed" else None,
            "prompt": job.prompt,
            "seconds": job.body.get("seconds"),
            "size": job.body.get("size"),
            "remixed_from_video_id": None,
            "error": error,
        }

    async def _create(self, request: web.Request) -> web.Response:
        body, refusal = await self._read_create(request)
        if refusal is not None:
            return refusal
        seconds, size = body.get("seconds", "4"), body.get("size", "720x1280")
        if not isinstance(seconds, str):
            self.create_attempts[-1] = {**body, "refused": "seconds"}
            return _error(
                400,
                "Invalid type for 'seconds': expected one of '4', '8', or '12', "
                "but got an integer instead.",
                code="invalid_type",
            )
        if seconds not in OPENAI_SECONDS:
            self.create_attempts[-1] = {**body, "refused": "seconds"}
            return _error(
                400,
                f"Invalid value: '{seconds}'. Supported values are: '4', '8', and '12'.",
                code="invalid_value",
            )
        if size not in OPENAI_SIZES:
            self.create_attempts[-1] = {**body, "refused": "size"}
            return _error(
                400,
                f"Invalid value: '{size}'. Supported values are: '720x1280', '1280x720', "
                "'1024x1792', and '1792x1024'.",
                code="invalid_value",
            )
        extra: dict[str, Any] = {}
        if "input_reference" in body:
            checked = self._check_reference(body["input_reference"], size)
            if isinstance(checked, web.Response):
                self.create_attempts[-1] = {**body, "refused": "input_reference"}
                return checked
            extra["_image_size"] = checked
            if isinstance(body["input_reference"], Upload):
                extra["input_reference"] = {"upload": body["input_reference"].content_type}
        job = self._new_job("video_", {**body, "seconds": seconds, "size": size, **extra})
        await self._slow_if_asked(job)
        return web.json_response(self._video(job, "queued"))

    @staticmethod
    def _check_reference(ref: Any, size: str) -> tuple[int, int] | web.Response:
        """`input_reference`: a multipart image upload, or JSON `{image_url}` as a data URL;
        either exactly `size` (§1.1).

        `{file_id}` and remote URLs are refused: this fake has no Files API and fetches nothing.
        """
        if isinstance(ref, Upload):
            encoded = base64.b64encode(ref.data).decode("ascii")
            ref = {"image_url": f"data:{ref.content_type};base64,{encoded}"}
        if not isinstance(ref, dict) or len([k for k in ("file_id", "image_url") if k in ref]) != 1:
            return _error(400, "input_reference must have exactly one of 'file_id' or 'image_url'.",
                          code="invalid_value")
        if "file_id" in ref:
            return _error(400, "This fake does not serve uploaded files; send image_url.", code="invalid_value")
        decoded = decode_data_url_image(ref["image_url"])
        if isinstance(decoded, str):
            return _error(400, f"Invalid input_reference.image_url: it {decoded}.", code="invalid_value")
        if f"{decoded[0]}x{decoded[1]}" != size:
            return _error(400, INPAINT_MISMATCH)
        return decoded

    async def _retrieve(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None:
            return _error(404, f"Video with id '{job_id}' not found.", code="not_found")
        headers = {}
        if self.poll_after_ms is not None:
            headers["openai-poll-after-ms"] = str(self.poll_after_ms)
        return web.json_response(self._video(job, job.stage(self.run_seconds)), headers=headers)

    async def _list(self, request: web.Request) -> web.Response:
        try:
            limit = min(100, max(0, int(request.query.get("limit", "20"))))
        except ValueError:
            return _error(400, "Invalid value for 'limit'.")
        desc = request.query.get("order", "desc") == "desc"
        jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=desc)
        after = request.query.get("after")
        if after:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1 :] if after in ids else []
        page = jobs[:limit]
        data = [self._video(j, j.stage(self.run_seconds)) for j in page]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(jobs) > limit,
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None:
            return _error(404, f"Video with id '{job_id}' not found.", code="not_found")
        if job.stage(self.run_seconds) not in ("completed", "failed"):
            return _error(400, "Only completed or failed videos can be deleted.")
        del self.jobs[job_id]
        self.deletes.append(job_id)
        return web.json_response({"id": job_id, "object": "video.deleted", "deleted": True})

    async def _content(self, request: web.Request) -> web.Response:
        if request.query.get("variant", "video") != "video":
            return _error(400, "Only the video variant is served by this fake.")
        return self._download(request.match_info["id"], request)


# --- helpers for tests that drive an adapter against these fakes ---


def make_spec(
    prompt: str,
    *,
    model: str = "sora-2",
    duration_s: int = 8,
    resolution: str = "720p",
    aspect_ratio: str = "16:9",
    external_id: str = "job-1",
) -> VideoSpec:
    return VideoSpec(
        model=model,
        provider_model=model,
        prompt=prompt,
        duration_s=duration_s,
        resolution=resolution,
        aspect_ratio=aspect_ratio,
        external_id=external_id,
    )


_TERMINAL = (ProviderState.SUCCEEDED, ProviderState.FAILED, ProviderState.CANCELLED)


async def poll_until_terminal(
    provider: VideoProvider, job_id: str, *, timeout_s: float = 5.0, interval_s: float = 0.02
) -> list[ProviderStatus]:
    """Poll until a terminal state; return every status seen (the last one is terminal)."""
    seen: list[ProviderStatus] = []
    async with asyncio.timeout(timeout_s):
        while True:
            status = await provider.poll(job_id)
            seen.append(status)
            if status.state in _TERMINAL:
                return seen
            await asyncio.sleep(interval_s)
