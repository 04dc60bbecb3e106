"""Local fake fal.ai queue (reference §1.6, 2026-12 §6), with fal's signed webhooks.

Reuses the lifecycle, counters and poll faults of `tests.fakes.providers` (`[5xx-poll]`,
`[malformed]`, `[slow-submit]`, `[429-submit]`, `[download-502]` work here too). `.base_url`
is the origin: the queue host.

`FakeFalServer` (`Authorization: Key <key>`): POST `/{endpoint id}` queues and answers
`{request_id, response_url, status_url, cancel_url, queue_position}`, the four keys
fal-client 1.0.3 reads. Status, result and cancel live at those URLs only: under
`{url_prefix}/{app id}/requests/{id}`, where the app id is the endpoint id's first two
segments (three for `workflows/…`, `comfy/…`), the rule fal-client uses to rebuild them. A
`url_prefix` ("/elsewhere") makes them differ from any path an adapter could build.
    [content-policy]          create → 422 content_policy_violation
    [retryable-503]           the first status request → 503 with `X-Fal-Retryable: true`
    [needs-retry-503]         the first status request → 503 with `X-Fal-Needs-Retry: 1` only
    [completed-error=<type>]  COMPLETED with `error` and `error_type: <type>`; its result is a
                              500 with no retry header (what an adapter must not wait on)
    [result-422]              COMPLETED, but the result is a 422 content_policy_violation
    [result-500-final]        COMPLETED, the result a 500 with `X-Fal-Needs-Retry: 0`
    [stuck]                   IN_PROGRESS forever
  Bodies are checked against fal's published schemas for the endpoints in FAL_SCHEMAS
  (unknown fields refused, so a misspelt one can't pass silently); other endpoints keep the
  older rules (`duration` "5"/"10" for `fal-ai/kling-video…`, "4s"/"6s"/"8s" for
  `fal-ai/veo3…`, an int elsewhere). Headers fal-client validates before sending
  (`X-Fal-Queue-Priority` normal|low, `X-Fal-Request-Timeout` a number above 1) are refused
  with a 400 when wrong. Cancel works only while IN_QUEUE.

Counters besides the shared ones: `results` (result fetches per request id),
`status_requests`/`status_queries` (path and query of each status call),
`first_completed_poll` (which status call first answered COMPLETED), `jwks_auth` (the
Authorization header of each key-set fetch).

Webhooks: `send_callback(request_id)` posts `{request_id, gateway_request_id, status:
"OK"|"ERROR", payload, error}` to the submit's `?fal_webhook=` URL, signed as fal signs
(ED25519 over request id, user id, timestamp and the body's hex SHA-256, joined by
newlines; the signature hex). The public key is served at `jwks_url` (no auth). `signing=`
sends it unsigned, stale, signed with another key, or with a body changed after signing;
`rotate_signing_key()` replaces the key the set lists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.fakes.kling_seedance_fal import _image_data_uri
from tests.fakes.providers import FakeJob, _FakeServer, video_bytes

FAL_KEY = "test-fal-key-id:test-fal-key-secret-0123456789"
FAL_USER_ID = "fake-fal-user"
FAL_CONTENT_POLICY_MESSAGE = (
    "The content could not be processed because it contained material flagged by a content "
    "checker."
)
FAL_NAMESPACES = ("workflows", "comfy")
_COMPLETED_ERROR = re.compile(r"\[completed-error=([a-z_.]+)\]")

Signing = Literal["good", "none", "stale", "other-key", "tampered"]


def fal_app_id(model_path: str) -> str:
    """The fake's own reading of fal's rule: owner/alias, or namespace/owner/alias."""
    parts = model_path.split("/")
    return "/".join(parts[: 3 if parts[0] in FAL_NAMESPACES else 2])


# --- fal's published input schemas (fal model pages, read 2026-12) ----------------------------

Check = Callable[[Any], bool]


def _one_of(*values: Any) -> Check:
    return lambda v: v in values and type(v) is type(values[0])


def _is(kind: type) -> Check:
    if kind is bool:
        return lambda v: isinstance(v, bool)
    return lambda v: isinstance(v, kind) and not isinstance(v, bool)


def _number_in(low: float, high: float) -> Check:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high


_KLING_V3: dict[str, Check] = {
    "prompt": _is(str),
    "duration": _one_of(*(str(n) for n in range(3, 16))),
    "aspect_ratio": _one_of("16:9", "9:16", "1:1"),
    "generate_audio": _is(bool),
    "negative_prompt": _is(str),
    "cfg_scale": _number_in(0, 1),
}
_VEO_31: dict[str, Check] = {
    "prompt": _is(str),
    "aspect_ratio": _one_of("16:9", "9:16"),
    "duration": _one_of("4s", "6s", "8s"),
    "negative_prompt": _is(str),
    "resolution": _one_of("720p", "1080p", "4k"),
    "generate_audio": _is(bool),
    "seed": _is(int),
    "auto_fix": _is(bool),
}
# endpoint id -> (field checks, required fields)
FAL_SCHEMAS: dict[str, tuple[dict[str, Check], tuple[str, ...]]] = {
    "fal-ai/kling-video/v3/standard/text-to-video": (_KLING_V3, ("prompt",)),
    "fal-ai/kling-video/v3/pro/text-to-video": (_KLING_V3, ("prompt",)),
    "fal-ai/kling-video/v3/standard/image-to-video": (
        {**_KLING_V3, "start_image_url": _image_data_uri, "end_image_url": _image_data_uri},
        ("start_image_url",),
    ),
    "fal-ai/veo3.1": (_VEO_31, ("prompt",)),
    "fal-ai/veo3.1/fast": (_VEO_31, ("prompt",)),
}


def schema_problem(model: str, body: dict[str, Any]) -> str | None:
    """Why fal would refuse `body` for `model` (a 422), or None."""
    schema = FAL_SCHEMAS.get(model)
    if schema is not None:
        checks, required = schema
        for name in required:
            if name not in body:
                return f"field required: {name}"
        for name, value in body.items():
            check = checks.get(name)
            if check is None:
                return f"{name}: extra inputs are not permitted"
            if not check(value):
                return f"{name}: {value!r} is not a permitted value"
        return None
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return "field required: prompt"
    duration = body.get("duration")
    if model.startswith("fal-ai/kling-video"):
        if duration not in ("5", "10"):
            return "duration: value is not a valid enumeration member; permitted: '5', '10'"
    elif model.startswith("fal-ai/veo3"):
        if duration not in ("4s", "6s", "8s"):
            return "duration: permitted: '4s', '6s', '8s'"
    elif isinstance(duration, bool) or not isinstance(duration, int):
        return "duration: value is not a valid integer"
    if "image_url" in body and not _image_data_uri(body["image_url"]):
        return "image_url: not a URL or an image data URI"
    return None


# --- the server --------------------------------------------------------------------------


def _fal_detail(
    status: int, msg: str, type_: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"detail": [{"loc": ["body", "prompt"], "msg": msg, "type": type_}]}
    return web.json_response(body, status=status, headers=headers or {})


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


class FakeFalServer(_FakeServer):
    """fal's queue for any endpoint id (see the module docstring)."""

    def __init__(
        self, *, run_seconds: float = 0.5, slow_seconds: float = 0.5, url_prefix: str = ""
    ) -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.api_key = FAL_KEY
        self.url_prefix = url_prefix.rstrip("/")
        self.results: dict[str, int] = {}  # result fetches per request id
        self.status_requests: list[str] = []  # paths of status requests, to check the URL rule
        self.status_queries: list[dict[str, str]] = []
        self.first_completed_poll: dict[str, int] = {}  # request id -> the poll that first said COMPLETED
        self.jwks_auth: list[str | None] = []  # Authorization header of each key-set fetch
        self.signing_key = Ed25519PrivateKey.generate()

    @property
    def base_url(self) -> str:
        return self.origin

    @property
    def jwks_url(self) -> str:
        return f"{self.origin}/.well-known/jwks.json"

    def file_url(self, job_id: str) -> str:
        return f"{self.origin}/files/{job_id}.mp4"

    def requests_url(self, job: FakeJob) -> str:
        return f"{self.origin}{self.url_prefix}/{fal_app_id(job.model)}/requests/{job.id}"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/{app:.+}/requests/{id}/status", self._status)
        app.router.add_put("/{app:.+}/requests/{id}/cancel", self._cancel)
        app.router.add_get("/{app:.+}/requests/{id}", self._result)
        app.router.add_post("/{model:.+}", self._create)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(("/files/", "/.well-known/")):
            sent = request.headers.get("Authorization", "")
            if sent != f"Key {self.api_key}":
                if request.method == "POST":
                    self.create_attempts.append({"unauthorized": True})
                shown = sent.removeprefix("Key ") or "(none)"
                return web.json_response({"detail": f"Invalid credentials: {shown}"}, status=401)
        return await handler(request)

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_auth.append(request.headers.get("Authorization"))
        return web.json_response({"keys": [jwk_of(self.signing_key, kid=f"fake-fal-{len(self.jwks_auth)}")]})

    def rotate_signing_key(self) -> None:
        """fal rotates its key: the key set now lists only the new one."""
        self.signing_key = Ed25519PrivateKey.generate()

    @staticmethod
    def _header_problem(request: web.Request) -> str | None:
        """Headers fal-client validates before it sends them (`_headers.py`)."""
        priority = request.headers.get("X-Fal-Queue-Priority")
        if priority is not None and priority not in ("normal", "low"):
            return f"X-Fal-Queue-Priority must be normal or low, got {priority!r}"
        timeout = request.headers.get("X-Fal-Request-Timeout")
        if timeout is not None:
            try:
                if float(timeout) <= 1:
                    return "X-Fal-Request-Timeout must be greater than 1 second"
            except ValueError:
                return f"X-Fal-Request-Timeout must be a number, got {timeout!r}"
        webhook = request.query.get("fal_webhook")
        if webhook is not None and urlsplit(webhook).scheme not in ("http", "https"):
            return "fal_webhook must be an http(s) URL"
        return None

    async def _create(self, request: web.Request) -> web.Response:
        model = request.match_info["model"].strip("/")
        problem = self._header_problem(request)
        if problem is not None:
            self.create_attempts.append({"model": model, "refused": problem})
            return web.json_response({"detail": problem, "error_type": "bad_request"}, status=400)
        body = await _json_object(request)
        if body is None:
            self.create_attempts.append({"model": model, "refused": "not an object"})
            return _fal_detail(422, "body must be a JSON object", "value_error")
        self.create_attempts.append({**body, "model": model})
        if len([p for p in model.split("/") if p]) < 2:
            return web.json_response({"detail": f"Application '{model}' not found"}, status=404)
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
        self._creates_per_prompt[prompt] += 1
        if "[429-submit]" in prompt and self._creates_per_prompt[prompt] == 1:
            return web.json_response(
                {"detail": "Too many requests", "error_type": "concurrent_requests_limit"},
                status=429, headers={"Retry-After": "1", "X-Fal-Needs-Retry": "1"},
            )
        if "[content-policy]" in prompt:
            return _fal_detail(422, FAL_CONTENT_POLICY_MESSAGE, "content_policy_violation")
        problem = schema_problem(model, body)
        if problem is not None:
            self.create_attempts[-1]["refused"] = problem
            return _fal_detail(422, problem, "value_error")
        job = FakeJob(
            id=str(uuid.uuid4()), prompt=prompt, model=model, body=body, created_at=time.time(),
            extra={"fal_webhook": request.query.get("fal_webhook")},
        )
        self.jobs[job.id] = job
        self.submits.append({**body, "model": model})
        await self._slow_if_asked(job)
        base = self.requests_url(job)
        return web.json_response(
            {
                "request_id": job.id,
                "gateway_request_id": job.id,
                "response_url": base,
                "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel",
                "queue_position": 0,
            }
        )

    def _job_for(self, request: web.Request, suffix: str = "") -> FakeJob | None:
        """The job whose own URL this request used; any other path is fal's 404."""
        job = self.jobs.get(request.match_info["id"])
        if job is None or request.path != urlsplit(self.requests_url(job)).path + suffix:
            return None
        return job

    async def _status(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        self.status_requests.append(request.path)
        self.status_queries.append(dict(request.query))
        logs = request.query.get("logs")
        if logs is not None and logs not in ("0", "1", "true", "false"):
            return web.json_response({"detail": "logs must be a boolean"}, status=422)
        job = self.jobs.get(job_id)
        if job is not None and self.polls[job_id] == 0:
            if job.has("[retryable-503]"):
                self.polls[job_id] += 1
                return web.json_response(
                    {"detail": "Service temporarily unavailable"}, status=503,
                    headers={"X-Fal-Retryable": "true"},
                )
            if job.has("[needs-retry-503]"):
                self.polls[job_id] += 1
                return web.json_response(
                    {"detail": "Runner unavailable", "error_type": "runner_scheduling_failure"},
                    status=503, headers={"X-Fal-Needs-Retry": "1"},
                )
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self._job_for(request, "/status")
        if job is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        stage = job.stage(self.run_seconds)
        base = self.requests_url(job)
        if stage == "queued":
            waiting = sum(1 for j in self.jobs.values() if j.created_at < job.created_at)
            return web.json_response(
                {"status": "IN_QUEUE", "queue_position": waiting, "response_url": base}
            )
        if stage == "in_progress":
            return web.json_response({"status": "IN_PROGRESS", "logs": None, "response_url": base})
        answer: dict[str, Any] = {"status": "COMPLETED", "logs": None, "metrics": {}, "response_url": base}
        self.first_completed_poll.setdefault(job.id, self.polls[job.id])
        error_type = self._completed_error(job)
        if error_type is not None:
            answer |= {"error": f"Request failed: {error_type}", "error_type": error_type}
        return web.json_response(answer)

    @staticmethod
    def _completed_error(job: FakeJob) -> str | None:
        match = _COMPLETED_ERROR.search(job.prompt)
        return match.group(1) if match else None

    async def _result(self, request: web.Request) -> web.Response:
        job = self._job_for(request)
        if job is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        self.results[job.id] = self.results.get(job.id, 0) + 1
        stage = job.stage(self.run_seconds)
        if stage == "cancelled":
            return web.json_response({"detail": "Request was cancelled"}, status=400)
        if stage not in ("completed", "failed"):
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        error_type = self._completed_error(job)
        if error_type is not None:
            return web.json_response({"detail": "Request failed", "error_type": error_type}, status=500)
        if job.has("[result-422]"):
            return _fal_detail(
                422, FAL_CONTENT_POLICY_MESSAGE, "content_policy_violation",
                headers={"X-Fal-Retryable": "false"},
            )
        if job.has("[result-500-final]"):
            return _fal_detail(
                500, "The model crashed", "internal_server_error", headers={"X-Fal-Needs-Retry": "0"}
            )
        return web.json_response(
            {
                "video": {
                    "url": self.file_url(job.id),
                    "content_type": "video/mp4",
                    "file_name": "output.mp4",
                    "file_size": len(video_bytes(job.id)),
                },
                "seed": 42,
            }
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self._job_for(request, "/cancel")
        if job is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        if job.cancelled or job.served_polls > 1:
            # fal cancels only requests that are still waiting in the queue
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        job.cancelled = True
        self.cancels.append(job.id)
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    # --- webhooks ---

    def webhook_event(self, job: FakeJob) -> dict[str, Any]:
        ok = (
            job.finished_ok(self.run_seconds)
            and not job.has("[result-422]")
            and self._completed_error(job) is None
        )
        return {
            "request_id": job.id,
            "gateway_request_id": job.id,
            "status": "OK" if ok else "ERROR",
            "payload": {"video": {"url": self.file_url(job.id), "content_type": "video/mp4"}} if ok else None,
            "error": None if ok else "Request failed",
        }

    def signed_headers(
        self, request_id: str, body: bytes, *, timestamp: int | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> dict[str, str]:
        """fal's four webhook headers for `body` (fal's webhook docs)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        message = "\n".join([request_id, FAL_USER_ID, stamp, hashlib.sha256(body).hexdigest()])
        signature = (key or self.signing_key).sign(message.encode("utf-8"))
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": FAL_USER_ID,
            "X-Fal-Webhook-Timestamp": stamp,
            "X-Fal-Webhook-Signature": signature.hex(),
        }

    async def send_callback(
        self, job_id: str, *, body: bytes | None = None, signing: Signing = "good"
    ) -> int:
        """POST fal's webhook body to the job's `?fal_webhook=` URL; the receiver's HTTP status."""
        job = self.jobs[job_id]
        self._skip_queue(job)
        raw = json.dumps(self.webhook_event(job)).encode() if body is None else body
        headers: dict[str, str] = {}
        if signing == "stale":
            headers = self.signed_headers(job.id, raw, timestamp=int(time.time()) - 301)
        elif signing == "other-key":
            headers = self.signed_headers(job.id, raw, key=Ed25519PrivateKey.generate())
        elif signing in ("good", "tampered"):
            headers = self.signed_headers(job.id, raw)
        if signing == "tampered":
            raw = raw.replace(b'"ERROR"', b'"OK"') if b'"ERROR"' in raw else raw + b" "
        return await self._post_callback(job.extra["fal_webhook"], raw, headers)

    async def _file(self, request: web.Request) -> web.Response:
        return self._download(request.match_info["name"].removesuffix(".mp4"), request)


def jwk_of(key: Ed25519PrivateKey, *, kid: str) -> dict[str, str]:
    """The public JWK (RFC 8037) of an Ed25519 key, as fal's JWKS lists its keys."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}
