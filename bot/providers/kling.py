"""The adapter for Kling's official API (reference §1.4): per-request JWTs and business codes.

Kling publishes no official Python SDK, so there is none to check this against. Its docs
and the Vercel AI SDK's Kling provider (`packages/klingai`, TypeScript) are the sources:
both send `model_name` "kling-v3" with `duration` a string "3"-"15" (older models "5" or
"10"), and both sign the HS256 token below.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt

from bot.errors import (
    AmbiguousSubmit,
    AuthFailed,
    ContentBlocked,
    GenerationFailed,
    InvalidProviderRequest,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
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
    parse_timestamp,
    redact,
)

log = logging.getLogger(__name__)

LABEL = "Kling"

MAX_PROMPT_CHARS = 2500
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
TOKEN_TTL_S = 1800
# Kling's own sample signs nbf 5 s in the past so small clock skew does not reject the token.
TOKEN_NBF_SKEW_S = 5
TOKEN_REFRESH_MARGIN_S = 300
# Results are cleared after 30 days (reference §1.4).
RETENTION = timedelta(days=30)

# Provider job ids carry the endpoint, so a poll after a restart knows where to look.
ENDPOINTS = {"t2v": "text2video", "i2v": "image2video"}
_LIST_PAGE_SIZE = 30
_DETAIL_LIMIT = 500

_BLOCKED_TEXT = re.compile(r"\brisk|sensitive|content security", re.IGNORECASE)

_STATES: dict[str, ProviderState] = {
    "submitted": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "succeed": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
}


def make_token(access_key: str, secret_key: str, *, now: float) -> tuple[str, float]:
    """A Kling API token (HS256, iss/exp/nbf) and its expiry in unix seconds."""
    issued = int(now)
    expires = issued + TOKEN_TTL_S
    token = jwt.encode(
        {"iss": access_key, "exp": expires, "nbf": issued - TOKEN_NBF_SKEW_S},
        secret_key,
        algorithm="HS256",
        headers={"alg": "HS256", "typ": "JWT"},
    )
    return token, float(expires)


def kling_mode(resolution: str) -> str:
    """Kling's `mode`: "pro" renders 1080p, "std" 720p."""
    return "pro" if resolution == "1080p" else "std"


def job_id_for(endpoint_key: str, task_id: str) -> str:
    return f"{endpoint_key}:{task_id}"


def split_job_id(provider_job_id: str) -> tuple[str, str]:
    """("text2video" | "image2video", task id) of a provider job id such as "t2v:123"."""
    prefix, sep, task_id = provider_job_id.partition(":")
    if sep and prefix in ENDPOINTS and task_id:
        return ENDPOINTS[prefix], task_id
    # Not one of ours: a bare task id is most likely a text-to-video task.
    return ENDPOINTS["t2v"], provider_job_id


def business_code(body: Any) -> int | None:
    """The `code` of a Kling answer as an int; None when absent or unreadable."""
    if not isinstance(body, Mapping):
        return None
    code = body.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        return int(code.strip())
    return None


def is_auth_code(code: int | None) -> bool:
    """1000-1004: the token was missing, malformed, not yet valid or expired."""
    return code is not None and 1000 <= code <= 1004


def error_for_code(
    code: int, *, op: Op, detail: str, retry_after_s: float | None = None
) -> ProviderError | None:
    """The ProviderError for a Kling business code (reference §1.4); None for unknown codes."""
    if 1000 <= code <= 1004 or code in (1100, 1103, 1304):
        # 1100 account problem, 1103 no permission, 1304 IP whitelist: all need an admin.
        return AuthFailed(f"The bot can't authenticate with {LABEL}.", detail=detail)
    if code in (1101, 1102):
        return QuotaExhausted(f"The {LABEL} credits are used up.", detail=detail)
    if 1200 <= code <= 1203:
        if op == "poll" and code == 1203:
            return GenerationFailed(f"{LABEL} lost track of this job.", detail=detail)
        return InvalidProviderRequest(f"{LABEL} did not accept the request.", detail=detail)
    if code in (1300, 1301):
        return ContentBlocked(
            "The safety filter rejected the prompt.", stage="input", detail=detail
        )
    if code in (1302, 1303):
        # 1302 (rate) comes without Retry-After; bot.lifecycle.flow._backoff then waits at least the
        # rate-limit floor rather than the poll interval.
        return RateLimited(
            f"{LABEL} is busy or at its limit.", detail=detail, retry_after_s=retry_after_s
        )
    if code == 5001:
        # Maintenance: Kling refuses the call before making anything.
        return ProviderUnavailable(
            f"{LABEL} is down for maintenance.", detail=detail, retry_after_s=retry_after_s
        )
    if 5000 <= code <= 5999:
        if op == "submit":
            # An internal error or backlog timeout may come after the task was made.
            return AmbiguousSubmit(f"{LABEL} failed while creating the job.", detail=detail)
        return ProviderUnavailable(
            f"{LABEL} is having problems.", detail=detail, retry_after_s=retry_after_s
        )
    return None


