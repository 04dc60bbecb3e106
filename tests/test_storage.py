"""Storage: private file, WAL, migrations, guarded state changes, the budget under races."""

from __future__ import annotations

import asyncio
import sqlite3
import stat

import pytest

from bot.errors import BudgetExceeded
from bot.models import JobStatus
from storage import jobs as jobstore
from storage import ledger
from storage.migrations import MIGRATIONS
from storage.db import database_for
from storage.sqlite import SQLiteDatabase
from storage.jobs import Limits, NewJob, TooManyJobs

NOW = "2026-11-25T10:00:00.000000Z"
DAY = "2026-11-25"


def _new(user: str = "U1", cost: int = 800_000, key: str | None = None) -> NewJob:
    return NewJob(
        user_id=user, team_id="T1", channel_id="C1", source="command", model="simulator",
        provider="simulator", provider_model="simulator", prompt="a dog", duration_seconds=8,
        resolution="720p", aspect_ratio="16:9", estimate_micros=cost, dedupe_key=key,
    )


LIMITS = Limits(user_limit_micros=5_000_000, workspace_limit_micros=None, max_unfinished_per_user=100)


@pytest.fixture
async def db(tmp_path, backend):
    # SQLite unless the test is marked both_backends (then PostgreSQL too)
    database = await database_for(backend, tmp_path / "jobs.db").open()
    yield database
    await database.close()


