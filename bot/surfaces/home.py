"""The App Home tab: a person's budget and recent jobs, and for admins the workspace's day.

`home_view` is a pure Block Kit builder; `publish_home` gathers the numbers and publishes;
`refresh_after_job` is the throttled, never-raising refresh delivery calls when a job ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.lifecycle import incidents, long_video
from bot.slack import slack_io
from bot.catalog import SIMULATOR
from bot.clock import budget_day, humanize_duration, local_hhmm, next_reset
from bot.deps import Deps
from bot.slack.messages import escape_mrkdwn
from bot.models import FailureKind, Job, JobStatus
from bot.money import format_usd
from bot.surfaces.request_modal import OPEN_ACTION as OPEN_REQUEST_ACTION
from storage import admin as settings_store
from storage import jobs as jobstore
from storage import ledger, reports
from storage.db import TurnTimeout
from storage.ledger import UsageRow

log = logging.getLogger(__name__)

MAX_HOME_BLOCKS = 100  # Slack's limit for a Home view
HOME_JOBS = 10
TOP_SPENDERS = 5
PROMPT_CHARS = 120
BAR_CELLS = 10
WEEK_DAYS = 7  # admins see this many budget days' spend, today's included
REFRESH_INTERVAL_S = 10.0  # at most one job-driven publish per person this often
REFRESH_TIMEOUT_S = 10.0  # delivery waits no longer than this for the Home refresh
HOME_TURN_WAIT_S = 10.0  # a publish waits this long for the one before it (this person's Home)
# A publish waits no longer than this for the thread links it lacks (looked up side by side);
# a job whose link didn't come shows none and is looked up again on the next publish.
THREAD_LINK_TIMEOUT_S = 3.0

_STATUS = {
    JobStatus.QUEUED: (":hourglass_flowing_sand:", "queued"),
    JobStatus.SUBMITTED: (":hourglass_flowing_sand:", "queued at the provider"),
    JobStatus.RUNNING: (":clapper:", "rendering"),
    JobStatus.SUCCEEDED: (":white_check_mark:", "done"),
    JobStatus.FAILED: (":x:", "failed"),
    JobStatus.CANCELLED: (":no_entry_sign:", "cancelled"),
}

_INCIDENT_WORDS = {
    FailureKind.QUOTA_EXHAUSTED: "credits used up",
    FailureKind.AUTH_FAILED: "API key refused",
}


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One person's budget day, as `/sora budget` computes it."""

    limit_micros: int
    spent_micros: int
    reserved_micros: int
    now: datetime
    reset_at: datetime
    tz: ZoneInfo


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """A configured provider and its open incidents (see bot.lifecycle.incidents), by kind -> job id."""

    provider: str
    label: str
    incidents: tuple[tuple[FailureKind, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkspaceState:
    """What admins see: today's workspace totals, the biggest spenders, the providers."""

    spent_micros: int
    reserved_micros: int
    cap_micros: int | None
    top: Sequence[UsageRow]
    providers: Sequence[ProviderHealth]
    # net spend of the last seven budget days, oldest first, today last: (YYYY-MM-DD, micros)
    week: Sequence[tuple[str, int]] | None = None


# ---------------------------------------------------------------------- pure builders


def budget_bar(remaining_micros: int, limit_micros: int, cells: int = BAR_CELLS) -> str:
    """`▓▓▓▓▓▓░░░░`: the share still left. Full only when nothing is used, empty only when nothing is left."""
    if limit_micros <= 0 or remaining_micros <= 0:
        filled = 0
    else:
        filled = round(cells * min(remaining_micros, limit_micros) / limit_micros)
        filled = min(max(filled, 1), cells if remaining_micros >= limit_micros else cells - 1)
    return "▓" * filled + "░" * (cells - filled)


def _escaped_url(url: str) -> str:
    # &, < and > are mrkdwn's control characters, in a link's URL too (a reply's has &cid=)
    return url.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _job_cost(job: Job) -> str:
    if job.status is JobStatus.SUCCEEDED:
        return f"*{format_usd(job.cost_micros)}*"
    if not job.status.terminal:
        return f"{format_usd(job.estimate_micros)} reserved"
    return "not charged"


def job_blocks(job: Job, *, tz: ZoneInfo) -> list[dict[str, Any]]:
    """One job: status, model, length, cost and thread link; the prompt; its id and time."""
    emoji, words = _STATUS[job.status]
    if job.failure_kind is not None and job.status is JobStatus.FAILED:
        words += f" (`{job.failure_kind.value}`)"
    if job.status is JobStatus.RUNNING and job.progress is not None:
        words += f" ~{job.progress}%"
    facts = [f"{emoji} *{words}*", f"`{job.model}`", f"{job.duration_seconds} s", _job_cost(job)]
    if job.thread_permalink:
        facts.append(f"<{_escaped_url(job.thread_permalink)}|open thread>")
    prompt = escape_mrkdwn(" ".join(job.prompt.split()), PROMPT_CHARS)
    when = job.created_at.astimezone(tz).strftime("%b %d, %H:%M")
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": " · ".join(facts) + "\n" + (prompt or "_(no prompt)_")}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"job `{job.id}` · {when}"}]},
    ]


def _budget_blocks(budget: BudgetState, paused_reason: str | None) -> list[dict[str, Any]]:
    remaining = max(budget.limit_micros - budget.spent_micros - budget.reserved_micros, 0)
    bar = budget_bar(remaining, budget.limit_micros)
    reset_in = humanize_duration((budget.reset_at - budget.now).total_seconds())
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Your budget today*\n{bar} {format_usd(remaining)} left of {format_usd(budget.limit_micros)} today"
        )}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"spent {format_usd(budget.spent_micros)} · reserved for running jobs "
            f"{format_usd(budget.reserved_micros)} · resets at 00:00 {budget.tz.key}, in {reset_in}"
        )}]},
    ]
    if paused_reason is not None:
        why = f" ({escape_mrkdwn(paused_reason, 200)})" if paused_reason else ""
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f":double_vertical_bar: New requests are paused by an admin right now{why}. Running jobs continue."
        )}]})
    return blocks


