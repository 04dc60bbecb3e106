"""Budget reservations per second with 3 replicas on one PostgreSQL database, invariant checked.

Three worker processes (multiprocessing, spawn), each with its own `PostgresDatabase` (its own
asyncpg pool, as a `sora-bot run` replica has), run 64 concurrent callers of
`storage.jobs.reserve_and_insert` each, on one fresh database made for this run:

  * 1,000 users, 9 requests each ($0.80 apiece): 9,000 requests, 3,000 per replica. The default
    limit is $5 (6 fit); every 7th user has an override of $2.40 (3 fit).
  * Requests come in groups of 100 users (--group) whose 900 requests are shuffled together and
    dealt round-robin to the 3 replicas, so a user's requests are in flight on several replicas
    at once (the per-user lock is contended across processes, not only inside one); the share
    of calls that overlapped a same-user call from another replica is reported.
  * Phase 1, with a workspace cap of $3,200 (4,000 reservations): the cap refuses a good share
    and every capped reservation takes the day's lock. Phase 2, the same requests without a cap,
    on another budget day of the same database.
  * Each phase stops after its 9,000 requests or TIME_CAP_S.

Meanwhile the parent reads the committed ledger every ~20 ms (`storage.ledger.usage_for_day`:
one statement, so one snapshot) and checks, for every user, spent + reserved <= their limit,
and the workspace total <= the cap; it also samples pg_stat_activity for what the busy
backends wait on. At the end: every job has exactly one ledger row and one reserve event, and
ledger_day_totals (kept by triggers) agrees with the ledger.

Also reported: statements per reservation, CPU per call in the replicas and in their server
backends, and what the busy backends wait on (pg_stat_activity, sampled with the ledger).
`--diag-no-day-totals` (diagnosis only) disables the ledger_day_totals trigger in the run's
database, to show what the one totals row per day costs.

Target: >= 1,000 reservations per second across the 3 replicas, no invariant violation.
The server URL comes from $SORA_TEST_POSTGRES_URL (default: the CI role on 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Report, cpu_seconds, isolate_env, run, summary_ms, workdir
from bench._postgres import fresh_database, server_url

REPLICAS = 3
CONCURRENCY = 64  # callers per replica
USERS = 1000
PER_USER = 9
COST = 800_000  # sora-2, 8 s at $0.10/s
USER_LIMIT = 5_000_000  # $5: six fit, the seventh is refused
LOW_LIMIT = 2_400_000  # every 7th user: three fit
WORKSPACE_CAP = 4000 * COST  # $3,200
# users whose requests are shuffled together, and so in flight together on every replica;
# --group 10 makes each user's 9 requests arrive at once (the worst case for the user's lock)
GROUP = 100
TIME_CAP_S = 60.0
CHECK_EVERY_S = 0.02


def user_name(u: int) -> str:
    return f"U{u:04d}"


def limit_of(u: int) -> int:
    return LOW_LIMIT if u % 7 == 0 else USER_LIMIT


def deal_requests(seed: int, group: int) -> list[list[tuple[str, int]]]:
    """Each replica's queue of (user, n): groups of GROUP users, their requests shuffled
    together, dealt round-robin so every user's requests go to all replicas at about once.
    Callers pop from the end, so each queue is reversed to run in dealing order."""
    rng = random.Random(seed)
    users = list(range(USERS))
    rng.shuffle(users)
    order: list[tuple[str, int]] = []
    for g in range(0, USERS, group):
        block = [(user_name(u), n) for u in users[g:g + group] for n in range(PER_USER)]
        rng.shuffle(block)
        order.extend(block)
    queues: list[list[tuple[str, int]]] = [[] for _ in range(REPLICAS)]
    for i, item in enumerate(order):
        queues[i % REPLICAS].append(item)
    return [list(reversed(q)) for q in queues]


# --------------------------------------------------------------------------- one replica (a process)


def replica(url: str, index: int, phase: str, day: str, cap: int | None, requests: list[tuple[str, int]],
            start: Any, ready: Any, out: Any) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter, like another replica)."""
    try:
        out.put(asyncio.run(_replica(url, index, phase, day, cap, requests, start, ready)))
    except BaseException as exc:  # the parent must hear of it, not wait forever
        import traceback

        out.put({"index": index, "fatal": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})


