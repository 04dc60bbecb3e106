"""The adapter for fal.ai's queue (reference §1.6, 2026-12 §6): fal video models, offered as
`fal/<endpoint id>`, and the check of fal's signed webhooks."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.errors import (
    AmbiguousSubmit,
    ContentBlocked,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec
from bot.providers.http import (
    HttpAdapter,
    Op,
    error_for_exception,
    error_for_response,
    first_text,
    json_object,
    loose_json,
    parse_retry_after,
    redact,
)

log = logging.getLogger(__name__)

LABEL = "fal.ai"

CONTENT_POLICY = "content_policy_violation"
_DETAIL_LIMIT = 500
# fal's endpoint ids are owner/alias[/subpath]; these namespaces add a leading segment
# (the rule of fal's own clients: fal-client 1.0.3 `APP_NAMESPACES`).
_NAMESPACES = ("workflows", "comfy")

# The hosts the key may be sent to: fal's queue and API hosts, and the backup domain
# fal-client 1.0.3 falls back to (`_BACKUP_DOMAINS`: queue.fal.run -> queue.falrun.com).
# The configured queue host is allowed too (a proxy, or the tests' fake).
FAL_HOSTS = ("fal.run", "fal.ai", "falrun.com")


@dataclass(frozen=True, slots=True)
class FalRoute:
    """How a family of fal models wants its input; fal's schemas differ per model."""

    # "string": "5" (Kling's enum), "seconds": "8s" (Veo's enum), "int": 5
    duration: Literal["string", "seconds", "int"]
    resolution: bool = False  # takes `resolution` ("720p", "1080p", "4k")
    audio: bool = False  # takes `generate_audio`
    image_field: str = "image_url"  # where an image-to-video endpoint wants the first frame


# Keyed by a prefix of the endpoint id; the longest matching prefix wins. Models not listed
# get integer seconds, the most common shape in fal's schemas. From fal's model pages
# (llms.txt and the model API reference, read 2026-12); fal-client has no per-model types,
# so a model whose schema differs needs a line here (or a prefix of its own).
ROUTES: dict[str, FalRoute] = {
    "fal-ai/kling-video": FalRoute(duration="string"),
    # Kling 3.0: duration "3"-"15", generate_audio, no resolution field (the tier sets it);
    # image-to-video takes `start_image_url`, except the turbo endpoints (`image_url`)
    "fal-ai/kling-video/v3": FalRoute(duration="string", audio=True, image_field="start_image_url"),
    "fal-ai/kling-video/v3/turbo": FalRoute(duration="string", audio=True),
    # Veo 3 and 3.1 (…/fast, …/lite): duration "4s"/"6s"/"8s", resolution 720p/1080p/4k
    "fal-ai/veo3": FalRoute(duration="seconds", resolution=True, audio=True),
}
DEFAULT_ROUTE = FalRoute(duration="int")


def route_for(model_path: str) -> FalRoute:
    matches = [prefix for prefix in ROUTES if model_path.startswith(prefix)]
    return ROUTES[max(matches, key=len)] if matches else DEFAULT_ROUTE


def fal_duration(route: FalRoute, duration_s: int) -> str | int:
    if route.duration == "string":
        return str(duration_s)
    if route.duration == "seconds":
        return f"{duration_s}s"
    return int(duration_s)


def request_body(spec: VideoSpec) -> dict[str, Any]:
    """The JSON body for `spec`'s endpoint (see ROUTES)."""
    route = route_for(spec.provider_model.strip("/"))
    payload: dict[str, Any] = {
        "prompt": spec.prompt,
        "duration": fal_duration(route, spec.duration_s),
        "aspect_ratio": spec.aspect_ratio,
    }
    if route.resolution:
        payload["resolution"] = spec.resolution
    if route.audio and spec.audio is not None:
        payload["generate_audio"] = spec.audio
    if spec.image is not None:
        encoded = base64.b64encode(spec.image.data).decode("ascii")
        payload[route.image_field] = f"data:{spec.image.mime_type};base64,{encoded}"
    return payload


