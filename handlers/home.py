"""Slack listener for the App Home tab: publish the person's Home whenever they open it."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.surfaces import home


async def on_app_home_opened(event: dict[str, Any], context: AsyncBoltContext) -> None:
    # Bolt acks events itself; the same event fires for the Messages tab, which has no view.
    if event.get("tab") != "home" or not event.get("user"):
        return
    await home.publish_home(context["deps"], event["user"])


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_app_home_opened)
