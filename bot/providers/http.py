"""The HTTP edge shared by provider adapters: clients, limits, error mapping, loose JSON, downloads.

Adapters call providers only through `send()` and `stream_to_file()`, so every httpx
exception and non-2xx answer becomes a `bot.errors` class here, in one place.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import httpx

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    ContentBlocked,
    DeliveryError,
    GenerationFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderRetired,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderState
from bot.providers.transport import AiohttpTransport

log = logging.getLogger(__name__)

# "submit": a create call, where an unclear failure may have made a paid job;
# "poll": a status call; "call": anything else (list, cancel).
Op = Literal["submit", "poll", "call"]

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
DOWNLOAD_CHUNK_BYTES = 64 * 1024
_DETAIL_LIMIT = 500


def build_client(
    *, max_connections: int = 8, timeout: httpx.Timeout | None = None
) -> httpx.AsyncClient:
    """One client per provider; the limits keep thousands of waiting jobs to a few sockets."""
    return httpx.AsyncClient(
        timeout=timeout or httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        # httpx's API over aiohttp's connections: a status call costs about half the CPU
        transport=AiohttpTransport(max_connections=max_connections),
        # CDNs answer signed video URLs with redirects; httpx drops Authorization when a
        # redirect leaves the original host.
        follow_redirects=True,
    )


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace each secret in `text` (some providers echo the key they were sent)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- Retry-After ---------------------------------------------------------------------------


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def header_ms(headers: Mapping[str, str], name: str) -> float | None:
    """A header holding milliseconds (`retry-after-ms`, `openai-poll-after-ms`) as seconds."""
    raw = _lower_headers(headers).get(name.lower())
    if raw is None:
        return None
    try:
        ms = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(ms) or ms < 0:
        return None
    return ms / 1000.0


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait: `retry-after-ms`, else `Retry-After` as seconds or an HTTP date."""
    ms = header_ms(headers, "retry-after-ms")
    if ms is not None:
        return ms
    raw = _lower_headers(headers).get("retry-after")
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_RPC_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def rpc_retry_delay(body: Any) -> float | None:
    """Seconds from a Google error's `google.rpc.RetryInfo` detail (`retryDelay` "12s", "1.5s")."""
    details = _walk(body, "error.details")
    if not isinstance(details, list):
        return None
    for item in details:
        if isinstance(item, Mapping) and item.get("@type") == _RETRY_INFO:
            raw = item.get("retryDelay")
            match = _RPC_DURATION.match(raw) if isinstance(raw, str) else None
            if match:
                seconds = float(match.group(1))
                return seconds if math.isfinite(seconds) else None
    return None


def _retry_after(response: httpx.Response) -> float | None:
    """The wait a refusal asks for: its headers first, else Google's RetryInfo in the body."""
    seconds = parse_retry_after(response.headers)
    if seconds is None:
        try:
            seconds = rpc_retry_delay(response.json())
        except (ValueError, httpx.ResponseNotRead):
            return None
    return seconds


# --- loose JSON ----------------------------------------------------------------------------

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _walk(obj: Any, path: str) -> Any:
    for name, index in _PATH_PART.findall(path):
        if name:
            if not isinstance(obj, Mapping):
                return None
            obj = obj.get(name)
        else:
            if not isinstance(obj, list) or int(index) >= len(obj):
                return None
            obj = obj[int(index)]
    return obj


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict, tuple)):
        return not value
    return False


def first_non_empty(obj: Any, paths: Iterable[str]) -> Any:
    """The first value at a dotted path (`data.id`, `unsigned_urls[0]`) that is not empty."""
    for path in paths:
        value = _walk(obj, path)
        if not _empty(value):
            return value
    return None


