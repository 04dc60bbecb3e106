"""The real `sora-bot run` process: kill -9 with jobs in flight, SIGTERM, and restart.

The bot runs as a subprocess against the fake Slack and a fake gateway that live in the
test process, so what they record (submits, final messages) survives the bot's death.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys

import httpx
import pytest

from bot.fakes.fakeslack import FakeSlack
from tests.botproc import BotProcess, bot_env, free_port, read_jobs, wait_until
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import post_signed, slash_body

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture
async def world(tmp_path):
    async with FakeSlack() as slack, FakeGatewayServer(run_seconds=2.5) as gateway:
        slack.add_channel("C1", name="general", member=True)
        port = free_port()
        env = bot_env(slack, tmp_path / "bot.db", port, VIDEO_GATEWAY_BASE_URL=gateway.base_url,
                      VIDEO_GATEWAY_API_KEY=gateway.api_key, SORA_DEFAULT_MODEL="sora-2")
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
    await wait_until(lambda: len(gateway.submits) == 3 and sum(gateway.polls.values()) >= 3, 10, "three polled jobs")
    assert await bot.signal(signal.SIGKILL) == -signal.SIGKILL

    before = await read_jobs(db_path)
    assert all(j["status"] in ("submitted", "running") and j["provider_job_id"] for j in before)

    await bot.start()
    async def all_done() -> bool:
        return all(j["status"] == "succeeded" for j in await read_jobs(db_path))
    await wait_until(all_done, 20, "every job to succeed after the restart")
    await wait_until(lambda: sum(1 for m in slack.messages if m.files) == 3, 10, "three uploads")

    jobs = await read_jobs(db_path)
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
    await wait_until(lambda: len(gateway.submits) == 3, 10, "three submits")
    assert await bot.signal(signal.SIGTERM) == 0
    assert "Traceback" not in bot.log_path.read_text()
    assert all(j["status"] in ("submitted", "running") for j in await read_jobs(db_path))

    await bot.start()
    async def all_done() -> bool:
        return all(j["status"] == "succeeded" for j in await read_jobs(db_path))
    await wait_until(all_done, 20, "every job to succeed after the restart")
    await wait_until(lambda: sum(1 for m in slack.messages if m.files) == 3, 10, "three uploads")
    assert len(gateway.create_attempts) == 3
    assert await bot.signal(signal.SIGINT) == 0


async def test_sigterm_while_a_listener_works_after_its_ack_lets_it_finish(world) -> None:
    """`/sora-admin` acks at once, then asks Slack whether the caller is an admin and writes
    the change. A SIGTERM in between must wait for it: the change is stored, the answer
    sent, and no traceback from a database closed under it."""
    slack, gateway, bot, db_path = world
    slack.add_user("UADM", name="ada", is_admin=True)
    await bot.start()
    hold = slack.hold_next("users.info")
    response_url = slack.new_response_url()
    async with httpx.AsyncClient(timeout=10) as http:
        body = slash_body("budget set <@U2> 7", user="UADM", command="/sora-admin", response_url=response_url)
        r = await post_signed(http, f"{bot.url}/slack/events", body)
        assert r.status_code == 200
    await asyncio.wait_for(hold.reached.wait(), 5)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # the bot is now shutting down, its listener still held
    hold.release()
    assert await asyncio.wait_for(bot.proc.wait(), timeout=15) == 0

    log = bot.log_path.read_text()
    assert "Traceback" not in log and "no active connection" not in log
    assert any("daily budget is now" in m["text"] for m in slack.responses[response_url])
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT limit_micros FROM user_limits WHERE user_id = 'U2'").fetchone() == (7_000_000,)
    finally:
        conn.close()
