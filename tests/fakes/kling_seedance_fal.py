"""Local fake Kling (reference §1.4) and Seedance on ModelArk (§1.7).

All three reuse the lifecycle, counters and poll faults of `tests.fakes.providers` (so
`[5xx-poll]` and `[malformed]` work here too; `.base_url` is the origin, the adapter adds
the paths) and are scripted by prompt markers:

Kling (`FakeKlingServer`): every `/v1/` route verifies the JWT (HS256 with the secret key,
`iss` = access key, `exp` and `nbf` against the server's clock): missing → 401 code 1001,
bad signature or issuer → 401 code 1002, not yet valid → 1003, expired → 1004.
`expire_tokens_now(n)` makes the next n requests fail with 1004 whatever the token.
    [1301]        create → 400 code 1301 (content security policy)
    [1303]        the first create for this prompt → 429 code 1303 (concurrency limit)
    [1302]        the first create for this prompt → 429 code 1302 (rate limit), no Retry-After
    [1102]        every create → 429 code 1102 (resource pack depleted)
    [failed-risk] the task ends `failed`, task_status_msg about risk control
    [stuck]       `processing` forever
  `duration` must be a string ("5", "10"; "3"-"15" for kling-v3), `external_task_id` unique;
  `GET /v1/videos/{kind}` lists tasks newest first (`external_task_id=` filters).
  `.create_times` holds the arrival time of each create, for tests of the retry spacing.

Seedance (`FakeSeedanceServer`, Bearer key on `/api/v3/`):
    [input-sensitive]  create → 400 InputTextSensitiveContentDetected
    [output-sensitive] the task ends failed with OutputVideoSensitiveContentDetected
    [expired]          the task ends `expired` (and its video URL is gone)
    [stuck]            `running` forever
  The create body is checked as the Ark SDK (byteplussdkarkruntime 3.0.63,
  `resources/content_generation/tasks.py`) types it: only the fields `create()` takes, a null
  meaning "not set" (the SDK sends every unset field as null), `duration` an int within the
  model's range (`ARK_MODELS`; -1 lets the model choose), `ratio`/`resolution` from the
  documented sets, and every image/video/audio content item carrying its `role`
  (`CreateTaskContentImageParam` requires it). An unknown model → 404. DELETE cancels a
  queued task, deletes a finished one and refuses a running one.

fal's queue is faked in `tests.fakes.fal`.

Callbacks: each fake's `send_callback(job_id)` posts what that provider sends to the URL it
got at submit (`callback_url` in the body): the task object as their query answers it.
`body=` sends something else to that URL instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.fakes.providers import FakeJob, _FakeServer

KLING_ACCESS_KEY = "test-kling-access-key"
KLING_SECRET_KEY = "test-kling-secret-key-0123456789abcdef"
ARK_API_KEY = "test-ark-api-key-0123456789"

KLING_RISK_MESSAGE = "Failure to pass the risk control system"
KLING_RATIOS = ("16:9", "9:16", "1:1")
KLING_DURATIONS = ("5", "10")
KLING_V3_DURATIONS = tuple(str(n) for n in range(3, 16))

ARK_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "adaptive")
ARK_RESOLUTIONS = ("480p", "720p", "1080p")
# model → (shortest, longest seconds, resolutions): reference 2026-12 §5
ARK_MODELS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "dreamina-seedance-2-0-260128": (4, 15, ARK_RESOLUTIONS),
    "dreamina-seedance-2-0-fast-260128": (4, 15, ("480p", "720p")),
    "dreamina-seedance-2-5-260628": (4, 30, ARK_RESOLUTIONS),
}
# the keyword arguments of the SDK's `content_generation.tasks.create()`
ARK_CREATE_FIELDS = frozenset({
    "model", "content", "safety_identifier", "callback_url", "return_last_frame", "service_tier",
    "execution_expires_after", "priority", "generate_audio", "draft", "camera_fixed",
    "watermark", "seed", "resolution", "ratio", "duration", "frames", "output_format",
    "omni_reference_task_type",
})
# content item type → the roles ModelArk's docs list for it
ARK_ROLES = {
    "image_url": ("first_frame", "last_frame", "reference_image"),
    "video_url": ("reference_video",),
    "audio_url": ("reference_audio",),
}
ARK_INPUT_SENSITIVE = (
    "The request failed because the input text may contain sensitive information."
)
ARK_OUTPUT_SENSITIVE = (
    "The request failed because the output video may contain sensitive information."
)



async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _plain_base64(data: Any) -> bool:
    if not isinstance(data, str) or not data or data.startswith("data:"):
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _image_data_uri(uri: Any) -> bool:
    if not isinstance(uri, str):
        return False
    if uri.startswith(("http://", "https://")):
        return True
    header, _, data = uri.partition(",")
    return header.startswith("data:image/") and header.endswith(";base64") and _plain_base64(data)


def _stage(server: _FakeServer, job: FakeJob, failure_markers: tuple[str, ...]) -> str:
    """queued | in_progress | completed | failed | cancelled, with this fake's failure markers."""
    stage = job.stage(server.run_seconds)
    if stage == "completed" and any(job.has(m) for m in failure_markers):
        return "failed"
    return stage