def first_text(obj: Any, paths: Iterable[str]) -> str | None:
    """Like first_non_empty, but only strings and integers count (ids, URLs, statuses)."""
    for path in paths:
        value = _walk(obj, path)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_progress(value: Any) -> int | None:
    """Progress as 40, 40.0, "40" or "40%" → 40, clamped to 0-100; anything else → None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            number = float(text)
        except ValueError:
            return None
    elif isinstance(value, int):
        number = float(min(max(value, -1), 101))  # huge ints do not fit a float
    elif isinstance(value, float):
        number = value
    else:
        return None
    if not math.isfinite(number):
        return None
    return int(min(100.0, max(0.0, number)))


# Seconds since the epoch stay below this until the year 5138; milliseconds passed it in 1973.
_MS_THRESHOLD = 1e11


def parse_timestamp(value: Any) -> datetime | None:
    """A UTC datetime from unix seconds, unix milliseconds (new-api) or an ISO 8601 string."""
    if isinstance(value, bool) or value is None:
        return None
    number: float | None = None
    if isinstance(value, int):
        # ints beyond a float's range are no timestamps; fromtimestamp rejects them below
        number = float(min(value, 10**18))
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if number is None or not math.isfinite(number) or number < 0:
        return None
    if number >= _MS_THRESHOLD:
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


# Reference §2: raw provider words → the normalised state. Compared lower-cased.
_STATE_WORDS: dict[str, ProviderState] = {
    **dict.fromkeys(("queued", "pending", "not_start", "submitted"), ProviderState.QUEUED),
    **dict.fromkeys(("in_progress", "processing", "running"), ProviderState.RUNNING),
    **dict.fromkeys(
        ("completed", "succeeded", "success", "succeed", "done"), ProviderState.SUCCEEDED
    ),
    **dict.fromkeys(("failed", "failure", "error", "expired"), ProviderState.FAILED),
    **dict.fromkeys(("cancelled", "canceled"), ProviderState.CANCELLED),
}


def parse_state(raw: Any) -> ProviderState:
    """A raw status word → ProviderState; words not in reference §2 are UNKNOWN."""
    if not isinstance(raw, str):
        return ProviderState.UNKNOWN
    return _STATE_WORDS.get(raw.strip().lower(), ProviderState.UNKNOWN)


def is_expired_word(raw: Any) -> bool:
    return isinstance(raw, str) and raw.strip().lower() == "expired"


_MODERATION = re.compile(r"moderation|safety", re.IGNORECASE)
_POSSIBLE_REASONS = re.compile(r"possible reasons?\s*:\s*([^.\n]+)", re.IGNORECASE)


def moderation_reason(text: str) -> str | None:
    """The "Possible reasons: X" part of an OpenAI moderation message, when present."""
    match = _POSSIBLE_REASONS.search(text)
    if not match:
        return None
    reason = match.group(1).strip()
    return reason or None


def looks_blocked(code: str | None, text: str) -> bool:
    return code == "moderation_blocked" or bool(_MODERATION.search(text))


def error_parts(obj: Any) -> tuple[str | None, str]:
    """(code, message) from an error that is a string, `{code, message}` or similar."""
    if isinstance(obj, str):
        return None, obj.strip()
    if isinstance(obj, Mapping):
        code = first_text(obj, ("code", "type"))
        message = first_text(obj, ("message", "msg", "detail", "error", "reason")) or ""
        return code, message
    return None, ""


# --- errors --------------------------------------------------------------------------------

_RETIRED_TEXT = re.compile(
    r"model\b.*\b(not found|does not exist|not exist)|shut ?down|deprecated|"
    r"no longer (available|supported|served)|discontinued|retired",
    re.IGNORECASE | re.DOTALL,
)


def _body_of(response: httpx.Response) -> tuple[str | None, str, str]:
    """(error code, short provider text, whole raw text) of an error response."""
    try:
        raw = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        raw = ""
    try:
        data = response.json()
    except ValueError:
        data = None
    code: str | None = None
    message = ""
    if isinstance(data, Mapping):
        error = data.get("error")
        code, message = error_parts(error)
        if not message:
            message = first_text(data, ("message", "msg", "detail", "fail_reason")) or ""
        if code is None:
            code = first_text(data, ("code",))
    if not message:
        message = raw.strip()
    return code, message, raw


def _detail(status: int | None, code: str | None, message: str, secrets: Sequence[str]) -> str:
    parts = [f"HTTP {status}" if status is not None else "", code or "", message]
    text = ": ".join(p for p in parts if p)
    return redact(text, secrets)[:_DETAIL_LIMIT]


def looks_retired(code: str | None, text: str) -> bool:
    """The model is gone: `model_not_found`, or words like "shut down" / "no longer available"."""
    return code == "model_not_found" or bool(_RETIRED_TEXT.search(f"{code or ''} {text}"))


def retired_error(label: str, detail: str) -> ProviderRetired:
    return ProviderRetired(
        f"{label} no longer serves this model. Pick another model with `/sora models`.",
        detail=detail,
    )


def error_for_response(
    response: httpx.Response, *, op: Op, label: str, secrets: Sequence[str] = ()
) -> ProviderError:
    """Map a non-2xx answer to the matching ProviderError (reference §3)."""
    status = response.status_code
    code, message, raw = _body_of(response)
    detail = _detail(status, code, message, secrets)
    everything = f"{code or ''} {message} {raw}"

    if status == 429 or status == 402:
        if status == 402 or "insufficient_quota" in everything:
            return QuotaExhausted(f"The {label} credits are used up.", detail=detail)
        return RateLimited(
            f"{label} is busy or at its limit.",
            detail=detail,
            retry_after_s=_retry_after(response),
        )
    if status in (401, 403):
        return AuthFailed(f"The bot can't authenticate with {label}.", detail=detail)
    if status in (400, 404, 410) and looks_retired(code, message):
        return retired_error(label, detail)
    if status == 400 and _MODERATION.search(message):
        return ContentBlocked(
            "The safety filter rejected the prompt.",
            stage="input",
            detail=detail,
            reason=moderation_reason(message),
        )
    if status == 404 and op == "poll":
        # The provider no longer knows this job: polling again cannot bring it back.
        return GenerationFailed(f"{label} lost track of this job.", detail=detail)
    if 400 <= status < 500 and status != 408:
        return InvalidProviderRequest(f"{label} did not accept the request.", detail=detail)
    if op == "submit" and status >= 500 and status != 503:
        # A 500/502/504 can come from a proxy after the provider made the job.
        return AmbiguousSubmit(f"{label} failed while creating the job.", detail=detail)
    return ProviderUnavailable(
        f"{label} is having problems.",
        detail=detail,
        retry_after_s=_retry_after(response),
    )


# Failures that happen before a request can reach the provider's application.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


def error_for_exception(
    exc: httpx.HTTPError, *, op: Op, label: str, secrets: Sequence[str] = ()
) -> ProviderError:
    """Map an httpx exception; after sending, a submit's outcome is unknown (AmbiguousSubmit)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return error_for_response(exc.response, op=op, label=label, secrets=secrets)
    detail = redact(f"{type(exc).__name__}: {exc}", secrets)[:_DETAIL_LIMIT]
    if op == "submit" and not isinstance(exc, _NOT_SENT):
        return AmbiguousSubmit(f"{label} did not answer while creating the job.", detail=detail)
    return ProviderUnavailable(f"{label} could not be reached.", detail=detail)


