"""Slack listeners for `/sora` and mentions of the bot: ack, unpack, call bot.surfaces.commands, reply."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.slack import slack_io
from bot.surfaces import commands
from bot.surfaces.commands import Origin
from bot.deps import Deps
from bot.slack.messages import help_text
from handlers.modals import open_modal

log = logging.getLogger(__name__)

async def on_sora_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext) -> None:
    """Validation and the budget reservation are fast local work, so they run before the ack
    and refusals travel in the ack itself; everything slow happens in the job's task."""
    deps: Deps = context["deps"]
    text = command.get("text") or ""
    if not text.strip():
        # no text: the form, for people who don't read help texts
        await ack()
        if not await open_modal(deps, command.get("trigger_id"), command["user_id"]):
            await respond(text=help_text(deps.catalog), response_type="ephemeral")
        return
    # Slack doesn't retry slash commands, but proxies and replays do: trigger_id is unique.
    trigger = command.get("trigger_id")
    origin = Origin(
        user_id=command["user_id"], team_id=command.get("team_id"),
        channel_id=command["channel_id"], source="command",
        response_url=command.get("response_url"),
        dedupe_key=f"cmd:{command.get('team_id')}:{trigger}" if trigger else None,
    )
    reply = await commands.handle_text(deps, text, origin)
    await ack(text=reply.text, response_type="ephemeral")


async def on_app_mention(ack: AsyncAck, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    deps: Deps = context["deps"]
    if event.get("bot_id") or event.get("subtype"):
        return
    await _request_from_message(deps, event, body, source="mention", bot_user_id=_bot_user(context, body))


async def on_direct_message(ack: AsyncAck, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
    """A DM to the bot is a request; the reply thread hangs off the person's message."""
    await ack()
    if event.get("channel_type") != "im" or event.get("bot_id") or event.get("subtype") not in (None, "file_share"):
        return
    await _request_from_message(context["deps"], event, body, source="dm", bot_user_id=_bot_user(context, body))


def _bot_user(context: AsyncBoltContext, body: dict[str, Any]) -> str | None:
    """The bot's own user id: its mentions start a request and are no part of the prompt."""
    if context.bot_user_id:
        return str(context.bot_user_id)
    auths = body.get("authorizations") or [{}]
    return str(auths[0].get("user_id") or "") or None


async def _request_from_message(deps: Deps, event: dict[str, Any], body: dict[str, Any], *, source: str,
                                bot_user_id: str | None) -> None:
    text = event.get("text") or ""
    channel = event["channel"]
    thread_ts = event.get("thread_ts") or event.get("ts")
    event_id = body.get("event_id")
    files = [f for f in event.get("files") or [] if isinstance(f, dict)]
    # a file without a mimetype (Slack Connect's "check_file_info" stub) is looked up by id later
    others = [f for f in files if f.get("mimetype") and not str(f["mimetype"]).startswith("image/")]
    if others:
        # refused before anything is charged: the person meant the file to count
        await slack_io.post_ephemeral(deps, channel=channel, user=event["user"], thread_ts=thread_ts,
                                      text=commands.not_an_image_text(others))
        return
    origin = Origin(
        user_id=event["user"], team_id=body.get("team_id"), channel_id=channel,
        source=source, thread_ts=thread_ts,
        # Slack retries unacknowledged events with the same event_id
        dedupe_key=f"evt:{event_id}" if event_id else None,
        image_file=files[0] if files else None,
        drop_user=bot_user_id,
        # inside a thread that already has a video, its options are the defaults
        like=await commands.request_like(deps, channel, event.get("thread_ts")),
    )
    reply = await commands.handle_text(deps, text, origin)
    if reply.job_id and reply.created:
        return  # the status reply in the thread says it all
    if reply.job_id and not reply.created:
        log.info("%s %s repeated (job %s); ignored", source, event_id, reply.job_id)
        return
    await slack_io.post_ephemeral(deps, channel=channel, user=event["user"], text=reply.text, thread_ts=thread_ts)


def register(app: AsyncApp) -> None:
    app.command("/sora")(on_sora_command)
    app.event("app_mention")(on_app_mention)
    app.event("message")(on_direct_message)
