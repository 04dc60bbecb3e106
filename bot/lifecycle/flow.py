"""A job's steps, in order: accept (reserve) -> request message -> submit -> watch -> settle.

Every step re-reads what it needs from the database and changes state only through
guarded UPDATEs, so a restart can run `run_job` again from the top at any point.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from bot import logs
from bot.lifecycle import approval, fallback, incidents, long_video
from bot.slack import slack_io
from bot.lifecycle.delivery import deliver, ensure_request_message
from bot.clock import budget_day, iso
from bot.deps import Deps
from bot.lifecycle.leases import LeaseLost
from bot.errors import (
    AmbiguousSubmit,
    BudgetExceeded,
    DeliveryError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    ResultExpired,
    SlackRefused,
    SoraError,
)
from bot.models import (
    UNFINISHED,
    FailureKind,
    Job,
    JobStatus,
    ProviderState,
    ProviderStatus,
    ReferenceImage,
    VideoSpec,
)
from bot.catalog import ModelSpec
from bot.parsing import JobRequest
from bot.lifecycle.segments import Plan, Segment, plan_video
from bot.providers.base import VideoProvider
from bot.lifecycle.schedule import PollTrack, next_poll_delay
from bot.lifecycle.throttle import EditThrottle
from storage import compares, series
from storage import jobs as jobstore
from storage import ledger
from storage.db import Conn
from storage.jobs import Limits, NewJob, Reserved

T = TypeVar("T")

log = logging.getLogger(__name__)

# Consecutive non-transient poll errors (e.g. 401 on a status call) before the job fails.
MAX_HARD_POLL_ERRORS = 5


async def accept_request(deps: Deps, request: JobRequest, **options: Any) -> tuple[Job, bool]:
    """Reserve the budget and store the job (one transaction), then hand it to the poller.

    Raises BudgetExceeded / TooManyJobs / InvalidRequest with nothing stored (and nothing
    charged). Returns (job, created); a repeated dedupe key returns the first job and
    starts nothing new. `image` must already be checked and sized for the model. The
    options are `accept_requests`'s.
    """
    got = await accept_requests(deps, [request], **options)
    return got.jobs[0], got.created


async def accept_requests(
    deps: Deps,
    requests: list[JobRequest],
    *,
    user_id: str,
    team_id: str | None,
    channel_id: str,
    source: str,
    thread_ts: str | None = None,
    response_url: str | None = None,
    dedupe_key: str | None = None,
    image: ReferenceImage | None = None,
    wait_s: float | None = None,
    fallback_of: str | None = None,
    compare: bool = False,
) -> Reserved:
    """`accept_request` for one request of one or more jobs (a compare: `compare=True`)."""
    specs = [r.spec(deps.catalog) for r in requests]
    for request, spec in zip(requests, specs):
        if request.duration_s not in spec.allowed_durations(request.resolution):
            # longer than one clip: only as a plan (accept_plan), never as one job
            raise InvalidRequest(f"`{spec.id}` can't make {request.duration_s} s in one clip "
                                 f"(it makes {spec.durations_text(request.resolution)}). Nothing was charged.")
    if image is not None:
        for spec in specs:
            if not spec.image_to_video:
                able = [m.id for m in deps.catalog if m.image_to_video]
                hint = f" Models that can: {', '.join(f'`{m}`' for m in able)}." if able else ""
                raise InvalidRequest(f"`{spec.id}` can't start from an image.{hint} Nothing was charged.")
    image_path = _store_image(deps, image) if image is not None else None
    news = [
        NewJob(
            user_id=user_id, team_id=team_id, channel_id=channel_id, source=source,
            model=spec.id, provider=spec.provider, provider_model=spec.provider_model,
            prompt=request.prompt, duration_seconds=request.duration_s,
            resolution=request.resolution, aspect_ratio=request.aspect_ratio,
            estimate_micros=spec.cost_micros(request.resolution, request.duration_s),
            thread_ts=thread_ts, response_url=response_url, dedupe_key=dedupe_key,
            reference_image_path=str(image_path) if image_path else None,
            reference_image_mime=image.mime_type if image else None,
            fallback_of=fallback_of,
        )
        for request, spec in zip(requests, specs)
    ]
    return await _reserve(deps, news, source=source, image_path=image_path, wait_s=wait_s,
                          compare_prompt=requests[0].prompt if compare else None)


def plan_for(deps: Deps, request: JobRequest) -> Plan | None:
    """The segments of a request longer than one of its model's clips (None: one clip will
    do). Raises InvalidRequest naming the limit when the length can't be made."""
    spec = request.spec(deps.catalog)
    if request.duration_s <= spec.allowed_durations(request.resolution)[-1]:
        return None
    return plan_video(spec, request.duration_s, request.prompt, resolution=request.resolution,
                      max_video_seconds=deps.settings.sora_max_video_seconds, others=list(deps.catalog))


