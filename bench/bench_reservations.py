"""Budget reservations per second through the storage layer, with the budget invariant checked.

`storage.jobs.reserve_and_insert` (the transaction every /sora request makes before its ack)
against a SQLite file in a temp dir, in this process:

  1. one caller at a time (the floor: one transaction's round trips);
  2. 64 concurrent callers, while another task settles jobs (charge or release, as
     flow.finish_success / fail_job do) and a checker reads the totals every 50 ms;
  3. the same with 20,000 reservations already in the budget day and a workspace cap
     (the cap's check sums the whole day).

Invariant: for every user and for the workspace, charged + reserved never exceeds the
limit (checked during the run from consistent snapshots and at the end), and every job has
exactly one ledger row and one reserve event.

Extra: read-after-write through Database.fetchone while other reads are in flight (the
bot reloads a job right after updating it); a stale answer is counted.

Target: >= 1,000 reservations per second with the invariant intact.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Report, isolate_env, run, summary_ms, workdir

COST = 800_000  # sora-2, 8 s at $0.10/s
USER_LIMIT = 5_000_000  # $5: six reservations fit, the seventh is refused
CONCURRENCY = 64
TIME_CAP_S = 25.0


async def main() -> int:
    from bot.clock import iso
    from bot.errors import BudgetExceeded, InvalidRequest
    from bot.models import JobStatus
    from storage import jobs as jobstore
    from storage import ledger
    from storage.sqlite import SQLiteDatabase
    from storage.jobs import Limits, NewJob, reserve_and_insert

    report = Report("reservations", "Budget reservations through the storage layer")
    report.header()
    isolate_env()
    tmp = workdir("reserve")
    day = datetime.now(UTC).date().isoformat()

    def new_job(user: str, n: int) -> NewJob:
        return NewJob(user_id=user, team_id="T0001", channel_id="C1", source="command", model="sora-2",
                      provider="gateway", provider_model="sora-2", prompt=f"bench prompt {n}",
                      duration_seconds=8, resolution="720p", aspect_ratio="16:9", estimate_micros=COST,
                      dedupe_key=f"cmd:T0001:trig.{user}.{n}")

    async def phase(db: SQLiteDatabase, name: str, requests: list[tuple[str, int]], limits: Limits, *,
                    concurrency: int, settle: bool, check: bool) -> dict:
        queue = list(requests)
        accepted: list[str] = []
        refused = 0
        latencies: list[float] = []
        violations: list[str] = []
        done = asyncio.Event()
        deadline = time.monotonic() + TIME_CAP_S

        async def worker() -> None:
            nonlocal refused
            while queue and time.monotonic() < deadline:
                user, n = queue.pop()
                t0 = time.perf_counter()
                try:
                    job, created = await reserve_and_insert(db, new_job(user, n), limits=limits, day=day,
                                                            now=iso(datetime.now(UTC)))
                    if created:
                        accepted.append(job.id)
                except (BudgetExceeded, InvalidRequest):
                    refused += 1
                latencies.append(time.perf_counter() - t0)

        async def settler() -> None:
            # finish jobs as the poller would: half charged (maybe below the estimate), half released
            rng = random.Random(3)
            i = 0
            while not done.is_set():
                if i < len(accepted):
                    job_id = accepted[i]
                    i += 1
                    now = iso(datetime.now(UTC))
                    async with db.write_txn() as conn:
                        if rng.random() < 0.5:
                            moved = await jobstore.update_job(conn, job_id, expect=[JobStatus.QUEUED], now=now,
                                                              set_={"status": JobStatus.FAILED,
                                                                    "failure_kind": "generation_failed"})
                            if moved:
                                await ledger.release(conn, job_id, now)
                        else:
                            await conn.execute("UPDATE jobs SET status='succeeded', provider_job_id='p', "
                                               "cost_micros=?, updated_at=? WHERE id=? AND status='queued'",
                                               (COST // 2, now, job_id))
                            await ledger.charge(conn, job_id, COST // 2, now)
                else:
                    await asyncio.sleep(0.005)

        async def checker() -> None:
            while not done.is_set():
                for v in await _violations(db, day, USER_LIMIT, limits.workspace_limit_micros):
                    violations.append(v)
                await asyncio.sleep(0.05)

        extra = []
        if settle:
            extra.append(asyncio.create_task(settler()))
        if check:
            extra.append(asyncio.create_task(checker()))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        done.set()
        await asyncio.gather(*extra)
        calls = len(latencies)
        s = summary_ms(latencies)
        report.figure(f"{name}: calls", calls)
        report.figure(f"{name}: accepted / refused", f"{len(accepted)} / {refused}")
        report.figure(f"{name}: reservations per second", round(calls / elapsed, 1), "/s")
        report.figure(f"{name}: latency p50 / p99", f"{s['p50_ms']} / {s['p99_ms']}", "ms")
        if check:
            report.figure(f"{name}: invariant violations seen during the run", len(violations))
        return {"rate": calls / elapsed, "violations": violations, "accepted": accepted}

    # 1 + 2: a fresh day, 600 users asking 10 times each ($8 wanted, $5 allowed), random order
    db = await SQLiteDatabase(tmp / "reserve.db").open()
    requests = [(f"U{u:04d}", n) for u in range(600) for n in range(10)]
    random.Random(1).shuffle(requests)
    limits = Limits(user_limit_micros=USER_LIMIT, workspace_limit_micros=2_400_000_000,
                    max_unfinished_per_user=1000)
    seq = await phase(db, "sequential", requests[:1500], limits, concurrency=1, settle=False, check=False)
    conc = await phase(db, f"{CONCURRENCY} concurrent + settling", requests[1500:], limits,
                       concurrency=CONCURRENCY, settle=True, check=True)
    end_violations = await _violations(db, day, USER_LIMIT, limits.workspace_limit_micros)
    books = _books(tmp / "reserve.db")

    # extra: read-after-write through the reader while other reads are in flight
    stale = await _stale_reads(db)
    await db.close()

    # why: round trips to the database thread per reservation, and the cost of one
    hops, per_hop_us = await _round_trips(tmp / "hops.db", new_job, limits, day)
    proto_rate = await _one_hop_rate(tmp / "proto.db", new_job, limits, day)

    # 3: a busy day: 20,000 reservations already stored, with a workspace cap
    db = await SQLiteDatabase(tmp / "busy.db").open()
    _prefill(tmp / "busy.db", day, 20_000)
    busy_requests = [(f"V{u:04d}", n) for u in range(300) for n in range(10)]
    random.Random(2).shuffle(busy_requests)
    busy_limits = Limits(user_limit_micros=USER_LIMIT, workspace_limit_micros=10**13, max_unfinished_per_user=1000)
    busy = await phase(db, "busy day (20k rows) + workspace cap", busy_requests, busy_limits,
                       concurrency=CONCURRENCY, settle=False, check=False)
    no_cap = Limits(user_limit_micros=USER_LIMIT, workspace_limit_micros=None, max_unfinished_per_user=1000)
    busy_requests2 = [(f"W{u:04d}", n) for u in range(300) for n in range(10)]
    busy2 = await phase(db, "busy day (20k rows), no workspace cap", busy_requests2, no_cap,
                        concurrency=CONCURRENCY, settle=False, check=False)
    busy_end = await _violations(db, day, USER_LIMIT, busy_limits.workspace_limit_micros)
    await db.close()

    report.figure("aiosqlite round trips per reserve_and_insert", round(hops, 1))
    report.figure("one aiosqlite round trip (SELECT 1), mean", round(per_hop_us, 1), "us")
    report.figure("prototype: the same SQL in one round trip, reservations/s", round(proto_rate, 1), "/s")
    report.figure("books: jobs / ledger rows / reserve events", f"{books[0]} / {books[1]} / {books[2]}")
    report.figure("stale reads after a committed write (Database.fetchone)", f"{stale[0]} of {stale[1]}")
    report.check("reservations/s, 64 concurrent with settling", round(conc["rate"], 1), ">=", 1000, "/s")
    report.check("reservations/s, one at a time", round(seq["rate"], 1), ">=", 1000, "/s")
    report.check("reservations/s, busy day + workspace cap", round(busy["rate"], 1), ">=", 1000, "/s")
    report.check("budget invariant violations (during + end)",
                 len(conc["violations"]) + len(end_violations) + len(busy_end), "==", 0)
    report.check("every job has one ledger row and one reserve event",
                 int(books[0] == books[1] == books[2]), "==", 1)
    report.check("stale reads after own write (extra check, not a brief target)", stale[0], "==", 0,
                 note="the bot reloads jobs this way right after updating them")
    _ = busy2
    report.save()
    return 0


async def _violations(db, day: str, user_limit: int, ws_limit: int | None) -> list[str]:
    """Users or the workspace over their limit, from one consistent snapshot (one statement)."""
    rows = await db.fetchall(
        "SELECT user_id, SUM(CASE WHEN state='charged' THEN charged_micros WHEN state='reserved'"
        " THEN reserved_micros ELSE 0 END) AS used FROM ledger WHERE budget_day = ? GROUP BY user_id",
        (day,),
    )
    out = [f"{r[0]} uses {r[1]}" for r in rows if r[1] > user_limit]
    total = sum(int(r[1]) for r in rows)
    if ws_limit is not None and total > ws_limit:
        out.append(f"workspace uses {total}")
    return out


def _books(path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(path)
    try:
        jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        rows = conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM ledger_events WHERE event='reserve'").fetchone()[0]
        return int(jobs), int(rows), int(events)
    finally:
        conn.close()


def _prefill(path: Path, day: str, n: int) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn = sqlite3.connect(path)
    try:
        conn.executemany(
            "INSERT INTO jobs (id, user_id, team_id, channel_id, source, model, provider, provider_model,"
            " prompt, duration_seconds, resolution, aspect_ratio, status, failure_kind, estimate_micros,"
            " budget_day, created_at, updated_at) VALUES (?, ?, 'T0001', 'C1', 'command', 'sora-2', 'gateway',"
            " 'sora-2', 'old', 8, '720p', '16:9', 'failed', 'generation_failed', ?, ?, ?, ?)",
            [(f"old{i:07d}", f"X{i % 5000:05d}", COST, day, now, now) for i in range(n)],
        )
        conn.executemany(
            "INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'released', ?, ?)",
            [(f"old{i:07d}", f"X{i % 5000:05d}", day, COST, now, now) for i in range(n)],
        )
        conn.commit()
    finally:
        conn.close()


async def _round_trips(path: Path, new_job, limits, day: str) -> tuple[float, float]:
    """How many thread round trips one reservation makes, and what one costs here."""
    import aiosqlite

    from bot.clock import iso
    from storage.sqlite import SQLiteDatabase
    from storage.jobs import reserve_and_insert

    db = await SQLiteDatabase(path).open()
    calls = 0
    original = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await original(self, fn, *args, **kwargs)

    aiosqlite.Connection._execute = counting  # type: ignore[method-assign]
    try:
        for n in range(100):
            await reserve_and_insert(db, new_job(f"H{n:03d}", n), limits=limits, day=day, now=iso(datetime.now(UTC)))
    finally:
        aiosqlite.Connection._execute = original  # type: ignore[method-assign]
    hops = calls / 100
    await db.close()
    conn = await aiosqlite.connect(path)  # one plain aiosqlite connection: one call, one trip
    t0 = time.perf_counter()
    for _ in range(2000):
        await conn.execute_fetchall("SELECT 1")
    per_hop = (time.perf_counter() - t0) / 2000 * 1e6
    await conn.close()
    return hops, per_hop


def _reserve_sync(conn: sqlite3.Connection, new, limits, day: str, now: str) -> str | None:
    """PROTOTYPE, not the bot's code: reserve_and_insert's statements as one function, so the
    whole transaction is one trip to the database thread. Returns the job id, or None if refused."""
    from storage.jobs import new_job_id

    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT id FROM jobs WHERE dedupe_key = ?", (new.dedupe_key,)).fetchone():
            conn.execute("ROLLBACK")
            return None
        running = conn.execute("SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('queued','submitted',"
                               "'running')", (new.user_id,)).fetchone()[0]
        settings = dict(conn.execute("SELECT key, value FROM settings WHERE key IN ('daily_budget_micros',"
                                     "'workspace_budget_micros','paused_reason')").fetchall())
        default = int(settings["daily_budget_micros"]) if settings.get("daily_budget_micros") else limits.user_limit_micros
        row = conn.execute("SELECT limit_micros FROM user_limits WHERE user_id = ?", (new.user_id,)).fetchone()
        limit = int(row[0]) if row else default
        totals = "SELECT COALESCE(SUM(CASE WHEN state='charged' THEN charged_micros WHEN state='reserved' THEN" \
                 " reserved_micros ELSE 0 END), 0) FROM ledger WHERE budget_day = ?"
        used = conn.execute(totals + " AND user_id = ?", (day, new.user_id)).fetchone()[0]
        ws_used = conn.execute(totals, (day,)).fetchone()[0] if limits.workspace_limit_micros else 0
        if (running >= limits.max_unfinished_per_user or "paused_reason" in settings
                or new.estimate_micros > limit - used
                or (limits.workspace_limit_micros and new.estimate_micros > limits.workspace_limit_micros - ws_used)):
            conn.execute("ROLLBACK")
            return None
        job_id = new_job_id()
        conn.execute(
            "INSERT INTO jobs (id, dedupe_key, user_id, team_id, channel_id, thread_ts, source, response_url, model,"
            " provider, provider_model, prompt, duration_seconds, resolution, aspect_ratio, status, estimate_micros,"
            " budget_day, created_at, updated_at, last_progress_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'queued',"
            "?,?,?,?,?)",
            (job_id, new.dedupe_key, new.user_id, new.team_id, new.channel_id, new.thread_ts, new.source,
             new.response_url, new.model, new.provider, new.provider_model, new.prompt, new.duration_seconds,
             new.resolution, new.aspect_ratio, new.estimate_micros, day, now, now, now))
        conn.execute("INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, state, created_at, updated_at)"
                     " VALUES (?, ?, ?, ?, 'reserved', ?, ?)", (job_id, new.user_id, day, new.estimate_micros, now, now))
        # its reserve event: by the ledger's trigger, as in the bot
        conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        conn.execute("COMMIT")
        return job_id
    except BaseException:
        conn.execute("ROLLBACK")
        raise


async def _one_hop_rate(path: Path, new_job, limits, day: str, n: int = 3000) -> float:
    """Reservations per second when each transaction is one trip (64 concurrent callers)."""
    from bot.clock import iso
    from storage.sqlite import SQLiteDatabase

    db = await SQLiteDatabase(path).open()
    writer = db._writer  # the bot's own writer connection and thread
    assert writer is not None
    queue = [(f"P{u:04d}", k) for u in range(n // 10) for k in range(10)]

    async def worker() -> None:
        while queue:
            user, k = queue.pop()
            async with db._write_lock:
                await writer._execute(_reserve_sync, writer._conn, new_job(user, k), limits, day,
                                      iso(datetime.now(UTC)))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    rate = n / (time.perf_counter() - t0)
    await db.close()
    return rate


async def _stale_reads(db, rounds: int = 300, readers: int = 8) -> tuple[int, int]:
    """Update a row through write_txn, read it back through Database.fetchone at once."""
    await db.execute("CREATE TABLE IF NOT EXISTS bench_probe (id INTEGER PRIMARY KEY, v INTEGER)")
    await db.execute("INSERT OR REPLACE INTO bench_probe VALUES (1, 0)")
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            await db.fetchone("SELECT v FROM bench_probe WHERE id = 1")

    tasks = [asyncio.create_task(reader()) for _ in range(readers)]
    stale = 0
    for i in range(1, rounds + 1):
        await db.execute("UPDATE bench_probe SET v = ? WHERE id = 1", (i,))
        row = await db.fetchone("SELECT v FROM bench_probe WHERE id = 1")
        stale += int(row is None or row[0] != i)
    stop.set()
    await asyncio.gather(*tasks)
    return stale, rounds


if __name__ == "__main__":
    run(main)
