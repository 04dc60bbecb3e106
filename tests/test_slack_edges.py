"""Slack-facing behaviour: signatures, refusals, retries, mentions, cancel, stuck, secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import replace

import pytest

from bot import logs
from bot.cli import jobs_json, usage_json
from bot.surfaces.commands import ACK_WAIT_S
from tests.conftest import FAST
from tests.slack_requests import SIGNING_SECRET, mention_body, post_signed, slash_body


async def _jobs(bot) -> list[dict]:
    return json.loads(await jobs_json(bot.deps.db))


def _sim(bot):
    return bot.deps.providers["simulator"]


async def test_bad_signature_is_rejected_and_nothing_happens(make_bot, slack) -> None:
    bot = await make_bot()
    resp = await post_signed(bot.http, bot.url, slash_body("a dog"), secret="not-the-secret")
    assert resp.status_code == 401
    assert await _jobs(bot) == [] and slack.calls_to("chat.postMessage") == []


async def test_ten_minute_old_timestamp_is_rejected(make_bot, slack) -> None:
    bot = await make_bot()
    resp = await post_signed(bot.http, bot.url, slash_body("a dog"), timestamp=int(time.time()) - 600)
    assert resp.status_code == 401
    assert await _jobs(bot) == []


async def test_invalid_options_name_the_value_and_store_nothing(make_bot, slack) -> None:
    bot = await make_bot()
    cases = {
        "-d 2 a dog": ["2 s", "4–20 s"],
        # longer than one clip: the simulator continues from the last frame, up to the cap
        "-d 99 a dog": ["60 s is the longest video here", "SORA_MAX_VIDEO_SECONDS"],
        "-r 4k a dog": ["4k", "720p"],
        "-a 21:9 a dog": ["21:9", "16:9, 9:16, 1:1"],
        "-m sora-9 a dog": ["sora-9", "simulator"],
        "--fps 60 a dog": ["--fps", "--model"],
        "-d": ["-d", "needs a value"],
    }
    for text, needles in cases.items():
        resp = await bot.slash(text)
        body = resp.json()
        assert resp.status_code == 200 and body["response_type"] == "ephemeral", text
        for needle in needles:
            assert needle in body["text"], (text, body["text"])
    assert await _jobs(bot) == []
    assert _sim(bot).submits == [] and slack.calls_to("chat.postMessage") == []


async def test_over_budget_request_is_refused_with_the_remaining_amount(make_bot, slack) -> None:
    bot = await make_bot(sora_daily_budget_usd="1.00")
    resp = await bot.slash("-d 12 a dog surfing")
    text = resp.json()["text"]
    assert "$1.20" in text and "$1.00 left" in text
    assert await _jobs(bot) == [] and _sim(bot).submits == []
    assert slack.calls_to("chat.postMessage") == []


async def test_budget_counts_reservations_of_running_jobs(make_bot, slack) -> None:
    bot = await make_bot(sora_daily_budget_usd="1.00", sim_seconds=30)
    first = await bot.slash("-d 6 [stuck] a slow one")
    assert "reserved" in first.json()["text"]
    second = await bot.slash("-d 6 a second one")
    assert "$0.40 left" in second.json()["text"]
    budget = (await bot.slash("budget")).json()["text"]
    assert "reserved for running jobs: $0.60" in budget and "remaining: $0.40" in budget
    assert "Resets at 00:00 UTC" in budget


async def test_slack_429_on_post_message_still_delivers(make_bot, slack) -> None:
    bot = await make_bot()
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    await bot.slash("a lighthouse in a storm")
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=15)
    statuses = [c.http_status for c in slack.calls_to("chat.postMessage")]
    assert statuses[0] == 429 and 200 in statuses
    assert len(slack.roots("C1")) == 1
    await bot.runtime.poller.idle(5)
    assert (await _jobs(bot))[0]["status"] == "succeeded"


async def test_mention_retries_with_the_same_event_id_make_one_job(make_bot, slack) -> None:
    bot = await make_bot()
    root = slack.add_message("C1", "<@UBOT> a fox in the snow", user="U1")
    body = mention_body("<@UBOT> a fox in the snow", ts=root.ts, event_id="Ev0001")
    first = await post_signed(bot.http, bot.url, body)
    retry_headers = {"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"}
    again = await post_signed(bot.http, bot.url, body, extra_headers=retry_headers)
    assert first.status_code == 200 and again.status_code == 200
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    await bot.runtime.poller.idle(5)
    jobs = await _jobs(bot)
    assert len(jobs) == 1 and len(_sim(bot).submits) == 1
    # the result lands in the mention's own thread
    assert jobs[0]["thread_ts"] == root.ts
    thread = slack.thread("C1", root.ts)
    assert sum(1 for m in thread if m.files) == 1


async def test_the_same_slash_command_delivered_twice_makes_one_job(make_bot, slack) -> None:
    bot = await make_bot()
    body = slash_body("a paper boat", trigger_id="trig.same")
    r1 = await post_signed(bot.http, bot.url, body)
    r2 = await post_signed(bot.http, bot.url, body, extra_headers={"x-slack-retry-num": "1"})
    assert "Got it" in r1.json()["text"] and "Already on it" in r2.json()["text"]
    await bot.runtime.poller.idle(10)
    assert len(await _jobs(bot)) == 1 and len(_sim(bot).submits) == 1


async def test_cancel_releases_the_reservation_and_says_so_once(make_bot, slack) -> None:
    bot = await make_bot(sim_seconds=30)
    ack = (await bot.slash("[stuck] a very slow sunrise")).json()["text"]
    job_id = ack.split("`")[1]
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    other = (await bot.slash(f"cancel {job_id}", user="U2")).json()["text"]
    assert "can't find" in other
    text = (await bot.slash(f"cancel {job_id}")).json()["text"]
    assert "Cancelled" in text
    await bot.runtime.poller.idle(5)
    job = (await _jobs(bot))[0]
    assert job["status"] == "cancelled" and job["failure_kind"] == "cancelled" and job["cost_usd"] == 0
    root = slack.roots("C1")[0]
    replies = slack.thread("C1", root.ts)[1:]
    assert len(replies) == 1 and "Cancelled by <@U1>" in replies[0].text
    usage = json.loads(await usage_json(bot.deps, None))
    assert usage[0]["reserved_usd"] == 0 and usage[0]["spent_usd"] == 0
    again = (await bot.slash(f"cancel {job_id}")).json()["text"]
    assert "already" in again


async def test_stuck_job_gets_a_notice_then_fails_as_stuck_and_is_refunded(make_bot, slack) -> None:
    timing = replace(FAST, stall_timeout_s=0.3, job_timeout_s=1.5)
    bot = await make_bot(timing=timing, sim_seconds=0.4)
    await bot.slash("-d 4 [stuck] a kettle that never boils")
    await bot.runtime.poller.idle(10)
    job = (await _jobs(bot))[0]
    assert job["status"] == "failed" and job["failure_kind"] == "stuck" and job["progress"] == 99
    root = slack.roots("C1")[0]
    seen = [text for text, _ in root.edits] + [root.text]
    blocks_text = json.dumps([b for _, b in root.edits])
    assert "looks stuck" in blocks_text and "Still checking until" in blocks_text, seen
    replies = slack.thread("C1", root.ts)[1:]
    assert len(replies) == 1 and "Gave up waiting" in replies[0].text and "`stuck`" in replies[0].text
    usage = json.loads(await usage_json(bot.deps, None))
    assert usage[0]["spent_usd"] == 0 and usage[0]["reserved_usd"] == 0


async def test_prompt_echo_never_pings(make_bot, slack) -> None:
    bot = await make_bot()
    await bot.slash("&lt;!channel&gt; &lt;!here&gt; @everyone &lt;@U2&gt; look at this cat")
    await bot.runtime.poller.idle(10)
    for message in slack.messages:
        rendered = message.text + json.dumps(message.blocks)
        for active in ("<!channel>", "<!here>", "<!everyone>", "<@U2>", "@everyone"):
            assert active not in rendered


@pytest.mark.parametrize("fmt", logs.FORMATS)
async def test_no_secret_reaches_the_logs(make_bot, slack, caplog, fmt) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(logs.JobContextFilter())  # the job fields, as the real handler adds them
    bot = await make_bot()
    await bot.slash("a calm lake")
    await bot.slash("[blocked] a fight")
    await bot.runtime.poller.idle(10)
    # as SORA_LOG_FORMAT would print them (a JSON line carries more fields than the text)
    formatter = logs.formatter(fmt)
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert caplog.records and "xoxb-test-token" not in text
    assert SIGNING_SECRET not in text


async def test_a_command_that_cannot_be_stored_in_time_says_so_and_stores_nothing(make_bot, slack) -> None:
    bot = await make_bot()

    # SQLite's write lock is held elsewhere (e.g. another process) for longer than an ack can wait
    other = sqlite3.connect(bot.deps.db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    t0 = time.monotonic()
    try:
        resp = await bot.slash("a dog on a skateboard")
    finally:
        answered_after = time.monotonic() - t0
        other.execute("ROLLBACK")
        other.close()
    await asyncio.sleep(0.2)  # a write that was only delayed would be stored by now
    assert ACK_WAIT_S - 0.1 <= answered_after < 3.0  # it waited for the lock, then answered in time
    text = resp.json()["text"]
    assert "very busy" in text and "Nothing was stored or charged" in text
    assert await _jobs(bot) == [] and _sim(bot).submits == []
