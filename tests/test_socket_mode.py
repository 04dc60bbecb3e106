"""Socket Mode: the fake Slack's WebSocket side, then the real `sora-bot run` process over it.

The bot runs as a subprocess with SLACK_APP_TOKEN set, so it takes the same path as in
production: `apps.connections.open` through SLACK_API_URL, then a WebSocket to the URL
it returns. The fake lives in the test's event loop and pushes envelopes down that socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes.fakeslack import FakeSlack, app_mention_payload, slash_command_payload

BOT_TOKEN = "xoxb-socket-mode-test-0123456789"
APP_TOKEN = "xapp-1-A1-socket-mode-test-9876543210"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        server.add_channel("C1", name="general", member=True)
        server.add_user("U1", name="alice")
        yield server


# ---------------------------------------------------------------------- the fake, with slack_sdk's client


async def test_connections_open_needs_an_app_token(fake: FakeSlack) -> None:
    web = AsyncWebClient(base_url=fake.api_url)
    with pytest.raises(SlackApiError) as err:
        await web.apps_connections_open(app_token=BOT_TOKEN)
    assert err.value.response["error"] == "invalid_auth"
    opened = await web.apps_connections_open(app_token=APP_TOKEN)
    assert opened["url"].startswith(fake.socket_url + "?ticket=")
    # the xapp token stays limited to Socket Mode, as an xoxb one is to the Web API
    with pytest.raises(SlackApiError):
        await AsyncWebClient(token=APP_TOKEN, base_url=fake.api_url).auth_test()


async def test_ticket_is_single_use_and_hello_comes_first(fake: FakeSlack) -> None:
    url = (await AsyncWebClient(base_url=fake.api_url).apps_connections_open(app_token=APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, autoping=False) as ws:
            hello = await ws.receive_json(timeout=2)
            assert hello["type"] == "hello" and hello["num_connections"] == 1
            await fake.wait_for_socket(timeout=2)
            # the SDK's liveness check depends on pongs to its pings
            await ws.ping(b"sdk-ping-pong:1")
            pong = await ws.receive(timeout=2)
            assert pong.type == aiohttp.WSMsgType.PONG and pong.data == b"sdk-ping-pong:1"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(url)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(fake.socket_url)
    await fake.wait_for(lambda: fake.socket_connected == 0, timeout=2)
    with pytest.raises(RuntimeError):
        await fake.send_envelope("events_api", app_mention_payload("hi"))


async def test_envelopes_acks_and_reconnect_with_sdk_client(fake: FakeSlack) -> None:
    seen: list[SocketModeRequest] = []

    async def on_request(client: SocketModeClient, req: SocketModeRequest) -> None:
        seen.append(req)
        payload = {"text": f"echo {req.payload.get('text')}"} if req.type == "slash_commands" else None
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=payload))

    client = SocketModeClient(app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=fake.api_url))
    client.socket_mode_request_listeners.append(on_request)  # type: ignore[arg-type]
    try:
        await client.connect()
        await fake.wait_for_socket(timeout=5)

        slash = await fake.send_envelope("slash_commands", slash_command_payload("a kite"))
        assert (await fake.wait_for_ack(slash, timeout=3)) == {"envelope_id": slash, "payload": {"text": "echo a kite"}}
        event = await fake.send_envelope(
            "events_api", app_mention_payload("<@UBOT> hi", event_id="EvX"), retry_attempt=2, retry_reason="timeout"
        )
        assert (await fake.wait_for_ack(event, timeout=3)) == {"envelope_id": event}
        assert fake.ack_seconds[event] < 3
        assert seen[0].type == "slash_commands" and seen[0].accepts_response_payload and seen[0].retry_attempt is None
        assert seen[1].payload["event_id"] == "EvX" and (seen[1].retry_attempt, seen[1].retry_reason) == (2, "timeout")
        assert fake.envelopes[1]["accepts_response_payload"] is False

        # Slack's "disconnect" makes the SDK fetch a fresh URL and reconnect
        await fake.send_disconnect()
        await fake.wait_for(lambda: fake.socket_connects == 2 and fake.socket_connected == 1, timeout=5)
        assert len(fake.calls_to("apps.connections.open")) == 2
        again = await fake.send_envelope("slash_commands", slash_command_payload("again"))
        await fake.wait_for_ack(again, timeout=3)
    finally:
        await client.close()
    await fake.wait_for(lambda: fake.socket_connected == 0, timeout=3)


async def test_stop_closes_sockets_cleanly() -> None:
    fake = FakeSlack()
    await fake.start()
    url = (await AsyncWebClient(base_url=fake.api_url).apps_connections_open(app_token=APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            assert (await ws.receive_json(timeout=2))["type"] == "hello"
            await fake.wait_for_socket(timeout=2)
            stopping = asyncio.create_task(fake.stop())
            closing = await ws.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY
            await asyncio.wait_for(stopping, timeout=5)
    assert fake.socket_connected == 0


# ---------------------------------------------------------------------- the real process


@dataclass
class BotProcess:
    """`sora-bot run` in Socket Mode as a child process, its log in a file."""

    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self, fake: FakeSlack) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "run", env=self.env, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL,
            )
        loop = asyncio.get_running_loop()
        # generous: a loaded CI box can take seconds just to import the bot
        deadline = loop.time() + 20
        # no /healthz in Socket Mode: the bot is up once its WebSocket is
        while not fake.socket_connected:
            if self.proc.returncode is not None:
                raise AssertionError(f"bot exited early:\n{self.log()}")
            if loop.time() > deadline:
                raise AssertionError(f"bot never connected:\n{self.log()}")
            await asyncio.sleep(0.05)

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout=10)

    async def jobs(self) -> list[dict[str, Any]]:
        """`sora-bot jobs --json` against the same database, as an operator would run it."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "jobs", "--json", "--limit", "0", env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=10)
        assert proc.returncode == 0, err.decode()
        return list(json.loads(out))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
