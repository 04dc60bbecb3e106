"""Slack listener for `/sora-admin`: ack at once, then answer ephemerally."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.surfaces import admin
from bot.deps import Deps


async def on_sora_admin_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext) -> None:
    # The admin check may call users.info: ack first, answer through response_url.
    await ack()
    deps: Deps = context["deps"]
    result = await admin.handle_admin(deps, command.get("text") or "", actor=command["user_id"])
    await respond(text=result.text, response_type="ephemeral")
    if result.then is not None:
        # Still this listener's task, which shutdown waits for (bot.app.ListenerTasks): no
        # task of its own that a stop would drop halfway
        note = await result.then()
        if note:
            await respond(text=note, response_type="ephemeral")


def register(app: AsyncApp) -> None:
    app.command("/sora-admin")(on_sora_admin_command)
