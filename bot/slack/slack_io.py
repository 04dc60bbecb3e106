"""Outbound Slack: the request message, status edits, thread replies, and the v2 upload.

Each function knows Slack's failure modes (not in channel, private channels, 429s are
retried by the client's retry handlers) and degrades to what still reaches the user.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import messages
from bot.deps import Deps
from bot.errors import SlackRefused
from bot.lifecycle.fallback import fallback_for
from bot.metrics import Metrics
from bot.models import Job, JobStatus
from storage import approvals, compares
from storage import jobs as jobstore

log = logging.getLogger(__name__)

# Errors that mean "the bot can't post here", as opposed to Slack being unwell.
NO_ACCESS = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action",
             "team_access_not_granted", "access_denied", "method_not_supported_for_channel_type"}


# seconds for one Web API call
SLACK_TIMEOUT_S = 30


def make_slack_client(
    token: str | None, base_url: str, *, session: aiohttp.ClientSession | None = None,
    metrics: Metrics | None = None,
) -> AsyncWebClient:
    """The one Web API client: Slack's own retry handlers for 429 (Retry-After) and resets.

    Pass `session` (made inside the running loop, closed by its owner) to reuse connections;
    without one slack_sdk opens a session per call. A session's own timeout then applies.
    With `metrics`, every call is counted and timed (`MeteredWebClient`).
    """
    kwargs: dict[str, Any] = dict(
        token=token,
        base_url=base_url,
        timeout=SLACK_TIMEOUT_S,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            _RateLimitRetries(metrics, max_retry_count=5),
        ],
    )
    return AsyncWebClient(**kwargs) if metrics is None else MeteredWebClient(metrics, **kwargs)


_SLACK_ERROR_NAME = re.compile(r"[a-z0-9_]{1,48}")


class MeteredWebClient(AsyncWebClient):
    """Counts and times every Web API call, by method and result. Every slack_sdk method
    (chat_postMessage, files_getUploadURLExternal, …) goes through `api_call`."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    async def api_call(self, api_method: str, **kwargs: Any) -> Any:  # type: ignore[override]
        started = time.perf_counter()
        result = "ok"
        try:
            return await super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            error = slack_error(exc)
            # Slack's error names are a small vocabulary; anything else (a proxy's page) is one label
            result = ("rate_limited" if exc.response.status_code == 429
                      else error if _SLACK_ERROR_NAME.fullmatch(error) else "error")
            raise
        except Exception:
            result = "unreachable"
            raise
        except BaseException:
            result = "cancelled"
            raise
        finally:
            self.metrics.slack_calls.labels(api_method, result).inc()
            self.metrics.slack_call_seconds.labels(api_method).observe(time.perf_counter() - started)