async def test_database_file_is_private_and_in_wal_mode(db, tmp_path) -> None:
    mode = stat.S_IMODE((tmp_path / "jobs.db").stat().st_mode)
    assert mode == 0o600
    conn = sqlite3.connect(tmp_path / "jobs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


async def test_reopening_does_not_migrate_again(db, tmp_path) -> None:
    await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    again = await SQLiteDatabase(tmp_path / "jobs.db").open()
    assert len(await jobstore.list_jobs(again)) == 1
    await again.close()


async def test_a_newer_schema_refuses_to_start(tmp_path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        await SQLiteDatabase(path).open()


@pytest.mark.both_backends
async def test_reserved_jobs_are_the_rows_stored(db) -> None:
    """reserve_request builds its jobs from what it inserted instead of reading them back."""
    from dataclasses import replace

    full = replace(
        _new(key="cmd:T1:trig.1"), thread_ts="1700000000.000100", response_url="https://hooks.example/r",
        reference_image_path="/media/images/x.png", reference_image_mime="image/png", fallback_of="abcd2345",
    )
    single = await jobstore.reserve_request(db, [full], limits=LIMITS, day=DAY, now=NOW)
    compare = await jobstore.reserve_request(
        db, [_new(user="U2"), _new(user="U2", cost=300_000)], limits=LIMITS, day=DAY, now=NOW,
        compare_prompt="a dog",
    )
    gated = await jobstore.reserve_request(
        db, [_new(user="U3")], day=DAY, now=NOW,
        limits=Limits(user_limit_micros=5_000_000, workspace_limit_micros=None, max_unfinished_per_user=100,
                      approval_over_micros=500_000),
    )
    assert compare.compare_id is not None and gated.approval_key == gated.jobs[0].id
    for got in (single, compare, gated):
        for job in got.jobs:
            assert job == await jobstore.get_job(db, job.id)
    # and a repeat of the first request returns the stored row too
    again = await jobstore.reserve_request(db, [full], limits=LIMITS, day=DAY, now=NOW)
    assert not again.created and again.jobs == single.jobs


async def test_reserve_commits_job_and_reservation_together(db, tmp_path) -> None:
    job, created = await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    assert created and job.status is JobStatus.QUEUED
    # visible from a second, independent connection: it was committed
    conn = sqlite3.connect(tmp_path / "jobs.db")
    row = conn.execute("SELECT state, reserved_micros FROM ledger WHERE job_id=?", (job.id,)).fetchone()
    assert row == ("reserved", 800_000)
    conn.close()


@pytest.mark.both_backends
async def test_guarded_update_moves_a_job_only_once(db) -> None:
    job, _ = await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    first = await jobstore.update(db, job.id, expect=[JobStatus.QUEUED], now=NOW,
                                  status=JobStatus.SUBMITTED, provider_job_id="p1")
    second = await jobstore.update(db, job.id, expect=[JobStatus.QUEUED], now=NOW,
                                   status=JobStatus.SUBMITTED, provider_job_id="p2")
    assert first and not second
    assert (await jobstore.get_job(db, job.id)).provider_job_id == "p1"


@pytest.mark.both_backends
async def test_a_thread_permalink_is_kept_only_while_the_thread_stays_put(db) -> None:
    job, _ = await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    _, job = await jobstore.update_and_get(db, job.id, expect=[JobStatus.QUEUED], now=NOW, thread_ts="1.000001")
    link = "https://acme.slack.com/archives/C1/p1000001"
    assert await jobstore.note_thread_permalink(db, job, link)
    await jobstore.update(db, job.id, expect=[JobStatus.QUEUED], now=NOW, status=JobStatus.SUBMITTED, provider_job_id="p1")
    stored = "SELECT thread_permalink FROM jobs WHERE id = ?"
    assert (await db.fetchone(stored, (job.id,)))[0] == link  # other changes keep it
    # the thread moves (its parent was deleted): whoever moves it, the old link goes
    await jobstore.update(db, job.id, expect=[JobStatus.SUBMITTED], now=NOW, thread_ts="2.000002")
    assert (await db.fetchone(stored, (job.id,)))[0] is None
    # a lookup made for the old thread that answers after the move is not kept
    assert not await jobstore.note_thread_permalink(db, job, link)
    assert (await jobstore.get_job(db, job.id)).thread_permalink is None


@pytest.mark.both_backends
async def test_a_settled_reservation_is_never_settled_twice(db) -> None:
    job, _ = await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    async with db.write_txn() as conn:
        assert await ledger.charge(conn, job.id, 800_000, NOW)
        assert not await ledger.charge(conn, job.id, 800_000, NOW)
        assert not await ledger.release(conn, job.id, NOW)
    limit, totals = await ledger.totals_for(db, "U1", DAY, 5_000_000)
    assert (totals.spent_micros, totals.reserved_micros) == (800_000, 0)


@pytest.mark.both_backends
async def test_a_dedupe_key_returns_the_first_job(db) -> None:
    a, created_a = await jobstore.reserve_and_insert(db, _new(key="evt:1"), limits=LIMITS, day=DAY, now=NOW)
    b, created_b = await jobstore.reserve_and_insert(db, _new(key="evt:1"), limits=LIMITS, day=DAY, now=NOW)
    assert created_a and not created_b and a.id == b.id
    assert len(await jobstore.list_jobs(db)) == 1


@pytest.mark.both_backends
async def test_parallel_reservations_never_exceed_the_budget(db) -> None:
    limits = Limits(user_limit_micros=3_000_000, workspace_limit_micros=5_000_000, max_unfinished_per_user=100)

    async def attempt(i: int) -> bool:
        try:
            await jobstore.reserve_and_insert(db, _new(user=f"U{i % 3}", cost=700_000), limits=limits, day=DAY, now=NOW)
            return True
        except BudgetExceeded:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(40)))
    rows = await ledger.usage_for_day(db, DAY, 3_000_000)
    for row in rows:
        assert row.spent_micros + row.reserved_micros <= row.limit_micros
    assert sum(r.reserved_micros for r in rows) <= 5_000_000
    assert sum(results) == 7  # 7 × $0.70 = $4.90 fits under the $5 workspace cap; an 8th would not
    assert len(await jobstore.list_jobs(db, limit=0)) == 7


@pytest.mark.both_backends
async def test_the_unfinished_job_cap_refuses_with_the_count(db) -> None:
    limits = Limits(user_limit_micros=50_000_000, workspace_limit_micros=None, max_unfinished_per_user=2)
    for _ in range(2):
        await jobstore.reserve_and_insert(db, _new(), limits=limits, day=DAY, now=NOW)
    with pytest.raises(TooManyJobs, match="2 unfinished"):
        await jobstore.reserve_and_insert(db, _new(), limits=limits, day=DAY, now=NOW)