async def accept_plan(
    deps: Deps, request: JobRequest, plan: Plan, *, user_id: str, team_id: str | None, channel_id: str,
    source: str, thread_ts: str | None = None, response_url: str | None = None, dedupe_key: str | None = None,
    wait_s: float | None = None,
) -> Reserved:
    """A long video: its planned segments reserved as one request (the budget, the workspace
    cap, approval and the concurrency cap see the whole plan), each segment a job of its own
    that waits for the one before (bot.lifecycle.long_video)."""
    spec = request.spec(deps.catalog)
    news = [_segment_job(spec, seg, request.resolution, request.aspect_ratio, user_id=user_id, team_id=team_id,
                         channel_id=channel_id, source=source, thread_ts=thread_ts, response_url=response_url,
                         dedupe_key=dedupe_key if seg.index == plan.segments[0].index else None)
            for seg in plan.segments]
    return await _reserve(deps, news, source=source, image_path=None, wait_s=wait_s, compare_prompt=request.prompt)


async def accept_segments(
    deps: Deps, after: Job, segments: list[Segment], *, user_id: str, response_url: str | None, dedupe_key: str,
) -> Reserved:
    """The rest of a long video that stopped: a new request continuing `after`, its last
    finished segment, in the same thread."""
    spec = deps.catalog.get(after.model)
    assert spec is not None
    news = [_segment_job(spec, seg, after.resolution, after.aspect_ratio, user_id=user_id, team_id=after.team_id,
                         channel_id=after.channel_id, source=after.source, thread_ts=after.thread_ts,
                         response_url=response_url, dedupe_key=dedupe_key if i == 0 else None)
            for i, seg in enumerate(segments)]
    prompt = " || ".join(seg.prompt for seg in segments)
    return await _reserve(deps, news, source=after.source, image_path=None, wait_s=None, compare_prompt=prompt,
                          after_job=after.id)


def _segment_job(spec: ModelSpec, seg: Segment, resolution: str, aspect_ratio: str, *, user_id: str,
                 team_id: str | None, channel_id: str, source: str, thread_ts: str | None,
                 response_url: str | None, dedupe_key: str | None) -> NewJob:
    return NewJob(
        user_id=user_id, team_id=team_id, channel_id=channel_id, source=source, model=spec.id,
        provider=spec.provider, provider_model=spec.provider_model, prompt=seg.prompt,
        duration_seconds=seg.seconds, resolution=resolution, aspect_ratio=aspect_ratio,
        estimate_micros=seg.cost_micros, thread_ts=thread_ts, response_url=response_url, dedupe_key=dedupe_key,
        segment_index=seg.index, continuation=seg.continuation,
    )


async def _reserve(
    deps: Deps, news: list[NewJob], *, source: str, image_path: Path | None, wait_s: float | None,
    compare_prompt: str | None, after_job: str | None = None,
) -> Reserved:
    now = deps.clock()
    limits = Limits(
        user_limit_micros=deps.settings.daily_budget_micros,
        workspace_limit_micros=deps.settings.workspace_budget_micros,
        max_unfinished_per_user=deps.settings.sora_max_concurrent_per_user,
        approval_over_micros=deps.settings.approval_over_micros,
        approval_ttl_s=deps.timing.approval_ttl_s,
    )
    try:
        got = await jobstore.reserve_request(
            deps.db, news, limits=limits, day=budget_day(now, deps.settings.tz), now=iso(now), wait_s=wait_s,
            compare_prompt=compare_prompt, lease=deps.leases.new_lease(), after_job=after_job,
        )
    except BaseException as exc:
        if image_path is not None:
            image_path.unlink(missing_ok=True)
        if isinstance(exc, SoraError):
            deps.metrics.refused(exc)
        raise
    if not got.created and image_path is not None:
        image_path.unlink(missing_ok=True)  # the first delivery of this request kept its own
    if got.created:
        deps.metrics.requests_accepted.labels(source).inc()
        for job in got.jobs:
            deps.metrics.money_moved("reserved", job.provider, job.estimate_micros)
            logs.state_change(log, job, None, job.status)
            if deps.poller is not None:
                deps.poller.take(job)  # just stored: its task needn't read it again
    return got


def _store_image(deps: Deps, image: ReferenceImage) -> Path:
    folder = deps.media_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    ext = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(image.mime_type, ".img")
    path = folder / f"{secrets.token_hex(8)}{ext}"
    path.write_bytes(image.data)
    return path


def _load_image(job: Job) -> ReferenceImage | None:
    if not job.reference_image_path:
        return None
    from PIL import Image  # imported lazily: only image jobs need Pillow

    path = Path(job.reference_image_path)
    data = path.read_bytes()
    with Image.open(path) as img:
        width, height = img.size
    return ReferenceImage(data=data, mime_type=job.reference_image_mime or "image/png", width=width, height=height)