async def send(
    client: httpx.AsyncClient,
    semaphore: asyncio.Semaphore,
    method: str,
    url: str,
    *,
    op: Op,
    label: str,
    secrets: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    params: Mapping[str, str | int] | None = None,
) -> httpx.Response:
    """One bounded request; returns a 2xx response or raises the mapped ProviderError."""
    async with semaphore:
        try:
            response = await client.request(method, url, headers=headers, json=json, params=params)
        except httpx.HTTPError as exc:
            raise error_for_exception(exc, op=op, label=label, secrets=secrets) from exc
    if response.is_success:
        return response
    raise error_for_response(response, op=op, label=label, secrets=secrets)


def json_object(response: httpx.Response, *, op: Op, label: str) -> dict[str, Any]:
    """The body as a JSON object; anything else is transient on a poll, ambiguous on a submit."""
    try:
        data = response.json()
    except ValueError as exc:
        raise _malformed(op, label, "body is not JSON") from exc
    if not isinstance(data, dict):
        raise _malformed(op, label, f"JSON body is a {type(data).__name__}, not an object")
    return data


def _malformed(op: Op, label: str, detail: str) -> ProviderError:
    if op == "submit":
        return AmbiguousSubmit(f"{label} sent an unreadable answer to a create.", detail=detail)
    return ProviderUnavailable(f"{label} sent an unreadable answer.", detail=detail)


# --- downloads -----------------------------------------------------------------------------


async def stream_to_file(
    client: httpx.AsyncClient,
    semaphore: asyncio.Semaphore,
    url: str,
    dest: Path,
    *,
    label: str,
    headers: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
) -> int:
    """Stream `url` into `dest` chunk by chunk; return the byte count.

    Writes to `dest.part` and renames at the end, so a broken transfer never leaves a file
    that looks complete. 403/404/410 → ResultExpired; 5xx, timeouts, disk errors →
    DeliveryError (the caller retries the download, never the job).
    """
    part = dest.with_name(dest.name + ".part")
    written = 0
    async with semaphore:
        try:
            async with _stream_following_redirects(client, url, headers) as response:
                if not response.is_success:
                    await response.aread()
                    raise _download_error(response, label=label, secrets=secrets)
                handle: IO[bytes] = await asyncio.to_thread(part.open, "wb")
                try:
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
                        await asyncio.to_thread(handle.write, chunk)
                        written += len(chunk)
                finally:
                    await asyncio.to_thread(handle.close)
            await asyncio.to_thread(part.replace, dest)
        except httpx.HTTPError as exc:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            detail = redact(f"{type(exc).__name__}: {exc}", secrets)[:_DETAIL_LIMIT]
            raise DeliveryError(
                f"Downloading the video from {label} failed.", detail=detail
            ) from exc
        except OSError as exc:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise DeliveryError(
                "Saving the video failed.", detail=f"{type(exc).__name__}: {exc}"
            ) from exc
    return written