@pytest.mark.both_backends
async def test_usage_lists_users_with_overrides_even_without_activity(db) -> None:
    await jobstore.reserve_and_insert(db, _new(user="U1"), limits=LIMITS, day=DAY, now=NOW)
    await db.execute("INSERT INTO user_limits (user_id, limit_micros, updated_at) VALUES ('U9', 10000000, ?)", (NOW,))
    rows = {r.user_id: r for r in await ledger.usage_for_day(db, DAY, 5_000_000)}
    assert rows["U1"].reserved_micros == 800_000 and rows["U1"].remaining_micros == 4_200_000
    assert rows["U9"].limit_micros == 10_000_000 and rows["U9"].jobs == 0


async def test_wal_companions_are_private_too(db, tmp_path) -> None:
    await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    for name in ("jobs.db-wal", "jobs.db-shm"):
        path = tmp_path / name
        assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600, name


@pytest.mark.both_backends
async def test_a_read_never_misses_a_commit_made_before_it(db) -> None:
    """Interleaved reads on the shared reader must not share a snapshot older than a commit."""
    job, _ = await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    for round_ in range(40):
        # keep the reader busy with other reads while the write commits
        busy = [asyncio.create_task(db.fetchall("SELECT * FROM jobs")) for _ in range(5)]
        moved = await jobstore.update(db, job.id, expect=list(JobStatus), now=NOW, progress=round_)
        assert moved
        seen = await jobstore.get_job(db, job.id)
        assert seen.progress == round_
        await asyncio.gather(*busy)


@pytest.mark.both_backends
async def test_a_writer_cancelled_while_its_transaction_begins_leaves_the_database_writable(db) -> None:
    async def write(n: int) -> None:
        async with db.write_txn() as conn:
            await conn.execute("INSERT INTO user_limits (user_id, limit_micros, updated_at) VALUES (?, 1, ?)"
                               " ON CONFLICT(user_id) DO UPDATE SET limit_micros = excluded.limit_micros",
                               (f"U{n}", NOW))

    # cancel at each of the first few points a write can be suspended at, BEGIN among them
    for n in range(30):
        task = asyncio.create_task(write(n))
        for _ in range(n % 6):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(write(1000 + n), 5)


async def test_running_day_totals_start_from_an_older_ledger(tmp_path) -> None:
    # a database from before the totals table: its ledger rows must be counted when it migrates
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=OFF")
    from storage.sqlite import _statements

    before = next(i for i, m in enumerate(MIGRATIONS) if m.name == "running daily totals of the ledger")
    for number, migration in enumerate(MIGRATIONS[:before], start=1):
        for statement in _statements(migration.sqlite):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number}")
    rows = [("j1", "U1", DAY, 500, 0, "reserved"), ("j2", "U2", DAY, 800, 700, "charged"),
            ("j3", "U1", DAY, 300, 0, "released"), ("j4", "U1", "2026-11-24", 900, 0, "reserved")]
    conn.executemany(
        "INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, charged_micros, state,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*r, NOW, NOW) for r in rows],
    )
    conn.close()
    db = await SQLiteDatabase(path).open()
    try:
        async with db.reading() as reader:
            assert await ledger.workspace_totals(reader, DAY) == ledger.Totals(700, 500)
            assert await ledger.workspace_totals(reader, "2026-11-24") == ledger.Totals(0, 900)
            assert await ledger.workspace_totals(reader, "2026-11-23") == ledger.Totals(0, 0)
        async with db.write_txn() as writer:
            assert await ledger.charge(writer, "j1", 400, NOW)
            assert await ledger.refund(writer, "j2", NOW) == 700
        async with db.reading() as reader:
            assert await ledger.workspace_totals(reader, DAY) == ledger.Totals(400, 0)
    finally:
        await db.close()