def _provider(deps: Deps, job: Job) -> VideoProvider:
    return deps.providers[job.provider]


async def _spec_for(deps: Deps, job: Job) -> VideoSpec:
    spec = deps.catalog.get(job.model)
    extend_video = extend_from = None
    if job.continuation == "extend" and job.after_job is not None:
        before = await _reload(deps, job.after_job)
        extend_video, extend_from = await long_video.ensure_clip(deps, before), before.provider_job_id
    return VideoSpec(
        model=job.model,
        provider_model=spec.provider_model if spec else job.model,
        prompt=job.prompt,
        duration_s=job.duration_seconds,
        resolution=job.resolution,
        aspect_ratio=job.aspect_ratio,
        external_id=job.id,
        image=_load_image(job),
        extend_video=extend_video,
        extend_from_job=extend_from,
        attempt=job.attempts,
    )


async def _reload(deps: Deps, job_id: str) -> Job:
    return await jobstore.must_get_job(deps.db, job_id)


async def run_job(
    deps: Deps, job_id: str, throttle: EditThrottle, *, job: Job | None = None, first_delay_s: float | None = None
) -> None:
    """Drive one job from wherever it stands to its final message. Safe to call again.

    `job` is its row when the caller has just read it (a restart loads every unfinished
    job in one query); `first_delay_s` replaces the first poll's delay (a restart spreads
    the first polls of many jobs).
    """
    if job is None:
        job = await jobstore.get_job(deps.db, job_id)
    if job is None:
        return
    logs.job_context(job)  # every line this task logs from here on names the job
    if not job.status.terminal and job.status_ts is None:
        deps.leases.check(job_id)  # the request message is posted by the job's watcher alone
        async with deps.ack_first.start():
            try:
                job = await ensure_request_message(deps, job)
            except SlackRefused as exc:
                await refused_by_slack(deps, job, exc)
                job = await _reload(deps, job.id)
    if job.status is JobStatus.QUEUED and job.approval_key is not None:
        job = await approval.wait_for_decision(deps, job, lambda s, j=job.id: _nap(deps, j, s))
    # once, or again for a long video's segment queued once more after a failure (fail_job);
    # a counter, not a range: its iterator would live in each of 10,000 waiting jobs' frames
    rounds = 0
    while rounds < long_video.MAX_ATTEMPTS:
        rounds += 1
        if job.status is JobStatus.QUEUED and job.after_job is not None:
            # a long video's segment: its turn comes when the one it continues has its clip
            try:
                job = await long_video.wait_for_previous(deps, job, lambda s, j=job.id: _nap(deps, j, s))
            except DeliveryError as exc:  # its start (the clip before, its last frame) can't be had
                await fail_job(deps, job, exc.kind, exc.detail, retry=False)
                job = await _reload(deps, job.id)
        if job.status is JobStatus.QUEUED:
            async with deps.ack_first.start():
                job = await submit(deps, job)
        if job.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            await watch(deps, job, throttle, first_delay_s=first_delay_s)
            job = await _reload(deps, job.id)
        if job.status is not JobStatus.QUEUED:
            break
        first_delay_s = None
    if job.status is JobStatus.SUCCEEDED and job.is_segment:
        await long_video.after_success(deps, job)
        await slack_io.update_status(deps, job)  # the video's request message shows this segment done
    if job.status is JobStatus.FAILED:
        await start_automatic_fallback(deps, job)
    await deliver(deps, job_id)


async def refused_by_slack(deps: Deps, job: Job, exc: SlackRefused) -> None:
    """Slack refused every form of the request message: fail the request (each job of a
    compare) as slack_refused, refunded and never submitted; its owner is told privately."""
    log.warning("job %s: Slack refused its request message in every form (%s); failing it", job.id, exc.error)
    members = await compares.jobs_of(deps.db, job.compare_id) if job.compare_id else [job]
    for member in members:
        await fail_job(deps, member, FailureKind.SLACK_REFUSED, f"Slack refused the request message: {exc.error}",
                       reason=exc.error)
        if member.id != job.id and deps.poller is not None:
            await deps.poller.wake(member.id)  # its task may be gone or waiting: it delivers either way


