"""The whole loop over HTTP with the built-in simulator: request message, progress, video."""

from __future__ import annotations

import pytest
import json

from bot.cli import jobs_json, usage_json

# the storage a job's life touches, on both engines
pytestmark = pytest.mark.both_backends


async def test_slash_command_ends_with_the_video_in_the_thread(make_bot, slack) -> None:
    bot = await make_bot()
    resp = await bot.slash("-d 8 a golden retriever running through autumn leaves")
    assert resp.status_code == 200
    assert "reserved" in resp.json()["text"]

    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    root = slack.roots("C1")[0]
    assert "golden retriever" in root.text
    thread = slack.thread("C1", root.ts)
    finals = [m for m in thread[1:] if m.files]
    assert len(finals) == 1 and finals[0].files[0]["size"] > 1000
    await bot.runtime.poller.idle(5)

    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 1
    job = jobs[0]
    assert job["status"] == "succeeded"
    assert job["thread_ts"] == root.ts and job["channel_id"] == "C1"
    assert job["cost_usd"] == 0.8 and job["failure_kind"] is None
    assert job["prompt"] == "a golden retriever running through autumn leaves"
    usage = json.loads(await usage_json(bot.deps, None))
    assert usage == [{"user_id": "U1", "date": job["created_at"][:10], "limit_usd": 5.0,
                      "spent_usd": 0.8, "reserved_usd": 0.0, "remaining_usd": 4.2}]


async def test_a_poke_makes_the_watcher_poll_at_once(make_bot, slack) -> None:
    from dataclasses import replace

    from tests.conftest import FAST

    # a long first delay: without the poke, the video would not arrive for a minute
    bot = await make_bot(timing=replace(FAST, poll_interval_s=60.0, max_poll_interval_s=60.0), sim_seconds=0.3)
    job_id = (await bot.slash("a fast one")).json()["text"].split("`")[1]
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    import asyncio

    await asyncio.sleep(0.5)  # the simulated render is done by now
    assert bot.runtime.poller.poke(job_id)
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=5)
    await bot.runtime.poller.idle(5)
    assert not bot.runtime.poller.poke(job_id)  # finished: nobody watches it any more
    assert not bot.runtime.poller.poke("nosuchjob")
