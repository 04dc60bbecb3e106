"""The outbox: each finished job's one final message, posted exactly once.

A delivery row is written in the same transaction that finishes the job; posting records
the message ts and closes the row, so a restart posts only what is still owed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from slack_sdk.errors import SlackApiError

from bot.lifecycle import incidents, long_video
from bot.slack import messages, slack_io
from bot.surfaces import home
from bot.clock import iso
from bot.deps import Deps
from bot.errors import DeliveryError, ProviderError, SlackRefused
from bot.models import UNFINISHED, FailureKind, Job, JobStatus
from bot.money import format_usd
from storage import compares, series
from storage import jobs as jobstore
from storage.db import TurnTimeout

log = logging.getLogger(__name__)


async def deliver(deps: Deps, job_id: str) -> None:
    """Post the job's final message if it is still owed; then a compare's summary if now due."""
    job = await _deliver_final(deps, job_id)
    if job is not None and job.compare_id is not None:
        await summarize_compare(deps, job.compare_id)


async def _deliver_final(deps: Deps, job_id: str) -> Job | None:
    """The job's one final message, retrying Slack trouble with backoff."""
    attempt = 0
    while True:
        delivery = await jobstore.get_delivery(deps.db, job_id)
        if delivery is None or delivery.state == "done":
            return await jobstore.get_job(deps.db, job_id)
        job = await jobstore.get_job(deps.db, job_id)
        assert job is not None
        deps.leases.check(job_id)  # one message per job: never from a replica that lost it
        try:
            if job.failure_kind is FailureKind.SLACK_REFUSED:
                ts, method = await _tell_refused(deps, job)
            else:
                ts, method = await _post_final(deps, job, delivery)
        except (SlackApiError, httpx.HTTPError) as exc:
            attempt += 1
            error = slack_io.slack_error(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
            await jobstore.note_delivery_attempt(deps.db, job_id, error, iso(deps.clock()))
            delay = min(deps.timing.delivery_retry_max_s, deps.timing.poll_interval_s * 2 ** min(attempt, 10))
            log.warning("job %s: final message failed (%s); retrying in %.0fs", job_id, error, delay)
            await asyncio.sleep(delay)
            continue
        delivered_at = deps.clock()
        await jobstore.mark_delivered(deps.db, job_id, message_ts=ts, method=method, now=iso(delivered_at))
        if delivery.kind == "video" and job.finished_at is not None:
            deps.metrics.delivery_lateness_seconds.observe(max(0.0, (delivered_at - job.finished_at).total_seconds()))
        if delivery.file_path:
            Path(delivery.file_path).unlink(missing_ok=True)
        if job.is_segment:
            await _forget_segment_files(deps, job, delivery)
        await slack_io.update_status(deps, job)
        await home.refresh_after_job(deps, job.user_id)  # best effort; never raises
        return job


async def _post_final(deps: Deps, job: Job, delivery: jobstore.Delivery) -> tuple[str | None, str]:
    """The final message in the job's thread; privately when Slack refuses the thread's start."""
    if job.thread_ts is None:
        try:
            job = await ensure_request_message(deps, job)
        except SlackRefused as exc:
            log.warning("job %s: Slack refused its request message (%s); telling its owner privately", job.id, exc.error)
            if delivery.kind == "video":  # not reached today: a video's message is posted before its submit
                text = messages.link_message(job, job.video_url, expires=None, why="Slack refused the message")
            else:
                text = await _failure_text(deps, job)
            return await slack_io.tell_privately(deps, job, text)
    if job.is_segment:
        return await _post_long_video(deps, job, delivery)
    if delivery.kind == "video":
        return await _post_video(deps, job, delivery)
    ts = await slack_io.post_in_thread(deps, job, await _failure_text(deps, job))
    if job.failure_kind is not None:
        await incidents.open_incident(deps, job.provider, job.failure_kind, job_id=job.id)
    return ts, "message"


async def _tell_refused(deps: Deps, job: Job) -> tuple[str | None, str]:
    """A job Slack never let start a thread: its owner hears it by ephemeral or DM, once per
    request (a compare's first job speaks for the set)."""
    text = await _failure_text(deps, job)
    if job.compare_id is not None:
        members = await compares.jobs_of(deps.db, job.compare_id)
        if members[0].id != job.id:
            return None, "with_set"
        models = ", ".join(f"`{j.model}`" for j in members)
        text += f" This was the compare of {models}; none of them was started."
    return await slack_io.tell_privately(deps, job, text)


async def _shared_before(deps: Deps, job: Job, delivery: jobstore.Delivery) -> str | None:
    """The ts of the video's message when a previous attempt got as far as uploading it and
    its share reached the thread (then it isn't posted again)."""
    if not delivery.upload_file_id:
        return None
    ts = await slack_io.shared_ts(deps, delivery.upload_file_id, job.channel_id)
    if ts is not None:
        log.info("job %s: the video was already shared (%s); not posting again", job.id, ts)
    return ts


def _remember_upload(deps: Deps, job: Job) -> Callable[[str], Awaitable[None]]:
    """`upload_video`'s on_uploaded: the file id, kept before the share (see _shared_before)."""
    async def remember(file_id: str) -> None:
        await jobstore.note_upload_file(deps.db, job.id, file_id, iso(deps.clock()))

    return remember


async def _post_video(deps: Deps, job: Job, delivery: jobstore.Delivery) -> tuple[str | None, str]:
    if (ts := await _shared_before(deps, job, delivery)) is not None:
        return ts, "upload"
    file_path = delivery.file_path
    path = Path(file_path) if file_path else None
    if path is None or not path.exists():
        path = await _download_again(deps, job)
    why = "the file was no longer available"
    if path is not None:
        try:
            ts = await slack_io.upload_video(deps, job, path, messages.success_comment(job),
                                             on_uploaded=_remember_upload(deps, job))
            return ts, "upload"
        except SlackApiError as exc:
            why = f"Slack said `{slack_io.slack_error(exc)}`"
            log.info("job %s: upload failed (%s); posting the link", job.id, why)
        except httpx.HTTPError as exc:
            why = "the upload did not go through"
            log.info("job %s: upload failed (%s); posting the link", job.id, type(exc).__name__)
    provider = deps.providers.get(job.provider)
    url = job.video_url if getattr(provider, "shareable_urls", False) else None
    text = messages.link_message(job, url, expires=messages.LINK_LIFETIME.get(job.provider), why=why)
    if job.compare_id:
        text = f"*`{job.model}`*: {text}"
    return await slack_io.post_in_thread(deps, job, text), "link"


async def _post_long_video(deps: Deps, job: Job, delivery: jobstore.Delivery) -> tuple[str | None, str]:
    """A long video's one message: the whole video (its last segment arrived), or, when it
    stopped, why and what was finished, joined (kept for Continue)."""
    if (ts := await _shared_before(deps, job, delivery)) is not None:
        return ts, "upload"
    text = ""
    if delivery.kind != "video":
        text = await _failure_text(deps, job)
        if job.failure_kind is not None and job.failure_kind is not FailureKind.CANCELLED:
            await incidents.open_incident(deps, job.provider, job.failure_kind, job_id=job.id)
    done = [j for j in await series.chain(deps.db, job) if j.status is JobStatus.SUCCEEDED]
    if not done:
        return await slack_io.post_in_thread(deps, job, text), "message"
    try:
        path = await long_video.whole_video(deps, done)
    except DeliveryError as exc:
        log.warning("job %s: the long video's file couldn't be made: %s", job.id, exc.detail)
        why = ("\n:warning: The finished segments couldn't be put together into one file here "
               f"({exc.message or 'a file was missing'}); an admin can find them under job ids "
               f"{', '.join(f'`{j.id}`' for j in done)}.")
        return await slack_io.post_in_thread(deps, job, (text or f"<@{job.user_id}> Your video is made.") + why), "message"
    if delivery.kind == "video":
        comment = messages.long_video_comment(job, done)
    else:
        members = await compares.jobs_of(deps.db, job.compare_id) if job.compare_id else [job]
        comment = text + messages.partial_video_note(done, [m for m in members if m.status is not JobStatus.SUCCEEDED])

    try:
        return await slack_io.upload_video(deps, job, path, comment, on_uploaded=_remember_upload(deps, job)), "upload"
    except SlackApiError as exc:
        # no provider link can stand in for a joined file: say so, with what was charged
        why = slack_io.slack_error(exc)
        log.info("job %s: long video upload refused (%s)", job.id, why)
        note = f"\n:warning: Slack refused the video's upload (`{why}`), so it can't be shown here."
        return await slack_io.post_in_thread(deps, job, comment + note), "message"


async def _forget_segment_files(deps: Deps, job: Job, delivery: jobstore.Delivery) -> None:
    """After a long video's message: its files go, except the clips a Continue still needs."""
    segments = await series.chain(deps.db, job)
    if delivery.kind == "video":
        long_video.forget_files(deps, segments)
    else:
        for seg in segments:
            long_video.video_path(deps, seg).unlink(missing_ok=True)


async def _download_again(deps: Deps, job: Job) -> Path | None:
    """After a restart that lost the media file: fetch it again (links may have expired)."""
    if job.status is not JobStatus.SUCCEEDED or not job.provider_job_id:
        return None
    dest = deps.media_dir / f"{job.id}.mp4"
    deps.media_dir.mkdir(parents=True, exist_ok=True)
    try:
        await deps.providers[job.provider].download(job.provider_job_id, job.video_url, dest)
        return dest
    except (DeliveryError, ProviderError) as exc:
        log.info("job %s: re-download failed: %s", job.id, exc.detail)
        return None


async def _failure_text(deps: Deps, job: Job) -> str:
    """The final words of a job that failed or was cancelled: what happened, what next."""
    if job.failure_detail and job.failure_detail.startswith(("approval denied", "approval expired")):
        denied = job.failure_detail.startswith("approval denied")
        by = job.failure_detail.removeprefix("approval denied by ").strip() if denied else None
        if job.is_segment and job.compare_id is not None:
            # one message for the long video: the whole plan's reservation came back
            members = await compares.jobs_of(deps.db, job.compare_id)
            job = dataclasses.replace(job, estimate_micros=sum(m.estimate_micros for m in members))
        return messages.approval_outcome_text(job, state="denied" if denied else "expired", by=by or None)
    spec = deps.catalog.get(job.model)
    waited = None
    if job.finished_at is not None:
        waited = (job.finished_at - job.created_at).total_seconds() / 60
    cancelled_by = None
    if job.failure_detail and job.failure_detail.startswith("cancelled by "):
        cancelled_by = job.failure_detail.removeprefix("cancelled by ").strip() or None
    text = messages.failure_message(
        job,
        provider_label=deps.provider_label(job.provider),
        reason=messages.reason_of(job),
        alternatives=[m for m in deps.catalog.ids() if m != job.model][:3],
        retired_note=spec.retired_note if spec else None,
        minutes_waited=waited,
        cancelled_by=cancelled_by,
    )
    if job.compare_id and not job.is_segment:
        text = f"*`{job.model}`*: {text}"
    if job.is_segment:
        text = f"*Segment {(job.segment_index or 0) + 1}*: {text}"
    replacement = await jobstore.find_by_dedupe(deps.db, f"fallback:{job.id}")
    if replacement is not None:
        # started automatically before this message (a click can only come after it)
        text += (f"\n:twisted_rightwards_arrows: Automatic fallback is on, so I'm running it on `{replacement.model}` "
                 f"instead ({replacement.duration_seconds} s, {format_usd(replacement.estimate_micros)} reserved): "
                 f"job `{replacement.id}`. Its video will land in this thread.")
    return f"<@{job.user_id}> {text}"


async def ensure_request_message(deps: Deps, job: Job) -> Job:
    if job.compare_id is not None:
        return await _ensure_compare_message(deps, job)
    channel, thread_ts, status_ts = await slack_io.post_request_message(deps, job)
    now = iso(deps.clock())
    _, updated = await jobstore.update_and_get(
        deps.db, job.id, expect=UNFINISHED, now=now,
        channel_id=channel, thread_ts=thread_ts, status_ts=status_ts,
    )
    assert updated is not None, f"job {job.id} vanished"
    return updated


# --- /sora compare: the set shares one request message and one summary ------------------------

# how long a set's summary waits while another replica posts it (with its Slack retries)
SUMMARY_TURN_WAIT_S = 120.0
# The set's jobs run side by side; in one process they take turns on the set's messages.
_compare_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


async def _ensure_compare_message(deps: Deps, job: Job) -> Job:
    """Post the set's request message once; every job of the set then lives in its thread."""
    assert job.compare_id is not None
    async with _compare_locks[job.compare_id]:
        row = await compares.get(deps.db, job.compare_id)
        # a set Slack refused is failed as a whole: its other jobs don't ask again
        current = await jobstore.must_get_job(deps.db, job.id)
        if row is not None and row.status_ts is None and current.failure_kind is not FailureKind.SLACK_REFUSED:
            channel, thread_ts, status_ts = await slack_io.post_request_message(deps, job)
            await compares.set_message(deps.db, job.compare_id, channel_id=channel, thread_ts=thread_ts,
                                       status_ts=status_ts, now=iso(deps.clock()))
    return await jobstore.must_get_job(deps.db, job.id)


async def summarize_compare(deps: Deps, compare_id: str) -> None:
    """Once every model has answered in the thread: the side-by-side summary, once (also
    across replicas, whose last members may finish on two of them at once)."""
    try:
        async with _compare_locks[compare_id], deps.db.one_at_a_time(f"compare-summary:{compare_id}",
                                                                    wait_s=SUMMARY_TURN_WAIT_S):
            row = await compares.get(deps.db, compare_id)
            if row is None or row.summary_state == "done" or not await compares.all_delivered(deps.db, compare_id):
                return
            jobs = await compares.jobs_of(deps.db, compare_id)
            if jobs[0].thread_ts is None:
                # Slack never let the set start its thread; its owner was told privately
                await compares.mark_summarized(deps.db, compare_id, None)
                _compare_locks.pop(compare_id, None)
                return
            attempt = 0
            while True:
                try:
                    ts = await slack_io.post_in_thread(deps, jobs[0], messages.compare_summary(jobs))
                    break
                except (SlackApiError, httpx.HTTPError) as exc:
                    attempt += 1
                    if attempt >= 8:  # still owed: the set is watched again on the next start
                        log.warning("compare %s: summary not posted: %s", compare_id, type(exc).__name__)
                        return
                    await asyncio.sleep(min(deps.timing.delivery_retry_max_s, deps.timing.poll_interval_s * 2 ** attempt))
            await compares.mark_summarized(deps.db, compare_id, ts)
    except TurnTimeout:  # another replica is posting it, and records it when done
        log.info("compare %s: its summary is being posted elsewhere", compare_id)
        return
    # the set is done: a later caller finds the summary recorded, so a fresh lock is harmless
    _compare_locks.pop(compare_id, None)
    await slack_io.update_status(deps, jobs[0])