async def start_automatic_fallback(deps: Deps, job: Job) -> Job | None:
    """With SORA_FALLBACK_MODELS set: run a provider-failed request on the next listed model.

    Once per failed job (the same dedupe key as the button, so a click can't add a second)
    and only while its failure message is still owed, so a restart long after doesn't start
    one. The failure message then says which model runs it and why.
    """
    order = await deps.fallback_order()
    if not order:
        return None
    delivery = await jobstore.get_delivery(deps.db, job.id)
    if delivery is None or delivery.state != "pending":
        return None
    choice = fallback.automatic_choice(deps.catalog, job, order, await jobstore.fallback_chain_models(deps.db, job))
    if choice is None:
        return None
    try:
        new, _ = await accept_request(
            deps, choice.request(deps.catalog, job.prompt), user_id=job.user_id, team_id=job.team_id, channel_id=job.channel_id,
            source=job.source, thread_ts=job.thread_ts, response_url=job.response_url,
            dedupe_key=f"fallback:{job.id}", fallback_of=job.id,
        )
    except (InvalidRequest, BudgetExceeded) as exc:
        # the failure message still offers the button, whose click explains the refusal
        log.info("job %s: automatic fallback to %s refused: %s", job.id, choice.spec.id, exc.user_message())
        return None
    log.info("job %s: %s failed (%s); running it on %s as job %s", job.id, job.model,
             job.failure_kind.value if job.failure_kind else "?", new.model, new.id)
    return new


async def submit(deps: Deps, job: Job) -> Job:
    """Create the provider job exactly once.

    Retries only what surely created nothing (429, 503, refused connection), honouring
    Retry-After, for up to the submit window. A job that was mid-submit when the process
    died, or an ambiguous failure, is looked up at the provider instead of re-sent.
    """
    provider = _provider(deps, job)
    try:
        spec = await _spec_for(deps, job)
    except DeliveryError as exc:  # the clip a segment extends is gone, here and at the provider
        await fail_job(deps, job, exc.kind, exc.detail, retry=False)
        return await _reload(deps, job.id)
    if job.submit_started_at is not None:
        # We crashed while a create request may have been in flight.
        found = await provider.find_existing(spec, since_epoch_s=job.submit_started_at.timestamp())
        if found:
            return await _mark_submitted(deps, job, found)
        log.warning("job %s: interrupted submit could not be confirmed; not re-sending", job.id)
        await fail_job(deps, job, FailureKind.PROVIDER_UNAVAILABLE,
                       "submit interrupted and the provider offers no lookup", retry=False)
        return await _reload(deps, job.id)

    deadline = deps.clock() + timedelta(seconds=deps.timing.submit_retry_window_s)
    attempt = 0
    while True:
        # not this replica's any more: stop before the mark that says a request may be out
        deps.leases.check(job.id)
        started = deps.clock()
        try:
            # a stop (SIGTERM) lets a create already on its way finish and its id be stored, and
            # the mark that says one may be on its way is part of it: cut off between the two, it
            # would leave a job that may or may not exist, failed to be safe
            created = await _unstoppable(deps, _mark_and_create(deps, job, provider, spec, started))
        except AmbiguousSubmit as exc:
            found = await provider.find_existing(spec, since_epoch_s=started.timestamp())
            if found:
                return await _mark_submitted(deps, job, found)
            log.warning("job %s: ambiguous submit (%s); failing rather than risk a second job",
                        job.id, exc.detail)
            await fail_job(deps, job, FailureKind.PROVIDER_UNAVAILABLE, exc.detail, retry=False)
            return await _reload(deps, job.id)
        except ProviderError as exc:
            # Nothing was created: forget the attempt so a restart may submit again.
            await jobstore.update(deps.db, job.id, expect=[JobStatus.QUEUED], now=iso(deps.clock()),
                                  fence=deps.leases.fence, submit_started_at=None)
            if exc.retryable and exc.surely_not_created and deps.clock() < deadline:
                attempt += 1
                delay = _backoff(deps, attempt, exc.retry_after_s,
                                 rate_limited=isinstance(exc, RateLimited))
                log.info("job %s: submit %s, retrying in %.1fs", job.id, exc.kind.value, delay)
                await asyncio.sleep(delay)
                continue
            await fail_job(deps, job, exc.kind, exc.detail, reason=exc.reason)
            return await _reload(deps, job.id)
        if created is None:
            current = await _reload(deps, job.id)
            if current.status is JobStatus.QUEUED:
                raise LeaseLost(job.id)  # still waiting, but another replica's to send now
            return current  # cancelled meanwhile: nothing to send
        return await _after_submit(deps, *created)


async def _mark_and_create(
    deps: Deps, job: Job, provider: VideoProvider, spec: VideoSpec, started: datetime
) -> tuple[str, bool, Job] | None:
    """Mark the submit as started, then create and store its id; None (nothing sent) when the
    mark didn't take: the job was cancelled, or another replica holds it now."""
    if not await jobstore.update(deps.db, job.id, expect=[JobStatus.QUEUED], now=iso(started),
                                 fence=deps.leases.fence, submit_started_at=iso(started)):
        return None
    return await _create(deps, job, provider, spec)


async def _create(deps: Deps, job: Job, provider: VideoProvider, spec: VideoSpec) -> tuple[str, bool, Job]:
    with deps.metrics.provider_call(job.provider, "create"):
        provider_job_id = await provider.submit(spec)
    return (provider_job_id, *await _store_submitted(deps, job.id, provider_job_id))


