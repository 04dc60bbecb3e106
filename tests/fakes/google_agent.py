"""Local fake of Veo on Google's Agent Platform (reference 2026-12 §1a), with its OAuth token
endpoint and the Cloud Storage media download, scripted by prompt markers.

Routes (base URL = origin + `/v1`, like `https://{location}-aiplatform.googleapis.com/v1`):
    POST /token                      the OAuth token endpoint a service-account file's `token_uri`
                                     points at: a JWT-bearer grant whose assertion must be signed
                                     by the file's key (RS256, kid, iss, Google's audience, scope)
    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning
    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:fetchPredictOperation
    GET  /v1/publishers/google/models/{m}             the model lookup `doctor` makes
    GET  /storage/v1/b/{bucket}/o/{object}?alt=media  a `gcsUri` result's bytes
Every `/v1/` and `/storage/` request needs `Authorization: Bearer <a token this fake issued,
unexpired>` (else 401, echoing what was sent: Google does not, so tests prove redaction).

Bodies are checked the way google-genai 3.6's types (`GenerateVideosConfig`,
`GenerateVideosSource`, `Image`, strict) and the Agent Platform's docs check them: unknown
fields, `durationSeconds` or `sampleCount` that are not integers, booleans that are not
booleans, and values outside 4/6/8 s, 16:9/9:16 and 720p/1080p/4k (Lite: no 4k) → 400.

Markers (in `instances[0].prompt`):
    [429-submit]     the first create for this prompt → 429 RESOURCE_EXHAUSTED with a
                     google.rpc.RetryInfo `retryDelay` of `retry_delay`
    [slow-submit]    the create makes the operation, then waits `slow_seconds` to answer
    [stuck]          never done
    [rai]            done, no video, raiMediaFilteredCount 1 with a reason
    [op-error]       done with error {code: 13}
    [prompt-refused] done with error {code: 3} about the usage guidelines
    [403-poll]       every fetchPredictOperation → 403 PERMISSION_DENIED
    [gcs]            the video comes as a `gcsUri` (as it does when `storageUri` is sent)
    [download-502]   (implies [gcs]) the first media download → 502
    [expired]        (implies [gcs]) every media download → 404
    [5xx-poll] / [malformed]   the shared poll faults of tests.fakes.providers
Otherwise the video comes inline as `bytesBase64Encoded`, as it does without `storageUri`.

Extension (reference 2026-12 §1a; google-genai's `_GenerateVideosSource_to_vertex`):
`instances[0].video` = `{bytesBase64Encoded | gcsUri, mimeType: "video/mp4"}`, the prompt
optional, no `image` beside it, `durationSeconds` absent or 7 (each call adds 7 s), the
resolution rule for 8-second videos not applied. A `gcsUri` must name a finished result of
this fake. When the input's length can be read (an MP4 `mvhd`), an input outside 1-30 s is
refused. The finished operation's video is `make_video(body)` when a test sets that callable
(e.g. real MP4s of the input's length + 7 s), else the usual `video_bytes(name)`; every job's
`extra` says `input_seconds` (None when unreadable) and `added_seconds` for an extension.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.providers.google_auth import GoogleTokenSource
from bot.providers.veo import VeoProvider
from tests.fakes.providers import FakeJob, _FakeServer, video_bytes

PROJECT = "test-project"
LOCATION = "us-central1"
BUCKET = "fake-veo-output"
CLIENT_EMAIL = f"sora-bot@{PROJECT}.iam.gserviceaccount.com"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth signs for this audience whatever `token_uri` says
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

VEO_MODELS = {
    "veo-3.1-generate-001": "GA",
    "veo-3.1-fast-generate-001": "GA",
    "veo-3.1-lite-generate-001": "PUBLIC_PREVIEW",
}
RAI_REASON = (
    "Unable to generate videos because the prompt contains a celebrity likeness. "
    "You have not been charged for this request. Support codes: 29310472"
)
PROMPT_REFUSED = (
    "The prompt could not be submitted. This prompt contains sensitive words that violate "
    "Google's Responsible AI practices. Try rephrasing the prompt. Support codes: 17301594"
)
# camelCase names of what google-genai's `_GenerateVideosConfig_to_vertex` puts in `parameters`
PARAMETER_NAMES = frozenset({
    "sampleCount", "storageUri", "fps", "durationSeconds", "seed", "aspectRatio", "resolution",
    "personGeneration", "pubsubTopic", "negativePrompt", "enhancePrompt", "generateAudio",
    "compressionQuality", "resizeMode",
})
INSTANCE_NAMES = frozenset({"prompt", "image", "lastFrame", "video", "referenceImages", "mask"})
IMAGE_NAMES = frozenset({"bytesBase64Encoded", "gcsUri", "mimeType"})
_INTS = ("sampleCount", "durationSeconds", "fps", "seed")
_BOOLS = ("enhancePrompt", "generateAudio")
_STRS = ("storageUri", "aspectRatio", "resolution", "personGeneration", "pubsubTopic",
         "negativePrompt", "compressionQuality", "resizeMode")
_GCS_MARKERS = ("[gcs]", "[download-502]", "[expired]")
VIDEO_NAMES = frozenset({"bytesBase64Encoded", "gcsUri", "mimeType"})
EXTEND_ADDS_S = 7
EXTEND_INPUT_S = (1.0, 30.0)
MakeVideo = Callable[[dict[str, Any]], bytes]


def video_of(job: FakeJob, make_video: MakeVideo | None) -> bytes:
    """A finished job's video: `make_video(body)` (made once, then kept), else video_bytes."""
    if make_video is None:
        return video_bytes(job.id)
    if "video" not in job.extra:
        job.extra["video"] = make_video(job.body)
    return job.extra["video"]


