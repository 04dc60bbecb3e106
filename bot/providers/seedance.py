"""The adapter for ByteDance Seedance on BytePlus ModelArk (reference §1.7, 2026-12 §5).

Checked against the Ark SDK (byteplussdkarkruntime 3.0.63): the body has the fields and
types of `content_generation.tasks.create()`, and each content item is a
`CreateTaskContentParam` (an image item must carry its `role`).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

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
    bearer,
    error_for_exception,
    error_for_response,
    error_parts,
    first_text,
    json_object,
    parse_state,
    parse_timestamp,
    redact,
)

log = logging.getLogger(__name__)

LABEL = "Seedance"

RATIOS = ("16:9", "9:16", "1:1")
RESOLUTIONS = ("480p", "720p", "1080p")
# What the current ids allow (reference 2026-12 §5): (shortest s, longest s, resolutions).
# An id not listed here (an admin's catalog entry) is left to ModelArk to judge.
MODEL_LIMITS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "dreamina-seedance-2-0-260128": (4, 15, RESOLUTIONS),
    "dreamina-seedance-2-0-fast-260128": (4, 15, ("480p", "720p")),
    "dreamina-seedance-2-5-260628": (4, 30, RESOLUTIONS),
}
# `video_url` works for about 24 hours (reference §1.7).
URL_LIFETIME = timedelta(hours=24)
_DETAIL_LIMIT = 500

# Moderation codes, e.g. InputImageSensitiveContentDetected.PrivacyInformation: the part
# after the dot names the reason.
_INPUT_BLOCKED = re.compile(r"^Input\w*SensitiveContentDetected(?:\.(\w+))?")
_OUTPUT_BLOCKED = re.compile(r"^Output\w*SensitiveContentDetected(?:\.(\w+))?")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _reason(suffix: str | None) -> str | None:
    """ "PrivacyInformation" → "privacy information"."""
    return _CAMEL.sub(" ", suffix).lower() if suffix else None


def failure_for_code(code: str | None) -> tuple[FailureKind, str | None]:
    """(kind, user-safe reason) of a Seedance error code."""
    if code:
        if match := _INPUT_BLOCKED.match(code):
            return FailureKind.BLOCKED_INPUT, _reason(match.group(1))
        if match := _OUTPUT_BLOCKED.match(code):
            return FailureKind.BLOCKED_OUTPUT, _reason(match.group(1))
    return FailureKind.GENERATION_FAILED, None


def build_content(spec: VideoSpec) -> list[dict[str, Any]]:
    """The `content` list: the prompt, then the reference image as the first frame.

    The SDK's `CreateTaskContentImageParam` requires `role`; ModelArk's roles are
    first_frame, last_frame and reference_image, and a request's image is its first frame.
    """
    content: list[dict[str, Any]] = [{"type": "text", "text": spec.prompt}]
    if spec.image is not None:
        encoded = base64.b64encode(spec.image.data).decode("ascii")
        content.append(
            {
                "type": "image_url",
                "image_url": {"url": f"data:{spec.image.mime_type};base64,{encoded}"},
                "role": "first_frame",
            }
        )
    return content


def check_limits(spec: VideoSpec) -> None:
    """InvalidProviderRequest, before sending, for a length or resolution the model lacks."""
    if spec.aspect_ratio not in RATIOS:
        raise InvalidProviderRequest(
            f"{LABEL} has no {spec.aspect_ratio} aspect ratio.",
            detail=f"ratio {spec.aspect_ratio!r} not in {RATIOS}",
        )
    shortest, longest, resolutions = MODEL_LIMITS.get(spec.provider_model, (0, 0, RESOLUTIONS))
    if spec.resolution not in resolutions:
        raise InvalidProviderRequest(
            f"{LABEL} has no {spec.resolution} resolution for this model.",
            detail=f"resolution {spec.resolution!r} not in {resolutions}",
        )
    if longest and not shortest <= spec.duration_s <= longest:
        raise InvalidProviderRequest(
            f"{LABEL} makes videos of {shortest} to {longest} seconds with this model.",
            detail=f"duration {spec.duration_s} outside {shortest}-{longest}",
        )


def parse_task(body: Any) -> ProviderStatus:
    """A ModelArk task → ProviderStatus. Raises ProviderUnavailable on a non-object.

    `expired` is a FAILED job with RESULT_EXPIRED; `succeeded` without `content.video_url`
    is a failure (`no_output`). `usage` is tokens, not money, so cost is left to the catalog.
    """
    if not isinstance(body, Mapping):
        raise ProviderUnavailable(
            f"{LABEL} sent an unreadable answer.",
            detail=f"poll body is a {type(body).__name__}, not an object",
        )
    raw = first_text(body, ("status",))
    state = parse_state(raw)
    url = first_text(body, ("content.video_url",))
    if url is not None and not url.startswith(("http://", "https://")):
        url = None
    error: ProviderErrorInfo | None = None
    expires_at = None
    if state is ProviderState.SUCCEEDED:
        if url is None:
            state = ProviderState.FAILED
            error = ProviderErrorInfo(kind=FailureKind.GENERATION_FAILED, detail="no_output")
        else:
            finished = parse_timestamp(body.get("updated_at"))
            try:
                expires_at = finished + URL_LIFETIME if finished is not None else None
            except OverflowError:  # a timestamp near year 9999
                expires_at = None
    elif state is ProviderState.FAILED:
        if raw is not None and raw.lower() == "expired":
            error = ProviderErrorInfo(kind=FailureKind.RESULT_EXPIRED, detail="expired")
        else:
            code, message = error_parts(body.get("error"))
            kind, reason = failure_for_code(code)
            detail = ": ".join(t for t in (code, message) if t) or f"status {raw}"
            error = ProviderErrorInfo(kind=kind, detail=detail[:_DETAIL_LIMIT], reason=reason)
    return ProviderStatus(
        state=state,
        video_url=url if state is ProviderState.SUCCEEDED else None,
        error=error,
        expires_at=expires_at,
        raw_status=raw,
    )


class SeedanceProvider(HttpAdapter):
    """`POST/GET/DELETE {base}/api/v3/contents/generations/tasks[/{id}]` with a Bearer key."""

    name = "seedance"
    shareable_urls = True  # signed object-store links, valid for about a day

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://ark.ap-southeast.bytepluses.com",
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 4,
        callback_url_for: Callable[[str], str] | None = None,
    ) -> None:
        self._tasks_url = f"{base_url.rstrip('/')}/api/v3/contents/generations/tasks"
        self._callback_url_for = callback_url_for  # our job id -> where Ark reports back
        self.calls_back = callback_url_for is not None
        self._key = api_key
        self._secrets = (api_key,)
        super().__init__(client=client, max_concurrency=max_concurrency)

    async def _send(self, method: str, url: str, *, op: Op, json: Any = None) -> httpx.Response:
        """One bounded request; a 2xx response or the mapped ProviderError."""
        async with self._sem:
            try:
                response = await self._client.request(
                    method, url, headers=bearer(self._key), json=json
                )
            except httpx.HTTPError as exc:
                raise error_for_exception(exc, op=op, label=LABEL, secrets=self._secrets) from exc
        if response.is_success:
            return response
        raise self._error(response, op=op)

    def _error(self, response: httpx.Response, *, op: Op) -> ProviderError:
        try:
            body = response.json()
        except ValueError:
            body = None
        code, message = error_parts(body.get("error") if isinstance(body, Mapping) else None)
        kind, reason = failure_for_code(code)
        if kind is FailureKind.BLOCKED_INPUT:
            detail = redact(f"HTTP {response.status_code}: {code}: {message}", self._secrets)
            return ContentBlocked(
                "The safety filter rejected the prompt or image.",
                stage="input",
                detail=detail[:_DETAIL_LIMIT],
                reason=reason,
            )
        return error_for_response(response, op=op, label=LABEL, secrets=self._secrets)

    async def submit(self, spec: VideoSpec) -> str:
        """Create the task. ModelArk has no idempotency key, so this is never retried here.

        Field types follow the SDK's `create()`: ratio and resolution strings, duration an
        int, generate_audio a bool (sent only when the request chose).
        """
        check_limits(spec)
        payload: dict[str, Any] = {
            "model": spec.provider_model,
            "content": build_content(spec),
            "ratio": spec.aspect_ratio,
            "resolution": spec.resolution,
            "duration": int(spec.duration_s),
        }
        if spec.audio is not None:
            payload["generate_audio"] = spec.audio
        if self._callback_url_for is not None:
            payload["callback_url"] = self._callback_url_for(spec.external_id)
        response = await self._send("POST", self._tasks_url, op="submit", json=payload)
        task_id = first_text(json_object(response, op="submit", label=LABEL), ("id",))
        if task_id is None:
            raise AmbiguousSubmit(
                f"{LABEL} accepted the request without a task id.", detail="no id in a 2xx answer"
            )
        return task_id

    async def check(self) -> str:
        """List one task: authenticated and free."""
        await self._send("GET", f"{self._tasks_url}?page_num=1&page_size=1", op="call")
        return "key accepted"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One task query; 5xx and malformed answers are transient (ProviderUnavailable)."""
        response = await self._send("GET", f"{self._tasks_url}/{provider_job_id}", op="poll")
        return parse_task(json_object(response, op="poll", label=LABEL))

    async def cancel(self, provider_job_id: str) -> bool:
        """DELETE cancels a queued task (and deletes a finished one); True when accepted."""
        try:
            await self._send("DELETE", f"{self._tasks_url}/{provider_job_id}", op="call")
        except ProviderError as exc:
            log.info("Seedance cancel of %s not accepted: %s", provider_job_id, exc.detail)
            return False
        return True

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream the signed URL; the key is never sent to the object store."""
        await self._download_unkeyed(video_url, lambda: self.poll(provider_job_id), dest, label=LABEL)

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """ModelArk tasks carry no id of ours to look up."""
        return None