async def _unstoppable(deps: Deps, step: Coroutine[Any, Any, T]) -> T:
    return await (deps.poller.finish_even_if_stopped(step) if deps.poller is not None else step)


async def _store_submitted(deps: Deps, job_id: str, provider_job_id: str) -> tuple[bool, Job]:
    now = iso(deps.clock())
    # not fenced: the provider made this job, and whoever watches it must know its id
    moved, stored = await jobstore.update_and_get(
        deps.db, job_id, expect=[JobStatus.QUEUED], now=now,
        status=JobStatus.SUBMITTED, provider_job_id=provider_job_id, submitted_at=now,
        last_progress_at=now,
    )
    assert stored is not None, f"job {job_id} vanished"
    if moved:
        logs.state_change(log, stored, JobStatus.QUEUED, JobStatus.SUBMITTED)
    return moved, stored


async def _mark_submitted(deps: Deps, job: Job, provider_job_id: str) -> Job:
    return await _after_submit(deps, provider_job_id, *await _store_submitted(deps, job.id, provider_job_id))


async def _after_submit(deps: Deps, provider_job_id: str, moved: bool, job: Job) -> Job:
    if not moved and job.status is JobStatus.CANCELLED:
        # Cancelled while the create was in flight: don't leave it rendering (and billing).
        await _cancel_at_provider(deps, job, provider_job_id)
    # no edit here: "waiting for the provider" reads the same before and after it accepts,
    # and an edit per job is a Slack call per job (the next state change edits it)
    return job


def _backoff(deps: Deps, attempt: int, hint_s: float | None, *, rate_limited: bool = False) -> float:
    """Seconds before retry `attempt` (1, 2, …): doubling from the poll interval, jittered.

    A provider's hint wins when longer. A rate limit without one (Kling's 429 code 1302
    carries no Retry-After) waits at least `timing.rate_limit_floor_s`, with up to 50% more
    at random so jobs refused together don't all come back in the same instant.
    """
    base = min(deps.timing.max_poll_interval_s * 2, deps.timing.poll_interval_s * (2 ** (attempt - 1)))
    delay = base * random.uniform(0.8, 1.2)
    if rate_limited and hint_s is None:
        delay = max(delay, deps.timing.rate_limit_floor_s * random.uniform(1.0, 1.5))
    return max(delay, hint_s or 0.0)


async def watch(deps: Deps, job: Job, throttle: EditThrottle, *, first_delay_s: float | None = None) -> None:
    """Poll until the job is terminal (its final message then waits in the outbox).

    The delays come from `bot.lifecycle.schedule.next_poll_delay`; `first_delay_s` replaces the
    first one.
    """
    provider = _provider(deps, job)
    spec = deps.catalog.get(job.model)
    min_render_s = spec.min_render_s if spec else 0.0
    calls_back = getattr(provider, "calls_back", False)
    track = PollTrack.from_job(job)
    transient_errors = 0
    hard_errors = 0
    hint: float | None = None
    rate_limited = False
    t = deps.timing
    calls = 0  # status calls, for the metrics (not a list or frame per job: 10,000 may wait)
    while job.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        now = deps.clock()
        give_up_at = job.started_at + timedelta(seconds=t.job_timeout_s)
        if now >= give_up_at:
            await give_up(deps, job)
            break
        # a safety-net poll, not a callback's, finding the job over: the callback was lost (not
        # the first poll, nor the first after a restart: callbacks can't reach a stopped bot)
        safety_net = calls_back and first_delay_s is None and track.polls > 0
        if first_delay_s is not None:
            delay, first_delay_s = first_delay_s, None
        else:
            delay = next_poll_delay(t, job, now, track, min_render_s=min_render_s, calls_back=calls_back)
        if transient_errors:
            delay = _backoff(deps, transient_errors, hint, rate_limited=rate_limited)
        if hint:
            delay = max(delay, hint)
        delay = min(delay, max(0.0, (give_up_at - now).total_seconds()) + 0.01)
        poked = await _nap(deps, job.id, delay)
        safety_net = safety_net and not poked
        if not poked and deps.poller is not None:
            await deps.poller.pace(job.provider, job.id)  # a callback's poke goes first: it saves polls
        assert job.provider_job_id is not None
        calls += 1
        try:
            with deps.metrics.provider_call(job.provider, "status"):
                status = await provider.poll(job.provider_job_id)
        except ProviderError as exc:
            hint = exc.retry_after_s
            rate_limited = isinstance(exc, RateLimited)
            if exc.retryable or isinstance(exc, RateLimited):
                transient_errors += 1
                log.info("job %s: poll %s (%s); will retry", job.id, exc.kind.value, exc.detail)
                continue
            hard_errors += 1
            log.warning("job %s: poll failed %s (%s) [%d/%d]", job.id, exc.kind.value, exc.detail,
                        hard_errors, MAX_HARD_POLL_ERRORS)
            if hard_errors >= MAX_HARD_POLL_ERRORS:
                await fail_job(deps, job, exc.kind, exc.detail, reason=exc.reason)
                break
            transient_errors += 1
            continue
        transient_errors = hard_errors = 0
        hint = status.retry_after_s
        if safety_net and status.state in _ENDED:
            log.warning("job %s: %s finished it without a callback reaching us; polling found it (check "
                        "SORA_PUBLIC_BASE_URL or the provider's webhook setup)", job.id, job.provider)
        # a queued job has not started rendering, whatever progress figure came with it
        track.saw(deps.clock(), 0 if status.state is ProviderState.QUEUED else _percent(status.progress))
        job = await _apply_status(deps, job, status, throttle)
    # ended (a lost lease or a stop raises instead, and the next watcher counts its own calls)
    deps.metrics.status_calls_per_job.labels(job.provider).observe(calls)