async def bot(fake: FakeSlack, tmp_path: Path) -> AsyncIterator[BotProcess]:
    env = {
        # the child must not inherit a developer's real tokens or settings
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SORA_", "VIDEO_", "OPENAI_"))},
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_API_URL": fake.api_url,
        "SORA_DB_PATH": str(tmp_path / "bot.db"),
        "SORA_SIMULATOR_SECONDS": "0.5",
        "SORA_POLL_INTERVAL": "0.1",
    }
    process = BotProcess(env, tmp_path / "bot.log")
    yield process
    if process.proc is not None and process.proc.returncode is None:
        process.proc.kill()
        await process.proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_run_in_socket_mode_end_to_end(fake: FakeSlack, bot: BotProcess) -> None:
    await bot.start(fake)
    opens = fake.calls_to("apps.connections.open")
    # one check of the token at start-up, then the SDK's own call for the socket URL
    assert len(opens) == 2 and all(o.token == APP_TOKEN for o in opens)

    # /sora: the refusal-or-acceptance text travels in the ack, inside Slack's 3 s window
    slash = await fake.send_envelope(
        "slash_commands", slash_command_payload("a paper crane", response_url=fake.new_response_url())
    )
    ack = await fake.wait_for_ack(slash, timeout=3)
    assert "Got it" in ack["payload"]["text"], ack
    assert fake.ack_seconds[slash] < 3

    def video_in_first_thread() -> bool:
        root = fake.roots("C1")[0]
        return any(m.files for m in fake.thread("C1", root.ts)[1:])

    await fake.wait_for(video_in_first_thread, timeout=8)

    # a mention, then Slack's retry of the same envelope after a (claimed) ack timeout
    mention = fake.add_message("C1", "<@UBOT> a tin robot waving", user="U1")
    payload = app_mention_payload(mention.text, user="U1", channel="C1", ts=mention.ts, event_id="EvSOCKET1")
    first = await fake.send_envelope("events_api", payload)
    retry = await fake.send_envelope("events_api", payload, retry_attempt=1, retry_reason="timeout")
    for envelope_id in (first, retry):
        assert await fake.wait_for_ack(envelope_id, timeout=3) == {"envelope_id": envelope_id}

    def mention_video_delivered() -> bool:
        return any(m.files for m in fake.thread("C1", mention.ts)[1:])

    await fake.wait_for(mention_video_delivered, timeout=8)
    jobs = await bot.jobs()
    assert len(jobs) == 2, jobs
    mention_jobs = [j for j in jobs if j["thread_ts"] == mention.ts]
    assert len(mention_jobs) == 1 and mention_jobs[0]["prompt"] == "a tin robot waving", jobs
    replies = fake.thread("C1", mention.ts)[1:]
    assert sum(1 for m in replies if m.files) == 1, fake.render_thread("C1", mention.ts)

    assert await bot.signal(signal.SIGTERM) == 0
    await fake.wait_for(lambda: fake.socket_connected == 0, timeout=3)
    log = bot.log()
    assert "Traceback" not in log, log
    assert BOT_TOKEN not in log and APP_TOKEN not in log
    assert "xoxb-" not in log and "xapp-" not in log


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_a_refused_app_token_stops_start_up_with_one_line(fake: FakeSlack, bot: BotProcess) -> None:
    fake.fail_next("apps.connections.open", error="invalid_auth", times=5)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env=bot.env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 2
    lines = [line for line in err.decode().splitlines() if line.startswith("SLACK_APP_TOKEN")]
    assert len(lines) == 1 and "invalid_auth" in lines[0]
    assert APP_TOKEN not in err.decode()
