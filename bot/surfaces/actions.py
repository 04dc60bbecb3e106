"""What the request message's buttons and the edit modal do, as plain async functions.

Every action re-checks who is clicking and re-runs the budget: a button is only a
shortcut to the same rules as a slash command. Double clicks are deduplicated by key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import ValidationError
from slack_sdk.errors import SlackApiError

from bot.lifecycle import flow
from bot.slack import messages, slack_io
from bot.deps import Deps
from bot.errors import BudgetExceeded, InvalidRequest, NotAllowed
from bot.lifecycle.fallback import fallback_for
from bot.models import Job, JobStatus
from bot.money import format_usd
from bot.parsing import JobRequest, strip_controls
from storage import jobs as jobstore


@dataclass(frozen=True, slots=True)
class ActionResult:
    text: str
    job: Job | None = None
    ok: bool = True


async def _owned_job(deps: Deps, job_id: str, user_id: str, *, admins_too: bool) -> Job:
    job = await jobstore.find_job(deps.db, job_id)
    if job is None:
        raise InvalidRequest("That job doesn't exist (any more).")
    if job.user_id != user_id and not (admins_too and await deps.authz.is_admin(user_id)):
        who = "or an admin " if admins_too else ""
        raise NotAllowed(f"Only <@{job.user_id}> {who}can do that with this video. Nothing was changed.")
    return job


async def cancel_clicked(deps: Deps, job_id: str, user_id: str) -> ActionResult:
    try:
        job = await _owned_job(deps, job_id, user_id, admins_too=True)
    except (InvalidRequest, NotAllowed) as exc:
        return ActionResult(exc.user_message(), ok=False)
    if job.status.terminal:
        return ActionResult(f"Job `{job.id}` already ended ({job.status.value}).", job, ok=False)
    if await flow.cancel_job(deps, job, by_user=user_id):
        if deps.poller is not None:
            await deps.poller.restart_anywhere(job.id)
        return ActionResult(f"Cancelled job `{job.id}`; its {format_usd(job.estimate_micros)} reservation is released.", job)
    return ActionResult(f"Job `{job.id}` finished before it could be cancelled.", job, ok=False)


async def retry(deps: Deps, job_id: str, user_id: str, *, prompt: str | None, dedupe_key: str) -> ActionResult:
    """The same request again (or with a new prompt), through the same validation and budget."""
    try:
        old = await _owned_job(deps, job_id, user_id, admins_too=False)
        if old.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise InvalidRequest(f"Job `{old.id}` is {old.status.value}; only failed or cancelled jobs can be retried.")
        request = _request_like(deps, old, prompt)
        job, created = await flow.accept_request(
            deps, request, user_id=user_id, team_id=old.team_id, channel_id=old.channel_id,
            # a job that lives in someone's thread retries there; a request message starts anew
            source=old.source, thread_ts=old.thread_ts if old.source in ("mention", "shortcut", "dm") else None,
            dedupe_key=dedupe_key,
        )
    except (InvalidRequest, NotAllowed, BudgetExceeded) as exc:
        return ActionResult(exc.user_message(), ok=False)
    if not created:
        return ActionResult(f"Already retrying: job `{job.id}`.", job)
    return ActionResult(f"Retrying as job `{job.id}` ({format_usd(job.estimate_micros)} reserved).", job)


def _request_like(deps: Deps, old: Job, prompt: str | None) -> JobRequest:
    if deps.catalog.get(old.model) is None:
        raise InvalidRequest(
            f"`{old.model}` isn't offered here any more. Try `/sora -m {deps.catalog.default_model} …`; "
            "`/sora models` lists the models."
        )
    try:
        return JobRequest.model_validate(
            {"prompt": strip_controls(prompt) if prompt is not None else old.prompt, "model": old.model,
             "duration_s": old.duration_seconds, "resolution": old.resolution, "aspect_ratio": old.aspect_ratio},
            context={"catalog": deps.catalog},
        )
    except ValidationError as exc:
        raise InvalidRequest(f"That request isn't valid: {exc.errors()[0]['msg']}") from None


async def edit_modal_for(deps: Deps, job_id: str, user_id: str) -> tuple[dict | None, str | None]:
    """(view, None) to open, or (None, reason) when the clicker may not edit this job."""
    try:
        job = await _owned_job(deps, job_id, user_id, admins_too=False)
    except (InvalidRequest, NotAllowed) as exc:
        return None, exc.user_message()
    return messages.edit_modal(job), None


async def edit_submitted(deps: Deps, *, job_id: str, user_id: str, prompt: str | None, view_id: str) -> ActionResult:
    """The modal's submit: missing or forged fields are refused like any bad input."""
    if not job_id or prompt is None:
        return ActionResult("This form is missing its prompt; please open it again.", ok=False)
    key = "edit:" + hashlib.sha256(f"{view_id}:{job_id}".encode()).hexdigest()[:24]
    return await retry(deps, job_id, user_id, prompt=prompt, dedupe_key=key)


async def run_elsewhere(deps: Deps, job_id: str, user_id: str) -> ActionResult:
    """The failed request on the nearest other model: once per job, under the same budget rules."""
    try:
        old = await _owned_job(deps, job_id, user_id, admins_too=False)
        choice = fallback_for(deps.catalog, old)
        if choice is None:
            raise InvalidRequest("There's no other model to run this on here.")
        job, created = await flow.accept_request(
            deps, choice.request(deps.catalog, old.prompt), user_id=user_id, team_id=old.team_id, channel_id=old.channel_id,
            source=old.source, thread_ts=old.thread_ts if old.source in ("mention", "shortcut", "dm") else None,
            dedupe_key=f"fallback:{old.id}", fallback_of=old.id,
        )
    except (InvalidRequest, NotAllowed, BudgetExceeded) as exc:
        return ActionResult(exc.user_message(), ok=False)
    if not created:
        return ActionResult(f"Already running it on `{job.model}`: job `{job.id}`.", job)
    kind = old.failure_kind.value if old.failure_kind else "a provider problem"
    note = (f"Running this on `{job.model}` instead ({job.duration_seconds} s, "
            f"{format_usd(job.estimate_micros)} reserved), because `{old.model}` failed with `{kind}`: job `{job.id}`.")
    try:
        await slack_io.post_in_thread(deps, old, note)
    except SlackApiError:  # the new job carries on either way; its own message says which model
        pass
    return ActionResult(note, job)