def app_id(model_path: str) -> str:
    """The queue's app id: the first two segments of the path (three for `workflows/…`).

    Only ids stored before the submit answer's URLs were kept are polled under
    `{queue}/{app id}/requests/{id}`; newer ones follow the URLs fal returned.
    """
    parts = model_path.strip("/").split("/")
    size = 3 if parts[0] in _NAMESPACES else 2
    if len(parts) < size or not all(parts[:size]):
        raise InvalidProviderRequest(
            f"{LABEL} model paths look like owner/model[/subpath].",
            detail=f"model path {model_path!r} has too few segments",
        )
    return "/".join(parts[:size])


# --- the provider job id -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FalJob:
    """What a poll needs, all of it kept in the one stored provider job id.

    The id is "|"-joined and ends with the request id (callbacks match on that suffix):
      "<model path>|<request id>"                  stored before URLs were kept: rebuilt
      "<model path>|<response url>|<request id>"   status and cancel are …/status, …/cancel
      "<model path>|<response url>|<status url>|<cancel url>|<request id>"   otherwise
    """

    model_path: str
    request_id: str
    response_url: str | None = None
    status_url: str | None = None
    cancel_url: str | None = None

    def encode(self) -> str:
        if self.response_url is None:
            return f"{self.model_path}|{self.request_id}"
        status = self.status_url or f"{self.response_url}/status"
        cancel = self.cancel_url or f"{self.response_url}/cancel"
        urls = [self.response_url]
        if (status, cancel) != (f"{self.response_url}/status", f"{self.response_url}/cancel"):
            urls += [status, cancel]
        return "|".join([self.model_path, *(_no_bar(u) for u in urls), self.request_id])


def _no_bar(url: str) -> str:
    # "|" separates the fields; in a URL it is the same as its percent-encoding
    return url.replace("|", "%7C")


def parse_job_id(provider_job_id: str) -> FalJob:
    """The FalJob of a provider job id in any of the forms FalJob lists."""
    parts = provider_job_id.split("|")
    if len(parts) not in (2, 3, 5) or not all(parts):
        raise InvalidProviderRequest(
            f"{LABEL} job id is not one of ours.", detail=f"bad job id {provider_job_id!r}"
        )
    model_path, request_id = parts[0], parts[-1]
    if len(parts) == 2:
        return FalJob(model_path, request_id)
    response = parts[1]
    if len(parts) == 3:
        return FalJob(model_path, request_id, response, f"{response}/status", f"{response}/cancel")
    return FalJob(model_path, request_id, response, parts[2], parts[3])


def job_id_for(model_path: str, request_id: str) -> str:
    return FalJob(model_path.strip("/"), request_id).encode()


def split_job_id(provider_job_id: str) -> tuple[str, str]:
    """(model path, request id) of a provider job id in any of its forms."""
    job = parse_job_id(provider_job_id)
    return job.model_path, job.request_id


def is_fal_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == name or host.endswith(f".{name}") for name in FAL_HOSTS)


# --- fal's error vocabulary ----------------------------------------------------------------

# Model error types that blame the input (fal's "Model Errors" reference, 2026-12); the
# request error types (request_timeout, runner_*, internal_error…) are the model's failure.
# fal-client 1.0.3 only carries `error_type` along (Completed.error_type, FalClientHTTPError
# from the body or X-Fal-Error-Type) and names none of them.
INPUT_ERROR_TYPES = frozenset({
    "bad_request", "value_error", "missing", "image_too_small", "image_too_large",
    "image_load_error", "file_download_error", "face_detection_error", "file_too_large",
    "greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of",
    "sequence_too_short", "sequence_too_long", "one_of", "feature_not_supported",
    "invalid_archive", "archive_file_count_below_minimum", "archive_file_count_exceeds_maximum",
    "audio_duration_too_long", "audio_duration_too_short", "unsupported_audio_format",
    "unsupported_image_format", "unsupported_video_format", "video_duration_too_long",
    "video_duration_too_short",
})
CANCELLED_ERROR_TYPES = frozenset({"client_cancelled"})


