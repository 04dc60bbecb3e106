"""The PostgreSQL backend: migrations once for a fleet, and budgets exact when replicas reserve at once.

Each test gets a fresh database on a real server (see conftest.fresh_postgres_database); without
one they are skipped with that reason. Two `PostgresDatabase` objects stand for two replicas:
each has its own pool, as separate processes would.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from bot.errors import BudgetExceeded
from storage import jobs as jobstore
from storage import ledger
from storage.db import SCHEMA_VERSION, database_for
from storage.jobs import Limits, NewJob, TooManyJobs
from storage.postgres import PostgresDatabase, _native, _rowcount
from tests.conftest import fresh_postgres_database

NOW = "2026-12-06T10:00:00.000000Z"
DAY = "2026-12-06"


def _new(user: str, cost: int, key: str | None = None) -> NewJob:
    return NewJob(
        user_id=user, team_id="T1", channel_id="C1", source="command", model="simulator",
        provider="simulator", provider_model="simulator", prompt="a dog", duration_seconds=8,
        resolution="720p", aspect_ratio="16:9", estimate_micros=cost, dedupe_key=key,
    )


@pytest.fixture
async def url():
    async with fresh_postgres_database() as u:
        yield u


@pytest.fixture
async def replicas(url):
    dbs = [await PostgresDatabase(url).open() for _ in range(3)]
    yield dbs
    for db in dbs:
        await db.close()


def test_placeholders_become_numbered_outside_quotes() -> None:
    assert _native("SELECT ? , '?' FROM t WHERE a = ? AND b = \"x?\" AND c IN (?, ?)") == (
        "SELECT $1 , '?' FROM t WHERE a = $2 AND b = \"x?\" AND c IN ($3, $4)")
    assert [_rowcount(t) for t in ("UPDATE 3", "INSERT 0 1", "DELETE 0", "SELECT 2", "BEGIN")] == [3, 1, 0, 2, 0]


def test_the_url_picks_the_backend(tmp_path) -> None:
    assert database_for(None, tmp_path / "a.db").engine == "sqlite"
    assert database_for(f"sqlite:///{tmp_path}/b.db", tmp_path / "a.db").engine == "sqlite"
    pg = database_for("postgresql://bot:s3cret@db.internal:5433/sora", tmp_path / "a.db")
    assert pg.engine == "postgres"
    assert pg.describe() == "PostgreSQL bot@db.internal:5433/sora"  # never the password
    with pytest.raises(ValueError, match="postgresql://"):
        database_for("mysql://x", tmp_path / "a.db")


async def test_replicas_starting_together_migrate_once(url) -> None:
    dbs = await asyncio.gather(*(PostgresDatabase(url).open() for _ in range(4)))
    try:
        assert {await db.schema_version() for db in dbs} == {SCHEMA_VERSION}
        rows = await dbs[0].fetchall("SELECT version FROM schema_version")
        assert [r[0] for r in rows] == [SCHEMA_VERSION]
        # migration 12: the day's totals rows are pruned on nearly every visit (bench finding 25)
        opts = await dbs[0].fetchone("SELECT reloptions FROM pg_class WHERE relname = 'ledger_day_totals'")
        assert "fillfactor=10" in opts[0]
    finally:
        for db in dbs:
            await db.close()


async def test_a_newer_schema_is_refused_in_one_line(url) -> None:
    db = await PostgresDatabase(url).open()
    await db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    await db.close()
    with pytest.raises(RuntimeError, match=r"at schema \d+, newer than this code") as caught:
        await PostgresDatabase(url).open()
    assert "\n" not in str(caught.value) and "password" not in str(caught.value)


async def test_the_day_totals_follow_every_ledger_change(replicas) -> None:
    db = replicas[0]
    limits = Limits(user_limit_micros=50_000_000, workspace_limit_micros=None, max_unfinished_per_user=100)
    jobs = [(await jobstore.reserve_and_insert(db, _new(f"U{i}", 1_000_000 + i), limits=limits, day=DAY, now=NOW))[0]
            for i in range(6)]
    async with db.write_txn() as conn:
        await ledger.charge(conn, jobs[0].id, 900_000, NOW)
        await ledger.charge(conn, jobs[1].id, 1_000_001, NOW)
        await ledger.release(conn, jobs[2].id, NOW)
        assert await ledger.refund(conn, jobs[1].id, NOW) == 1_000_001
    async with db.reading() as conn:
        ws = await ledger.workspace_totals(conn, DAY)
    summed = await db.fetchone(
        "SELECT SUM(CASE WHEN state='charged' THEN charged_micros ELSE 0 END),"
        " SUM(CASE WHEN state='reserved' THEN reserved_micros ELSE 0 END) FROM ledger WHERE budget_day = ?", (DAY,))
    assert (ws.spent_micros, ws.reserved_micros) == (int(summed[0]), int(summed[1])) == (900_000, 3_000_012)


async def test_concurrent_reservations_from_three_replicas_never_overspend(replicas) -> None:
    """Users and the workspace cap stay within limits with every replica reserving at once."""
    limits = Limits(user_limit_micros=3_000_000, workspace_limit_micros=20_000_000, max_unfinished_per_user=100)
    users = [f"U{i}" for i in range(10)]
    rng = random.Random(7)
    costs = [rng.choice([400_000, 700_000, 1_100_000]) for _ in range(240)]
    sampled: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def sample() -> None:
        # the invariant at every instant, not only at the end: read the committed ledger while writes run
        while not done.is_set():
            rows = await replicas[0].fetchall(
                "SELECT user_id, SUM(CASE WHEN state IN ('reserved') THEN reserved_micros"
                " WHEN state = 'charged' THEN charged_micros ELSE 0 END) FROM ledger GROUP BY user_id")
            sampled.append((max((int(r[1]) for r in rows), default=0), sum(int(r[1]) for r in rows)))
            await asyncio.sleep(0.005)

    async def attempt(i: int) -> bool:
        db = replicas[i % len(replicas)]
        try:
            await jobstore.reserve_and_insert(db, _new(users[i % len(users)], costs[i]), limits=limits, day=DAY, now=NOW)
            return True
        except BudgetExceeded:
            return False

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(attempt(i) for i in range(len(costs))))
    done.set()
    await sampler
    rows = await ledger.usage_for_day(replicas[1], DAY, limits.user_limit_micros)
    assert all(r.spent_micros + r.reserved_micros <= r.limit_micros for r in rows)
    total = sum(r.reserved_micros for r in rows)
    assert total <= 20_000_000
    assert sum(results) == len(await jobstore.list_jobs(replicas[2], limit=0)) > 0
    assert sampled and all(top <= 3_000_000 and whole <= 20_000_000 for top, whole in sampled)
    # the cap, not luck, stopped them: what was refused would not have fit
    assert total > 20_000_000 - max(costs) or all(r.remaining_micros < min(costs) for r in rows)


async def test_a_retry_on_another_replica_makes_no_second_job(replicas) -> None:
    limits = Limits(user_limit_micros=50_000_000, workspace_limit_micros=None, max_unfinished_per_user=100)
    got = await asyncio.gather(*(
        jobstore.reserve_and_insert(replicas[i % 3], _new("U1", 800_000, key="evt:Ev1"), limits=limits, day=DAY, now=NOW)
        for i in range(9)
    ))
    assert len({job.id for job, _ in got}) == 1
    assert sum(created for _, created in got) == 1
    rows = await replicas[0].fetchall("SELECT COUNT(*) FROM ledger")
    assert rows[0][0] == 1


async def test_the_unfinished_cap_holds_across_replicas(replicas) -> None:
    limits = Limits(user_limit_micros=50_000_000, workspace_limit_micros=None, max_unfinished_per_user=3)

    async def attempt(i: int) -> bool:
        try:
            await jobstore.reserve_and_insert(replicas[i % 3], _new("U1", 100_000), limits=limits, day=DAY, now=NOW)
            return True
        except TooManyJobs:
            return False

    assert sum(await asyncio.gather(*(attempt(i) for i in range(12)))) == 3


async def test_a_write_that_cannot_get_its_lock_in_time_writes_nothing(replicas) -> None:
    limits = Limits(user_limit_micros=50_000_000, workspace_limit_micros=None, max_unfinished_per_user=100)
    holder = await asyncpg.connect(replicas[0].url)
    try:
        async with holder.transaction():
            # another replica is in the middle of a reservation of this user's
            await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", ledger.user_lock("U1"))
            with pytest.raises(TimeoutError):
                await replicas[1].run_write(
                    jobstore._reserve_in, [_new("U1", 100_000)], limits=limits, day=DAY, now=NOW,
                    compare_prompt=None, wait_s=0.2)
    finally:
        await holder.close()
    assert (await replicas[1].fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0


async def test_an_admin_limit_change_waits_for_reservations_in_flight(replicas) -> None:
    """Setting the workspace cap takes the budgets lock: no reservation checks half of it."""
    from storage import admin

    holder = await asyncpg.connect(replicas[0].url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", ledger.BUDGETS_LOCK)

            async def set_cap() -> None:
                async with replicas[1].write_txn() as conn:
                    await admin.put_setting(conn, admin.WORKSPACE_BUDGET, "1000000", at=NOW, by="UADMIN")

            change = asyncio.create_task(set_cap())
            await asyncio.sleep(0.2)
            assert not change.done()  # held back while a reservation is in flight
        await asyncio.wait_for(change, 5)
    finally:
        await holder.close()
    assert (await replicas[2].fetchone("SELECT value FROM settings WHERE key = ?", (admin.WORKSPACE_BUDGET,)))[0] == "1000000"


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"waited {timeout:.0f} s for {what}"
        await asyncio.sleep(0.05)


async def test_a_dropped_listen_connection_is_opened_again(url) -> None:
    """A restarted server or a proxy's idle timeout drops the LISTEN connection: the replica
    opens it again, looks for handed-back jobs at once, and hears the others as before."""
    db = await PostgresDatabase(url).open()
    other = await PostgresDatabase(url).open()
    heard: list[str] = []
    try:
        await db.listen(heard.append)
        listening = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        (pid,) = await other.fetchone(listening)
        await other.execute("SELECT pg_terminate_backend(?)", (pid,))
        await _until(lambda: heard == ["claim"], "the claim pass after the LISTEN connection came back")
        await other.notify("wake:k7m2p9qx")
        await _until(lambda: heard == ["claim", "wake:k7m2p9qx"], "a poke through the new connection")
        (new_pid,) = await other.fetchone(listening)
        assert new_pid != pid
    finally:
        await other.close()
        await db.close()
    # closed: a closed replica opens nothing again
    assert db._relisten is None and db._listener is None
