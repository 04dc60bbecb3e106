"""Bolt's listener runner as the app installs it: the answer leaves when the listener acks,
the listener goes on in the background, and failures keep Bolt's shape."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlencode

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.lifecycle import ack_runner


async def _authorize(**_: Any) -> AuthorizeResult:
    return AuthorizeResult(enterprise_id=None, team_id="T1", bot_user_id="UBOT", bot_id="B1", bot_token="xoxb-test")


def _app() -> AsyncApp:
    app = AsyncApp(signing_secret="secret", authorize=_authorize, request_verification_enabled=False,
                   process_before_response=False)
    ack_runner.install(app)
    return app


def _command(text: str) -> AsyncBoltRequest:
    body = urlencode({"command": "/sora", "text": text, "team_id": "T1", "user_id": "U1", "channel_id": "C1",
                      "trigger_id": "t.1", "response_url": "http://127.0.0.1:9/respond"})
    return AsyncBoltRequest(body=body, headers={"content-type": ["application/x-www-form-urlencoded"]})


async def test_the_answer_leaves_when_the_listener_acks_and_the_listener_goes_on() -> None:
    app = _app()
    assert isinstance(app.listener_runner, ack_runner.PromptAckRunner)
    release, finished = asyncio.Event(), asyncio.Event()

    @app.command("/sora")
    async def listener(ack: Any) -> None:
        await ack(text="Got it")
        await release.wait()  # work after the ack: the answer must not wait for it
        finished.set()

    response = await asyncio.wait_for(app.async_dispatch(_command("a dog")), timeout=2)
    assert (response.status, response.body) == (200, "Got it")
    assert not finished.is_set()
    release.set()
    await asyncio.wait_for(finished.wait(), timeout=2)


async def test_a_listener_that_fails_before_acking_answers_500_through_the_apps_error_handler() -> None:
    app = _app()
    seen: list[Exception] = []

    @app.error
    async def on_error(error: Exception) -> None:
        seen.append(error)

    @app.command("/sora")
    async def listener(ack: Any) -> None:
        raise RuntimeError("boom")

    response = await asyncio.wait_for(app.async_dispatch(_command("x")), timeout=2)
    assert response.status == 500
    assert [str(e) for e in seen] == ["boom"]


async def test_a_listener_that_ends_without_acking_does_not_hold_the_answer_until_the_timeout(caplog) -> None:
    app = _app()

    @app.command("/sora")
    async def listener(ack: Any) -> None:
        return None

    caplog.set_level(logging.WARNING)
    # Bolt's ack timeout is 3 s: the runner stops waiting when the listener ends instead
    response = await asyncio.wait_for(app.async_dispatch(_command("x")), timeout=2)
    assert response.status == 404  # nobody acked: Bolt's "unhandled request" answer
    assert any("ack()" in r.getMessage() for r in caplog.records)


async def test_events_are_acknowledged_at_once_while_the_listener_runs() -> None:
    app = _app()
    release = asyncio.Event()

    @app.event("app_mention")
    async def listener(event: dict[str, Any]) -> None:
        await release.wait()

    body = ('{"type":"event_callback","team_id":"T1","event_id":"Ev1","event":'
            '{"type":"app_mention","user":"U1","text":"hi","channel":"C1","ts":"1.1"}}')
    request = AsyncBoltRequest(body=body, headers={"content-type": ["application/json"]})
    response = await asyncio.wait_for(app.async_dispatch(request), timeout=2)
    assert response.status == 200
    release.set()
