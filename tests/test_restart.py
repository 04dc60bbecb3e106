"""The real `sora-bot run` process: kill -9 with jobs in flight, SIGTERM, and restart.

The bot runs as a subprocess against the fake Slack and a fake gateway that live in the
test process, so what they record (submits, final messages) survives the bot's death.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bot.fakeslack import FakeSlack
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import SIGNING_SECRET, post_signed, slash_body

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BotProcess:
    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env, self.port, self.log_path = env, port, log_path
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=self.env, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL,
        )
        async with httpx.AsyncClient(timeout=1) as http:
            for _ in range(300):
                if self.proc.returncode is not None:
                    raise AssertionError(f"bot exited early:\n{self.log_path.read_text()}")
                try:
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"bot never became healthy:\n{self.log_path.read_text()}")

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout=15)


async def _jobs(db_path: Path) -> list[dict]:
    from bot.cli import jobs_json
    from storage.db import Database

    db = await Database(db_path).open()
    try:
        return json.loads(await jobs_json(db, limit=0))
    finally:
        await db.close()


async def _wait(predicate, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.05)):
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def world(tmp_path):
    async with FakeSlack() as slack, FakeGatewayServer(run_seconds=2.5) as gateway:
        slack.add_channel("C1", name="general", member=True)
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SORA_", "VIDEO_", "OPENAI_"))},
            "SLACK_BOT_TOKEN": "xoxb-restart-test",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "SORA_DB_PATH": str(tmp_path / "bot.db"),
            "SORA_POLL_INTERVAL": "0.2",
            "SORA_DAILY_BUDGET_USD": "20",
            "SORA_MAX_CONCURRENT_PER_USER": "10",
            "VIDEO_GATEWAY_BASE_URL": gateway.base_url,
            "VIDEO_GATEWAY_API_KEY": gateway.api_key,
            "SORA_DEFAULT_MODEL": "sora-2",
        }
        bot = BotProcess(env, port, tmp_path / "bot.log")
        yield slack, gateway, bot, tmp_path / "bot.db"
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()


async def _request_three(bot: BotProcess, slack: FakeSlack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for prompt in ("a red kite over dunes", "a tram in the fog", "-d 4 a snail racing"):
            body = slash_body(prompt, response_url=slack.new_response_url())
            r = await post_signed(http, f"{bot.url}/slack/events", body)
            assert r.status_code == 200 and "Got it" in r.json()["text"], r.text


def _final_messages(slack: FakeSlack, job: dict) -> list:
    return [m for m in slack.thread(job["channel_id"], job["thread_ts"])[1:]]


async def test_kill_9_with_jobs_in_flight_then_restart_finishes_each_once(world) -> None:
    slack, gateway, bot, db_path = world
    await bot.start()
    await _request_three(bot, slack)
    await _wait(lambda: len(gateway.submits) == 3 and sum(gateway.polls.values()) >= 3, 10, "three polled jobs")
    assert await bot.signal(signal.SIGKILL) == -signal.SIGKILL

    before = await _jobs(db_path)
    assert all(j["status"] in ("submitted", "running") and j["provider_job_id"] for j in before)

    await bot.start()
    async def all_done() -> bool:
        return all(j["status"] == "succeeded" for j in await _jobs(db_path))
    await _wait(all_done, 20, "every job to succeed after the restart")
    await _wait(lambda: sum(1 for m in slack.messages if m.files) == 3, 10, "three uploads")

    jobs = await _jobs(db_path)
    assert len(gateway.submits) == 3 and len(gateway.create_attempts) == 3
    assert sorted(j["provider_job_id"] for j in jobs) == sorted(gateway.jobs)
    for job in jobs:
        finals = _final_messages(slack, job)
        assert len(finals) == 1 and finals[0].files, job["id"]
    assert sum(j["cost_usd"] for j in jobs) == pytest.approx(0.8 + 0.8 + 0.4)
    assert await bot.signal(signal.SIGTERM) == 0


async def test_sigterm_stops_cleanly_and_loses_no_job(world) -> None:
    slack, gateway, bot, db_path = world
    await bot.start()
    await _request_three(bot, slack)
    await _wait(lambda: len(gateway.submits) == 3, 10, "three submits")
    assert await bot.signal(signal.SIGTERM) == 0
    assert "Traceback" not in bot.log_path.read_text()
    assert all(j["status"] in ("submitted", "running") for j in await _jobs(db_path))

    await bot.start()
    async def all_done() -> bool:
        return all(j["status"] == "succeeded" for j in await _jobs(db_path))
    await _wait(all_done, 20, "every job to succeed after the restart")
    await _wait(lambda: sum(1 for m in slack.messages if m.files) == 3, 10, "three uploads")
    assert len(gateway.create_attempts) == 3
    assert await bot.signal(signal.SIGINT) == 0
