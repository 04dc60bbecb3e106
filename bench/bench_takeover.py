"""Takeover: kill -9 a replica that owns 3,000 unfinished jobs; time until the survivors own
and watch every one of them.

1. A fresh PostgreSQL database gets the bot's schema (its own migrations, through
   `PostgresDatabase.open`) and 3,000 jobs stored mid-render (half `submitted`, half `running`,
   each with a provider job id, a request message and a reservation), owned by nobody.
2. A real `sora-bot run` replica ("doomed", HTTP mode, SORA_DATABASE_URL set) starts and
   claims them all; once every job is its own and inside flow.watch, two more replicas start
   (they find nothing free). The fake gateway (bench/_fakes.py) answers every status poll
   "processing" and counts create requests; Slack is the bench's fake Slack.
3. The doomed replica gets SIGKILL. Its leases, last renewed by its heartbeat, run out
   SORA_LEASE_SECONDS after that renewal (the moment is read from its rows after the kill).
   The jobs table is polled every 100 ms for owners, and the survivors are asked every
   0.5 s how many job tasks they have inside flow.watch.

Measured: kill -> the leases run out -> first job claimed -> every job owned by a survivor ->
every job watched by one; provider create requests during the takeover; how the jobs split
between the survivors; the first status poll of each job by a survivor.

Targets: every job watched again <= lease + 5 s after the kill; 0 provider creates.
With SORA_LEASE_SECONDS=30 (the default; --lease changes it) the leases run out 20-30 s after
the kill, and a survivor's heartbeat claims them within a third of a lease after that.
The server URL comes from $SORA_TEST_POSTGRES_URL (default: the CI role on 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import BotProc, Report, World, bot_env, free_port, isolate_env, run, workdir
from bench._postgres import fresh_database

JOBS = 3000
USERS = 1000
POLL_DB_S = 0.1
POLL_TASKS_S = 0.5
AFTER_S = 5.0  # the survivors keep running this long after the takeover (nothing may change)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lease", type=float, default=30.0, help="SORA_LEASE_SECONDS for every replica")
    ap.add_argument("--kill", choices=["anytime", "after-renewal"], default="anytime",
                    help="anytime: half a heartbeat after the survivors start (wherever the doomed replica's"
                         " heartbeat stands); after-renewal: right after its heartbeat renewed its leases (the"
                         " leases then last longest: the worst case)")
    return ap.parse_args()


async def main(args: argparse.Namespace) -> int:
    import asyncpg

    from bot.clock import parse_iso

    lease = args.lease
    suffix = "" if args.kill == "anytime" else "_" + args.kill.replace("-", "_")
    report = Report("takeover" + suffix, f"Takeover after kill -9 of a replica owning {JOBS:,} jobs (kill: {args.kill})")
    report.header()
    isolate_env()
    tmp = workdir("takeover")
    async with fresh_database() as url:
        print(f"   database {urlsplit(url).path[1:]}; SORA_LEASE_SECONDS={lease:g}", flush=True)
        await _seed(url, JOBS)
        pg = await asyncpg.connect(url)
        try:
            return await _run(report, tmp, url, pg, lease, parse_iso, args.kill)
        finally:
            await pg.close()


async def _owners(pg: Any) -> Counter[str | None]:
    rows = await pg.fetch("SELECT owner, COUNT(*) FROM jobs WHERE status IN ('queued','submitted','running')"
                          " GROUP BY owner")
    return Counter({r[0]: int(r[1]) for r in rows})


async def _run(report: Report, tmp: Path, url: str, pg: Any, lease: float, parse_iso: Any, kill: str) -> int:
    async with World(tmp, unknown_running=True, light_slack=True) as world:
        def env(port: int) -> dict[str, str]:
            return bot_env(world, tmp / "bot.db", port, SORA_DATABASE_URL=url, SORA_LEASE_SECONDS=f"{lease:g}")

        # -- the replica that will die: it claims every job at its start
        doomed = BotProc(env(p := free_port()), p, tmp, name="doomed")
        t0 = time.monotonic()
        await doomed.start(timeout=90)
        doomed_id = (await doomed.health())["replica"]
        await _until(lambda: _owned_by(pg, {doomed_id}), JOBS, 90, "the doomed replica owning every job")
        await doomed.wait_loaded(JOBS, timeout=90, interval=0.5)
        report.figure("doomed replica: exec to owning and watching all jobs", round(time.monotonic() - t0, 1), "s")

        # -- the survivors: running before the kill, as a fleet's other replicas are
        survivors = []
        for i in (1, 2):
            bot = BotProc(env(p := free_port()), p, tmp, name=f"survivor{i}")
            await bot.start(timeout=60)
            survivors.append(bot)
        ids = [(await s.health())["replica"] for s in survivors]
        before = await _owners(pg)
        report.figure("owners before the kill", _split(before, doomed_id, ids))
        if before.get(doomed_id, 0) != JOBS:
            raise RuntimeError(f"the doomed replica does not own every job: {before}")
        # let the survivors' heartbeats run a while (nothing free to claim)
        await asyncio.sleep(lease / 3 * 0.5)
        if kill == "after-renewal":
            # the doomed replica's next renewal (its rows' lease_until moves on): kill right after it
            last = await pg.fetchval("SELECT MAX(lease_until) FROM jobs WHERE owner = $1", doomed_id)
            give_up = time.monotonic() + lease / 3 + 10
            while time.monotonic() < give_up:
                if await pg.fetchval("SELECT MAX(lease_until) FROM jobs WHERE owner = $1", doomed_id) != last:
                    break
                await asyncio.sleep(0.02)

        # -- kill -9
        stats0 = await world.stats()
        submits_before = stats0["gateway"]["submits"]
        await world.call("mark")
        os.kill(doomed.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        wall_kill = datetime.now(UTC)
        assert doomed.child.proc is not None
        await doomed.child.proc.wait()
        row = await pg.fetchrow("SELECT MIN(lease_until), MAX(lease_until) FROM jobs WHERE owner = $1", doomed_id)
        lease_min, lease_max = parse_iso(row[0]), parse_iso(row[1])
        out_min_s = (lease_min - wall_kill).total_seconds()
        out_max_s = (lease_max - wall_kill).total_seconds()

        # -- watch the takeover: owners in the table, job tasks in the survivors
        marks: dict[str, float] = {}
        owner_trace: list[tuple[float, dict[str, int]]] = []
        watch_trace: list[tuple[float, list[int]]] = []
        deadline = t_kill + lease + 2 * lease / 3 + 30
        survivor_set = set(ids)

        async def poll_owners() -> None:
            while time.monotonic() < deadline:
                owners = await _owners(pg)
                t = time.monotonic() - t_kill
                by_survivors = sum(n for o, n in owners.items() if o in survivor_set)
                owner_trace.append((t, {str(k): v for k, v in owners.items()}))
                if by_survivors and "first_claim" not in marks:
                    marks["first_claim"] = t
                if by_survivors >= JOBS:
                    marks["all_owned"] = t
                    return
                await asyncio.sleep(POLL_DB_S)

        async def poll_watch() -> None:
            while time.monotonic() < deadline:
                stats = await asyncio.gather(*(s.inner_stats(timeout=20) for s in survivors))
                t = time.monotonic() - t_kill
                counts = [st["job_tasks"]["in_watch"] for st in stats]
                watch_trace.append((t, counts))
                if sum(counts) >= JOBS:
                    marks["all_watched"] = t
                    return
                await asyncio.sleep(POLL_TASKS_S)

        await asyncio.gather(poll_owners(), poll_watch())
        await asyncio.sleep(AFTER_S)
        after = await _owners(pg)
        final = await asyncio.gather(*(s.inner_stats(timeout=20) for s in survivors))
        health = await asyncio.gather(*(s.health() for s in survivors))
        g = (await world.stats())["gateway"]
        creates = g["submits"] - submits_before
        for s in survivors:
            await s.stop()
        logs = {s.name: s.child.log_path.read_text(errors="replace") for s in survivors}

    # -------------------------------------------------------------------- the figures
    split = {ids[0]: after.get(ids[0], 0), ids[1]: after.get(ids[1], 0)}
    in_watch = [st["job_tasks"]["in_watch"] for st in final]
    report.figure("kill -9 exit status", doomed.child.proc.returncode if doomed.child.proc else None)
    report.figure("leases of the dead replica run out after the kill", f"{out_min_s:.1f} - {out_max_s:.1f}", "s")
    fc, ao, aw = marks.get("first_claim"), marks.get("all_owned"), marks.get("all_watched")
    report.figure("kill -> first job owned by a survivor", round(fc, 2) if fc is not None else "never", "s")
    report.figure("kill -> every job owned by a survivor", round(ao, 2) if ao is not None else "never", "s")
    if ao is not None:
        report.figure("last lease ran out -> every job owned by a survivor", round(ao - out_max_s, 2), "s")
    report.figure("kill -> every job inside flow.watch on a survivor", round(aw, 2) if aw is not None else "never", "s")
    if ao is not None and fc is not None:
        report.figure("first claim -> last claim (the claiming itself)", round(ao - fc, 2), "s")
    report.figure("split between the survivors (jobs owned)", " / ".join(f"{n}" for n in split.values()))
    report.figure("split between the survivors (jobs inside flow.watch)", " / ".join(str(n) for n in in_watch))
    report.figure("owners 5 s after the takeover", _split(after, None, ids))
    report.figure("/healthz owned_jobs of the survivors", " / ".join(str(h.get("owned_jobs")) for h in health))
    report.figure("provider create requests during the takeover", creates)
    report.figure("status polls by the survivors since the kill", g["polls"] - stats0["gateway"]["polls"])
    report.figure("jobs polled at least once by a survivor",
                  f"{g['first_polls_after_mark']} of {JOBS} within {time.monotonic() - t_kill:.0f} s of the kill")
    if "last_first_poll_s" in g:
        report.figure("kill -> the last of those first polls", round(g["last_first_poll_s"], 1), "s")
    lost = sum(text.count("taken over by another replica") + text.count("may not act for it now")
               for text in logs.values())
    errors = sum(text.count(" ERROR ") for text in logs.values())
    report.figure("survivor log lines: lease lost / ERROR", f"{lost} / {errors}")
    claims = [(t, sum(v for k, v in o.items() if k in survivor_set)) for t, o in owner_trace]
    steps = [c for i, c in enumerate(claims) if i == 0 or c[1] != claims[i - 1][1]]
    report.figure("jobs owned by survivors over time (s after kill: jobs)",
                  ", ".join(f"{t:.1f}: {n}" for t, n in steps[:12]))
    report.note(f"SORA_LEASE_SECONDS={lease:g}: a replica renews every {lease / 3:g} s; kill: {kill}; the survivors"
                f" ran for {lease / 6:.0f} s or more before the kill; owners polled every {POLL_DB_S * 1000:.0f} ms, job tasks every "
                f"{POLL_TASKS_S * 1000:.0f} ms (figures are at most that late)")
    report.check("every job owned by a survivor after the takeover",
                 sum(after.get(i, 0) for i in ids), "==", JOBS)
    report.check("every job watched exactly once (survivors' job tasks inside flow.watch)", sum(in_watch), "==", JOBS)
    report.check("kill -> every job watched again", round(aw, 2) if aw is not None else float("nan"), "<=", lease + 5,
                 "s", note=f"lease {lease:g} s + 5 s")
    report.check("provider create requests during the takeover (re-submits)", creates, "==", 0)
    report.save()
    return 0


def _split(owners: Counter[str | None], doomed: str | None, ids: list[str]) -> str:
    parts = []
    if doomed is not None:
        parts.append(f"doomed {owners.get(doomed, 0)}")
    parts += [f"survivor{i + 1} {owners.get(rid, 0)}" for i, rid in enumerate(ids)]
    other = sum(n for o, n in owners.items() if o not in set(ids) | {doomed})
    parts.append(f"other/none {other}")
    return ", ".join(parts)


async def _owned_by(pg: Any, owners: set[str]) -> int:
    counts = await _owners(pg)
    return sum(n for o, n in counts.items() if o in owners)


async def _until(count: Any, want: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await count() >= want:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


async def _seed(url: str, count: int, *, max_age_s: float = 600.0) -> None:
    """`count` jobs mid-render, as the bot leaves them (schema from its own migrations; rows in
    with one executemany each, as bench._common.seed_running_jobs does on SQLite); no owner."""
    import random

    import asyncpg

    from bot.clock import iso
    from storage.jobs import new_job_id
    from storage.postgres import PostgresDatabase

    db = await PostgresDatabase(url).open()
    await db.close()
    rng = random.Random(7)
    now = datetime.now(UTC)
    day = now.date().isoformat()
    jobs, ledger_rows = [], []
    for n in range(count):
        job_id = new_job_id()
        user = f"U{n % USERS:05d}"
        created = iso(now - timedelta(seconds=max_age_s * (n + rng.random()) / count))
        ts = f"1700000000.{n:06d}"
        status, progress = ("submitted", None) if n % 2 == 0 else ("running", 50)
        jobs.append((job_id, user, f"[stuck] seeded job {n}", status, f"task_seed_{job_id}", day, created, iso(now),
                     created, iso(now), progress, ts, ts))
        ledger_rows.append((job_id, user, day, 800_000, created, created))
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO jobs (id, user_id, team_id, channel_id, source, model, provider, provider_model, prompt,"
                " duration_seconds, resolution, aspect_ratio, status, provider_job_id, estimate_micros, budget_day,"
                " created_at, updated_at, submitted_at, last_progress_at, progress, thread_ts, status_ts)"
                " VALUES ($1, $2, 'T0001', 'C1', 'command', 'sora-2', 'gateway', 'sora-2', $3, 8, '720p', '16:9',"
                " $4, $5, 800000, $6, $7, $8, $9, $10, $11, $12, $13)", jobs)
            await conn.executemany(
                "INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, state, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, 'reserved', $5, $6)", ledger_rows)  # the reserve events by trigger
    finally:
        await conn.close()


if __name__ == "__main__":
    ARGS = parse_args()
    run(lambda: main(ARGS))
