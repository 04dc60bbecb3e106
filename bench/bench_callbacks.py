"""Callbacks instead of polling: status calls per job, and how soon the video follows the callback.

`sora-bot run` with the OpenAI Videos shape and its webhooks on (OPENAI_WEBHOOK_SECRET, HTTP
mode), against the fake OpenAI server of the test suite (tests/fakes/providers.py) and a
fake Slack, both in this process. 100 /sora commands arrive at 10 a second; each render
takes 20 s; the moment a render ends, the fake posts a signed `video.completed` webhook to
the bot, as OpenAI does. Everything else runs on the bot's defaults (SORA_POLL_INTERVAL 5 s,
the safety-net poll every ~5 minutes).

Target: with callbacks on, <= 2 provider calls per job (status calls: the create and the
download are counted beside them) and the video in the thread <= 1 s after the callback.

    python bench/bench_callbacks.py [--jobs N] [--rate R] [--run-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sqlite3
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench._common import (
    BotProc, Report, bot_env, free_port, isolate_env, post_command, run, signed, slash_form, summary_ms,
    wait_until, workdir,
)
from bench._fakes import TimedSlack
from tests.fakes.providers import FakeOpenAIServer

WHSEC = "whsec_" + base64.b64encode(b"sora-bot bench webhook secret 01").decode()
SETTLE_S = 0.05  # the webhook goes out this long after the render's end, as a provider's would


def _provider_ids(db_path: Path) -> dict[str, str]:
    """The bare provider video id -> our job id, from the bot's database (read only)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, provider_job_id FROM jobs WHERE provider_job_id IS NOT NULL").fetchall()
    finally:
        conn.close()
    return {str(pid).rpartition("|")[2].rpartition(":")[2]: job_id for job_id, pid in rows}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--run-seconds", type=float, default=20.0)
    args = parser.parse_args()

    report = Report("callbacks", f"Callbacks: {args.jobs} jobs of {args.run_seconds:.0f} s, webhook on each finish")
    report.header()
    isolate_env()
    tmp = workdir("callbacks")
    slack = TimedSlack()
    slack.keep_records = False
    await slack.start()
    slack.add_channel("C1", name="general", member=True)
    server = FakeOpenAIServer(run_seconds=args.run_seconds)
    await server.start()
    port = free_port()
    db_path = tmp / "bot.db"
    world = SimpleNamespace(slack_api_url=slack.api_url, gateway_base_url="")
    bot = BotProc(bot_env(world, db_path, port, OPENAI_API_KEY=server.api_key, OPENAI_BASE_URL=server.base_url,
                          OPENAI_WEBHOOK_SECRET=WHSEC, SORA_DAILY_BUDGET_USD="50"), port, tmp, name="callbacks")
    sent_at: dict[str, float] = {}  # provider id -> when its webhook went out
    statuses: list[int] = []
    pending: set[asyncio.Task[Any]] = set()

    async def call_back(pid: str, due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.time()))
        sent_at[pid] = time.time()
        statuses.append(await server.send_callback(pid))

    async def provider_side() -> None:
        """Each render's webhook, the moment it ends."""
        scheduled: set[str] = set()
        while True:
            for pid, job in list(server.jobs.items()):
                if pid not in scheduled:
                    scheduled.add(pid)
                    task = asyncio.create_task(call_back(pid, job.created_at + args.run_seconds + SETTLE_S))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            await asyncio.sleep(0.02)

    try:
        await bot.start()
        server.configure_webhooks(f"{bot.url}/callbacks/openai", WHSEC)
        respond = f"{slack.api_url.rsplit('/api/', 1)[0]}/respond/0"
        driver = asyncio.create_task(provider_side())
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as session:
            answers = []
            for i in range(args.jobs):
                await asyncio.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
                body = slash_form(f"a paper boat in the rain, take {i}", user=f"UC{i:04d}", trigger=f"cb.{i}",
                                  response_url=respond)
                answers.append(await post_command(session, f"{bot.url}/slack/events", body, signed(body)))
        accepted = sum(1 for a in answers if a.text.startswith("Got it"))
        await wait_until(lambda: len(slack.video_shared_at) >= accepted, args.run_seconds + 120,
                         "every video in its thread")
        await asyncio.sleep(1.0)  # any status call still to come would show now
        driver.cancel()
        for task in list(pending):
            task.cancel()
        ids = _provider_ids(db_path)
    finally:
        await bot.stop()
        await server.stop()
        await slack.stop()

    pids = [pid for pid in server.jobs if pid in ids]
    polls = [server.polls[pid] for pid in pids]
    downloads = [server.downloads[pid] for pid in pids]
    after = [slack.video_shared_at[ids[pid]] - sent_at[pid] for pid in pids
             if ids[pid] in slack.video_shared_at and pid in sent_at]
    s_after = summary_ms(after)
    report.figure("commands answered 'Got it'", accepted)
    report.figure("provider: creates", len(server.submits))
    report.figure("status calls per job: mean / max", f"{sum(polls) / max(1, len(polls)):.2f} / {max(polls, default=0)}")
    report.figure("status calls per job: how many jobs had 0 / 1 / 2 / more",
                  " / ".join(str(sum(1 for p in polls if p == n)) for n in (0, 1, 2)) + f" / {sum(1 for p in polls if p > 2)}")
    report.figure("downloads per job: max", max(downloads, default=0))
    report.figure("all provider calls per job (create + status + download): max",
                  max((1 + p + d for p, d in zip(polls, downloads)), default=0))
    report.figure("callback -> video in the thread: p50", s_after["p50_ms"], "ms")
    report.figure("callback -> video in the thread: p99", s_after["p99_ms"], "ms")
    report.figure("callback -> video in the thread: max", s_after["max_ms"], "ms")
    report.check("every job's video in its thread", len(after), "==", args.jobs)
    report.check("webhooks the bot refused", sum(1 for s in statuses if s != 200), "==", 0)
    report.check("status calls per job (worst job)", max(polls, default=0), "<=", 2)
    report.check("video in the thread after the callback (worst job)", round(s_after["max_ms"] / 1000, 3), "<=", 1.0, "s")
    report.save()
    return 0


if __name__ == "__main__":
    run(main)