def kind_for_error_types(types: frozenset[str]) -> FailureKind:
    """Content policy → BLOCKED_OUTPUT, input validation → INVALID_REQUEST, else GENERATION_FAILED."""
    if CONTENT_POLICY in types:
        return FailureKind.BLOCKED_OUTPUT
    if any(t in INPUT_ERROR_TYPES or t.startswith(("value_error.", "type_error")) for t in types):
        return FailureKind.INVALID_REQUEST
    return FailureKind.GENERATION_FAILED


def fal_errors(body: Any) -> tuple[frozenset[str], str]:
    """(error types, joined messages) of fal's error shapes.

    Model errors: `{detail: [{loc, msg, type}]}`; request errors: `{detail: "text",
    error_type}`; a COMPLETED status: `{error: "text", error_type}`.
    """
    if not isinstance(body, Mapping):
        return frozenset(), ""
    types: set[str] = set()
    error_type = body.get("error_type")
    if isinstance(error_type, str) and error_type.strip():
        types.add(error_type.strip())
    detail = body.get("detail")
    if detail is None:
        detail = body.get("error")
    if isinstance(detail, str):
        return frozenset(types), detail.strip()
    items = detail if isinstance(detail, list) else [detail]
    messages: list[str] = []
    for item in items:
        if isinstance(item, str) and item.strip():
            messages.append(item.strip())
        elif isinstance(item, Mapping):
            kind = item.get("type")
            if isinstance(kind, str) and kind:
                types.add(kind)
            message = item.get("msg") or item.get("message")
            if isinstance(message, str) and message.strip():
                messages.append(message.strip())
    return frozenset(types), "; ".join(messages)


_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def retryable_header(headers: Mapping[str, str]) -> bool | None:
    """Whether fal says retrying may help; None when it doesn't say.

    `X-Fal-Needs-Retry` ("1"/"0" in fal's retries reference, "true"/"false" from fal's own
    app SDK) takes precedence over `X-Fal-Retryable` ("true"/"false", fal's errors
    reference), as fal documents for its own retries. fal-client 1.0.3 reads neither: it
    retries 408, 409, 429 and ingress 502/503/504 (no x-fal-request-id, nginx in the body).
    """
    lowered = {k.lower(): v.strip().lower() for k, v in headers.items()}
    for name, yes, no in (("x-fal-needs-retry", _TRUE, _FALSE), ("x-fal-retryable", ("true",), ("false",))):
        value = lowered.get(name)
        if value in yes:
            return True
        if value in no:
            return False
    return None


def _describe(types: frozenset[str], message: str) -> str:
    return ": ".join(t for t in (", ".join(sorted(types)), message) if t)


def parse_queue_status(body: Any) -> ProviderStatus:
    """A queue status answer → ProviderStatus. Raises ProviderUnavailable on a non-object.

    A plain COMPLETED only means the request left the queue: it reads as RUNNING here, and
    the result (see `parse_result`) decides. A COMPLETED carrying `error`/`error_type` is
    the final failure already (fal-client's `Completed.error`): no result is needed.
    """
    if not isinstance(body, Mapping):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"status body is a {type(body).__name__}, not an object",
        )
    raw = first_text(body, ("status",))
    word = raw.upper() if raw else None
    if word == "IN_QUEUE":
        position = body.get("queue_position")
        if isinstance(position, int) and not isinstance(position, bool):
            raw = f"IN_QUEUE (position {position})"
        return ProviderStatus(state=ProviderState.QUEUED, raw_status=raw)
    if word == "IN_PROGRESS":
        return ProviderStatus(state=ProviderState.RUNNING, raw_status=raw)
    if word == "COMPLETED":
        error = body.get("error")
        error_type = body.get("error_type")
        if _filled(error) or _filled(error_type):
            types, message = fal_errors({"error": error, "error_type": error_type})
            return _failed(types, message or "error", raw_status="COMPLETED")
        return ProviderStatus(state=ProviderState.RUNNING, raw_status=raw)
    if word in ("CANCELED", "CANCELLED"):
        # Only in a third-party schema (reference §1.6); harmless to understand.
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status=raw)
    if word in ("FAILED", "ERROR"):
        types, message = fal_errors(body)
        return _failed(types, message or f"status {raw}", raw_status=raw)
    return ProviderStatus(state=ProviderState.UNKNOWN, raw_status=raw)


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _failed(types: frozenset[str], message: str, *, raw_status: str | None) -> ProviderStatus:
    if types & CANCELLED_ERROR_TYPES:
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status=raw_status)
    detail = _describe(types, message)[:_DETAIL_LIMIT]
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind_for_error_types(types), detail=detail),
        raw_status=raw_status,
    )