_ENDED = (ProviderState.SUCCEEDED, ProviderState.FAILED, ProviderState.CANCELLED)


def _percent(progress: int | float | None) -> int | None:
    return None if progress is None else max(0, min(100, int(progress)))


async def _nap(deps: Deps, job_id: str, delay: float) -> bool:
    """Sleep until the next poll, or less when a provider callback pokes the job (True)."""
    if deps.poller is None:
        await asyncio.sleep(delay)
        return False
    return await deps.poller.nap(job_id, delay)


async def _apply_status(deps: Deps, job: Job, status: ProviderStatus, throttle: EditThrottle) -> Job:
    now = deps.clock()
    state = status.state
    if state is ProviderState.SUCCEEDED:
        # an adapter whose results come inline (Veo's base64 video) fetches them by job id
        if not status.video_url and not getattr(_provider(deps, job), "downloads_by_job_id", False):
            await fail_job(deps, job, FailureKind.GENERATION_FAILED, "no_output: succeeded without a URL")
        else:
            await finish_success(deps, job, status)
        return await _reload(deps, job.id)
    if state is ProviderState.FAILED:
        err = status.error
        kind = err.kind if err else FailureKind.GENERATION_FAILED
        await fail_job(deps, job, kind, err.detail if err else f"failed ({status.raw_status})",
                       reason=err.reason if err else None)
        return await _reload(deps, job.id)
    if state is ProviderState.CANCELLED:
        await cancel_job(deps, job, by_user=None, provider_side=True)
        return await _reload(deps, job.id)

    # queued / running / unknown: still going; unknown counts as running until the deadline
    fields: dict[str, object] = {}
    force_edit = False
    if state in (ProviderState.RUNNING, ProviderState.UNKNOWN) and job.status is JobStatus.SUBMITTED:
        fields["status"] = JobStatus.RUNNING
        force_edit = True
    progress = _percent(status.progress)
    if progress is not None:
        if progress != job.progress:
            fields["progress"] = progress
            fields["last_progress_at"] = iso(now)
    last_change = job.last_progress_at or job.started_at
    stalled = "last_progress_at" not in fields and (now - last_change).total_seconds() >= deps.timing.stall_timeout_s
    if stalled and not job.stall_notified:
        fields["stall_notified"] = 1
        force_edit = True
    elif "last_progress_at" in fields and job.stall_notified:
        fields["stall_notified"] = 0  # it moved again
    if fields:
        edit = throttle.allow(job.id, force=force_edit)
        if not edit and not force_edit and "stall_notified" not in fields:
            # Only the percentage moved, and no edit will show it: no commit for it. After a
            # restart the provider's figure differs from the stored one, which restarts the
            # stall clock, so keeping it in memory loses nothing.
            return dataclasses.replace(job, progress=fields["progress"], last_progress_at=now)
        moved, stored = await jobstore.update_and_get(
            deps.db, job.id, expect=[JobStatus.SUBMITTED, JobStatus.RUNNING], now=iso(now),
            fence=deps.leases.fence, **fields
        )
        assert stored is not None, f"job {job.id} vanished"
        if not moved:
            if stored.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
                raise LeaseLost(job.id)  # its state held, so the fence refused: another replica's now
            return stored  # ended meanwhile (a cancel): whoever ended it shows it
        if "status" in fields:
            logs.state_change(log, stored, job.status, stored.status)
        job = stored
        if edit:
            give_up_at = job.started_at + timedelta(seconds=deps.timing.job_timeout_s)
            await slack_io.update_status(deps, job, give_up_at=give_up_at)
    return job