def parse_task(body: Any) -> ProviderStatus:
    """A Kling task query answer → ProviderStatus. Raises ProviderUnavailable on a non-object.

    `succeed` without a video URL is a failure (`no_output`); a failed task whose
    `task_status_msg` speaks of risk control or sensitive content is BLOCKED_OUTPUT.
    """
    if not isinstance(body, Mapping):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"poll body is a {type(body).__name__}, not an object",
        )
    data = body.get("data")
    if not isinstance(data, Mapping):
        data = {}
    raw = first_text(data, ("task_status",))
    state = _STATES.get(raw.lower(), ProviderState.UNKNOWN) if raw else ProviderState.UNKNOWN
    url = first_text(data, ("task_result.videos[0].url",))
    if url is not None and not url.startswith(("http://", "https://")):
        url = None
    error: ProviderErrorInfo | None = None
    expires_at = None
    if state is ProviderState.SUCCEEDED:
        if url is None:
            state = ProviderState.FAILED
            error = ProviderErrorInfo(kind=FailureKind.GENERATION_FAILED, detail="no_output")
        else:
            finished = parse_timestamp(data.get("updated_at")) or parse_timestamp(
                data.get("created_at")
            )
            expires_at = _later(finished, RETENTION)
    elif state is ProviderState.FAILED:
        message = first_text(data, ("task_status_msg",)) or ""
        kind = (
            FailureKind.BLOCKED_OUTPUT
            if _BLOCKED_TEXT.search(message)
            else FailureKind.GENERATION_FAILED
        )
        error = ProviderErrorInfo(kind=kind, detail=(message or f"status {raw}")[:_DETAIL_LIMIT])
    return ProviderStatus(
        state=state,
        video_url=url if state is ProviderState.SUCCEEDED else None,
        error=error,
        expires_at=expires_at,
        raw_status=raw,
    )


def _later(when: datetime | None, delta: timedelta) -> datetime | None:
    try:
        return when + delta if when is not None else None
    except OverflowError:  # a timestamp near year 9999
        return None


def find_task(body: Any, external_id: str) -> str | None:
    """The task id of the listed task whose `task_info.external_task_id` is `external_id`."""
    items = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        return None
    for item in items:
        if first_text(item, ("task_info.external_task_id",)) == external_id:
            return first_text(item, ("task_id",))
    return None


