"""Signed Slack requests, built the way Slack sends them, for driving the app over HTTP."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

SIGNING_SECRET = "test-signing-secret"
_triggers = itertools.count(1)
_events = itertools.count(1)


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None,
                   content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {"content-type": content_type, "x-slack-request-timestamp": ts, "x-slack-signature": sig}


def slash_body(text: str, *, user: str = "U1", channel: str = "C1", team: str = "T0001",
               response_url: str = "", trigger_id: str | None = None, command: str = "/sora") -> str:
    return urlencode({
        "token": "legacy", "team_id": team, "team_domain": "test", "channel_id": channel,
        "channel_name": "general", "user_id": user, "user_name": user.lower(),
        "command": command, "text": text, "api_app_id": "A1", "response_url": response_url,
        "trigger_id": trigger_id or f"trigger.{next(_triggers)}",
    })


def mention_body(text: str, *, user: str = "U1", channel: str = "C1", ts: str = "1700000000.000001",
                 thread_ts: str | None = None, event_id: str | None = None, team: str = "T0001") -> str:
    event: dict[str, Any] = {"type": "app_mention", "user": user, "text": text, "ts": ts,
                             "channel": channel, "event_ts": ts}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return json.dumps({
        "token": "legacy", "team_id": team, "api_app_id": "A1", "type": "event_callback",
        "event_id": event_id or f"Ev{next(_events):06d}", "event_time": int(time.time()),
        "event": event, "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True}],
    })


async def post_signed(http: httpx.AsyncClient, url: str, body: str, *, content_type: str | None = None,
                      secret: str = SIGNING_SECRET, timestamp: int | None = None,
                      extra_headers: dict[str, str] | None = None) -> httpx.Response:
    ctype = content_type or ("application/json" if body.startswith("{") else "application/x-www-form-urlencoded")
    headers = signed_headers(body, secret=secret, timestamp=timestamp, content_type=ctype)
    headers.update(extra_headers or {})
    return await http.post(url, content=body.encode(), headers=headers)


def action_body(action_id: str, value: str, *, user: str = "U1", channel: str = "C1",
                message_ts: str = "1700000000.000100", response_url: str = "",
                trigger_id: str | None = None, team: str = "T0001") -> str:
    payload = {
        "type": "block_actions", "team": {"id": team}, "user": {"id": user}, "api_app_id": "A1",
        "trigger_id": trigger_id or f"trigger.{next(_triggers)}", "response_url": response_url,
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel}, "message": {"ts": message_ts},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


def view_submission_body(callback_id: str, *, private_metadata: str, values: dict[str, Any],
                         user: str = "U1", view_id: str = "V0001", team: str = "T0001") -> str:
    payload = {
        "type": "view_submission", "team": {"id": team}, "user": {"id": user}, "api_app_id": "A1",
        "trigger_id": f"trigger.{next(_triggers)}",
        "view": {"id": view_id, "type": "modal", "callback_id": callback_id,
                 "private_metadata": private_metadata, "state": {"values": values}},
    }
    return urlencode({"payload": json.dumps(payload)})


def app_home_opened_body(user: str = "U1", *, tab: str = "home", channel: str = "D0HOME",
                         event_id: str | None = None, team: str = "T0001") -> str:
    """The event Slack sends each time a person opens the app's Home (or Messages) tab."""
    ts = f"{time.time():.6f}"
    event: dict[str, Any] = {"type": "app_home_opened", "user": user, "channel": channel, "tab": tab,
                             "event_ts": ts}
    return json.dumps({
        "token": "legacy", "team_id": team, "api_app_id": "A1", "type": "event_callback",
        "event_id": event_id or f"Ev{next(_events):06d}", "event_time": int(time.time()),
        "event": event, "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True}],
    })
