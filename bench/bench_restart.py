"""Restart: kill -9 with 10,000 unfinished jobs, start again, and time the recovery.

1. `sora-bot run` takes 100 /sora commands whose renders never finish; once the gateway has
   all 100 submits, the process is killed with SIGKILL.
2. 9,900 more jobs are stored mid-render in the same database (as a busy bot would have
   left them), so 10,000 jobs are unfinished.
3. The bot starts again. Measured: exec to listening; exec to every job loaded and inside
   flow.watch (seen from inside the process: each task's await chain); the first /healthz
   answer; provider submits after the restart (none may happen); how long until every job
   has been polled again (bounded by the polling schedule: up to 30 s for old jobs).

Targets: every job back under watch within 5 s of the start; zero provider submits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench._common import (
    BotProc, ProcSampler, Report, World, bot_env, count_rows, free_port, isolate_env, post_command, run,
    seed_running_jobs, signed, slash_form, summary_ms, lags_between, wait_until, workdir,
)

REAL = 100
JOBS = 10_000
LOAD_TIMEOUT_S = 150.0
REPOLL_WAIT_S = 45.0


async def main() -> int:
    report = Report("restart", f"Restart after kill -9 with {JOBS:,} unfinished jobs")
    report.header()
    isolate_env()
    tmp = workdir("restart")
    db = tmp / "bot.db"
    async with World(tmp, unknown_running=True, light_slack=True) as world:
        env = bot_env(world, db, port := free_port(), SORA_MAX_CONCURRENT_PER_USER="10")
        first = BotProc(env, port, tmp, name="before")
        await first.start()
        response_url = f"{world.slack_api_url.rsplit('/api/', 1)[0]}/respond/0"
        async with aiohttp.ClientSession() as session:
            sem = asyncio.Semaphore(10)

            async def one(i: int) -> None:
                body = slash_form(f"-d 8 [stuck] a glacier calving, take {i}", user=f"R{i:04d}",
                                  trigger=f"trig.r.{i}", response_url=response_url)
                async with sem:
                    sent = await post_command(session, f"{first.url}/slack/events", body, signed(body))
                assert sent.text.startswith("Got it"), sent
            await asyncio.gather(*(one(i) for i in range(REAL)))

        async def all_submitted() -> bool:
            return (await world.stats())["gateway"]["submits"] >= REAL
        await wait_until(all_submitted, 60, "100 submits")
        await wait_until(lambda: count_rows(db, "SELECT COUNT(*) FROM jobs WHERE status IN ('submitted','running')")
                         >= REAL, 30, "100 jobs submitted in the database")
        killed = await first.stop(signal.SIGKILL)
        submits_before = (await world.stats())["gateway"]["submits"]

        await seed_running_jobs(db, JOBS - REAL)
        unfinished = count_rows(db, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued','submitted','running')")

        await world.call("mark")
        second = BotProc(env, port, tmp, name="after")
        listening_after = await second.start(healthy=False)
        sampler = ProcSampler(second.pid, interval=0.5, sockets=False).start()
        t_h = time.monotonic()

        async def first_health() -> float:
            await second.health(timeout=LOAD_TIMEOUT_S)
            return time.monotonic() - second.child.started_at
        health_task = asyncio.create_task(first_health())
        loaded_after, trace = await second.wait_loaded(unfinished, timeout=LOAD_TIMEOUT_S)
        healthz_after = await health_task
        _ = t_h

        async def all_polled() -> bool:
            return (await world.stats())["gateway"]["first_polls_after_mark"] >= unfinished
        try:
            await wait_until(all_polled, REPOLL_WAIT_S, "every job polled again", interval=0.5)
        except TimeoutError:
            pass
        g = (await world.stats())["gateway"]
        inner = await second.inner_stats(timeout=30)
        await sampler.stop()
        await second.stop()

    one_query_s = await _one_query_load(db)
    report.figure("kill -9 exit status", killed)
    report.figure("unfinished jobs at restart", unfinished)
    report.figure("exec to listening (every task created)", round(listening_after, 2), "s")
    report.figure("exec to first /healthz answer", round(healthz_after, 1), "s")
    report.figure("exec to every job loaded and in watch()", round(loaded_after, 1), "s")
    for snap in trace[:: max(1, len(trace) // 6)]:
        report.figure(f"  at {snap['t']:.0f} s: jobs in watch()", f"{snap['in_watch']} (RSS {snap['rss_mb']:.0f} MiB)")
    report.figure("RSS max after restart", round(max(s["rss_mb"] for s in sampler.samples), 1), "MiB")
    lags = lags_between(inner, 0, float("inf"))
    report.figure("loop lag after restart p99 / max", f"{summary_ms(lags)['p99_ms']} / {summary_ms(lags)['max_ms']}",
                  "ms")
    polled = g["first_polls_after_mark"]
    report.figure("jobs polled again", f"{polled} of {unfinished}")
    if "last_first_poll_s" in g:
        report.figure("restart to the last of those first polls", round(g["last_first_poll_s"], 1), "s")
    report.figure("provider submits before the kill / after the restart", f"{submits_before} / {g['submits'] - submits_before}")
    report.figure("for comparison: all unfinished jobs in one query + row_to_job", round(one_query_s, 2), "s")
    report.check("every job back under watch", round(loaded_after, 1), "<=", 5, "s",
                 note="loaded from the database and inside flow.watch")
    report.check("provider submits after the restart", g["submits"] - submits_before, "==", 0)
    report.save()
    return 0


async def _one_query_load(db_path: Path) -> float:
    """How long loading every unfinished job takes as one query through the storage layer
    (Database.fetchall + storage.jobs.row_to_job), against the per-job get_job of today."""
    from storage.sqlite import SQLiteDatabase
    from storage.jobs import row_to_job

    db = await SQLiteDatabase(db_path).open()
    try:
        t0 = time.perf_counter()
        rows = await db.fetchall("SELECT * FROM jobs WHERE status IN ('queued','submitted','running')")
        jobs = [row_to_job(r) for r in rows]
        took = time.perf_counter() - t0
        assert len(jobs) >= JOBS
        return took
    finally:
        await db.close()


if __name__ == "__main__":
    run(main)