class KlingProvider(HttpAdapter):
    """Kling's `/v1/videos/{text2video,image2video}` API with a cached, self-refreshing JWT."""

    name = "kling"
    shareable_urls = True  # plain CDN links, kept for 30 days

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        *,
        base_url: str = "https://api-singapore.klingai.com",
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
        clock: Callable[[], float] = time.time,
        callback_url_for: Callable[[str], str] | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._callback_url_for = callback_url_for  # our job id -> where Kling reports back
        self.calls_back = callback_url_for is not None
        self._access_key = access_key
        self._secret_key = secret_key
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        super().__init__(client=client, max_concurrency=max_concurrency)

    # --- auth ---

    def _current_token(self, *, refresh: bool = False) -> str:
        """The cached token, re-signed when asked or when it has under 5 minutes left."""
        now = self._clock()
        if refresh or self._token is None or self._token_expires - now < TOKEN_REFRESH_MARGIN_S:
            self._token, self._token_expires = make_token(
                self._access_key, self._secret_key, now=now
            )
        return self._token

    @property
    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._access_key, self._secret_key, self._token) if s)

    # --- HTTP ---

    async def _call(
        self,
        method: str,
        path: str,
        *,
        op: Op,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> dict[str, Any]:
        """One API call with the business code checked; an auth refusal re-signs and retries once.

        Retrying a create after a 401 is safe: Kling checks the token before making anything.
        """
        for attempt in range(2):
            token = self._current_token(refresh=attempt > 0)
            async with self._sem:
                try:
                    response = await self._client.request(
                        method,
                        f"{self._base}{path}",
                        headers={"Authorization": f"Bearer {token}"},
                        json=json,
                        params=params,
                    )
                except httpx.HTTPError as exc:
                    raise error_for_exception(
                        exc, op=op, label=LABEL, secrets=self._secrets
                    ) from exc
            body = loose_json(response)
            code = business_code(body)
            if response.is_success and code in (0, None):
                return json_object(response, op=op, label=LABEL)
            if attempt == 0 and (response.status_code == 401 or is_auth_code(code)):
                log.info("Kling refused the token (code %s); signing a fresh one", code)
                continue
            raise self._error(response, body, code, op=op)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _error(
        self, response: httpx.Response, body: Any, code: int | None, *, op: Op
    ) -> ProviderError:
        message = first_text(body, ("message", "msg")) or ""
        detail = redact(
            ": ".join(t for t in (f"HTTP {response.status_code}", str(code or ""), message) if t),
            self._secrets,
        )[:_DETAIL_LIMIT]
        if code is not None and code != 0:
            mapped = error_for_code(
                code, op=op, detail=detail, retry_after_s=parse_retry_after(response.headers)
            )
            if mapped is not None:
                return mapped
        if response.is_success:
            # A 2xx with an unknown non-zero code: no task id, yet no documented refusal.
            if op == "submit":
                return AmbiguousSubmit(
                    f"{LABEL} answered a create with an unknown code.", detail=detail
                )
            return ProviderUnavailable(f"{LABEL} sent an unexpected answer.", detail=detail)
        return error_for_response(response, op=op, label=LABEL, secrets=self._secrets)

    # --- VideoProvider ---

    async def submit(self, spec: VideoSpec) -> str:
        """Create the task; `external_task_id` = our job id lets `find_existing` find it later."""
        if len(spec.prompt) > MAX_PROMPT_CHARS:
            raise InvalidProviderRequest(
                f"{LABEL} accepts prompts of up to {MAX_PROMPT_CHARS} characters.",
                detail=f"prompt has {len(spec.prompt)} characters",
            )
        if spec.aspect_ratio not in ASPECT_RATIOS:
            raise InvalidProviderRequest(
                f"{LABEL} has no {spec.aspect_ratio} aspect ratio.",
                detail=f"aspect_ratio {spec.aspect_ratio!r} not in {ASPECT_RATIOS}",
            )
        payload: dict[str, Any] = {
            "model_name": spec.provider_model,
            "prompt": spec.prompt,
            "mode": kling_mode(spec.resolution),
            # Kling wants the length as a string ("5", "10").
            "duration": str(spec.duration_s),
            "external_task_id": spec.task_id,
        }
        if self._callback_url_for is not None:
            payload["callback_url"] = self._callback_url_for(spec.external_id)
        if spec.image is not None:
            key = "i2v"
            # Plain base64: Kling rejects a `data:` prefix; the image's shape sets the aspect.
            payload["image"] = base64.b64encode(spec.image.data).decode("ascii")
        else:
            key = "t2v"
            payload["aspect_ratio"] = spec.aspect_ratio
        if spec.audio is not None:
            payload["sound"] = "on" if spec.audio else "off"
        body = await self._call("POST", f"/v1/videos/{ENDPOINTS[key]}", op="submit", json=payload)
        task_id = first_text(body, ("data.task_id",))
        if task_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without a task id.",
                detail="no data.task_id in a code-0 answer",
            )
        return job_id_for(key, task_id)

    async def check(self) -> str:
        """List one task: proves the JWT (keys) and the account without creating anything."""
        await self._call("GET", "/v1/videos/text2video", op="call", params={"pageNum": 1, "pageSize": 1})
        return "keys accepted (signed token verified)"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One task query; transient trouble raises ProviderUnavailable / RateLimited."""
        endpoint, task_id = split_job_id(provider_job_id)
        body = await self._call("GET", f"/v1/videos/{endpoint}/{task_id}", op="poll")
        return parse_task(body)

    async def cancel(self, provider_job_id: str) -> bool:
        """Kling has no cancel API."""
        return False

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream the CDN URL; it needs no token, so none is sent."""
        await self._download_unkeyed(video_url, lambda: self.poll(provider_job_id), dest, label=LABEL)

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """The task carrying our job id as `external_task_id`, from the newest listed page.

        Uses the documented list route and matches `task_info.external_task_id` itself, so
        it works whether or not Kling filters the list. Any error → None.
        """
        key = "i2v" if spec.image is not None else "t2v"
        try:
            body = await self._call(
                "GET",
                f"/v1/videos/{ENDPOINTS[key]}",
                op="call",
                params={"pageNum": 1, "pageSize": _LIST_PAGE_SIZE},
            )
        except ProviderError as exc:
            log.info("Kling list for find_existing failed: %s", exc.detail)
            return None
        task_id = find_task(body, spec.task_id)
        return job_id_for(key, task_id) if task_id is not None else None


