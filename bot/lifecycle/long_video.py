"""Long videos at run time: a series of segment jobs, each continuing the one before.

A video longer than one clip is planned by `bot.lifecycle.segments` and accepted as one request of
several ordinary jobs (storage: a `compares` row of kind 'series'; one ledger row per
segment, so each is charged when its clip arrives). Each segment waits for the one it
continues, then starts from it: the provider extends that video ('extend': its answer is
the whole video so far), or the segment starts from that video's last frame ('last_frame':
the clips are joined at the end). A failed segment is submitted once more; failing again,
the rest is released and what was finished is delivered, joined, with a Continue button.

Everything a segment needs is re-read from the database, and each step is a guarded
UPDATE, so a restart carries on at the first unfinished segment: a finished one is never
made again, and the one video is joined and uploaded once (see bot.lifecycle.delivery).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot import logs
from bot.clock import iso
from bot.deps import Deps
from bot.errors import DeliveryError, InvalidRequest, NotAllowed, ProviderError
from bot.models import FailureKind, Job, JobStatus
from bot.money import format_usd
from bot.lifecycle.segments import Segment
from storage import compares, series
from storage import jobs as jobstore

log = logging.getLogger(__name__)

# How often a waiting segment looks at the one before it when no poke arrives (a poke from the
# replica that finished it normally wakes it at once).
WAIT_RECHECK_S = 30.0

# A failed segment is tried once more for these: a new render may well work. Not for a prompt
# the provider refused at input, a request it can't take, or a model or key that is gone:
# the same request would fail the same way, and cost a wait for nothing. Nor for a stuck
# render: the provider may still finish and bill it, and a second one could be billed too.
RETRY_KINDS = frozenset({
    FailureKind.GENERATION_FAILED, FailureKind.BLOCKED_OUTPUT, FailureKind.PROVIDER_UNAVAILABLE,
    FailureKind.RATE_LIMITED, FailureKind.RESULT_EXPIRED, FailureKind.DOWNLOAD_FAILED,
})
MAX_ATTEMPTS = 2  # the first try and one retry

Nap = Callable[[float], Awaitable[object]]


def clip_path(deps: Deps, job: Job) -> Path:
    """Where a segment's finished clip is kept until the whole video is delivered."""
    return deps.media_dir / f"{job.id}.mp4"


def video_path(deps: Deps, job: Job) -> Path:
    """Where the joined video of the segments up to `job` is written (once)."""
    return deps.media_dir / f"{job.compare_id}-{job.id}.joined.mp4"


async def wait_for_previous(deps: Deps, job: Job, nap: Nap) -> Job:
    """Hold a queued segment until the one it continues has its clip; then make ready what
    it starts from. Returns the segment as it stands (queued and ready, or stopped).
    Raises DeliveryError when what it starts from can't be had (the caller fails it).
    """
    assert job.after_job is not None
    ended_before = False
    while True:
        job = await jobstore.must_get_job(deps.db, job.id)
        if job.status is not JobStatus.QUEUED:
            return job  # stopped meanwhile (the one before failed, or a cancel)
        before = await jobstore.must_get_job(deps.db, job.after_job)
        if before.status is JobStatus.SUCCEEDED:
            break
        if before.status.terminal:
            # whoever ended the one before stopped this one in the same transaction, so a
            # reader that looked in between sees it stopped on its next look; a second sight
            # of it still queued is a segment nothing will ever start: say so, don't wait
            if ended_before:
                raise DeliveryError(f"the segment before ({before.id}) ended without a video")
            ended_before = True
            continue
        await nap(WAIT_RECHECK_S)
    if job.continuation == "last_frame" and job.reference_image_path is None:
        job = await _start_from_last_frame(deps, job, before)
    return job


async def _start_from_last_frame(deps: Deps, job: Job, before: Job) -> Job:
    """Keep the previous clip's last frame as this segment's image, before its submit: a retry
    or a restart then sends the same image."""
    from bot.media.video_frames import last_frame_png_async  # PyAV: imported when a long video needs it

    clip = await ensure_clip(deps, before)
    image = await last_frame_png_async(clip)
    folder = deps.media_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job.id}-start-{secrets.token_hex(4)}.png"
    path.write_bytes(image.data)
    moved, stored = await jobstore.update_and_get(
        deps.db, job.id, expect=[JobStatus.QUEUED], now=iso(deps.clock()), fence=deps.leases.fence,
        reference_image_path=str(path), reference_image_mime=image.mime_type,
    )
    assert stored is not None
    if not moved:
        path.unlink(missing_ok=True)
    return stored


async def ensure_clip(deps: Deps, job: Job) -> Path:
    """A finished segment's clip on this replica's disk: fetched again from the provider when
    it isn't (another replica made it, or the media folder was emptied). Raises DeliveryError."""
    path = clip_path(deps, job)
    if path.exists():
        return path
    if job.status is not JobStatus.SUCCEEDED or not job.provider_job_id:
        raise DeliveryError(f"segment {job.id} has no video")
    deps.media_dir.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    try:
        await deps.providers[job.provider].download(job.provider_job_id, job.video_url, part)
    except ProviderError as exc:
        part.unlink(missing_ok=True)
        raise DeliveryError(f"segment {job.id}'s video can't be fetched again: {exc.detail}") from exc
    except DeliveryError:
        part.unlink(missing_ok=True)
        raise
    part.replace(path)
    return path


def may_retry(job: Job, kind: FailureKind) -> bool:
    return job.is_segment and job.attempts + 1 < MAX_ATTEMPTS and kind in RETRY_KINDS


async def after_success(deps: Deps, job: Job) -> None:
    """Wake the segment that continues this one, wherever it is watched."""
    nxt = await series.following(deps.db, job.id)
    if nxt is not None and deps.poller is not None:
        await deps.poller.wake(nxt.id)