async def _replica(url: str, index: int, phase: str, day: str, cap: int | None,
                   requests: list[tuple[str, int]], start: Any, ready: Any) -> dict[str, Any]:
    from bot.clock import iso
    from bot.errors import BudgetExceeded, Busy, InvalidRequest
    from storage.jobs import Limits, NewJob, TooManyJobs, reserve_and_insert
    from storage.postgres import PostgresDatabase

    trips = _count_round_trips()
    db = await PostgresDatabase(url).open()
    limits = Limits(user_limit_micros=USER_LIMIT, workspace_limit_micros=cap, max_unfinished_per_user=1000)
    queue = list(requests)
    calls: list[tuple[str, float, float, str]] = []  # (user, start, end, outcome) on the shared monotonic clock
    errors: Counter[str] = Counter()
    ready.put(index)
    await asyncio.get_running_loop().run_in_executor(None, start.wait)
    trips.clear()
    cpu0 = cpu_seconds()
    t_start = time.monotonic()
    deadline = t_start + TIME_CAP_S

    async def caller() -> None:
        while queue and time.monotonic() < deadline:
            user, n = queue.pop()
            new = NewJob(user_id=user, team_id="T0001", channel_id="C1", source="command", model="sora-2",
                         provider="gateway", provider_model="sora-2", prompt=f"bench prompt {n}",
                         duration_seconds=8, resolution="720p", aspect_ratio="16:9", estimate_micros=COST,
                         dedupe_key=f"cmd:T0001:{phase}.{user}.{n}")
            t0 = time.monotonic()
            try:
                _, created = await reserve_and_insert(db, new, limits=limits, day=day, now=iso(datetime.now(UTC)))
                outcome = "accepted" if created else "duplicate"
            except BudgetExceeded as exc:
                outcome = f"refused:{exc.scope}"
            except TooManyJobs:
                outcome = "refused:running"
            except (Busy, InvalidRequest) as exc:
                outcome = "error"
                errors[type(exc).__name__] += 1
            except Exception as exc:  # a database error: counted, the run goes on
                outcome = "error"
                errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            calls.append((user, t0, time.monotonic(), outcome))

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    t_end = time.monotonic()
    cpu = cpu_seconds() - cpu0
    await db.close()
    return {"index": index, "pid": os.getpid(), "start": t_start, "end": t_end, "cpu_s": cpu,
            "calls": calls, "errors": dict(errors), "left": len(queue), "trips": dict(trips)}


def _count_round_trips() -> Counter[str]:
    """Count the statements each transaction sends (in this worker process only): the
    methods of the bot's PostgreSQL connection wrapper, wrapped at their class attribute."""
    from storage import postgres

    counts: Counter[str] = Counter()
    for name in ("execute", "fetchone", "fetchall", "lock"):
        original = getattr(postgres._PgConn, name)

        def wrap(original: Any = original, name: str = name) -> Any:
            async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
                counts[name] += 1
                return await original(self, *args, **kwargs)
            return counted

        setattr(postgres._PgConn, name, wrap())
    return counts


# --------------------------------------------------------------------------- the parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", type=int, default=GROUP, help="users whose requests are mixed together")
    ap.add_argument("--phases", default="cap,nocap", help="cap, nocap or both (comma-separated)")
    ap.add_argument("--diag-no-day-totals", action="store_true",
                    help="diagnosis only: disable the ledger_day_totals triggers in this run's database (every"
                         " reservation of a day updates that one row); the workspace total is then not kept, so"
                         " only the no-cap phase runs")
    return ap.parse_args()