def _workspace_blocks(ws: WorkspaceState, paused_reason: str | None) -> list[dict[str, Any]]:
    if ws.cap_micros is None:
        cap = "no cap"
        total = f"spent *{format_usd(ws.spent_micros)}* · reserved {format_usd(ws.reserved_micros)} · {cap}"
    else:
        left = max(ws.cap_micros - ws.spent_micros - ws.reserved_micros, 0)
        total = (f"{budget_bar(left, ws.cap_micros)} {format_usd(left)} left of the {format_usd(ws.cap_micros)} cap\n"
                 f"spent *{format_usd(ws.spent_micros)}* · reserved {format_usd(ws.reserved_micros)}")
    spenders = sorted((r for r in ws.top if r.spent_micros + r.reserved_micros > 0),
                      key=lambda r: (-(r.spent_micros + r.reserved_micros), r.user_id))[:TOP_SPENDERS]
    top_lines = [
        f"{n}. <@{r.user_id}> {format_usd(r.spent_micros)} spent · {format_usd(r.reserved_micros)} reserved"
        f" · {r.jobs} job{'s' if r.jobs != 1 else ''} · limit {format_usd(r.limit_micros)}"
        for n, r in enumerate(spenders, 1)
    ] or ["Nobody has spent anything today."]
    if paused_reason is None:
        state = ":large_green_circle: Accepting new requests."
    else:
        why = f": {escape_mrkdwn(paused_reason, 300)}" if paused_reason else " (no reason given)"
        state = f":double_vertical_bar: *Paused*{why}. `/sora-admin resume` lifts it."
    provider_lines = []
    for p in ws.providers:
        if not p.incidents:
            provider_lines.append(f"• {p.label} (`{p.provider}`): ok")
            continue
        for kind, job_id in p.incidents:
            since = f", since job `{escape_mrkdwn(job_id, 20)}`" if job_id else ""
            provider_lines.append(
                f"• {p.label} (`{p.provider}`): :rotating_light: {_INCIDENT_WORDS.get(kind, kind.value)}"
                f" (`{kind.value}`{since})"
            )
    week: list[dict[str, Any]] = []
    if ws.week:
        days = " · ".join(f"`{day[5:]}` {format_usd(micros)}" for day, micros in ws.week)
        week = [{"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Last {len(ws.week)} days:* {format_usd(sum(m for _, m in ws.week))} net of refunds"
            f" · `/sora-admin report` for a chart\n{days}"
        )}}]
    return [
        {"type": "divider"},
        {"type": "header", "text": {"type": "plain_text", "text": "Workspace today (admins only)", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Workspace total*\n{total}"}},
        *week,
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Top spenders*\n" + "\n".join(top_lines)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Requests*\n{state}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Providers*\n" + ("\n".join(provider_lines) or "none configured")}},
    ]