async def whole_video(deps: Deps, done: list[Job]) -> Path:
    """The one video of these finished segments (in playing order): the last one's clip when
    it extended the ones before (the provider's answer is the whole video), else the clips
    joined, once. Raises DeliveryError."""
    from bot.media.video_join import JoinError, join_segments_async  # PyAV: imported when needed

    if len(done) == 1 or done[-1].continuation == "extend":
        return await ensure_clip(deps, done[-1])
    dest = video_path(deps, done[-1])
    if dest.exists():
        return dest  # joined before a restart: not again
    clips = [await ensure_clip(deps, j) for j in done]
    try:
        result = await join_segments_async(clips, dest)
    except JoinError as exc:
        raise DeliveryError(f"the segments couldn't be joined: {exc}") from exc
    log.info("series %s: joined %d segments (%s, %d frames, %.1f s)", done[-1].compare_id, len(done),
             result.method, result.frames, result.duration_s)
    return dest


def forget_files(deps: Deps, segments: list[Job]) -> None:
    """The clips and joined files of a delivered video: nothing needs them any more."""
    for job in segments:
        clip_path(deps, job).unlink(missing_ok=True)
        video_path(deps, job).unlink(missing_ok=True)
        if job.reference_image_path and Path(job.reference_image_path).name.startswith(f"{job.id}-start-"):
            Path(job.reference_image_path).unlink(missing_ok=True)


def as_one(segments: list[Job]) -> Job:
    """A long video's segments as one row of a job list: the first segment (its id cancels
    the whole video) with the video's length, money, words and state: the unfinished
    segment's while one runs; done when every segment is; else how it stopped."""
    first = segments[0]
    unfinished = [j for j in segments if not j.status.terminal]
    stopped = next((j for j in segments if j.status in (JobStatus.FAILED, JobStatus.CANCELLED)), None)
    state = unfinished[0] if unfinished else stopped or segments[-1]
    prompts = [j.prompt for j in segments]
    return dataclasses.replace(
        first, status=state.status, failure_kind=state.failure_kind, progress=state.progress,
        duration_seconds=sum(j.duration_seconds for j in segments),
        estimate_micros=sum(j.estimate_micros for j in segments), cost_micros=sum(j.cost_micros for j in segments),
        prompt=" || ".join(p for i, p in enumerate(prompts) if i == 0 or p != prompts[i - 1]),
        finished_at=None if unfinished else max((j.finished_at for j in segments if j.finished_at), default=None),
    )


async def one_row_per_video(deps: Deps, jobs: list[Job]) -> list[Job]:
    """A person's job list (newest first) with each long video once, as `as_one`."""
    rows: list[Job] = []
    seen: set[str] = set()
    for job in jobs:
        if job.is_segment and job.compare_id is not None:
            if job.compare_id in seen:
                continue
            seen.add(job.compare_id)
            job = as_one(await compares.jobs_of(deps.db, job.compare_id))
        rows.append(job)
    return rows


async def continue_video(deps: Deps, series_id: str, user_id: str, *, response_url: str | None = None) -> str:
    """The Continue button of a long video that stopped: the segments still missing, as a new
    request (its own reservation, checked like any), carrying on from the last finished one.
    Its video, when done, is the whole one from the first segment. Returns the reply text."""
    from bot.lifecycle import flow  # flow drives the segments, and imports this module

    row = await compares.get(deps.db, series_id)
    if row is None or row.kind != "series":
        raise InvalidRequest("That long video doesn't exist (any more).")
    if row.user_id != user_id and not await deps.authz.is_admin(user_id):
        raise NotAllowed(f"Only <@{row.user_id}> or an admin can continue this video. Nothing was charged.")
    members = await compares.jobs_of(deps.db, series_id)
    if not all(j.status.terminal for j in members):
        raise InvalidRequest("That video is still being made; it can be continued once it stops.")
    done = [j for j in members if j.status is JobStatus.SUCCEEDED]
    rest = [j for j in members if j.status is not JobStatus.SUCCEEDED]
    if not done or not rest:
        raise InvalidRequest("There's nothing to continue: " + (
            "every segment is finished." if not rest else "no segment was finished; start it again with `/sora`."))
    last = done[-1]
    spec = deps.catalog.get(last.model)
    if spec is None:
        raise InvalidRequest(f"`{last.model}` isn't offered any more, so this video can't be continued on it.")
    segments = [Segment(index=j.segment_index or 0, seconds=j.duration_seconds, prompt=j.prompt,
                        continuation=j.continuation or "last_frame",  # type: ignore[arg-type]
                        cost_micros=spec.cost_micros(j.resolution, j.duration_seconds)) for j in rest]
    got = await flow.accept_segments(
        deps, last, segments, user_id=user_id if row.user_id == user_id else row.user_id,
        response_url=response_url, dedupe_key=f"continue:{series_id}",
    )
    first = got.jobs[0]
    if not got.created:
        return f"Already on it: the rest of this video is `{got.compare_id}`."
    total = sum(j.estimate_micros for j in got.jobs)
    seconds = sum(j.duration_seconds for j in got.jobs)
    return (f"Continuing from segment {(last.segment_index or 0) + 1}: {seconds} s more as {len(got.jobs)} "
            f"segment{'s' if len(got.jobs) != 1 else ''} on `{first.model}`, {format_usd(total)} reserved. "
            "The whole video lands in the thread.")


def log_retry(job: Job, kind: FailureKind, detail: str) -> None:
    logs.state_change(log, job, job.status, JobStatus.QUEUED, detail=f"retrying after {kind.value} ({detail})")