async def video_url_or_poll(
    video_url: str | None, poll: Callable[[], Awaitable[Any]], *, label: str
) -> str:
    """The URL to download: the one we have, else one status call to get it (after a restart).

    A failed or empty answer is a DeliveryError, so the caller retries the download only.
    """
    if video_url is not None:
        return video_url
    try:
        url = (await poll()).video_url
    except ProviderError as exc:
        raise DeliveryError(f"{label} did not say where the video is.", detail=exc.detail) from exc
    if url is None:
        raise DeliveryError(f"{label} did not say where the video is.", detail="no video URL")
    return str(url)


def loose_json(response: httpx.Response) -> Any:
    """The body as JSON when it is JSON, else None (error bodies are often HTML or empty)."""
    try:
        return response.json()
    except ValueError:
        return None


class HttpAdapter:
    """What every HTTP provider adapter shares: one pooled client (closed here only when it
    was made here), a bound on its requests in flight, and the download of a result URL
    that needs no key. Subclasses set `_secrets`, the values kept out of every error."""

    _secrets: Sequence[str]
    calls_back = False  # set by adapters configured with a callback

    def __init__(self, *, client: httpx.AsyncClient | None, max_concurrency: int) -> None:
        self._owns_client = client is None
        self._client = client or build_client(max_connections=max_concurrency)
        self._sem = asyncio.Semaphore(max_concurrency)

    async def _download_unkeyed(
        self, video_url: str | None, refresh: Callable[[], Awaitable[Any]], dest: Path, *, label: str
    ) -> None:
        """Stream a signed or public result URL (one status call finds it when unknown); the
        key is never sent to it."""
        url = await video_url_or_poll(video_url, refresh, label=label)
        await stream_to_file(self._client, self._sem, url, dest, label=label, secrets=self._secrets)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


MAX_REDIRECTS = 5


@asynccontextmanager
async def _stream_following_redirects(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None
) -> AsyncIterator[httpx.Response]:
    """GET with redirects followed by hand: httpx strips only Authorization when a redirect
    leaves the host, so a key in another header (x-goog-api-key) would travel along."""
    origin = httpx.URL(url).host
    current = httpx.URL(url)
    send_headers = dict(headers or {})
    for _ in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", current, headers=send_headers, follow_redirects=False) as response:
            if not response.is_redirect:
                yield response
                return
            await response.aread()
            location = response.headers.get("location", "")
        current = current.join(location)
        if current.host != origin:
            send_headers = {}
    raise httpx.TooManyRedirects("too many redirects", request=httpx.Request("GET", current))


def _download_error(
    response: httpx.Response, *, label: str, secrets: Sequence[str]
) -> DeliveryError:
    code, message, _ = _body_of(response)
    detail = _detail(response.status_code, code, message, secrets)
    if response.status_code in (403, 404, 410):
        return ResultExpired("The download link expired before the video was saved.", detail=detail)
    return DeliveryError(f"Downloading the video from {label} failed.", detail=detail)


def failure_kind_for(code: str | None, text: str) -> FailureKind:
    """Kind of a failed job's error: moderation → BLOCKED_OUTPUT, else GENERATION_FAILED."""
    return (
        FailureKind.BLOCKED_OUTPUT if looks_blocked(code, text) else FailureKind.GENERATION_FAILED
    )


# how much of a file `file_base64` reads at a time (a multiple of 3, so the pieces join)
READ_CHUNK = 3 * 1024 * 1024


def file_base64(path: Path, *, chunk: int = READ_CHUNK) -> str:
    """A file's bytes as base64 (a video a provider extends, sent inline), read a few
    megabytes at a time so the file itself is never held whole. InvalidProviderRequest when it
    can't be read or is empty."""
    assert chunk % 3 == 0
    pieces: list[bytes] = []
    rest = b""
    try:
        with path.open("rb") as f:
            while block := f.read(chunk):
                block = rest + block
                cut = len(block) - len(block) % 3
                pieces.append(base64.b64encode(block[:cut]))
                rest = block[cut:]
    except OSError as exc:
        raise InvalidProviderRequest(
            "The video to extend could not be read.", detail=f"{type(exc).__name__}: {exc}"
        ) from exc
    pieces.append(base64.b64encode(rest))
    if pieces == [b""]:
        raise InvalidProviderRequest("The video to extend is empty.", detail=f"{path.name}: 0 bytes")
    return b"".join(pieces).decode("ascii")