@functools.cache
def signing_key() -> rsa.RSAPrivateKey:
    """One RSA key per test run: making a 2048-bit key costs tens of milliseconds."""
    return new_rsa_key()


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def google_error(status: int, code_name: str, message: str, **extra: Any) -> web.Response:
    error = {"code": status, "message": message, "status": code_name, **extra}
    return web.json_response({"error": error}, status=status)


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def mp4_seconds(data: bytes) -> float | None:
    """An MP4's length from its `moov/mvhd` box, or None when it has none (cheap: reads only
    box headers)."""
    moov = _box(data, 0, len(data), b"moov")
    mvhd = _box(data, moov[0], moov[1], b"mvhd") if moov else None
    if mvhd is None:
        return None
    start, end = mvhd
    try:
        version = data[start]
        if version == 1:
            timescale, duration = struct.unpack_from(">IQ", data, start + 20)
        else:
            timescale, duration = struct.unpack_from(">II", data, start + 12)
    except (IndexError, struct.error):
        return None
    return duration / timescale if timescale else None


def _box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(payload start, payload end) of the first `kind` box between start and end."""
    at = start
    while at + 8 <= end:
        size, name = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            if at + 16 > end:
                return None
            (size,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            return None
        if name == kind:
            return at + header, at + size
        at += size
    return None


def _decodes(data: Any) -> bool:
    if not isinstance(data, str) or not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class FakeAgentPlatformServer(_FakeServer):
    """Veo's predictLongRunning / fetchPredictOperation, the token endpoint and GCS media.

    Job ids (keys of `.jobs`, `.polls`, `.downloads`) are full operation names. `.tokens_issued`
    lists the claims of each accepted JWT grant; `.token_refusals` counts refused ones. Set
    `.refuse_grants` to an OAuth error code ("invalid_grant") to refuse every grant.
    """

    def __init__(
        self,
        *,
        run_seconds: float = 0.5,
        slow_seconds: float = 0.5,
        project: str = PROJECT,
        location: str = LOCATION,
        token_lifetime_s: int = 3599,
        retry_delay: str = "0.2s",
    ) -> None:
        super().__init__(run_seconds=run_seconds, slow_seconds=slow_seconds)
        self.project = project
        self.location = location
        self.bucket = BUCKET
        self.token_lifetime_s = token_lifetime_s
        self.retry_delay = retry_delay
        self.key_id = uuid.uuid4().hex
        self.tokens_issued: list[dict[str, Any]] = []
        self.token_refusals = 0
        self.refuse_grants: str | None = None
        self._issued: dict[str, float] = {}  # access token → expiry (epoch s)
        self._objects: dict[str, str] = {}  # GCS object name → operation name
        self._dir: Path | None = None
        # the bytes of each finished video: set it to make real MP4s; None = video_bytes(name)
        self.make_video: MakeVideo | None = None

    # --- the service account ---

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def token_uri(self) -> str:
        return f"{self.origin}/token"

    def service_account_info(self, *, key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
        """A service-account key file's contents whose `token_uri` is this fake."""
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": self.key_id,
            "private_key": _pem(key or signing_key()),
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }

    def write_service_account(self, path: Path, *, key: rsa.RSAPrivateKey | None = None) -> Path:
        path.write_text(json.dumps(self.service_account_info(key=key)), encoding="utf-8")
        return path

    @property
    def credentials_file(self) -> Path:
        """A key file for this fake, written once into a directory removed at stop()."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="fake-agent-platform-"))
        path = self._dir / "service-account.json"
        if not path.exists():
            self.write_service_account(path)
        return path

    def issue_token(self, lifetime_s: float | None = None) -> str:
        """A valid access token without a grant (for tests that bypass google-auth)."""
        token = f"ya29.fake-{len(self._issued) + 1}-{uuid.uuid4().hex[:12]}"
        self._issued[token] = time.time() + (self.token_lifetime_s if lifetime_s is None else lifetime_s)
        return token

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (as when a key is disabled)."""
        self._issued.clear()

    async def stop(self) -> None:
        await super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # --- routes ---

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._token)
        models = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"
        app.router.add_post(models + ":predictLongRunning", self._create)
        app.router.add_post(models + ":fetchPredictOperation", self._fetch)
        app.router.add_get("/v1/publishers/google/models/{model}", self._model)
        app.router.add_get("/storage/v1/b/{bucket}/o/{object}", self._media)

    def model_path(self, model: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/publishers/google/models/{model}"

    def gcs_uri(self, job: FakeJob) -> str:
        return f"gs://{self.bucket}/{job.extra['object']}"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(("/v1/", "/storage/")):
            sent = request.headers.get("Authorization", "")
            if request.path.startswith("/storage/"):
                self.download_auth.append(sent or None)
            token = sent.removeprefix("Bearer ") if sent.startswith("Bearer ") else None
            expiry = self._issued.get(token or "")
            if expiry is None or expiry <= time.time():
                if request.path.endswith(":predictLongRunning"):
                    self.create_attempts.append({"refused": "token"})
                return google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    f"token, login cookie or other valid authentication credential. (got {sent or 'none'})",
                )
        return await handler(request)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != JWT_GRANT:
            self.token_refusals += 1
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            self.token_refusals += 1
            return _oauth_error("invalid_request", "Missing required parameter: assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                signing_key().public_key(),
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidTokenError:
            self.token_refusals += 1
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if header.get("kid") != self.key_id or claims.get("iss") != CLIENT_EMAIL:
            self.token_refusals += 1
            return _oauth_error("invalid_grant", "Invalid JWT: the key or the issuer is unknown.")
        if CLOUD_PLATFORM_SCOPE not in str(claims.get("scope", "")).split():
            self.token_refusals += 1
            return _oauth_error("invalid_scope", "The cloud-platform scope is required.")
        if self.refuse_grants is not None:
            self.token_refusals += 1
            return _oauth_error(self.refuse_grants, "Account disabled.")
        self.tokens_issued.append(claims)
        return web.json_response(
            {"access_token": self.issue_token(), "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
        )

    def _wrong_place(self, request: web.Request) -> web.Response | None:
        project, location = request.match_info["project"], request.match_info["location"]
        if project != self.project or location != self.location:
            return google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}' "
                "(or it may not exist).",
            )
        return None

    @staticmethod
    def _unknown_model(path: str) -> web.Response:
        return google_error(
            404,
            "NOT_FOUND",
            f"Publisher Model `{path}` was not found or your project does not have access to it. "
            "Please ensure you are using a valid model version.",
        )

    async def _create(self, request: web.Request) -> web.Response:
        try:
            # read to the end from the stream: request.json() stops at aiohttp's 1 MB default
            body = json.loads(await request.content.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self.create_attempts.append({})
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        self.create_attempts.append(body)
        refusal = self._wrong_place(request)
        if refusal is not None:
            return refusal
        model = request.match_info["model"]
        if model not in VEO_MODELS:
            return self._unknown_model(self.model_path(model))
        instances = body.get("instances")
        instance = instances[0] if isinstance(instances, list) and instances else None
        prompt = instance.get("prompt") if isinstance(instance, dict) else None
        prompt = prompt if isinstance(prompt, str) else ""
        self._creates_per_prompt[prompt] += 1
        if "[429-submit]" in prompt and self._creates_per_prompt[prompt] == 1:
            return google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
                f"with base model: {model}. Please submit a quota increase request.",
                details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": self.retry_delay}],
            )
        problem = self.invalid_body(model, body)
        extra: dict[str, Any] = {}
        if problem is None and "video" in instance:
            problem, extra = self._extension_problem(instance["video"], body.get("parameters") or {})
        if problem is not None:
            self.create_attempts[-1] = {**body, "refused": problem}
            return google_error(400, "INVALID_ARGUMENT", problem)
        op_id = str(uuid.uuid4())
        name = f"{self.model_path(model)}/operations/{op_id}"
        job = FakeJob(
            id=name, prompt=prompt, model=model, body=body, created_at=time.time(),
            extra={"object": f"veo/{op_id}/sample_0.mp4", **extra},
        )
        self.jobs[name] = job
        self._objects[job.extra["object"]] = name
        self.submits.append(body)
        await self._slow_if_asked(job)
        return web.json_response({"name": name})

    @staticmethod
    def invalid_body(model: str, body: dict[str, Any]) -> str | None:
        """Why the create body is refused, or None (see the module docstring)."""
        unknown = set(body) - {"instances", "parameters", "labels"}
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.'
        instances = body.get("instances")
        if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
            return "instances must hold exactly one instance."
        instance = instances[0]
        unknown = set(instance) - INSTANCE_NAMES
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at \'instances[0]\'.'
        prompt, image, video = instance.get("prompt"), instance.get("image"), instance.get("video")
        if prompt is not None and not isinstance(prompt, str):
            return "instances[0].prompt must be a string."
        if not prompt and image is None and video is None:
            return "instances[0].prompt is required."
        if image is not None and video is not None:
            return "instances[0] takes an image or a video to extend, not both."
        if video is not None:
            if not isinstance(video, dict) or set(video) - VIDEO_NAMES:
                return "instances[0].video has unknown fields."
            if not _decodes(video.get("bytesBase64Encoded")) and not str(video.get("gcsUri", "")).startswith("gs://"):
                return "instances[0].video needs bytesBase64Encoded (base64) or a gs:// gcsUri."
            if video.get("mimeType") != "video/mp4":
                return "instances[0].video.mimeType must be video/mp4: Veo extends MP4 videos."
        if image is not None:
            if not isinstance(image, dict) or set(image) - IMAGE_NAMES:
                return "instances[0].image has unknown fields."
            if not _decodes(image.get("bytesBase64Encoded")) and not isinstance(image.get("gcsUri"), str):
                return "instances[0].image needs bytesBase64Encoded (base64) or gcsUri."
            if not str(image.get("mimeType", "")).startswith("image/"):
                return "instances[0].image.mimeType must be an image type."
        params = body.get("parameters", {})
        if not isinstance(params, dict):
            return "parameters must be an object."
        unknown = set(params) - PARAMETER_NAMES
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at \'parameters\'.'
        for name in _INTS:
            if name in params and not _is_int(params[name]):
                return f"parameters.{name} must be an integer."
        for name in _BOOLS:
            if name in params and not isinstance(params[name], bool):
                return f"parameters.{name} must be a boolean."
        for name in _STRS:
            if name in params and not isinstance(params[name], str):
                return f"parameters.{name} must be a string."
        if not 1 <= params.get("sampleCount", 1) <= 4:
            return "parameters.sampleCount must be from 1 to 4."
        extending = "video" in instance
        duration = params.get("durationSeconds", EXTEND_ADDS_S if extending else 8)
        if extending and duration != EXTEND_ADDS_S:
            return f"parameters.durationSeconds must be {EXTEND_ADDS_S} to extend a video: each call adds {EXTEND_ADDS_S} s."
        if not extending and duration not in (4, 6, 8):
            return "parameters.durationSeconds must be 4, 6 or 8."
        if params.get("aspectRatio", "16:9") not in ("16:9", "9:16"):
            return "parameters.aspectRatio must be 16:9 or 9:16."
        resolution = params.get("resolution", "720p")
        allowed = ("720p", "1080p") if "-lite-" in model else ("720p", "1080p", "4k")
        if resolution not in allowed:
            return f"parameters.resolution must be one of {', '.join(allowed)} for {model}."
        if resolution != "720p" and duration != 8 and not extending:
            return f"{resolution} is only supported for 8 second videos."
        if "storageUri" in params and not params["storageUri"].startswith("gs://"):
            return "parameters.storageUri must be a gs:// prefix."
        return None

    def _extension_problem(
        self, video: dict[str, Any], params: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        """(why the video to extend is refused, what the job records about it)."""
        data = self.input_video({"instances": [{"video": video}]})
        if data is None:
            return f"instances[0].video.gcsUri {video.get('gcsUri')} was not found.", {}
        seconds = mp4_seconds(data)
        low, high = EXTEND_INPUT_S
        if seconds is not None and not low <= seconds <= high:
            return (f"The video to extend is {seconds:.1f} s long; Veo extends videos of "
                    f"{low:g} to {high:g} seconds."), {}
        return None, {"input_seconds": seconds, "added_seconds": EXTEND_ADDS_S}

    def input_video(self, body: dict[str, Any]) -> bytes | None:
        """The bytes of the video a create body asks to extend (its own, or the finished result
        its `gcsUri` names), or None."""
        video = body["instances"][0].get("video")
        if not isinstance(video, dict):
            return None
        uri = video.get("gcsUri")
        if not isinstance(uri, str):
            return base64.b64decode(video["bytesBase64Encoded"])
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        source = self.jobs.get(self._objects.get(name, "")) if bucket == self.bucket else None
        return self.video_of(source) if source is not None and self._done(source) else None

    def video_of(self, job: FakeJob) -> bytes:
        return video_of(job, self.make_video)

    def _done(self, job: FakeJob) -> bool:
        return not job.has("[stuck]") and time.time() - job.created_at >= self.run_seconds

    def _in_gcs(self, job: FakeJob) -> bool:
        params = job.body.get("parameters") or {}
        return "storageUri" in params or any(job.has(m) for m in _GCS_MARKERS)

    async def _fetch(self, request: web.Request) -> web.Response:
        refusal = self._wrong_place(request)
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        resource = self.model_path(request.match_info["model"])
        name = body.get("operationName") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) != {"operationName"} or not isinstance(name, str):
            return google_error(400, "INVALID_ARGUMENT", "The body must be {\"operationName\": string}.")
        if not name.startswith(resource + "/operations/"):
            return google_error(400, "INVALID_ARGUMENT", "operationName does not belong to this resource.")
        fault = self._poll_fault(name)
        if fault is not None:
            return fault
        job = self.jobs.get(name)
        if job is None:
            return google_error(404, "NOT_FOUND", "The requested operation was not found.")
        if job.has("[403-poll]"):
            return google_error(403, "PERMISSION_DENIED", "The caller does not have permission")
        if not self._done(job):
            return web.json_response({"name": name})  # `done` is left out until it is true
        answer: dict[str, Any] = {"name": name, "done": True}
        response: dict[str, Any] = {
            "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
        }
        if job.has("[op-error]"):
            answer["error"] = {"code": 13, "message": "Video generation failed unexpectedly."}
            return web.json_response(answer)
        if job.has("[prompt-refused]"):
            answer["error"] = {"code": 3, "message": PROMPT_REFUSED}
            return web.json_response(answer)
        if job.has("[rai]"):
            response.update(raiMediaFilteredCount=1, raiMediaFilteredReasons=[RAI_REASON])
        elif self._in_gcs(job):
            response.update(raiMediaFilteredCount=0, videos=[{"gcsUri": self.gcs_uri(job), "mimeType": "video/mp4"}])
        else:
            data = base64.b64encode(self.video_of(job)).decode("ascii")
            response.update(raiMediaFilteredCount=0, videos=[{"bytesBase64Encoded": data, "mimeType": "video/mp4"}])
        answer["response"] = response
        return web.json_response(answer)

    async def _model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in VEO_MODELS:
            return self._unknown_model(f"publishers/google/models/{model}")
        return web.json_response({
            "name": f"publishers/google/models/{model}",
            "versionId": "001",
            "openSourceCategory": "PROPRIETARY",
            "launchStage": VEO_MODELS[model],
        })

    async def _media(self, request: web.Request) -> web.Response:
        name = self._objects.get(request.match_info["object"])
        job = self.jobs.get(name or "")
        if request.match_info["bucket"] != self.bucket or job is None:
            return google_error(404, "NOT_FOUND", "No such object.")
        self.downloads[job.id] += 1
        if not self._done(job) or job.has("[expired]"):
            return google_error(404, "NOT_FOUND", f"No such object: {self.bucket}/{job.extra['object']}")
        if job.has("[download-502]") and self.downloads[job.id] == 1:
            return web.Response(status=502, text="<html>502 Bad Gateway</html>", content_type="text/html")
        if request.query.get("alt") != "media":
            return web.json_response({"kind": "storage#object", "name": job.extra["object"], "bucket": self.bucket})
        return web.Response(body=self.video_of(job), content_type="video/mp4")


def make_veo_provider(
    server: FakeAgentPlatformServer, client: httpx.AsyncClient | None = None, **kw: Any
) -> VeoProvider:
    """The real adapter, with real google-auth tokens, pointed at `server`."""
    return VeoProvider(
        project=server.project,
        location=server.location,
        token=GoogleTokenSource(server.credentials_file),
        base_url=server.base_url,
        storage_base_url=server.origin,
        client=client,
        **kw,
    )