def is_completed(body: Any) -> bool:
    raw = first_text(body, ("status",)) if isinstance(body, Mapping) else None
    return raw is not None and raw.upper() == "COMPLETED"


def parse_result(body: Any) -> ProviderStatus:
    """A 2xx result body → SUCCEEDED with `video.url`, else FAILED. Non-objects are transient."""
    if not isinstance(body, Mapping):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable result.",
            detail=f"result body is a {type(body).__name__}, not an object",
        )
    url = first_text(body, ("video.url",))
    if url is not None and url.startswith(("http://", "https://")):
        return ProviderStatus(state=ProviderState.SUCCEEDED, video_url=url, raw_status="COMPLETED")
    types, message = fal_errors(body)
    kind = FailureKind.BLOCKED_OUTPUT if CONTENT_POLICY in types else FailureKind.GENERATION_FAILED
    detail = _describe(types, message) or "no_output"
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind, detail=detail[:_DETAIL_LIMIT]),
        raw_status="COMPLETED",
    )


def failed_result(status_code: int, body: Any, *, retryable: bool | None) -> ProviderStatus | None:
    """The verdict of a result fetch refused with `status_code`, or None when it is none.

    4xx (but auth and rate limits) is the job's own failure: a content refusal is
    BLOCKED_OUTPUT, another 422 INVALID_REQUEST. A 5xx is a failure only when fal sent its
    error JSON and says not to retry (`retryable_header`); otherwise the poll is retried,
    as it is whenever fal says a retry may help.
    """
    if status_code in (401, 403, 408, 429) or status_code < 400 or retryable is True:
        return None
    types, message = fal_errors(body)
    detail = (_describe(types, message) or f"HTTP {status_code}")[:_DETAIL_LIMIT]
    if status_code >= 500 and (retryable is not False or not (types or message)):
        return None
    if CONTENT_POLICY in types:
        kind = FailureKind.BLOCKED_OUTPUT
    elif (types & CANCELLED_ERROR_TYPES or "cancel" in message.lower()) and status_code < 500:
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status="COMPLETED")
    elif status_code == 422:
        kind = FailureKind.INVALID_REQUEST
    else:
        kind = kind_for_error_types(types)
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind, detail=f"HTTP {status_code}: {detail}"[:_DETAIL_LIMIT]),
        raw_status="COMPLETED",
    )


# --- webhooks ------------------------------------------------------------------------------

JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
WEBHOOK_TOLERANCE_S = 300  # fal's docs: reject timestamps more than five minutes off
JWKS_TTL_S = 24 * 3600.0  # fal's docs: the key set may be cached for up to 24 hours
JWKS_REFETCH_S = 60.0  # a signature no cached key verifies fetches the set again, at most this often
_HEX = re.compile(r"[0-9a-fA-F]+")


class FalSignatureError(Exception):
    """A webhook that is unsigned, stale or badly signed: refuse it."""


class FalKeysUnavailable(Exception):
    """fal's key set could not be had: the webhook can't be checked now (fal retries it)."""


