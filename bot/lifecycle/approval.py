"""Approval for expensive requests: the admins' DM, their decision, and the 24-hour expiry.

A request over the threshold is stored reserved and waits in 'queued'. Its job tasks nap
until an admin decides (a click pokes them) or the request expires; the decision itself
is one guarded transaction in storage.approvals, so a double click or two admins at once
decide it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackApiError

from bot import logs
from bot.slack import messages, slack_io
from bot.lifecycle.incidents import admin_recipients
from bot.clock import iso
from bot.deps import Deps
from bot.errors import SlackRefused
from bot.models import Job, JobStatus
from bot.money import format_usd
from storage import approvals
from storage import jobs as jobstore

log = logging.getLogger(__name__)

_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

Nap = Callable[[float], Awaitable[object]]


async def wait_for_decision(deps: Deps, job: Job, nap: Nap) -> Job:
    """Hold a queued job until its request is approved (returns it queued) or not (cancelled)."""
    assert job.approval_key is not None
    key = job.approval_key
    approval = await approvals.get(deps.db, key)
    if approval is None or approval.state != "pending":
        return await jobstore.must_get_job(deps.db, job.id)
    await slack_io.update_status(deps, job)
    await notify_admins(deps, key)
    while True:
        approval = await approvals.get(deps.db, key)
        if approval is None or approval.state != "pending":
            break
        left = (approval.expires_at - deps.clock()).total_seconds()
        if left <= 0:
            await settle(deps, key, state="expired", by="bot")
            break
        await nap(min(left, 3600.0))
    return await jobstore.must_get_job(deps.db, job.id)


async def notify_admins(deps: Deps, key: str) -> int:
    """DM each admin the request with Approve / Deny, once per admin (kept across restarts)."""
    async with _locks[key]:
        approval = await approvals.get(deps.db, key)
        if approval is None or approval.state != "pending":
            return 0
        jobs = await jobstore.jobs_for_approval(deps.db, key)
        have = await approvals.messages_of(deps.db, key)
        text, blocks = messages.approval_request_message(
            key, jobs, amount_micros=approval.amount_micros, threshold_micros=approval.threshold_micros,
            expires_at=approval.expires_at, tz=deps.settings.tz,
        )
        told = 0
        for admin_id in await admin_recipients(deps):
            try:
                dm = await deps.slack.conversations_open(users=admin_id)
                channel = str(dm["channel"]["id"])
                if channel in have:
                    told += 1
                    continue
                resp = await slack_io.post_message(deps, channel=channel, text=text, blocks=blocks)
                await approvals.add_message(deps.db, key, channel, str(resp["ts"]))
                told += 1
            except SlackApiError as exc:
                log.warning("could not DM admin %s for approval %s: %s", admin_id, key, slack_io.slack_error(exc))
            except SlackRefused as exc:
                log.warning("Slack refused every form of the approval DM %s: %s", key, exc.error)
        if not told:
            log.warning("approval %s: no admin could be asked; it expires unanswered at %s", key, approval.expires_at)
        return told


async def settle(deps: Deps, key: str, *, state: str, by: str) -> approvals.Decision | None:
    """Record the decision once, wake the request's jobs, and update every admin's DM."""
    decision = await approvals.decide(deps.db, key, state=state, by=by, now=iso(deps.clock()))
    if decision is None or not decision.moved:
        return decision
    _locks.pop(key, None)  # decided: notify_admins finds it so and sends nothing
    for job_id in decision.job_ids:
        if deps.poller is not None:
            await deps.poller.wake(job_id)
    jobs = await jobstore.jobs_for_approval(deps.db, key)
    if state in ("denied", "expired"):
        # ended by this decision, after its commit (the jobs cancelled earlier were counted then)
        for job in jobs:
            if job.id in decision.job_ids:
                logs.state_change(log, job, JobStatus.QUEUED, job.status, detail=f"approval {state}")
                deps.metrics.job_ended(job, "cancelled")
    text, blocks = messages.approval_decided_message(
        jobs, state=state, by=by, amount_micros=decision.approval.amount_micros)
    for channel, ts in (await approvals.messages_of(deps.db, key)).items():
        try:
            await slack_io.update_message(deps, channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            log.info("approval %s: DM edit failed: %s", key, slack_io.slack_error(exc))
        except SlackRefused as exc:
            log.warning("approval %s: Slack refused every form of the DM edit: %s", key, exc.error)
    if state == "approved" and jobs and jobs[0].thread_ts:
        try:
            await slack_io.post_in_thread(
                deps, jobs[0], f"<@{jobs[0].user_id}> <@{by}> approved this request; sending it to the provider now.")
        except SlackApiError as exc:
            log.info("approval %s: thread note failed: %s", key, slack_io.slack_error(exc))
    return decision


async def decide_clicked(deps: Deps, key: str, *, admin_id: str, approve: bool) -> str:
    """An admin's Approve / Deny click (or anyone's: only admins may decide)."""
    if not await deps.authz.is_admin(admin_id):
        return "Only admins can approve or deny requests. Nothing was changed."
    approval = await approvals.get(deps.db, key)
    if approval is None:
        return "That request doesn't exist (any more)."
    waiting = [j for j in await jobstore.jobs_for_approval(deps.db, key) if j.status is JobStatus.QUEUED]
    if approval.state == "pending" and not waiting:
        return "The request was cancelled by its owner; there is nothing left to decide."
    decision = await settle(deps, key, state="approved" if approve else "denied", by=admin_id)
    assert decision is not None
    amount = format_usd(decision.approval.amount_micros)
    if not decision.moved:
        who = f" by <@{decision.approval.decided_by}>" if decision.approval.decided_by not in (None, "bot") else ""
        return f"This request was already {decision.approval.state}{who}; nothing changed."
    if approve:
        return f"Approved: <@{decision.approval.user_id}>'s {amount} request is on its way to the provider."
    return f"Denied: <@{decision.approval.user_id}>'s {amount} reservation is released and they've been told."
