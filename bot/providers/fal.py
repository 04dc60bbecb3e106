"""The adapter for fal.ai's queue (reference §1.6): fal video models, offered as `fal/<path>`."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx

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
# (the rule of fal's own clients).
_NAMESPACES = ("workflows", "comfy")


@dataclass(frozen=True, slots=True)
class FalRoute:
    """How a family of fal models wants its input; fal's schemas differ per model."""

    # "string": "5" (Kling's enum), "seconds": "8s" (Veo's enum), "int": 5
    duration: Literal["string", "seconds", "int"]
    resolution: bool = False  # takes `resolution` ("720p", "1080p")
    audio: bool = False  # takes `generate_audio`


# Keyed by a prefix of the model path; the longest matching prefix wins. Models not listed
# get integer seconds, the most common shape in fal's schemas.
ROUTES: dict[str, FalRoute] = {
    "fal-ai/kling-video": FalRoute(duration="string"),
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


def app_id(model_path: str) -> str:
    """The queue's app id: the first two segments of the path (three for `workflows/…`).

    Status, result and cancel live under `{queue}/{app id}/requests/{id}`, not under the
    full model path that was posted to.
    """
    parts = model_path.strip("/").split("/")
    size = 3 if parts[0] in _NAMESPACES else 2
    if len(parts) < size or not all(parts[:size]):
        raise InvalidProviderRequest(
            f"{LABEL} model paths look like owner/model[/subpath].",
            detail=f"model path {model_path!r} has too few segments",
        )
    return "/".join(parts[:size])


def job_id_for(model_path: str, request_id: str) -> str:
    return f"{model_path.strip('/')}|{request_id}"


def split_job_id(provider_job_id: str) -> tuple[str, str]:
    """(model path, request id) of a provider job id "<model path>|<request id>"."""
    model_path, sep, request_id = provider_job_id.rpartition("|")
    if not sep or not model_path or not request_id:
        raise InvalidProviderRequest(
            f"{LABEL} job id is not one of ours.", detail=f"bad job id {provider_job_id!r}"
        )
    return model_path, request_id


def fal_errors(body: Any) -> tuple[frozenset[str], str]:
    """(error types, joined messages) of `{detail: [{loc, msg, type}]}` or `{detail: "text"}`."""
    if not isinstance(body, Mapping):
        return frozenset(), ""
    detail = body.get("detail")
    if detail is None:
        detail = body.get("error")
    if isinstance(detail, str):
        return frozenset(), detail.strip()
    items = detail if isinstance(detail, list) else [detail]
    types: set[str] = set()
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


def retryable_header(headers: Mapping[str, str]) -> bool | None:
    """`X-Fal-Retryable` as a bool; None when absent or unreadable."""
    value = {k.lower(): v for k, v in headers.items()}.get("x-fal-retryable")
    if value is None:
        return None
    value = value.strip().lower()
    return True if value == "true" else False if value == "false" else None


def _describe(types: frozenset[str], message: str) -> str:
    return ": ".join(t for t in (", ".join(sorted(types)), message) if t)


def parse_queue_status(body: Any) -> ProviderStatus:
    """A queue status answer → ProviderStatus. Raises ProviderUnavailable on a non-object.

    COMPLETED only means the request left the queue: it reads as RUNNING here, and the
    result (see `parse_result`) decides between success and failure.
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
    if word in ("IN_PROGRESS", "COMPLETED"):
        return ProviderStatus(state=ProviderState.RUNNING, raw_status=raw)
    if word in ("CANCELED", "CANCELLED"):
        # Only in a third-party schema (reference §1.6); harmless to understand.
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status=raw)
    if word in ("FAILED", "ERROR"):
        detail = _describe(*fal_errors(body)) or f"status {raw}"
        return ProviderStatus(
            state=ProviderState.FAILED,
            error=ProviderErrorInfo(
                kind=FailureKind.GENERATION_FAILED, detail=detail[:_DETAIL_LIMIT]
            ),
            raw_status=raw,
        )
    return ProviderStatus(state=ProviderState.UNKNOWN, raw_status=raw)


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
    error JSON and `X-Fal-Retryable: false`; otherwise the poll is simply retried.
    """
    if status_code in (401, 403, 408, 429) or status_code < 400:
        return None
    types, message = fal_errors(body)
    detail = (_describe(types, message) or f"HTTP {status_code}")[:_DETAIL_LIMIT]
    if status_code >= 500 and (retryable is not False or not (types or message)):
        return None
    if CONTENT_POLICY in types:
        kind = FailureKind.BLOCKED_OUTPUT
    elif "cancel" in message.lower() and status_code < 500:
        return ProviderStatus(state=ProviderState.CANCELLED, raw_status="COMPLETED")
    elif status_code == 422:
        kind = FailureKind.INVALID_REQUEST
    else:
        kind = FailureKind.GENERATION_FAILED
    return ProviderStatus(
        state=ProviderState.FAILED,
        error=ProviderErrorInfo(kind=kind, detail=f"HTTP {status_code}: {detail}"[:_DETAIL_LIMIT]),
        raw_status="COMPLETED",
    )


class FalProvider(HttpAdapter):
    """fal's queue: POST `{queue}/{model path}`, then `{queue}/{app id}/requests/{id}[/status]`."""

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
    ) -> None:
        self._queue = queue_url.rstrip("/")
        self._callback_url_for = callback_url_for  # our job id -> where fal reports back
        self.calls_back = callback_url_for is not None
        self._key = api_key
        # fal keys are "<key id>:<key secret>": hide either half if echoed on its own.
        self._secrets = (api_key, *(p for p in api_key.split(":") if len(p) >= 8))
        super().__init__(client=client, max_concurrency=max_concurrency)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}"}

    def _request_url(self, model_path: str, request_id: str) -> str:
        return f"{self._queue}/{app_id(model_path)}/requests/{request_id}"

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
        """fal's errors: a content refusal is a 422, and `X-Fal-Retryable` marks transient ones."""
        types, message = fal_errors(loose_json(response))
        detail = redact(
            f"HTTP {response.status_code}: {_describe(types, message)}", self._secrets
        )[:_DETAIL_LIMIT]
        if response.status_code == 422 and CONTENT_POLICY in types:
            return ContentBlocked(
                "The safety filter rejected the prompt or image.", stage="input", detail=detail
            )
        if retryable_header(response.headers) is True:
            return ProviderUnavailable(
                f"{LABEL} is having problems.",
                detail=detail,
                retry_after_s=parse_retry_after(response.headers),
            )
        if response.status_code == 422:
            return InvalidProviderRequest(f"{LABEL} did not accept the request.", detail=detail)
        return error_for_response(response, op=op, label=LABEL, secrets=self._secrets)

    async def submit(self, spec: VideoSpec) -> str:
        """Queue the request; the job id "<model path>|<request id>" survives a restart."""
        model_path = spec.provider_model.strip("/")
        app_id(model_path)  # refuse a malformed path before anything is sent
        route = route_for(model_path)
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
            payload["image_url"] = f"data:{spec.image.mime_type};base64,{encoded}"
        url = f"{self._queue}/{model_path}"
        if self._callback_url_for is not None:
            url += "?" + urlencode({"fal_webhook": self._callback_url_for(spec.external_id)})
        response = await self._send("POST", url, op="submit", json=payload)
        body = json_object(response, op="submit", label=LABEL)
        request_id = first_text(body, ("request_id",))
        if request_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} queued the request without an id.",
                detail="no request_id in a 2xx answer",
            )
        expected = f"{self._request_url(model_path, request_id)}/status"
        if first_text(body, ("status_url",)) not in (None, expected):
            log.warning(
                "fal status_url %s differs from the rebuilt %s", body.get("status_url"), expected
            )
        return job_id_for(model_path, request_id)

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
        """The queue status; once COMPLETED, the result decides success or failure."""
        base = self._request_url(*split_job_id(provider_job_id))
        response = await self._send("GET", f"{base}/status", op="poll")
        body = json_object(response, op="poll", label=LABEL)
        if not is_completed(body):
            return parse_queue_status(body)
        result = await self._request("GET", base, op="poll")
        if result.is_success:
            return parse_result(json_object(result, op="poll", label=LABEL))
        verdict = failed_result(
            result.status_code, loose_json(result), retryable=retryable_header(result.headers)
        )
        if verdict is None:
            raise self._error(result, op="poll")
        if verdict.error is not None:
            detail = redact(verdict.error.detail, self._secrets)
            verdict = ProviderStatus(
                state=verdict.state,
                error=ProviderErrorInfo(kind=verdict.error.kind, detail=detail),
                raw_status=verdict.raw_status,
            )
        return verdict

    async def cancel(self, provider_job_id: str) -> bool:
        """PUT …/cancel; fal only cancels requests that have not started processing."""
        try:
            base = self._request_url(*split_job_id(provider_job_id))
            await self._send("PUT", f"{base}/cancel", op="call")
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