class FalWebhookVerifier:
    """Checks fal's ED25519 webhook signatures against its published key set (JWKS).

    The signed message is the X-Fal-Webhook-Request-Id, -User-Id and -Timestamp headers and
    the hex SHA-256 of the raw body, joined by newlines (fal's webhook docs; fal-client 1.0.3
    has no webhook code); the signature is hex in X-Fal-Webhook-Signature. Deliveries name
    no key id, so every key of the set is tried. The set is fetched once and cached
    (`JWKS_TTL_S`); a signature none of it verifies fetches it again (a rotated key), at most
    once per `JWKS_REFETCH_S`. The fetch carries no fal key.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        jwks_url: str = JWKS_URL,
        clock: Callable[[], float] = time.time,
        ttl_s: float = JWKS_TTL_S,
        refetch_s: float = JWKS_REFETCH_S,
    ) -> None:
        self._client = client
        self.jwks_url = jwks_url
        self._clock = clock
        self._ttl_s = ttl_s
        self._refetch_s = refetch_s
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # key-set fetches made, for tests and logs

    async def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Return when the webhook is fal's; raise FalSignatureError or FalKeysUnavailable."""
        message, signature = self._message(headers, body)
        keys = await self._current_keys(refresh=False)
        if _any_verifies(keys, signature, message):
            return
        keys = await self._current_keys(refresh=True)
        if not _any_verifies(keys, signature, message):
            raise FalSignatureError("no key of fal's set verifies the signature")

    def _message(self, headers: Mapping[str, str], body: bytes) -> tuple[bytes, bytes]:
        lowered = {k.lower(): v for k, v in headers.items()}
        names = ("request-id", "user-id", "timestamp", "signature")
        values = [lowered.get(f"x-fal-webhook-{name}", "").strip() for name in names]
        request_id, user_id, timestamp, signature_hex = values
        if not all(values):
            raise FalSignatureError("unsigned: an X-Fal-Webhook-* header is missing")
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > WEBHOOK_TOLERANCE_S:
            raise FalSignatureError(f"timestamp {timestamp[:20]!r} is more than 300 s off")
        if len(signature_hex) != 128 or not _HEX.fullmatch(signature_hex):
            raise FalSignatureError("the signature is not 64 bytes of hex")
        digest = hashlib.sha256(body).hexdigest()
        message = "\n".join([request_id, user_id, timestamp, digest]).encode("utf-8")
        return message, bytes.fromhex(signature_hex)

    async def _current_keys(self, *, refresh: bool) -> list[Ed25519PublicKey]:
        async with self._lock:  # one fetch for many webhooks arriving together
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            if age is not None and (age < self._ttl_s if not refresh else age < self._refetch_s):
                return self._keys
            try:
                self._keys = await self._fetch()
                self._fetched_at = now
            except FalKeysUnavailable:
                if not self._keys:
                    raise
                log.warning("fal JWKS refetch failed; keeping the %d cached keys", len(self._keys))
                self._fetched_at = now  # try again after the refetch interval, not per webhook
            return self._keys

    async def _fetch(self) -> list[Ed25519PublicKey]:
        self.fetches += 1
        try:
            response = await self._client.get(self.jwks_url, headers={"Accept": "application/json"})
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FalKeysUnavailable(f"fetching {self.jwks_url}: {type(exc).__name__}: {exc}") from exc
        keys = _ed25519_keys(data)
        if not keys:
            raise FalKeysUnavailable(f"{self.jwks_url} holds no Ed25519 key")
        return keys


def _ed25519_keys(jwks: Any) -> list[Ed25519PublicKey]:
    """The OKP/Ed25519 keys of a JWKS document (RFC 8037: `x` is base64url, 32 bytes)."""
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    keys: list[Ed25519PublicKey] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or (entry.get("kty"), entry.get("crv")) != ("OKP", "Ed25519"):
            continue
        x = entry.get("x")
        if not isinstance(x, str):
            continue
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError):
            continue
    return keys


