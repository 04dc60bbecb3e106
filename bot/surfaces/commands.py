"""What `/sora` and mentions do, as plain async functions returning the reply text."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bot.lifecycle import compare, flow, long_video
from bot.slack import messages, slack_text
from bot.clock import budget_day, next_reset
from bot.deps import Deps
from bot.errors import BudgetExceeded, InvalidRequest, NotAllowed
from bot.models import JobStatus
from bot.money import format_usd
from bot.lifecycle.segments import Plan
from bot.parsing import Budget, Cancel, Command, Compare, Generate, Help, JobRequest, Models, Status, parse_command
from storage import jobs as jobstore
from storage import ledger

log = logging.getLogger(__name__)

# How long a request that must be answered in Slack's 3 s may wait for the database writer.
ACK_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer for the person who asked (ephemeral); `job_id` when a job was started."""

    text: str
    job_id: str | None = None
    created: bool = False


@dataclass(frozen=True, slots=True)
class Origin:
    user_id: str
    team_id: str | None
    channel_id: str
    source: str  # "command" | "mention"
    thread_ts: str | None = None
    response_url: str | None = None
    dedupe_key: str | None = None
    image_file: dict[str, Any] | None = None  # a Slack file to animate (mentions, DMs)
    like: JobRequest | None = None  # a previous request whose options are the defaults
    drop_user: str | None = None  # the bot's own user id: its mentions aren't part of a prompt


async def handle_text(deps: Deps, text: str, origin: Origin) -> Reply:
    """Parse and run one request; refusals come back as text, never as exceptions."""
    command: Command | None = None
    try:
        mentioned = [u for u in slack_text.user_ids(text) if u != origin.drop_user]
        names = await slack_text.display_names(deps, mentioned) if mentioned else None
        command = parse_command(text, deps.catalog, like=origin.like, names=names, drop_user=origin.drop_user)
        return await run_command(deps, command, origin)
    except (InvalidRequest, BudgetExceeded, NotAllowed) as exc:
        if command is None or isinstance(command, (Generate, Compare)):
            deps.metrics.refused(exc)  # a video request refused (not a mistyped `/sora status`)
        return Reply(exc.user_message())


