"""Slack listeners for `/sora` and mentions of the bot: ack, unpack, call bot.commands, reply."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot import commands, slack_io
from bot.commands import Origin
from bot.deps import Deps

log = logging.getLogger(__name__)

_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")


async def on_sora_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
    """Validation and the budget reservation are fast local work, so they run before the ack
    and refusals travel in the ack itself; everything slow happens in the job's task."""
    deps: Deps = context["deps"]
    # Slack doesn't retry slash commands, but proxies and replays do: trigger_id is unique.
    trigger = command.get("trigger_id")
    origin = Origin(
        user_id=command["user_id"], team_id=command.get("team_id"),
        channel_id=command["channel_id"], source="command",
        response_url=command.get("response_url"),
        dedupe_key=f"cmd:{command.get('team_id')}:{trigger}" if trigger else None,
    )
    reply = await commands.handle_text(deps, command.get("text") or "", origin)
    await ack(text=reply.text, response_type="ephemeral")


async def on_app_mention(ack: AsyncAck, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    deps: Deps = context["deps"]
    if event.get("bot_id") or event.get("subtype"):
        return
    text = _MENTION.sub(" ", event.get("text") or "").strip()
    channel = event["channel"]
    thread_ts = event.get("thread_ts") or event.get("ts")
    event_id = body.get("event_id")
    origin = Origin(
        user_id=event["user"], team_id=body.get("team_id"), channel_id=channel,
        source="mention", thread_ts=thread_ts,
        # Slack retries unacknowledged events with the same event_id
        dedupe_key=f"evt:{event_id}" if event_id else None,
    )
    reply = await commands.handle_text(deps, text, origin)
    if reply.job_id and reply.created:
        return  # the status reply in the thread says it all
    if reply.job_id and not reply.created:
        log.info("mention %s repeated (job %s); ignored", event_id, reply.job_id)
        return
    await slack_io.post_ephemeral(deps, channel=channel, user=event["user"], text=reply.text, thread_ts=thread_ts)


def register(app: AsyncApp) -> None:
    app.command("/sora")(on_sora_command)
    app.event("app_mention")(on_app_mention)