def _any_verifies(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


# --- the adapter ---------------------------------------------------------------------------


class FalProvider(HttpAdapter):
    """fal's queue: POST `{queue}/{endpoint id}`, then the status, result and cancel URLs the
    submit answered (kept in the provider job id, see FalJob)."""

    name = "fal"
    shareable_urls = True  # public CDN links, kept 7 days or more

    def __init__(
        self,
        api_key: str,
        *,
        queue_url: str = "https://queue.fal.run",
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 2,
        callback_url_for: Callable[[str], str] | None = None,
        jwks_url: str = JWKS_URL,
    ) -> None:
        self._queue = queue_url.rstrip("/")
        self._queue_origin = _origin(httpx.URL(self._queue))
        self._callback_url_for = callback_url_for  # our job id -> where fal reports back
        self.calls_back = callback_url_for is not None
        self._key = api_key
        # fal keys are "<key id>:<key secret>": hide either half if echoed on its own.
        self._secrets = (api_key, *(p for p in api_key.split(":") if len(p) >= 8))
        super().__init__(client=client, max_concurrency=max_concurrency)
        self.webhooks = FalWebhookVerifier(self._client, jwks_url=jwks_url)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}"}

    def _request_url(self, model_path: str, request_id: str) -> str:
        return f"{self._queue}/{app_id(model_path)}/requests/{request_id}"

    def followable(self, url: Any) -> bool:
        """Whether the key may go to `url`: https on fal's own hosts, or the configured queue."""
        if not isinstance(url, str) or not url.strip():
            return False
        try:
            parsed = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError, ValueError):
            return False
        if parsed.userinfo:
            return False
        if parsed.scheme == "https" and is_fal_host(parsed.host):
            return True
        return _origin(parsed) == self._queue_origin

    def _urls(self, job: FalJob) -> tuple[str, str, str]:
        """(result, status, cancel) URLs of a job: followed when on an allowed host, else rebuilt."""
        result, status, cancel = job.response_url, job.status_url, job.cancel_url
        if result is not None and status is not None and cancel is not None and all(
            self.followable(u) for u in (result, status, cancel)
        ):
            return result, status, cancel
        if job.response_url is not None:
            log.warning("fal job %s: stored URLs are not on fal's hosts; polling the rebuilt path", job.request_id)
        base = self._request_url(job.model_path, job.request_id)
        return base, f"{base}/status", f"{base}/cancel"

    async def _request(self, method: str, url: str, *, op: Op, json: Any = None) -> httpx.Response:
        """One bounded request; transport failures are mapped, any HTTP answer is returned."""
        async with self._sem:
            try:
                return await self._client.request(method, url, headers=self._headers(), json=json)
            except httpx.HTTPError as exc:
                raise error_for_exception(exc, op=op, label=LABEL, secrets=self._secrets) from exc

    async def _send(self, method: str, url: str, *, op: Op, json: Any = None) -> httpx.Response:
        response = await self._request(method, url, op=op, json=json)
        if response.is_success:
            return response
        raise self._error(response, op=op)

    def _error(self, response: httpx.Response, *, op: Op) -> ProviderError:
        """fal's errors: a content refusal is a 422; X-Fal-Needs-Retry / X-Fal-Retryable
        mark transient ones."""
        body = loose_json(response)
        types, message = fal_errors(body)
        header_type = response.headers.get("x-fal-error-type")
        if header_type:
            types = types | {header_type.strip()}
        detail = redact(
            f"HTTP {response.status_code}: {_describe(types, message)}", self._secrets
        )[:_DETAIL_LIMIT]
        if response.status_code == 422 and CONTENT_POLICY in types:
            return ContentBlocked(
                "The safety filter rejected the prompt or image.", stage="input", detail=detail
            )
        if retryable_header(response.headers) is True and response.status_code not in (401, 403, 429):
            return ProviderUnavailable(
                f"{LABEL} is having problems.",
                detail=detail,
                retry_after_s=parse_retry_after(response.headers),
            )
        if response.status_code == 422:
            return InvalidProviderRequest(f"{LABEL} did not accept the request.", detail=detail)
        return error_for_response(response, op=op, label=LABEL, secrets=self._secrets)

    async def submit(self, spec: VideoSpec) -> str:
        """Queue the request; the provider job id (see FalJob) survives a restart."""
        model_path = spec.provider_model.strip("/")
        app_id(model_path)  # refuse a malformed path before anything is sent
        if "|" in model_path:
            raise InvalidProviderRequest(
                f"{LABEL} model paths look like owner/model[/subpath].",
                detail=f"model path {model_path!r} has a '|'",
            )
        url = f"{self._queue}/{model_path}"
        if self._callback_url_for is not None:
            url += "?" + urlencode({"fal_webhook": self._callback_url_for(spec.external_id)})
        response = await self._send("POST", url, op="submit", json=request_body(spec))
        body = json_object(response, op="submit", label=LABEL)
        request_id = first_text(body, ("request_id",))
        if request_id is None or "|" in request_id:
            raise AmbiguousSubmit(
                f"{LABEL} queued the request without an id.",
                detail="no usable request_id in a 2xx answer",
            )
        return self._job_from_answer(model_path, request_id, body).encode()

    def _job_from_answer(self, model_path: str, request_id: str, body: Mapping[str, Any]) -> FalJob:
        """Keep the URLs fal answered (they are the truth for multi-segment ids); without a
        usable response_url, or with one off fal's hosts, the path is rebuilt at each poll."""
        response_url = first_text(body, ("response_url",))
        status_url = first_text(body, ("status_url",))
        cancel_url = first_text(body, ("cancel_url",))
        if response_url is None and status_url is not None and status_url.endswith("/status"):
            response_url = status_url.removesuffix("/status")
        if response_url is None:
            log.warning("fal request %s: the submit answer has no response_url; rebuilding", request_id)
            return FalJob(model_path, request_id)
        urls = (response_url, status_url or f"{response_url}/status", cancel_url or f"{response_url}/cancel")
        if not all(self.followable(u) for u in urls):
            log.warning("fal request %s: the submit answer points off fal's hosts; not following it", request_id)
            return FalJob(model_path, request_id)
        return FalJob(model_path, request_id, *urls)

    async def check(self) -> str:
        """fal has no free listing call: ask for the status of a request that doesn't exist.

        A refused key answers 401/403; a valid one gets 404 (no such request).
        """
        url = self._request_url("fal-ai/kling-video", "00000000-0000-0000-0000-000000000000") + "/status"
        response = await self._request("GET", url, op="call")
        if response.status_code in (401, 403):
            raise self._error(response, op="call")
        if response.status_code >= 500:
            raise self._error(response, op="call")
        return "key accepted"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """The queue status; once COMPLETED, the result decides (fetched at once: fal keeps
        queue results about an hour, the CDN file 7 days or more)."""
        result_url, status_url, _ = self._urls(parse_job_id(provider_job_id))
        response = await self._send("GET", status_url, op="poll")
        body = json_object(response, op="poll", label=LABEL)
        status = self._redacted(parse_queue_status(body))
        if not is_completed(body) or status.state is not ProviderState.RUNNING:
            return status  # still going, or COMPLETED with an error: no result to fetch
        result = await self._request("GET", result_url, op="poll")
        if result.is_success:
            return parse_result(json_object(result, op="poll", label=LABEL))
        verdict = failed_result(
            result.status_code, loose_json(result), retryable=retryable_header(result.headers)
        )
        if verdict is None:
            raise self._error(result, op="poll")
        return self._redacted(verdict)

    def _redacted(self, status: ProviderStatus) -> ProviderStatus:
        if status.error is None:
            return status
        detail = redact(status.error.detail, self._secrets)
        return ProviderStatus(
            state=status.state,
            error=ProviderErrorInfo(kind=status.error.kind, detail=detail),
            raw_status=status.raw_status,
        )

    async def cancel(self, provider_job_id: str) -> bool:
        """PUT the cancel URL; fal only cancels requests that have not started processing."""
        try:
            _, _, cancel_url = self._urls(parse_job_id(provider_job_id))
            await self._send("PUT", cancel_url, op="call")
        except ProviderError as exc:
            log.info("fal cancel of %s not accepted: %s", provider_job_id, exc.detail)
            return False
        return True

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream the CDN URL; the key is never sent there."""
        await self._download_unkeyed(video_url, lambda: self.poll(provider_job_id), dest, label=LABEL)

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """fal's queue has no lookup by anything of ours."""
        return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default