def not_an_image_text(files: list[dict[str, Any]]) -> str:
    """The refusal for a request that came with files a model can't start from."""
    names = ", ".join(f"`{messages.escape_mrkdwn(str(f.get('name') or f.get('title') or 'a file'), 60)}`"
                      for f in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return (f"I can only start a video from an image (JPEG, PNG or WebP), and {names}{more} isn't one. "
            "Nothing was charged. Send the prompt again without the file, or with an image.")


async def request_like(deps: Deps, channel_id: str, thread_ts: str | None) -> JobRequest | None:
    """The options of the last video in this thread, for a follow-up like "again but at night"."""
    if not thread_ts:
        return None
    job = await jobstore.latest_job_in_thread(deps.db, channel_id, thread_ts)
    if job is None or deps.catalog.get(job.model) is None:
        return None
    seconds = job.duration_seconds
    if job.is_segment:
        # a long video's segment: "again" means a video as long as the whole one
        from storage import series

        seconds = sum(j.duration_seconds for j in await series.chain(deps.db, job))
    return JobRequest.model_construct(prompt=job.prompt, model=job.model, duration_s=seconds,
                                      resolution=job.resolution, aspect_ratio=job.aspect_ratio)


async def run_command(deps: Deps, command: Command, origin: Origin) -> Reply:
    match command:
        case Help():
            return Reply(messages.help_text(deps.catalog))
        case Models():
            return Reply(messages.models_text(deps.catalog))
        case Budget():
            return Reply(await budget_reply(deps, origin.user_id))
        case Status(job_ref):
            return Reply(await status_reply(deps, origin.user_id, job_ref))
        case Cancel(job_ref):
            return Reply(await cancel_reply(deps, origin.user_id, job_ref))
        case Compare(requests):
            return Reply(await compare.start(
                deps, requests, user_id=origin.user_id, team_id=origin.team_id, channel_id=origin.channel_id,
                source=origin.source, thread_ts=origin.thread_ts, response_url=origin.response_url,
                dedupe_key=origin.dedupe_key, wait_s=ACK_WAIT_S if origin.source == "command" else None,
            ))
        case Generate(request):
            plan = flow.plan_for(deps, request)
            if plan is not None:
                return await _long_video(deps, request, plan, origin)
            image = None
            if origin.image_file is not None:
                from bot.media import images

                spec = request.spec(deps.catalog)
                if not spec.image_to_video:
                    able = ", ".join(f"`{m.id}`" for m in deps.catalog if m.image_to_video) or "none here"
                    raise InvalidRequest(f"`{spec.id}` can't start from an image (models that can: {able}). Nothing was charged.")
                f = origin.image_file
                # by id only: files.info checks the type and size before anything is downloaded
                data, _ = await images.fetch_slack_file(deps, file_id=f.get("id"))
                image = await images.prepare_image_async(data, spec=spec, resolution=request.resolution,
                                                         aspect=request.aspect_ratio)
            job, created = await flow.accept_request(
                deps, request, user_id=origin.user_id, team_id=origin.team_id,
                channel_id=origin.channel_id, source=origin.source, thread_ts=origin.thread_ts,
                response_url=origin.response_url, dedupe_key=origin.dedupe_key, image=image,
                # a slash command must be answered within Slack's 3 s: don't queue forever
                wait_s=ACK_WAIT_S if origin.source == "command" else None,
            )
            if not created:
                return Reply(f"Already on it: job `{job.id}` ({job.status.value}).", job.id, False)
            wait = messages.APPROVAL_PENDING_NOTE if job.approval_key else ""
            return Reply(
                f"Got it: job `{job.id}`, {format_usd(job.estimate_micros)} reserved. "
                f"Watch the thread for the video.{wait}",
                job.id,
                True,
            )
    raise InvalidRequest("I didn't understand that; `/sora help` shows what I can do.")


async def _long_video(deps: Deps, request: JobRequest, plan: Plan, origin: Origin) -> Reply:
    """A video longer than one clip: the plan, said as it is reserved (nothing is charged
    until a segment's clip arrives)."""
    if origin.image_file is not None:
        raise InvalidRequest(f"A video longer than one clip can't start from an image yet: ask for "
                             f"{request.spec(deps.catalog).allowed_durations(request.resolution)[-1]} s or less "
                             "with the image, or send the long one without it. Nothing was charged.")
    got = await flow.accept_plan(
        deps, request, plan, user_id=origin.user_id, team_id=origin.team_id, channel_id=origin.channel_id,
        source=origin.source, thread_ts=origin.thread_ts, response_url=origin.response_url,
        dedupe_key=origin.dedupe_key, wait_s=ACK_WAIT_S if origin.source == "command" else None,
    )
    first = got.jobs[0]
    if not got.created:
        return Reply(f"Already on it: video `{got.compare_id}`.", first.id, False)
    wait = messages.APPROVAL_PENDING_NOTE if got.approval_key else ""
    return Reply(messages.long_video_accepted(plan, got.compare_id or first.id) + wait, first.id, True)


async def budget_reply(deps: Deps, user_id: str) -> str:
    now = deps.clock()
    tz = deps.settings.tz
    day = budget_day(now, tz)
    budgets = await deps.budgets()
    limit, totals = await ledger.totals_for(deps.db, user_id, day, budgets.default_user_micros)
    text = messages.budget_text(
        limit=limit, spent=totals.spent_micros, reserved=totals.reserved_micros,
        reset_at=next_reset(now, tz), now=now, tz=tz,
    )
    if budgets.workspace_micros is not None:
        async with deps.db.reading() as reader:
            ws = await ledger.workspace_totals(reader, day)
        left = max(budgets.workspace_micros - ws.used_micros, 0)
        text += f"\nThe whole workspace has {format_usd(left)} left of its {format_usd(budgets.workspace_micros)} daily cap."
    if budgets.paused:
        text += "\n:double_vertical_bar: New requests are paused by an admin right now."
    return text


async def status_reply(deps: Deps, user_id: str, job_ref: str | None) -> str:
    tz = deps.settings.tz
    if job_ref:
        job = await jobstore.find_job(deps.db, job_ref)
        if job is None or job.user_id != user_id:
            return f"I can't find a job `{messages.escape_mrkdwn(job_ref, 20)}` of yours. `/sora status` lists your recent jobs."
        return messages.job_status_text(job, tz=tz)
    recent = (await long_video.one_row_per_video(deps, await jobstore.list_jobs(deps.db, user_id=user_id,
                                                                                limit=20)))[:5]
    if not recent:
        return "You have no video jobs yet. Try `/sora a paper boat in the rain`."
    return "*Your recent jobs:*\n" + "\n".join(messages.job_status_text(j, tz=tz) for j in recent)


async def cancel_reply(deps: Deps, user_id: str, job_ref: str) -> str:
    job = await jobstore.find_job(deps.db, job_ref)
    if job is None or (job.user_id != user_id and not await deps.authz.is_admin(user_id)):
        return f"I can't find a job `{messages.escape_mrkdwn(job_ref, 20)}` of yours to cancel."
    if job.is_segment and job.compare_id is not None:
        # a long video's segment: the video stops from its first unfinished segment
        return await compare.cancel_all(deps, job.compare_id, user_id)
    if job.status.terminal:
        return f"Job `{job.id}` has already {_finished_words(job.status)}; nothing to cancel."
    if await flow.cancel_job(deps, job, by_user=user_id):
        if deps.poller is not None:
            await deps.poller.restart_anywhere(job.id)
        whose = "Your" if job.user_id == user_id else f"<@{job.user_id}>'s"
        return f"Cancelled job `{job.id}`. {whose} {format_usd(job.estimate_micros)} reservation is released."
    return f"Job `{job.id}` finished before I could cancel it."


def _finished_words(status: JobStatus) -> str:
    return {"succeeded": "finished", "failed": "failed", "cancelled": "been cancelled"}[status.value]
