"""The request modal's listeners: opening it (/sora, shortcuts, App Home), live updates, submit."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.surfaces import request_modal as rm
from bot.deps import Deps
from bot.parsing import MAX_PROMPT_CHARS, strip_controls
from bot.slack.slack_text import plain_prompt

log = logging.getLogger(__name__)

GLOBAL_SHORTCUT = "sora_generate"
MESSAGE_SHORTCUT = "sora_from_message"


async def open_modal(deps: Deps, trigger_id: str | None, user_id: str, *, prompt: str = "",
                     target: rm.Target | None = None) -> bool:
    """views.open right away: trigger_id lives 3 s and works once."""
    view = await rm.build_view(deps, user_id, rm.defaults(deps, prompt), target or rm.Target())
    try:
        await deps.slack.views_open(trigger_id=trigger_id, view=view)
        return True
    except SlackApiError as exc:
        log.info("views.open failed: %s", exc.response.get("error"))
        return False


async def on_global_shortcut(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    await open_modal(context["deps"], body.get("trigger_id"), str(body["user"]["id"]))


async def on_message_shortcut(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    message = body.get("message") or {}
    channel = str((body.get("channel") or {}).get("id") or "")
    thread_ts = message.get("thread_ts") or message.get("ts")
    deps: Deps = context["deps"]
    # the message's own words, as a person reads them, are the starting prompt
    prompt = strip_controls(await plain_prompt(deps, str(message.get("text") or ""),
                                               drop_user=context.bot_user_id)).strip()
    cut_from = len(prompt) if len(prompt) > MAX_PROMPT_CHARS else None
    target = rm.Target(channel=channel or None, thread_ts=str(thread_ts) if thread_ts else None, cut_from=cut_from)
    await open_modal(deps, body.get("trigger_id"), str(body["user"]["id"]), prompt=prompt[:MAX_PROMPT_CHARS],
                     target=target)


async def on_open_clicked(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    await open_modal(context["deps"], body.get("trigger_id"), str(body["user"]["id"]))


async def on_choice_changed(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    """A select changed: redraw the dependent choices and the cost line."""
    await ack()
    deps: Deps = context["deps"]
    view = body.get("view") or {}
    raw, _ = rm.read_state(deps, view)
    new_view = await rm.build_view(deps, str(body["user"]["id"]), raw, rm.Target.load(view.get("private_metadata")))
    try:
        await deps.slack.views_update(view_id=view.get("id"), hash=view.get("hash"), view=new_view)
    except SlackApiError as exc:
        # hash_conflict: another change landed first; that update already redrew the form
        log.info("views.update failed: %s", exc.response.get("error"))


async def on_request_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext) -> None:
    """Validation and the reservation run before the ack, so problems show on the field."""
    deps: Deps = context["deps"]
    user_id = str((body.get("user") or {}).get("id") or "")
    team_id = (body.get("team") or {}).get("id")
    outcome = await rm.submit(deps, user_id=user_id, team_id=team_id, view=view)
    if outcome.errors:
        await ack(response_action="errors", errors=outcome.errors)
        return
    if outcome.image_file is None:
        await ack()
        return
    # fetching and fitting an image can outlast Slack's 3 s: show progress, then the outcome
    await ack(response_action="update", view=rm.done_view(":hourglass_flowing_sand: Preparing your image…"))
    text = await rm.finish_with_image(deps, user_id=user_id, team_id=team_id, outcome=outcome)
    try:
        await deps.slack.views_update(view_id=view.get("id"), view=rm.done_view(text))
    except SlackApiError as exc:
        log.info("views.update after the image failed: %s", exc.response.get("error"))
        await deps.slack.chat_postEphemeral(channel=outcome.pending[1], user=user_id, text=text)  # type: ignore[index]


def register(app: AsyncApp) -> None:
    app.shortcut(GLOBAL_SHORTCUT)(on_global_shortcut)
    app.shortcut(MESSAGE_SHORTCUT)(on_message_shortcut)
    app.action(rm.OPEN_ACTION)(on_open_clicked)
    for action in (rm.MODEL_ACTION, rm.DURATION_ACTION, rm.RESOLUTION_ACTION, rm.ASPECT_ACTION):
        app.action(action)(on_choice_changed)
    app.view(rm.MODAL)(on_request_submitted)