class _RateLimitRetries(AsyncRateLimitErrorRetryHandler):
    """Slack's own 429 handler (it waits Retry-After and tries again), counting each 429: the
    retried ones never reach `api_call`'s caller."""

    def __init__(self, metrics: Metrics | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    async def can_retry_async(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if self.metrics is not None and response is not None and response.status_code == 429:
            self.metrics.slack_rate_limited.labels(str(request.url).rsplit("/", 1)[-1]).inc()
        return await super().can_retry_async(state=state, request=request, response=response, error=error)


def slack_error(exc: SlackApiError) -> str:
    try:
        return str(exc.response.get("error") or exc.response.status_code)
    except Exception:  # a response that isn't a dict
        return "unknown_error"


# Errors with which Slack refuses a message's content (not the channel, not Slack's health):
# the same payload sent again is refused again, so a simpler form is sent instead.
REFUSED = {"invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long",
           "invalid_arguments", "invalid_attachments", "too_many_attachments", "no_text",
           "invalid_metadata", "invalid_text"}


def _forms(text: str, blocks: messages.Blocks) -> list[tuple[str, messages.Blocks | None]]:
    """What to send, simplest last: the blocks; the words with only the buttons; the words."""
    plain = messages.plain_version(text, blocks)
    actions = [b for b in blocks if b.get("type") == "actions"]
    forms: list[tuple[str, messages.Blocks | None]] = [(text, blocks)]
    if actions and len(actions) < len(blocks):
        forms.append((plain, actions))
    forms.append((plain, None))
    return forms


async def post_message(deps: Deps, *, channel: str, text: str, blocks: messages.Blocks,
                       thread_ts: str | None = None) -> Any:
    """chat.postMessage of Block Kit; when Slack refuses it as invalid, simpler forms of it.

    Raises SlackRefused when Slack refuses every form, so the caller can fail the job rather
    than send the same refused payload forever; other Slack errors raise SlackApiError.
    """
    error = ""
    for words, form in _forms(text, blocks):
        try:
            return await deps.slack.chat_postMessage(
                channel=channel, text=words, blocks=form, thread_ts=thread_ts,
                unfurl_links=False, unfurl_media=False,
            )
        except SlackApiError as exc:
            error = slack_error(exc)
            if error not in REFUSED:
                raise
            log.warning("Slack refused a message for %s (%s); trying a simpler form", channel, error)
    raise SlackRefused(error)


async def update_message(deps: Deps, *, channel: str, ts: str, text: str, blocks: messages.Blocks) -> None:
    """chat.update, with the same simpler forms as `post_message` when Slack refuses one."""
    error = ""
    for words, form in _forms(text, blocks):
        try:
            # an explicit [] clears the old blocks, which Slack would keep if blocks were left out
            await deps.slack.chat_update(channel=channel, ts=ts, text=words, blocks=form if form is not None else [])
            return
        except SlackApiError as exc:
            error = slack_error(exc)
            if error not in REFUSED:
                raise
            log.warning("Slack refused an edit of %s in %s (%s); trying a simpler form", ts, channel, error)
    raise SlackRefused(error)


async def post_request_message(deps: Deps, job: Job) -> tuple[str, str, str]:
    """Post the visible request message. Returns (channel_id, thread_ts, status_ts).

    Slash commands can't run in threads, so the job's thread hangs off this message. For a
    mention the thread already exists and the status goes in as a reply. When the bot can't
    post in the channel: join it if public, else tell the user through response_url and move
    the conversation to a DM, which becomes the thread. Raises SlackRefused when Slack
    refuses the message in every form.
    """
    text, blocks = await render_request(deps, job)
    thread_ts = job.thread_ts
    try:
        try:
            resp = await post_message(deps, channel=job.channel_id, text=text, blocks=blocks, thread_ts=thread_ts)
        except SlackApiError as exc:
            if slack_error(exc) != "thread_not_found" or thread_ts is None:
                raise
            # the message it answered was deleted: start a thread of its own instead
            thread_ts = None
            resp = await post_message(deps, channel=job.channel_id, text=text, blocks=blocks)
        ts = str(resp["ts"])
        return job.channel_id, thread_ts or ts, ts
    except SlackApiError as exc:
        error = slack_error(exc)
        if error not in NO_ACCESS:
            raise
        log.info("job %s: cannot post in %s (%s); trying a fallback", job.id, job.channel_id, error)
    if await _try_join(deps, job.channel_id):
        resp = await post_message(deps, channel=job.channel_id, text=text, blocks=blocks, thread_ts=job.thread_ts)
        ts = str(resp["ts"])
        return job.channel_id, job.thread_ts or ts, ts
    await respond(
        deps, job.response_url,
        "I can't post in this channel, so I'll follow up in a DM. To get videos here, invite me "
        "with `/invite @sora-bot`.",
    )
    dm_channel = await open_dm(deps, job.user_id)
    resp = await post_message(deps, channel=dm_channel, text=text, blocks=blocks)
    ts = str(resp["ts"])
    return dm_channel, ts, ts


async def open_dm(deps: Deps, user_id: str) -> str:
    dm = await deps.slack.conversations_open(users=user_id)
    return str(dm["channel"]["id"])


async def tell_privately(deps: Deps, job: Job, text: str) -> tuple[str | None, str]:
    """Reach the job's owner without its thread: response_url, an ephemeral, else a DM.

    Returns (message ts if known, how). Raises the last Slack error when nothing got through.
    """
    if await respond(deps, job.response_url, text):
        return None, "respond"
    try:
        await deps.slack.chat_postEphemeral(channel=job.channel_id, user=job.user_id, text=text)
        return None, "ephemeral"
    except SlackApiError as exc:
        log.info("job %s: ephemeral to %s failed (%s); sending a DM", job.id, job.user_id, slack_error(exc))
    resp = await deps.slack.chat_postMessage(channel=await open_dm(deps, job.user_id), text=text)
    return str(resp["ts"]), "dm"


async def _try_join(deps: Deps, channel_id: str) -> bool:
    if not channel_id.startswith("C"):
        return False
    try:
        await deps.slack.conversations_join(channel=channel_id)
        return True
    except SlackApiError as exc:
        log.info("could not join %s: %s", channel_id, slack_error(exc))
        return False


async def respond(deps: Deps, response_url: str | None, text: str) -> bool:
    """An ephemeral note through response_url (5 uses, 30 minutes); False if it can't."""
    if not response_url:
        return False
    try:
        r = await deps.http.post(response_url, json={"response_type": "ephemeral", "text": text})
        return r.status_code < 400
    except httpx.HTTPError as exc:
        log.info("response_url post failed: %s", type(exc).__name__)
        return False


async def update_status(deps: Deps, job: Job, *, give_up_at: Any = None) -> None:
    """Re-render the request message with the job's current status. Best effort."""
    if not job.status_ts:
        return
    text, blocks = await render_request(deps, job, give_up_at=give_up_at)
    try:
        await update_message(deps, channel=job.channel_id, ts=job.status_ts, text=text, blocks=blocks)
    except SlackApiError as exc:
        log.info("job %s: status edit failed: %s", job.id, slack_error(exc))
    except SlackRefused as exc:
        log.warning("job %s: Slack refused every form of the status edit (%s)", job.id, exc.error)


async def render_request(deps: Deps, job: Job, *, give_up_at: Any = None) -> tuple[str, messages.Blocks]:
    """The request message as it should read now: one job's, or the whole compare's."""
    awaiting = False
    if job.approval_key and job.status is JobStatus.QUEUED:
        approval = await approvals.get(deps.db, job.approval_key)
        awaiting = approval is not None and approval.state == "pending"
    if job.compare_id:
        members = await compares.jobs_of(deps.db, job.compare_id)
        if job.is_segment:
            return messages.series_message(job.compare_id, members, awaiting_approval=awaiting)
        return messages.compare_message(job.compare_id, members, awaiting_approval=awaiting)
    offer = None
    choice = fallback_for(deps.catalog, job)
    # no button once a fallback runs (clicked, or started automatically)
    if choice and await jobstore.find_by_dedupe(deps.db, f"fallback:{job.id}") is None:
        offer = (choice.spec.id, choice.cost_micros)
    return messages.request_message(job, tz=deps.settings.tz, give_up_at=give_up_at, fallback=offer,
                                    awaiting_approval=awaiting)


async def post_in_thread(deps: Deps, job: Job, text: str) -> str:
    try:
        resp = await deps.slack.chat_postMessage(
            channel=job.channel_id, thread_ts=job.thread_ts, text=text, unfurl_links=False, unfurl_media=False
        )
    except SlackApiError as exc:
        if slack_error(exc) != "thread_not_found":
            raise
        # someone deleted the request message: say it in the channel rather than never
        resp = await deps.slack.chat_postMessage(
            channel=job.channel_id, text=f"(job `{job.id}`) {text}", unfurl_links=False, unfurl_media=False
        )
    return str(resp["ts"])


async def post_ephemeral(deps: Deps, *, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
    try:
        await deps.slack.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
    except SlackApiError as exc:
        log.info("ephemeral to %s failed: %s", user, slack_error(exc))


async def upload_video(
    deps: Deps, job: Job, path: Path, comment: str, *, on_uploaded: Callable[[str], Awaitable[None]]
) -> str | None:
    """The v2 upload into the job's thread; streams the file. Returns the shared message ts if known.

    `on_uploaded(file_id)` runs after the bytes are up and before the share, so a crash in
    between can be checked with `shared_ts`. Raises SlackApiError / httpx.HTTPError when the
    upload is impossible; the caller then posts the link instead.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        file_id = await send_file(deps, filename=f"sora-{job.id}.mp4", size=size, content=_chunks(fh))
    await on_uploaded(file_id)
    files = [{"id": file_id, "title": messages.file_title(job)}]
    try:
        done = await _complete(deps, job, files, comment)
    except SlackApiError as exc:
        if slack_error(exc) != "not_in_channel" or not await _try_join(deps, job.channel_id):
            raise
        done = await _complete(deps, job, files, comment)
    shares = (done.get("files") or [{}])[0].get("shares") if isinstance(done.get("files"), list) else None
    return _share_ts(shares, job.channel_id)


async def send_file(
    deps: Deps, *, filename: str, size: int, content: Any, content_type: str | None = None
) -> str:
    """The first two steps of Slack's v2 upload: a URL for `size` bytes, then the bytes
    (`content`: bytes, or an async iterator to stream them). Returns the file id, which
    `files.completeUploadExternal` then shares. Raises SlackApiError / httpx.HTTPError."""
    got = await deps.slack.files_getUploadURLExternal(filename=filename, length=size)
    upload_url, file_id = str(got["upload_url"]), str(got["file_id"])
    headers = {"Content-Length": str(size)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = await deps.http.post(upload_url, content=content, headers=headers)
    if r.status_code >= 400:
        raise httpx.HTTPStatusError(f"upload answered {r.status_code}", request=r.request, response=r)
    return file_id


async def _complete(deps: Deps, job: Job, files: list[dict[str, str]], comment: str) -> Any:
    return await deps.slack.files_completeUploadExternal(
        files=files, channel_id=job.channel_id, thread_ts=job.thread_ts,
        initial_comment=comment,
    )


async def shared_ts(deps: Deps, file_id: str, channel: str) -> str | None:
    """The ts of the message that shared `file_id` into `channel`, or None if it wasn't."""
    try:
        info = await deps.slack.files_info(file=file_id)
    except SlackApiError as exc:
        log.info("files.info %s: %s", file_id, slack_error(exc))
        return None
    shares = (info.get("file") or {}).get("shares")
    return _share_ts(shares, channel)


def _share_ts(shares: Any, channel: str) -> str | None:
    # Sharing is asynchronous in Slack: shares may be empty right after completion.
    if not isinstance(shares, dict):
        return None
    for scope in shares.values():
        for entry in (scope or {}).get(channel, []) or []:
            if isinstance(entry, dict) and entry.get("ts"):
                return str(entry["ts"])
    return None


async def _chunks(fh: Any, size: int = 1 << 16) -> Any:
    while chunk := fh.read(size):
        yield chunk
