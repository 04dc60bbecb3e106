"""`/sora compare`: one prompt on several models, one request message, one summary.

Each model's job is an ordinary job (own provider job, own ledger row, own final message
in the shared thread). The set's shared request message and summary are posted by
bot.lifecycle.delivery; this module starts a set and cancels it as a whole.
"""

from __future__ import annotations

from bot.lifecycle import flow
from bot.slack import messages
from bot.deps import Deps
from bot.errors import InvalidRequest, NotAllowed
from bot.models import JobStatus
from bot.money import format_usd
from bot.parsing import JobRequest
from storage import compares


async def start(deps: Deps, requests: list[JobRequest], *, user_id: str, team_id: str | None,
                channel_id: str, source: str, thread_ts: str | None, response_url: str | None,
                dedupe_key: str | None, wait_s: float | None) -> str:
    """Reserve the whole set as one request and start every model. Returns the reply text."""
    got = await flow.accept_requests(
        deps, requests, user_id=user_id, team_id=team_id, channel_id=channel_id, source=source,
        thread_ts=thread_ts, response_url=response_url, dedupe_key=dedupe_key, wait_s=wait_s, compare=True,
    )
    total = format_usd(sum(j.estimate_micros for j in got.jobs))
    models = ", ".join(f"`{j.model}`" for j in got.jobs)
    if not got.created:
        return f"Already on it: compare `{got.compare_id}` of {models}."
    wait = messages.APPROVAL_PENDING_NOTE if got.approval_key else ""
    return (f"Comparing {models}: compare `{got.compare_id}`, {total} reserved in all. Each result lands in "
            f"the thread as it arrives, then a side-by-side summary.{wait}")


async def cancel_all(deps: Deps, compare_id: str, user_id: str) -> str:
    """The set's Cancel button: every unfinished model stops; the owner or an admin only."""
    row = await compares.get(deps.db, compare_id)
    if row is None:
        raise InvalidRequest("That compare doesn't exist (any more).")
    if row.user_id != user_id and not await deps.authz.is_admin(user_id):
        what = "video" if row.kind == "series" else "compare"
        raise NotAllowed(f"Only <@{row.user_id}> or an admin can cancel this {what}. Nothing was changed.")
    stopped = []
    for job in await compares.jobs_of(deps.db, compare_id):
        if not job.status.terminal and await flow.cancel_job(deps, job, by_user=user_id):
            stopped.append(job)
            if deps.poller is not None:
                await deps.poller.restart_anywhere(job.id)
    if row.kind == "series":
        members = await compares.jobs_of(deps.db, compare_id)
        if not stopped:
            return f"Every segment of video `{compare_id}` had already ended; nothing to cancel."
        start = stopped[0].segment_index or 0
        released = [j for j in members if j.status is JobStatus.CANCELLED and (j.segment_index or 0) >= start]
        return (f"Cancelled video `{compare_id}` from segment {(stopped[0].segment_index or 0) + 1}; "
                f"{format_usd(sum(j.estimate_micros for j in released))} reserved is released. "
                "What was finished comes to the thread.")
    if not stopped:
        return f"Every model of compare `{compare_id}` had already finished; nothing to cancel."
    released = format_usd(sum(j.estimate_micros for j in stopped))
    return (f"Cancelled {', '.join(f'`{j.model}`' for j in stopped)} of compare `{compare_id}`; "
            f"{released} reserved is released.")
