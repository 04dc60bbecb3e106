"""kill -9 at each phase of a job, then restart: one submit, one final message, a balanced ledger.

Each phase is reached by holding one Slack call in the fake Slack while the real bot
process waits on it, then killing the process right there.
"""

from __future__ import annotations

import signal
import sys

import httpx
import pytest

from bot.fakes.fakeslack import FakeSlack
from tests.botproc import BotProcess, bot_env, free_port, read_jobs, wait_until
from tests.fakes.providers import FakeGatewayServer
from storage.sqlite import SQLiteDatabase
from tests.slack_requests import post_signed, slash_body

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# phase -> (Slack method to hold, hold after Slack acted?)
PHASES = {
    # the job row and its reservation exist; nothing posted, nothing submitted
    "after_reserve": ("chat.postMessage", False),
    # the provider accepted the job and its id is stored; the status edit is pending
    "after_submit": ("chat.update", False),
    # the video is downloaded and charged; the upload has not started
    "after_success_before_upload": ("files.getUploadURLExternal", False),
    # Slack shared the video but the bot never heard back
    "after_upload_before_recording": ("files.completeUploadExternal", True),
}


@pytest.fixture
async def world(tmp_path):
    async with FakeSlack() as slack, FakeGatewayServer(run_seconds=1.0) as gateway:
        slack.add_channel("C1", name="general", member=True)
        port = free_port()
        env = bot_env(slack, tmp_path / "bot.db", port, VIDEO_GATEWAY_BASE_URL=gateway.base_url,
                      VIDEO_GATEWAY_API_KEY=gateway.api_key, SORA_DEFAULT_MODEL="sora-2")
        bot = BotProcess(env, port, tmp_path / "bot.log")
        yield slack, gateway, bot, tmp_path / "bot.db"
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()


@pytest.mark.parametrize("phase", list(PHASES))
async def test_kill_9_at_each_phase_then_restart(world, phase) -> None:
    slack, gateway, bot, db_path = world
    method, after = PHASES[phase]
    await bot.start()
    # the request message is the first chat.postMessage; hold later calls of that method only
    hold = slack.hold_next(method, after=after)
    async with httpx.AsyncClient(timeout=10) as http:
        r = await post_signed(http, f"{bot.url}/slack/events",
                              slash_body("-d 8 a kite over the sea", response_url=slack.new_response_url()))
    assert "Got it" in r.json()["text"]
    await wait_until(hold.reached.is_set, 15, f"the bot to reach {phase}")
    assert await bot.signal(signal.SIGKILL) == -signal.SIGKILL
    hold.release()

    await bot.start()

    async def finished() -> bool:
        jobs = await read_jobs(db_path)
        return bool(jobs) and jobs[0]["status"] == "succeeded"

    await wait_until(finished, 20, "the job to finish after the restart")
    await wait_until(lambda: any(m.files for m in slack.messages), 10, "the video in the thread")
    job = (await read_jobs(db_path))[0]
    assert len(gateway.create_attempts) == 1, "exactly one provider submit"
    roots = slack.roots("C1")
    assert len(roots) == 1 and roots[0].ts == job["thread_ts"], "one request message"
    finals = slack.thread("C1", job["thread_ts"])[1:]
    assert len(finals) == 1 and finals[0].files, [m.text for m in finals]
    assert job["cost_usd"] == 0.8

    # the ledger: charged once, nothing left reserved; the outbox closed
    db = await SQLiteDatabase(db_path).open()
    try:
        row = await db.fetchone("SELECT state, charged_micros FROM ledger WHERE job_id = ?", (job["id"],))
        assert tuple(row) == ("charged", 800_000)
        delivery = await db.fetchone("SELECT state FROM deliveries WHERE job_id = ?", (job["id"],))
        assert delivery[0] == "done"
    finally:
        await db.close()
    assert await bot.signal(signal.SIGTERM) == 0