def home_view(
    *,
    budget: BudgetState,
    jobs: Sequence[Job],
    paused_reason: str | None = None,
    workspace: WorkspaceState | None = None,
) -> dict[str, Any]:
    """The Home view; `workspace` only for admins. `paused_reason` None = open, "" = paused without reason."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": ":clapper: Sora videos", "emoji": True}},
        *_budget_blocks(budget, paused_reason),
        {"type": "actions", "block_id": "home_actions", "elements": [{
            "type": "button", "action_id": OPEN_REQUEST_ACTION, "value": "home", "style": "primary",
            "text": {"type": "plain_text", "text": "Generate a video", "emoji": True},
        }]},
        {"type": "divider"},
        {"type": "header", "text": {"type": "plain_text", "text": "Your recent jobs", "emoji": True}},
    ]
    if not jobs:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            "You have no video jobs yet. Click *Generate a video*, or try `/sora a paper boat in the rain`."
        )}})
    for job in jobs[:HOME_JOBS]:
        blocks.extend(job_blocks(job, tz=budget.tz))
    if workspace is not None:
        blocks.extend(_workspace_blocks(workspace, paused_reason))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"Updated {local_hhmm(budget.now, budget.tz)} {budget.tz.key} · `/sora help` lists every command"
    )}]})
    return {"type": "home", "blocks": blocks[:MAX_HOME_BLOCKS]}


# ---------------------------------------------------------------------- gathering and publishing


async def _provider_health(deps: Deps) -> list[ProviderHealth]:
    names = [p for p in deps.providers if p != SIMULATOR] or list(deps.providers)
    out = []
    for name in names:
        found = []
        for kind in incidents.ALERT_KINDS:
            # the keys bot.lifecycle.incidents opens and closes
            setting = await settings_store.read_setting(deps.db, incidents.incident_key(name, kind))
            if setting is not None:
                found.append((kind, setting.value))
        out.append(ProviderHealth(name, deps.provider_label(name), tuple(found)))
    return out


async def _thread_permalink(deps: Deps, job: Job) -> str | None:
    """chat.getPermalink for the job's thread, kept on the job row; None if Slack didn't say."""
    assert job.thread_ts is not None
    try:
        async with asyncio.timeout(THREAD_LINK_TIMEOUT_S):
            resp = await deps.slack.chat_getPermalink(channel=job.channel_id, message_ts=job.thread_ts)
    except SlackApiError as exc:
        log.info("job %s: no thread link yet: %s", job.id, slack_io.slack_error(exc))
        return None
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("job %s: no thread link yet: %s", job.id, type(exc).__name__)
        return None
    permalink = resp.get("permalink")
    if not isinstance(permalink, str) or not permalink.startswith("https://"):
        return None
    await jobstore.note_thread_permalink(deps.db, job, permalink)
    return permalink


async def _with_thread_links(deps: Deps, jobs: Sequence[Job]) -> list[Job]:
    """The jobs with their threads' permalinks: stored ones as they are, the missing ones
    looked up (concurrently, once each: the answer is stored for every later publish)."""
    missing = [j for j in jobs if j.thread_ts and not j.thread_permalink]
    # every lookup runs to its end (each has its own timeout) before any error is raised
    answers = await asyncio.gather(*(_thread_permalink(deps, j) for j in missing), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    found = {j.id: link for j, link in zip(missing, answers, strict=True) if isinstance(link, str)}
    return [replace(j, thread_permalink=found[j.id]) if j.id in found else j for j in jobs]


def _days_before(day: str, n: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=n)).isoformat()


async def home_for(deps: Deps, user_id: str) -> dict[str, Any]:
    """Read everything the person's Home shows and build it (admins get the workspace part)."""
    now = deps.clock()
    tz = deps.settings.tz
    day = budget_day(now, tz)
    budgets = await deps.budgets()
    limit, totals = await ledger.totals_for(deps.db, user_id, day, budgets.default_user_micros)
    # a long video's segments are one video: read enough rows that ten videos remain
    listed = await long_video.one_row_per_video(deps, await jobstore.list_jobs(deps.db, user_id=user_id,
                                                                               limit=HOME_JOBS * 4))
    jobs = await _with_thread_links(deps, listed[:HOME_JOBS])
    workspace = None
    if await deps.authz.is_admin(user_id):
        async with deps.db.reading() as reader:
            ws = await ledger.workspace_totals(reader, day)
        workspace = WorkspaceState(
            spent_micros=ws.spent_micros, reserved_micros=ws.reserved_micros, cap_micros=budgets.workspace_micros,
            top=await ledger.usage_for_day(deps.db, day, budgets.default_user_micros),
            providers=await _provider_health(deps),
            week=list((await deps.db.run_read(reports.net_by_day, _days_before(day, WEEK_DAYS - 1), day)).items()),
        )
    budget = BudgetState(limit, totals.spent_micros, totals.reserved_micros, now, next_reset(now, tz), tz)
    return home_view(budget=budget, jobs=jobs, paused_reason=budgets.paused_reason, workspace=workspace)


