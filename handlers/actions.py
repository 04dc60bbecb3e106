"""Listeners for the request message's buttons and the edit modal: ack, unpack, call bot.surfaces.actions."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.lifecycle import approval, compare, long_video
from bot.slack import messages
from bot.slack import prompt_input
from bot.surfaces import actions
from bot.deps import Deps
from bot.errors import BudgetExceeded, InvalidRequest, NotAllowed

log = logging.getLogger(__name__)


def _action(body: dict[str, Any]) -> tuple[str, str]:
    action = (body.get("actions") or [{}])[0]
    return str(action.get("value") or ""), str((body.get("user") or {}).get("id") or "")


async def on_cancel_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    job_id, user_id = _action(body)
    result = await actions.cancel_clicked(context["deps"], job_id, user_id)
    await respond(text=result.text, response_type="ephemeral", replace_original=False)


async def on_retry_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    job_id, user_id = _action(body)
    # one retry per failed job and person: a double click finds the first one
    result = await actions.retry(context["deps"], job_id, user_id, prompt=None, dedupe_key=f"retry:{job_id}:{user_id}")
    await respond(text=result.text, response_type="ephemeral", replace_original=False)


async def on_edit_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    deps: Deps = context["deps"]
    job_id, user_id = _action(body)
    view, refusal = await actions.edit_modal_for(deps, job_id, user_id)
    if view is None:
        await respond(text=refusal or "You can't edit this one.", response_type="ephemeral", replace_original=False)
        return
    try:
        # trigger_id lives 3 s and works once: open right after the ack
        await deps.slack.views_open(trigger_id=body.get("trigger_id"), view=view)
    except SlackApiError as exc:
        log.info("views.open failed: %s", exc.response.get("error"))
        await respond(text="I couldn't open the form (it took too long); please click again.",
                      response_type="ephemeral", replace_original=False)


async def on_edit_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext) -> None:
    """Validation and reservation run before the ack so problems show inline on the field."""
    deps: Deps = context["deps"]
    user_id = str((body.get("user") or {}).get("id") or "")
    values = (view.get("state") or {}).get("values") or {}
    result = await actions.edit_submitted(
        deps, job_id=str(view.get("private_metadata") or ""), user_id=user_id,
        prompt=prompt_input.read(values), view_id=str(view.get("id") or ""),
    )
    if not result.ok:
        await ack(response_action="errors", errors={"prompt": result.text[:300]})
        return
    await ack()


async def on_fallback_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    job_id, user_id = _action(body)
    result = await actions.run_elsewhere(context["deps"], job_id, user_id)
    await respond(text=result.text, response_type="ephemeral", replace_original=False)


async def on_compare_cancel_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                                    context: AsyncBoltContext) -> None:
    await ack()
    compare_id, user_id = _action(body)
    try:
        text = await compare.cancel_all(context["deps"], compare_id, user_id)
    except (InvalidRequest, NotAllowed) as exc:
        text = exc.user_message()
    await respond(text=text, response_type="ephemeral", replace_original=False)


async def on_series_continue_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                                     context: AsyncBoltContext) -> None:
    await ack()
    series_id, user_id = _action(body)
    deps = context["deps"]
    try:
        text = await long_video.continue_video(deps, series_id, user_id, response_url=body.get("response_url"))
    except (InvalidRequest, NotAllowed, BudgetExceeded) as exc:
        deps.metrics.refused(exc)
        text = exc.user_message()
    await respond(text=text, response_type="ephemeral", replace_original=False)


async def on_approval_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                              context: AsyncBoltContext) -> None:
    await ack()
    key, user_id = _action(body)
    action_id = str((body.get("actions") or [{}])[0].get("action_id") or "")
    text = await approval.decide_clicked(context["deps"], key, admin_id=user_id,
                                         approve=action_id == messages.APPROVE_ACTION)
    await respond(text=text, response_type="ephemeral", replace_original=False)


def register(app: AsyncApp) -> None:
    app.action(messages.CANCEL_ACTION)(on_cancel_clicked)
    app.action(messages.RETRY_ACTION)(on_retry_clicked)
    app.action(messages.EDIT_ACTION)(on_edit_clicked)
    app.action(messages.FALLBACK_ACTION)(on_fallback_clicked)
    app.action(messages.COMPARE_CANCEL_ACTION)(on_compare_cancel_clicked)
    app.action(messages.SERIES_CONTINUE_ACTION)(on_series_continue_clicked)
    app.action(messages.APPROVE_ACTION)(on_approval_clicked)
    app.action(messages.DENY_ACTION)(on_approval_clicked)
    app.view(messages.EDIT_MODAL)(on_edit_submitted)