async def main(args: argparse.Namespace) -> int:
    import asyncpg

    from storage.postgres import PostgresDatabase

    report = Report("pg_reservations" + ("_diag" if args.diag_no_day_totals else ""), f"Budget reservations with {REPLICAS} replicas on PostgreSQL")
    report.header()
    isolate_env()
    workdir("pg-reserve")
    base = server_url()
    admin = await asyncpg.connect(base)
    try:
        server = {k: await admin.fetchval(f"SHOW {k}") for k in
                  ("server_version", "fsync", "synchronous_commit", "commit_delay", "max_connections")}
    finally:
        await admin.close()
    async with fresh_database(base) as url:
        print(f"   database {urlsplit(url).path[1:]} on {urlsplit(base).hostname}:{urlsplit(base).port}; server"
              f" {server['server_version']}, fsync={server['fsync']}, synchronous_commit={server['synchronous_commit']}",
              flush=True)
        db = await PostgresDatabase(url).open()  # the bot's own migrations
        now = datetime.now(UTC)
        await db.run_write(_set_overrides, now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        if args.diag_no_day_totals:
            args.phases = "nocap"
            await db.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_day_totals_insert")
            report.note("DIAGNOSIS RUN: ledger_day_totals_insert trigger disabled in the bench database")
        queues = deal_requests(seed=11, group=args.group)
        report.note(f"users mixed in groups of {args.group}: each user's {PER_USER} requests fall within a window of"
                    f" about {args.group * PER_USER} requests, dealt round-robin to the {REPLICAS} replicas")
        today = now.date()
        phases = [
            ("cap", "with workspace cap $3,200", today.isoformat(), WORKSPACE_CAP),
            ("nocap", "no workspace cap", (today + timedelta(days=1)).isoformat(), None),
        ]
        results = {}
        for key, label, day, cap in phases:
            if key not in args.phases.split(","):
                continue
            print(f"-- phase: {label} (budget day {day})", flush=True)
            results[key] = await _phase(report, db, url, key, label, day, cap, queues)
        books = await _books(db, [p[2] for p in phases])
        if args.diag_no_day_totals:
            books["totals_off"] = 0  # not kept on purpose in this run
        await db.close()

    none = {"rate": float("nan"), "accepted": 0, "violations": 0, "errors": 0}
    cap_r, nocap_r = results.get("cap", none), results.get("nocap", none)
    report.figure("books: jobs / ledger rows / reserve events", f"{books['jobs']} / {books['ledger']} / {books['events']}")
    report.figure("jobs without a ledger row / with more than one", f"{books['no_row']} / {books['multi']}")
    report.figure("ledger_day_totals disagreeing with the ledger (days)", books["totals_off"])
    report.note(f"server: PostgreSQL {server['server_version']}, fsync={server['fsync']}, synchronous_commit="
                f"{server['synchronous_commit']}, commit_delay={server['commit_delay']}; replicas, their pools "
                f"(10 connections each) and the server share the machine's cores")
    report.check(f"reservations/s, {REPLICAS} replicas x {CONCURRENCY} callers, workspace cap", round(cap_r["rate"], 1),
                 ">=", 1000, "/s")
    report.check(f"reservations/s, {REPLICAS} replicas x {CONCURRENCY} callers, no workspace cap",
                 round(nocap_r["rate"], 1), ">=", 1000, "/s")
    report.check("budget invariant violations (sampled during the runs + at their end)",
                 cap_r["violations"] + nocap_r["violations"], "==", 0)
    report.check("workspace cap filled exactly (accepted x $0.80 == $3,200)", cap_r["accepted"], "==",
                 WORKSPACE_CAP // COST if "cap" in results else 0,
                 note="fewer: the cap refused too early; more: it was overrun")
    report.check("every job has exactly one ledger row and one reserve event",
                 int(books["jobs"] == books["ledger"] == books["events"] and books["no_row"] == 0
                     and books["multi"] == 0 and books["totals_off"] == 0), "==", 1)
    report.check("calls that ended in an error (not a refusal)", cap_r["errors"] + nocap_r["errors"], "==", 0)
    report.save()
    return 0


async def _set_overrides(conn: Any, at: str) -> None:
    for u in range(0, USERS, 7):
        await conn.execute("INSERT INTO user_limits (user_id, limit_micros, updated_at, updated_by)"
                           " VALUES (?, ?, ?, 'bench')", (user_name(u), LOW_LIMIT, at))


async def _phase(report: Report, db: Any, url: str, key: str, label: str, day: str, cap: int | None,
                 queues: list[list[tuple[str, int]]]) -> dict[str, Any]:
    import asyncpg

    from storage.ledger import usage_for_day

    ctx = mp.get_context("spawn")
    start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=replica, args=(url, i, key, day, cap, queues[i], start, ready, out),
                         name=f"replica-{i}", daemon=True) for i in range(REPLICAS)]
    loop = asyncio.get_running_loop()
    for p in procs:
        p.start()
    try:
        for _ in procs:  # every replica connected and migrated (a no-op) before the start
            await loop.run_in_executor(None, ready.get, True, 60)
        watcher = await asyncpg.connect(url)
        violations: list[str] = []
        samples = 0
        sample_ms: list[float] = []
        waits: Counter[str] = Counter()
        backend_cpu: dict[int, tuple[float, float]] = {}  # server backend pid -> (first, last) CPU seen
        wait_samples = 0
        max_seen_total = 0
        stop = asyncio.Event()
        dbname = urlsplit(url).path.lstrip("/")

        async def checker() -> None:
            nonlocal samples, wait_samples, max_seen_total
            while not stop.is_set():
                t0 = time.perf_counter()
                rows = await usage_for_day(db, day, USER_LIMIT)
                sample_ms.append((time.perf_counter() - t0) * 1000)
                samples += 1
                total = 0
                for r in rows:
                    used = r.spent_micros + r.reserved_micros
                    total += used
                    if used > r.limit_micros:
                        violations.append(f"{r.user_id} uses {used} of {r.limit_micros}")
                if cap is not None and total > cap:
                    violations.append(f"workspace uses {total} of {cap}")
                max_seen_total = max(max_seen_total, total)
                for w in await watcher.fetch(
                        "SELECT pid, state, wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity"
                        " WHERE datname = $1"
                        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'", dbname):
                    try:
                        used = cpu_seconds(w[0])
                        backend_cpu[w[0]] = (backend_cpu.get(w[0], (used, used))[0], used)
                    except OSError:
                        pass
                    if w[1] == "active":
                        what = f"{w[2]}:{w[3]}" if w[2] else "running"
                        waits[f"{what} in {_statement(w[4])}"] += 1
                wait_samples += 1
                await asyncio.sleep(CHECK_EVERY_S)

        cpu_stat0 = _machine_cpu()
        parent_cpu0 = cpu_seconds()
        check_task = asyncio.create_task(checker())
        start.set()
        outs = []
        for _ in procs:
            got = await loop.run_in_executor(None, out.get, True, TIME_CAP_S + 120)
            if "fatal" in got:
                raise RuntimeError(f"replica {got['index']} failed:\n{got['fatal']}")
            outs.append(got)
        stop.set()
        await check_task
        cpu_stat1 = _machine_cpu()
        parent_cpu = cpu_seconds() - parent_cpu0
        # the committed end state, once more
        rows = await usage_for_day(db, day, USER_LIMIT)
        end_total = sum(r.spent_micros + r.reserved_micros for r in rows)
        end_violations = [r.user_id for r in rows if r.spent_micros + r.reserved_micros > r.limit_micros]
        if cap is not None and end_total > cap:
            end_violations.append("workspace")
        await watcher.close()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()  # this phase's own worker, by its handle
    calls = [c for o in outs for c in o["calls"]]
    t0, t1 = min(o["start"] for o in outs), max(o["end"] for o in outs)
    elapsed = t1 - t0
    outcomes = Counter(c[3] for c in calls)
    accepted = outcomes["accepted"]
    refused = sum(v for k, v in outcomes.items() if k.startswith("refused"))
    lat = [c[2] - c[1] for c in calls]
    lat_ok = [c[2] - c[1] for c in calls if c[3] == "accepted"]
    s, s_ok = summary_ms(lat), summary_ms(lat_ok)
    # a user's calls overlapping in time with one of the same user's from another replica
    by_user: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for o in outs:
        for user, a, b, _ in o["calls"]:
            by_user[user].append((a, b, o["index"]))
    overlapping = 0
    for items in by_user.values():
        for a, b, i in items:
            overlapping += any(j != i and a2 < b and a < b2 for a2, b2, j in items)
    busy_cores = _busy_cores(cpu_stat0, cpu_stat1, elapsed)
    replica_cpu = sum(o["cpu_s"] for o in outs)
    server_cpu = sum(last - first for first, last in backend_cpu.values())
    trips: Counter[str] = Counter()
    for o in outs:
        trips.update(o["trips"])
    errors: Counter[str] = Counter()
    for o in outs:
        errors.update(o["errors"])
    P = label
    report.figure(f"{P}: calls (all {REPLICAS} replicas)", len(calls))
    report.figure(f"{P}: accepted / refused", f"{accepted} / {refused}")
    report.figure(f"{P}: refused by user limit / workspace cap / running cap",
                  f"{outcomes['refused:user']} / {outcomes['refused:workspace']} / {outcomes['refused:running']}")
    for o in sorted(outs, key=lambda o: o["index"]):
        n = len(o["calls"])
        report.figure(f"{P}: replica {o['index']}: calls, rate, CPU",
                      f"{n}, {n / (o['end'] - o['start']):,.0f}/s, {o['cpu_s']:.1f} s")
    report.figure(f"{P}: wall time", round(elapsed, 2), "s")
    report.figure(f"{P}: reservations per second (total)", round(len(calls) / elapsed, 1), "/s")
    report.figure(f"{P}: accepted reservations per second", round(accepted / elapsed, 1), "/s")
    report.figure(f"{P}: latency per call p50 / p90 / p99 / max",
                  f"{s['p50_ms']} / {s['p90_ms']} / {s['p99_ms']} / {s['max_ms']}", "ms")
    report.figure(f"{P}: latency, accepted only p50 / p99", f"{s_ok['p50_ms']} / {s_ok['p99_ms']}", "ms")
    report.figure(f"{P}: calls overlapping a same-user call from another replica",
                  f"{overlapping} ({100 * overlapping / max(1, len(calls)):.0f} %)")
    report.figure(f"{P}: invariant samples taken / mean read time", f"{samples} / {sum(sample_ms) / max(1, samples):.1f} ms")
    report.figure(f"{P}: invariant violations seen (sampled / end)", f"{len(violations)} / {len(end_violations)}")
    if cap is not None:
        report.figure(f"{P}: workspace used at the end / cap", f"${end_total / 1e6:,.2f} / ${cap / 1e6:,.2f}")
    report.figure(f"{P}: CPU in cores: machine busy / replicas / their server backends / checker",
                  f"{busy_cores:.2f} of {os.cpu_count()} / {replica_cpu / elapsed:.2f} / {server_cpu / elapsed:.2f}"
                  f" / {parent_cpu / elapsed:.2f}")
    report.figure(f"{P}: CPU per call: replica / server", f"{1000 * replica_cpu / max(1, len(calls)):.2f} /"
                  f" {1000 * server_cpu / max(1, len(calls)):.2f}", "ms")
    report.figure(f"{P}: statements per call (+ BEGIN and COMMIT)",
                  f"{sum(trips.values()) / max(1, len(calls)):.1f} ({', '.join(f'{k} {v / max(1, len(calls)):.1f}' for k, v in sorted(trips.items()))})")
    if wait_samples:
        shares = "; ".join(f"{k} {v / wait_samples:.1f}" for k, v in waits.most_common(5))
        report.figure(f"{P}: busy backends by wait (mean per sample)", shares)
    if errors:
        report.figure(f"{P}: errors", dict(errors))
    for v in violations[:5]:
        report.note(f"{P}: violation: {v}")
    return {"rate": len(calls) / elapsed, "accepted": accepted, "refused": refused,
            "violations": len(violations) + len(end_violations), "errors": sum(errors.values())}


def _statement(sql: str | None) -> str:
    """The gist of a statement: its first words up to a parenthesis ("INSERT INTO ledger",
    "SELECT pg_advisory_xact_lock")."""
    words = " ".join((sql or "?").split()).split("(")[0].split(" ")
    return " ".join(words[:3]).rstrip(";")


def _machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_cores(a: tuple[int, int], b: tuple[int, int], elapsed: float) -> float:
    clk = os.sysconf("SC_CLK_TCK")
    return (b[0] - a[0]) / clk / max(elapsed, 1e-9)


async def _books(db: Any, days: list[str]) -> dict[str, int]:
    marks = ",".join("?" for _ in days)
    one = await db.fetchone(
        f"SELECT (SELECT COUNT(*) FROM jobs WHERE budget_day IN ({marks})),"
        f" (SELECT COUNT(*) FROM ledger WHERE budget_day IN ({marks})),"
        f" (SELECT COUNT(*) FROM ledger_events WHERE event = 'reserve' AND budget_day IN ({marks})),"
        " (SELECT COUNT(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.job_id = j.id)),"
        " (SELECT COUNT(*) FROM (SELECT job_id FROM ledger GROUP BY job_id HAVING COUNT(*) > 1) m)",
        (*days, *days, *days),
    )
    off = await db.fetchone(
        "SELECT COUNT(*) FROM (SELECT budget_day, SUM(CASE WHEN state='charged' THEN charged_micros ELSE 0 END) s,"
        " SUM(CASE WHEN state='reserved' THEN reserved_micros ELSE 0 END) r FROM ledger GROUP BY budget_day) l"
        " FULL JOIN (SELECT budget_day, SUM(spent_micros) spent_micros, SUM(reserved_micros) reserved_micros"
        " FROM ledger_day_totals GROUP BY budget_day) t USING (budget_day)"
        " WHERE COALESCE(l.s, 0) <> COALESCE(t.spent_micros, 0) OR COALESCE(l.r, 0) <> COALESCE(t.reserved_micros, 0)")
    return {"jobs": int(one[0]), "ledger": int(one[1]), "events": int(one[2]), "no_row": int(one[3]),
            "multi": int(one[4]), "totals_off": int(off[0])}


if __name__ == "__main__":
    ARGS = parse_args()
    run(lambda: main(ARGS))