# --- Kling -----------------------------------------------------------------------------------


def _kling_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "request_id": uuid.uuid4().hex}, status=status
    )


class FakeKlingServer(_FakeServer):
    """Kling's text2video / image2video task API with JWT checks (see the module docstring)."""

    def __init__(
        self,
        *,
        run_seconds: float = 0.5,
        slow_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.access_key = KLING_ACCESS_KEY
        self.secret_key = KLING_SECRET_KEY
        self.api_key = KLING_ACCESS_KEY  # unused: Kling signs tokens instead
        self.clock = clock
        self.tokens: list[str] = []  # every token that passed the check, in order
        self.auth_failures: list[int] = []  # business codes of refused tokens
        self.lists: list[dict[str, str]] = []  # query strings of list requests
        self.create_times: list[float] = []  # time.monotonic() of each create that got past auth
        self._force_expired = 0
        self._external_ids: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        return self.origin

    def expire_tokens_now(self, times: int = 1) -> None:
        """Answer the next `times` requests with 401 code 1004, as if the token had expired."""
        self._force_expired += times

    def file_url(self, job_id: str) -> str:
        return f"{self.origin}/files/{job_id}.mp4"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/videos/{kind}", self._create)
        app.router.add_get("/v1/videos/{kind}", self._list)
        app.router.add_get("/v1/videos/{kind}/{id}", self._query)
        app.router.add_get("/files/{name}", self._file)

    def _check_token(self, header: str) -> tuple[int, str] | None:
        """(code, message) of a refused Authorization header; None when the token is good."""
        if not header.startswith("Bearer ") or not header.removeprefix("Bearer ").strip():
            return 1001, "Authorization is empty"
        token = header.removeprefix("Bearer ").strip()
        if self._force_expired > 0:
            self._force_expired -= 1
            return 1004, "Authorization is expired"
        try:
            if jwt.get_unverified_header(token).get("typ") != "JWT":
                return 1002, "Authorization is invalid"
            # exp/nbf are checked below against this server's (injectable) clock
            claims = jwt.decode(
                token,
                self.secret_key,
                algorithms=["HS256"],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "require": ["iss", "exp", "nbf"],
                },
            )
        except jwt.InvalidTokenError:
            return 1002, "Authorization is invalid"
        if claims.get("iss") != self.access_key:
            return 1002, "Authorization is invalid"
        now = self.clock()
        if not isinstance(claims["nbf"], int | float) or claims["nbf"] > now:
            return 1003, "Authorization is not active"
        if not isinstance(claims["exp"], int | float) or claims["exp"] <= now:
            return 1004, "Authorization is expired"
        self.tokens.append(token)
        return None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            refused = self._check_token(request.headers.get("Authorization", ""))
            if refused is not None:
                code, message = refused
                self.auth_failures.append(code)
                if request.method == "POST":
                    self.create_attempts.append({"refused": f"auth {code}"})
                return _kling_error(401, code, message)
        return await handler(request)

    def _data(self, job: FakeJob) -> dict[str, Any]:
        stage = _stage(self, job, ("[failed-risk]",))
        status = {
            "queued": "submitted",
            "in_progress": "processing",
            "completed": "succeed",
            "failed": "failed",
            "cancelled": "failed",
        }[stage]
        data: dict[str, Any] = {
            "task_id": job.id,
            "task_status": status,
            "task_status_msg": "",
            "task_info": {"external_task_id": job.body.get("external_task_id")},
            "created_at": int(job.created_at * 1000),
            "updated_at": int(time.time() * 1000),
        }
        if status == "succeed":
            data["final_unit_deduction"] = "1"
            data["task_result"] = {
                "videos": [
                    {
                        "id": f"v-{job.id}",
                        "url": self.file_url(job.id),
                        "duration": job.body.get("duration", "5"),
                    }
                ]
            }
        elif status == "failed":
            data["task_status_msg"] = KLING_RISK_MESSAGE
        return data

    @staticmethod
    def _invalid(body: dict[str, Any], *, image: bool) -> str | None:
        model = body.get("model_name")
        if not isinstance(model, str) or not model:
            return "model_name is required"
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or (not prompt and not image):
            return "prompt is required"
        if len(prompt) > 2500:
            return "prompt must be at most 2500 characters"
        if body.get("mode", "std") not in ("std", "pro"):
            return "mode must be std or pro"
        duration = body.get("duration", "5")
        allowed = KLING_V3_DURATIONS if model.startswith("kling-v3") else KLING_DURATIONS
        if not isinstance(duration, str) or duration not in allowed:
            return f"duration must be a string, one of {', '.join(allowed)}"
        if image:
            if not _plain_base64(body.get("image")):
                return "image must be base64 without a data: prefix, or a URL"
        elif body.get("aspect_ratio", "16:9") not in KLING_RATIOS:
            return "aspect_ratio must be 16:9, 9:16 or 1:1"
        external = body.get("external_task_id")
        if external is not None and not isinstance(external, str):
            return "external_task_id must be a string"
        return None

    async def _create(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in ("text2video", "image2video"):
            return _kling_error(404, 1202, "Invalid request method")
        body = await _json_body(request)
        if body is None:
            self.create_attempts.append({"kind": kind})
            return _kling_error(400, 1200, "Invalid request parameters")
        self.create_attempts.append({**body, "kind": kind})
        self.create_times.append(time.monotonic())
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
        self._creates_per_prompt[prompt] += 1
        first = self._creates_per_prompt[prompt] == 1
        if "[1303]" in prompt and first:
            return _kling_error(429, 1303, "parallel task over resource pack limit")
        if "[1302]" in prompt and first:
            return _kling_error(429, 1302, "API request rate too high, please reduce your rate")
        if "[1102]" in prompt:
            return _kling_error(429, 1102, "Account resource pack has been depleted")
        if "[1301]" in prompt:
            return _kling_error(400, 1301, "Content security policy is triggered")
        problem = self._invalid(body, image=kind == "image2video")
        if problem is not None:
            self.create_attempts[-1]["refused"] = problem
            return _kling_error(400, 1201, problem)
        external = body.get("external_task_id")
        if external and external in self._external_ids:
            self.create_attempts[-1]["refused"] = "duplicate external_task_id"
            return _kling_error(400, 1201, "external_task_id already exists")
        job = FakeJob(
            id=str(uuid.uuid4().int)[:18],
            prompt=prompt,
            model=str(body["model_name"]),
            body=body,
            created_at=time.time(),
            extra={"kind": kind},
        )
        self.jobs[job.id] = job
        if external:
            self._external_ids[external] = job.id
        self.submits.append({**body, "kind": kind})
        await self._slow_if_asked(job)
        return web.json_response(
            {
                "code": 0,
                "message": "SUCCEED",
                "request_id": uuid.uuid4().hex,
                "data": {
                    "task_id": job.id,
                    "task_status": "submitted",
                    "task_info": {"external_task_id": external},
                    "created_at": int(job.created_at * 1000),
                    "updated_at": int(job.created_at * 1000),
                },
            }
        )

    async def _query(self, request: web.Request) -> web.Response:
        kind, job_id = request.match_info["kind"], request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None or job.extra["kind"] != kind:
            return _kling_error(404, 1203, "task not found")
        return web.json_response(
            {
                "code": 0,
                "message": "SUCCEED",
                "request_id": uuid.uuid4().hex,
                "data": self._data(job),
            }
        )

    async def _list(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        self.lists.append(dict(request.query))
        try:
            page = max(1, int(request.query.get("pageNum", "1")))
            size = min(500, max(1, int(request.query.get("pageSize", "30"))))
        except ValueError:
            return _kling_error(400, 1201, "pageNum and pageSize must be integers")
        jobs = sorted(
            (j for j in self.jobs.values() if j.extra["kind"] == kind),
            key=lambda j: j.created_at,
            reverse=True,
        )
        external = request.query.get("external_task_id")
        if external:
            jobs = [j for j in jobs if j.body.get("external_task_id") == external]
        chosen = jobs[(page - 1) * size : page * size]
        return web.json_response(
            {
                "code": 0,
                "message": "SUCCEED",
                "request_id": uuid.uuid4().hex,
                "data": [self._data(j) for j in chosen],
            }
        )

    async def send_callback(self, job_id: str, *, body: bytes | None = None) -> int:
        """POST the task object to the job's `callback_url`; the receiver's HTTP status."""
        job = self.jobs[job_id]
        self._skip_queue(job)
        return await self._post_callback(
            job.body["callback_url"], json.dumps(self._data(job)).encode() if body is None else body
        )

    async def _file(self, request: web.Request) -> web.Response:
        return self._download(request.match_info["name"].removesuffix(".mp4"), request)


# --- Seedance on ModelArk --------------------------------------------------------------------


def _ark_error(
    status: int, code: str, message: str, *, param: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    error = {"code": code, "message": message, "param": param, "type": "BadRequest"}
    return web.json_response({"error": error}, status=status, headers=headers)


class FakeSeedanceServer(_FakeServer):
    """ModelArk's content generation tasks: create, get, delete (see the module docstring)."""

    TASKS = "/api/v3/contents/generations/tasks"

    async def _list_tasks(self, request: web.Request) -> web.Response:
        return web.json_response({"items": [], "total": len(self.jobs)})

    def __init__(self, *, run_seconds: float = 0.5, slow_seconds: float = 0.5) -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.api_key = ARK_API_KEY
        self.deletes: list[str] = []

    @property
    def base_url(self) -> str:
        return self.origin

    def file_url(self, job_id: str) -> str:
        return f"{self.origin}/files/{job_id}.mp4"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post(self.TASKS, self._create)
        app.router.add_get(self.TASKS, self._list_tasks)
        app.router.add_get(f"{self.TASKS}/{{id}}", self._get)
        app.router.add_delete(f"{self.TASKS}/{{id}}", self._delete)
        app.router.add_get("/files/{name}", self._file)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/v3/"):
            sent = request.headers.get("Authorization", "")
            if sent != f"Bearer {self.api_key}":
                if request.method == "POST":
                    self.create_attempts.append({"unauthorized": True})
                # Echo the key the way careless providers do, so tests prove adapters redact.
                shown = sent.removeprefix("Bearer ") or "(none)"
                return web.json_response(
                    {
                        "error": {
                            "code": "AuthenticationError",
                            "message": f"The API key {shown} in the request is missing or invalid.",
                            "param": "",
                            "type": "Unauthorized",
                        }
                    },
                    status=401,
                )
        return await handler(request)

    @staticmethod
    def _invalid(body: dict[str, Any]) -> tuple[str, str] | None:
        """(param, message) of the first invalid field; null fields count as not sent."""
        unknown = sorted(set(body) - ARK_CREATE_FIELDS)
        if unknown:
            return unknown[0], f"unknown parameter {unknown[0]}"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model", "model is required"
        content = body.get("content")
        if not isinstance(content, list) or not content:
            return "content", "content must be a non-empty list"
        texts = [c for c in content if isinstance(c, dict) and c.get("type") == "text"]
        if not texts or not isinstance(texts[0].get("text"), str):
            return "content", "content needs a text item"
        for item in content:
            if not isinstance(item, dict) or item.get("type") not in ("text", *ARK_ROLES):
                return "content", "content items are text, image_url, video_url or audio_url"
            kind = item["type"]
            if kind == "text":
                continue
            if item.get("role") not in ARK_ROLES[kind]:
                return "content.role", f"{kind} needs a role: {', '.join(ARK_ROLES[kind])}"
            holder = item.get(kind)
            url = holder.get("url") if isinstance(holder, dict) else None
            if kind == "image_url" and not _image_data_uri(url):
                return "content.image_url", "image_url.url must be a URL or a base64 data URI"
        shortest, longest, resolutions = ARK_MODELS[body["model"]]
        if body.get("ratio", "16:9") not in ARK_RATIOS:
            return "ratio", "ratio is not supported"
        if body.get("resolution", "720p") not in resolutions:
            return "resolution", f"resolution must be one of {', '.join(resolutions)}"
        duration = body.get("duration", 5)
        if isinstance(duration, bool) or not isinstance(duration, int) or not (
            duration == -1 or shortest <= duration <= longest
        ):
            return "duration", f"duration must be an integer from {shortest} to {longest}, or -1"
        for flag in ("generate_audio", "watermark", "return_last_frame", "camera_fixed", "draft"):
            if flag in body and not isinstance(body[flag], bool):
                return flag, f"{flag} must be a boolean"
        return None

    async def _create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body is None:
            self.create_attempts.append({})
            return _ark_error(400, "InvalidParameter", "The request body must be a JSON object.")
        # The Ark SDK sends every field create() was not given as null: ModelArk takes a null
        # as "not set" (the shipping SDK wins over docs that never show a null).
        body = {key: value for key, value in body.items() if value is not None}
        self.create_attempts.append(body)
        content = body.get("content") if isinstance(body.get("content"), list) else []
        prompt = next(
            (
                c["text"]
                for c in content
                if isinstance(c, dict)
                and c.get("type") == "text"
                and isinstance(c.get("text"), str)
            ),
            "",
        )
        self._creates_per_prompt[prompt] += 1
        if "[429-submit]" in prompt and self._creates_per_prompt[prompt] == 1:
            return _ark_error(429, "RateLimitExceeded.EndpointRPMExceeded", "Request rate limit exceeded.",
                              headers={"Retry-After": "1"})
        if "[input-sensitive]" in prompt:
            return _ark_error(400, "InputTextSensitiveContentDetected", ARK_INPUT_SENSITIVE)
        if isinstance(body.get("model"), str) and body["model"] not in ARK_MODELS:
            self.create_attempts[-1] = {**body, "refused": "model"}
            return _ark_error(
                404, "InvalidEndpointOrModel.NotFound",
                f"The model or endpoint {body['model']} does not exist or you do not have "
                "access to it.", param="model",
            )
        problem = self._invalid(body)
        if problem is not None:
            param, message = problem
            self.create_attempts[-1] = {**body, "refused": param}
            return _ark_error(400, "InvalidParameter", message, param=param)
        job = FakeJob(
            id=f"cgt-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:5]}",
            prompt=prompt,
            model=str(body["model"]),
            body=body,
            created_at=time.time(),
        )
        self.jobs[job.id] = job
        self.submits.append(body)
        await self._slow_if_asked(job)
        return web.json_response({"id": job.id})

    def _task(self, job: FakeJob) -> dict[str, Any]:
        stage = _stage(self, job, ("[output-sensitive]", "[expired]"))
        status = {
            "queued": "queued",
            "in_progress": "running",
            "completed": "succeeded",
            "failed": "failed",
            "cancelled": "cancelled",
        }[stage]
        if status == "failed" and job.has("[expired]"):
            status = "expired"
        task: dict[str, Any] = {
            "id": job.id,
            "model": job.model,
            "status": status,
            "error": None,
            "created_at": int(job.created_at),
            "updated_at": int(time.time()),
            "ratio": job.body.get("ratio", "16:9"),
            "resolution": job.body.get("resolution", "720p"),
            "duration": job.body.get("duration", 5),
            "framespersecond": 24,
        }
        if status == "succeeded":
            task["content"] = {"video_url": self.file_url(job.id)}
        if status == "failed":
            task["error"] = {
                "code": "OutputVideoSensitiveContentDetected",
                "message": ARK_OUTPUT_SENSITIVE,
            }
        if status in ("succeeded", "failed"):
            task["usage"] = {"completion_tokens": 108900, "total_tokens": 108900}
        return task

    async def _get(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None:
            return _ark_error(404, "ResourceNotFound", f"The task {job_id} was not found.")
        return web.json_response(self._task(job))

    async def _delete(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None:
            return _ark_error(404, "ResourceNotFound", f"The task {job_id} was not found.")
        status = self._task(job)["status"]
        if status == "queued":
            job.cancelled = True
            self.cancels.append(job_id)
        elif status == "running":
            return _ark_error(
                400, "InvalidParameter.TaskStatus", "A running task cannot be cancelled."
            )
        else:
            del self.jobs[job_id]
            self.deletes.append(job_id)
        return web.json_response({})

    async def send_callback(self, job_id: str, *, body: bytes | None = None) -> int:
        """POST the task object to the job's `callback_url`; the receiver's HTTP status."""
        job = self.jobs[job_id]
        self._skip_queue(job)
        return await self._post_callback(
            job.body["callback_url"], json.dumps(self._task(job)).encode() if body is None else body
        )

    async def _file(self, request: web.Request) -> web.Response:
        return self._download(request.match_info["name"].removesuffix(".mp4"), request)