async def finish_success(deps: Deps, job: Job, status: ProviderStatus) -> None:
    """Download at once (links expire), then charge and queue the upload in one transaction."""
    seen_finished = iso(deps.clock())  # the job's finished_at: delivery lateness counts from it
    deps.leases.check(job.id)  # a replica that lost the job leaves the download to its new watcher
    provider = _provider(deps, job)
    deps.media_dir.mkdir(parents=True, exist_ok=True)
    dest = deps.media_dir / f"{job.id}.mp4"
    part = dest.with_suffix(".part")
    assert job.provider_job_id is not None
    attempt = 0
    while True:
        attempt += 1
        try:
            with deps.metrics.provider_call(job.provider, "download"):
                await provider.download(job.provider_job_id, status.video_url, part)
            part.replace(dest)
            break
        except ResultExpired as exc:
            part.unlink(missing_ok=True)
            await fail_job(deps, job, FailureKind.RESULT_EXPIRED, exc.detail)
            return
        except DeliveryError as exc:
            part.unlink(missing_ok=True)
            if attempt >= deps.timing.download_attempts:
                await fail_job(deps, job, FailureKind.DOWNLOAD_FAILED, exc.detail)
                return
            delay = _backoff(deps, attempt, None)
            log.info("job %s: download failed (%s); retrying the download in %.1fs", job.id, exc.detail, delay)
            await asyncio.sleep(delay)

    cost = job.estimate_micros
    # a provider's own figure wins when it is lower; zero or less reads as "unknown", since
    # gateways fill the field with 0 when they don't know
    if status.cost_micros is not None and 0 < status.cost_micros < cost:
        cost = status.cost_micros
    elif status.cost_micros is not None and status.cost_micros > cost:
        log.warning("job %s: provider reports %d micros, above the %d reserved; charging the reservation",
                    job.id, status.cost_micros, cost)
    now = iso(deps.clock())
    moved = await deps.db.run_write(_succeed_in, job, cost, status.video_url, str(dest), now,
                                    deps.leases.fence, seen_finished)
    if not moved:
        if not job.is_segment:  # a segment's clip may be the one a new watcher keeps
            dest.unlink(missing_ok=True)
        return
    logs.state_change(log, job, job.status, JobStatus.SUCCEEDED)
    deps.metrics.job_ended(job, "succeeded", charged_micros=cost)


# The settling transactions below each run as one function in one transaction
# (Database.run_write): job row, ledger and outbox change together or not at all.


async def _succeed_in(
    conn: Conn, job: Job, cost: int, video_url: str | None, dest: str, now: str,
    fence: str | None, finished_at: str,
) -> bool:
    moved = await jobstore.update_job(
        conn, job.id, expect=[JobStatus.SUBMITTED, JobStatus.RUNNING], now=now, fence=fence,
        set_={"status": JobStatus.SUCCEEDED, "progress": 100, "cost_micros": cost,
              "video_url": video_url, "finished_at": finished_at},
    )
    if moved:
        await ledger.charge(conn, job.id, cost, now)
        if not job.is_segment:
            await jobstore.add_delivery(conn, job.id, "video", now=now, file_path=dest)
        elif await series.is_last(conn, job):
            # the long video's one message: its file is made from the clips when posted
            await jobstore.add_delivery(conn, job.id, "video", now=now)
        await incidents.close_incidents_in(conn, job.provider)  # the provider works again
    return moved


async def _stop_in(conn: Conn, job: Job, set_: dict[str, object], kind: str, now: str,
                   fence: str | None = None) -> tuple[bool, list[Job]]:
    """Any unfinished state -> failed/cancelled (per `set_`), releasing the reservation.
    `fence`: only while that replica owns the job (its watcher's own verdicts). A long
    video's segment stops the segments after it too: they can't continue what won't exist."""
    moved = await jobstore.update_job(conn, job.id, expect=UNFINISHED, now=now, set_=set_, fence=fence)
    later: list[Job] = []
    if moved:
        await ledger.release(conn, job.id, now)
        await jobstore.add_delivery(conn, job.id, kind, now=now)
        if job.is_segment:
            later = await series.stop_later_in(
                conn, job, now=now, detail=f"not started: segment {(job.segment_index or 0) + 1} "
                f"{'was cancelled' if kind == 'cancelled' else 'failed'}")
    return moved, later


async def _retry_in(conn: Conn, job_id: str, attempts: int, detail: str, now: str, fence: str | None) -> bool:
    """A failed segment back to queued for its one more try: what it sent and got is forgotten
    (its reservation stays), so it is submitted afresh, by the same rules as any submit. Only
    from the attempt the caller saw: a stale view never earns a second retry."""
    current = await jobstore.load_job(conn, job_id)
    if current is None or current.attempts != attempts - 1:
        return False
    return await jobstore.update_job(
        conn, job_id, expect=UNFINISHED, now=now, fence=fence,
        set_={"status": JobStatus.QUEUED, "provider_job_id": None, "submit_started_at": None, "submitted_at": None,
              "progress": None, "video_url": None, "stall_notified": 0, "last_progress_at": now,
              "attempts": attempts, "failure_detail": detail[:1000]},
    )