async def publish_home(deps: Deps, user_id: str) -> None:
    """Build and publish the person's Home tab. Slack errors are logged, never raised.

    One publish of a person's Home at a time, across replicas too: each reads what it shows
    after the one before it is in Slack, so an older read is never published over a newer one.
    """
    try:
        async with deps.db.one_at_a_time(f"home:{user_id}", wait_s=HOME_TURN_WAIT_S):
            view = await home_for(deps, user_id)
            await deps.slack.views_publish(user_id=user_id, view=view)
    except TurnTimeout:
        log.warning("home of %s not published: another publish of it took more than %.0f s", user_id,
                    HOME_TURN_WAIT_S)
    except SlackApiError as exc:
        log.warning("home of %s not published: %s", user_id, slack_io.slack_error(exc))
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("home of %s not published: %s", user_id, type(exc).__name__)


# per Slack client (one per running app), so separate apps in one process never share it
_last_refresh: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()


async def refresh_after_job(deps: Deps, user_id: str) -> None:
    """Re-publish a job owner's Home after the job's final message; best effort, never raises.

    At most one such publish per person every REFRESH_INTERVAL_S: a burst of finishing jobs
    publishes once, and the next app_home_opened shows the rest.
    """
    try:
        now = time.monotonic()
        seen = _last_refresh.setdefault(deps.slack, {})
        last = seen.get(user_id)
        if last is not None and now - last < REFRESH_INTERVAL_S:
            return
        if len(seen) > 1000:  # forget people whose interval has long passed
            for uid in [u for u, t in seen.items() if now - t >= REFRESH_INTERVAL_S]:
                del seen[uid]
        seen[user_id] = now
        async with asyncio.timeout(REFRESH_TIMEOUT_S):
            await publish_home(deps, user_id)
    # The video is already delivered: a failed Home refresh must never turn into a delivery retry.
    except Exception:
        log.warning("home refresh for %s failed", user_id, exc_info=True)