async def fail_job(
    deps: Deps, job: Job, kind: FailureKind, detail: str, *, reason: str | None = None, retry: bool = True
) -> bool:
    """Any unfinished state -> failed(kind); the reservation is released; a message is owed.
    Only the job's watcher decides that, so it is fenced by this replica's lease.

    A long video's segment that may be tried again is queued once more instead (False: it
    didn't fail), unless new requests are paused: a retry is a fresh submit. `retry=False`
    when a job may exist at the provider all the same (an ambiguous or interrupted submit):
    a second one could be made and billed.
    """
    now = iso(deps.clock())
    if retry and long_video.may_retry(job, kind) and not (await deps.budgets()).paused:
        if await deps.db.run_write(_retry_in, job.id, job.attempts + 1, f"attempt {job.attempts + 1}: {detail}",
                                   now, deps.leases.fence):
            long_video.log_retry(job, kind, detail)
            deps.metrics.segment_retries.labels(job.provider).inc()
            return False
    moved, later = await deps.db.run_write(
        _stop_in, job,
        {"status": JobStatus.FAILED, "failure_kind": kind, "cost_micros": 0,
         "failure_detail": _detail_record(detail, reason), "finished_at": now},
        "failure", now, deps.leases.fence,
    )
    if moved:
        logs.state_change(log, job, job.status, JobStatus.FAILED, detail=f"{kind.value} ({detail})", kind=kind)
        deps.metrics.job_ended(job, kind.value)
        await _stopped_later(deps, later)
    return moved


async def _stopped_later(deps: Deps, later: list[Job]) -> None:
    """A long video's later segments, stopped with the one before them: counted, and their
    waiting tasks woken to end."""
    for job in later:
        logs.state_change(log, job, JobStatus.QUEUED, JobStatus.CANCELLED, detail=job.failure_detail)
        deps.metrics.job_ended(job, FailureKind.CANCELLED.value)
        if deps.poller is not None:
            await deps.poller.wake(job.id)


def _detail_record(detail: str, reason: str | None) -> str:
    # The user-safe reason is kept apart from provider words so messages can show only it.
    text = (detail or "")[:1000]
    return f"{text}\nreason: {reason}" if reason else text


async def cancel_job(deps: Deps, job: Job, *, by_user: str | None, provider_side: bool = False) -> bool:
    """Stop a job: release the money, cancel at the provider where possible, owe a message.

    Any segment of a long video stops the video: its first unfinished segment is the one
    cancelled (and with it every later one), so the message and the finished part come once.
    """
    if job.is_segment and job.compare_id is not None:
        unfinished = [m for m in await compares.jobs_of(deps.db, job.compare_id) if not m.status.terminal]
        if not unfinished:
            return False
        job = unfinished[0]
    now = iso(deps.clock())
    moved, later = await deps.db.run_write(
        _stop_in, job,
        {"status": JobStatus.CANCELLED, "failure_kind": FailureKind.CANCELLED,
         "cost_micros": 0, "finished_at": now,
         "failure_detail": f"cancelled by {by_user}" if by_user else "cancelled at the provider"},
        "cancelled", now,
        # a person may cancel from any replica; the provider's own cancel is the watcher's news
        deps.leases.fence if provider_side else None,
    )
    if moved:
        logs.state_change(log, job, job.status, JobStatus.CANCELLED,
                          detail=f"by {by_user}" if by_user else "at the provider")
        deps.metrics.job_ended(job, FailureKind.CANCELLED.value)
        await _stopped_later(deps, later)
    if moved and not provider_side and job.provider_job_id:
        await _cancel_at_provider(deps, job, job.provider_job_id)
    if moved and job.approval_key is not None:
        # nothing left to decide once every part is cancelled: the admins' DMs say so
        await approval.settle(deps, job.approval_key, state="withdrawn", by=by_user or "bot")
    return moved


async def give_up(deps: Deps, job: Job) -> None:
    """SORA_JOB_TIMEOUT passed: fail as stuck and stop the provider job where it allows."""
    if job.provider_job_id:
        await _cancel_at_provider(deps, job, job.provider_job_id)
    await fail_job(deps, job, FailureKind.STUCK, f"not finished after {deps.timing.job_timeout_s:.0f}s")


async def _cancel_at_provider(deps: Deps, job: Job, provider_job_id: str) -> None:
    try:
        accepted = await _provider(deps, job).cancel(provider_job_id)
        log.info("job %s: provider cancel %s", job.id, "accepted" if accepted else "not supported")
    except ProviderError as exc:
        log.info("job %s: provider cancel failed: %s", job.id, exc.detail)
