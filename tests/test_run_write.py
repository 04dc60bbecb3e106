"""Database.run_write (batched writes on the event loop's connection) and run_read."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator

import pytest

from bot.errors import Busy
from storage import jobs as jobstore
from storage.db import Conn
from storage.sqlite import SQLiteDatabase
from storage.jobs import Limits, NewJob

NOW = "2026-11-25T10:00:00.000000Z"
DAY = "2026-11-25"
LIMITS = Limits(user_limit_micros=5_000_000, workspace_limit_micros=None, max_unfinished_per_user=100)


def _new(user: str = "U1") -> NewJob:
    return NewJob(
        user_id=user, team_id="T1", channel_id="C1", source="command", model="simulator",
        provider="simulator", provider_model="simulator", prompt="a dog", duration_seconds=8,
        resolution="720p", aspect_ratio="16:9", estimate_micros=800_000,
    )


@pytest.fixture
async def db(tmp_path):
    database = await SQLiteDatabase(tmp_path / "jobs.db").open()
    yield database
    await database.close()


async def _put(conn: Conn, key: str, value: str, *, fail: bool = False) -> int:
    added = await conn.execute(
        "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)", (key, value, NOW)
    )
    if fail:
        raise RuntimeError("boom")
    return added


async def _nothing(conn: Conn) -> None:
    return None


def _count_settings(tmp_path) -> int:
    conn = sqlite3.connect(tmp_path / "jobs.db")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM settings").fetchone()[0])
    finally:
        conn.close()


@contextlib.contextmanager
def _locked_by_another_process(tmp_path) -> Iterator[None]:
    """SQLite's write lock held by another connection, as another process would hold it."""
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_run_write_commits_for_other_connections(db, tmp_path) -> None:
    assert await db.run_write(_put, "a", "1") == 1
    assert _count_settings(tmp_path) == 1


async def test_run_write_rolls_back_everything_when_the_function_raises(db, tmp_path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        await db.run_write(_put, "a", "1", fail=True)
    assert _count_settings(tmp_path) == 0
    # the writer is usable again, outside any transaction
    assert await db.run_write(_put, "b", "2") == 1
    assert _count_settings(tmp_path) == 1


async def test_run_write_refuses_after_wait_s_and_stores_nothing(db, tmp_path) -> None:
    async with db.write_txn():
        with pytest.raises(TimeoutError):
            await db.run_write(_put, "late", "1", wait_s=0.05)
    assert _count_settings(tmp_path) == 0


async def test_a_write_that_cannot_begin_within_wait_s_writes_nothing(db, tmp_path) -> None:
    with _locked_by_another_process(tmp_path):
        with pytest.raises(TimeoutError):
            await db.run_write(_put, "late", "1", wait_s=0.05)
    await db.run_write(_nothing)  # anything still queued has run by now
    assert _count_settings(tmp_path) == 0


async def test_a_reservation_that_cannot_get_the_writer_is_busy_and_never_stored_late(db) -> None:
    async with db.write_txn():
        with pytest.raises(Busy):
            await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW, wait_s=0.05)
    await asyncio.sleep(0.05)  # anything queued would have run by now
    assert await jobstore.list_jobs(db) == []


async def test_run_write_and_write_txn_never_interleave(db, tmp_path) -> None:
    async def old_style(i: int) -> None:
        async with db.write_txn() as conn:
            await conn.execute("INSERT INTO settings (key, value, updated_at) VALUES (?, 'x', ?)", (f"o{i}", NOW))
            await asyncio.sleep(0)
            await conn.execute("UPDATE settings SET value = 'y' WHERE key = ?", (f"o{i}",))

    await asyncio.gather(*(old_style(i) for i in range(20)), *(db.run_write(_put, f"n{i}", "1") for i in range(20)))
    assert _count_settings(tmp_path) == 40
    rows = await db.fetchall("SELECT value FROM settings WHERE key LIKE 'o%'")
    assert {r[0] for r in rows} == {"y"}


async def test_a_cancelled_caller_leaves_its_transaction_whole(db, tmp_path) -> None:
    async def two_rows(conn: Conn) -> None:
        await _put(conn, "first", "1")
        await _put(conn, "second", "2")

    async with db.write_txn():
        task = asyncio.create_task(db.run_write(two_rows))
        await asyncio.sleep(0.01)
        task.cancel()  # still waiting for the writer: nothing is queued
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.run_write(_nothing)
    assert _count_settings(tmp_path) == 0

    task = asyncio.create_task(db.run_write(two_rows))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await db.run_write(_nothing)  # queued after it: both have run by now
    assert _count_settings(tmp_path) in (0, 2)


async def test_update_and_get_returns_the_row_it_wrote(db) -> None:
    job, _ = await jobstore.reserve_and_insert(db, _new(), limits=LIMITS, day=DAY, now=NOW)
    moved, after = await jobstore.update_and_get(db, job.id, expect=[job.status], now=NOW, progress=42)
    assert moved and after is not None and after.progress == 42
    moved, again = await jobstore.update_and_get(db, job.id, expect=[], now=NOW, progress=7)
    assert not moved and again is not None and again.progress == 42


async def test_run_read_sees_one_snapshot(db) -> None:
    async def both(conn: Conn) -> tuple[int, int]:
        a = (await conn.fetchone("SELECT COUNT(*) FROM settings"))[0]
        b = (await conn.fetchone("SELECT COUNT(*) FROM settings"))[0]
        return int(a), int(b)

    await db.run_write(_put, "a", "1")
    assert await db.run_read(both) == (1, 1)


async def test_back_to_back_multi_step_transactions_do_not_shut_out_one_trip_writes(db, tmp_path) -> None:
    stop = asyncio.Event()

    async def busy_admin() -> int:
        n = 0
        while not stop.is_set():  # no pause between transactions
            async with db.write_txn() as conn:
                await conn.execute("UPDATE settings SET value = value WHERE key = 'nothing'")
            n += 1
        return n

    admin = asyncio.create_task(busy_admin())
    await asyncio.sleep(0.05)  # it is going round: its gate reopens only between two steps
    writes = [asyncio.create_task(db.run_write(_put, f"k{i}", "1", wait_s=5)) for i in range(20)]
    try:
        async with asyncio.timeout(5):
            await asyncio.gather(*writes)
    finally:
        stop.set()
        await admin
    assert _count_settings(tmp_path) == 20


async def test_a_locked_database_neither_delays_the_refusal_nor_blocks_the_loop(db, tmp_path) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    clock = asyncio.create_task(ticker())
    try:
        with _locked_by_another_process(tmp_path):
            background = asyncio.create_task(db.run_write(_put, "background", "1"))
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await db.run_write(_put, "late", "1", wait_s=0.05)
            refused_after = time.monotonic() - t0
            await asyncio.sleep(0.3)
            assert not background.done()  # still waiting for the lock, not failed
        assert await background == 1  # went through once the lock was free
    finally:
        clock.cancel()
    assert refused_after < 0.5
    assert ticks >= 15  # about 35 in 0.35 s: the loop kept turning while SQLite was locked
    assert _count_settings(tmp_path) == 1


async def test_a_write_gives_up_when_the_database_stays_locked(db, tmp_path) -> None:
    db.BUSY_TIMEOUT_S = 0.2
    with _locked_by_another_process(tmp_path):
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await db.run_write(_put, "never", "1")
    assert await db.run_write(_put, "after", "1") == 1
    assert _count_settings(tmp_path) == 1


async def test_writes_in_one_batch_succeed_or_fail_alone(db, tmp_path) -> None:
    results = await asyncio.gather(
        *(db.run_write(_put, f"k{i}", "1", fail=i % 5 == 0) for i in range(50)), return_exceptions=True
    )
    failed = [i for i, r in enumerate(results) if isinstance(r, RuntimeError)]
    assert failed == list(range(0, 50, 5))
    assert all(r == 1 for i, r in enumerate(results) if i not in failed)
    rows = await db.fetchall("SELECT key FROM settings")
    assert {r[0] for r in rows} == {f"k{i}" for i in range(50) if i % 5}


async def test_a_write_that_breaks_the_commit_fails_alone(db, tmp_path) -> None:
    async def orphan_ledger_row(conn: Conn) -> None:
        # a foreign key checked only at COMMIT: the shared COMMIT fails because of this one
        await conn.execute("PRAGMA defer_foreign_keys=ON")
        await conn.execute(
            "INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, state, created_at, updated_at)"
            " VALUES ('no-such-job', 'U1', ?, 1, 'reserved', ?, ?)", (DAY, NOW, NOW))

    results = await asyncio.gather(
        db.run_write(_put, "a", "1"), db.run_write(orphan_ledger_row), db.run_write(_put, "b", "2"),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert _count_settings(tmp_path) == 2
    assert (await db.fetchone("SELECT COUNT(*) FROM ledger"))[0] == 0


async def test_committed_writes_reach_the_database_file_while_open(db, tmp_path) -> None:
    db.CHECKPOINT_AFTER_S = 0.05
    other = sqlite3.connect(tmp_path / "jobs.db")
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the schema into the file, the WAL empty
    other.close()
    await asyncio.gather(*(db.run_write(_put, f"k{i}", "1") for i in range(20)))

    def in_main_file() -> int:
        # immutable: reads the database file alone, ignoring the WAL
        conn = sqlite3.connect(f"file:{tmp_path / 'jobs.db'}?immutable=1", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM settings").fetchone()[0])
        finally:
            conn.close()

    for _ in range(100):
        if in_main_file() == 20:
            break
        await asyncio.sleep(0.02)
    assert in_main_file() == 20  # checkpointed by the worker thread, not at close


async def test_a_write_begun_before_its_deadline_is_seen_through(db, tmp_path) -> None:
    import time

    async def slow_put(conn: Conn) -> int:
        rows = await _put(conn, "slow", "1")
        time.sleep(0.2)  # outlives wait_s, but it had begun
        return rows

    assert await db.run_write(slow_put, wait_s=0.05) == 1
    assert _count_settings(tmp_path) == 1


async def test_a_write_with_a_deadline_goes_before_queued_background_writes(db, tmp_path) -> None:
    # a Slack answer waits on the first kind (a reservation); nobody waits on the second
    order: list[str] = []

    async def note(conn: Conn, name: str) -> None:
        order.append(name)
        await _put(conn, name, "1")

    with _locked_by_another_process(tmp_path):
        background = [asyncio.create_task(db.run_write(note, f"bg{i}")) for i in range(3)]
        await asyncio.sleep(0.01)
        urgent = asyncio.create_task(db.run_write(note, "urgent", wait_s=2.0))
        await asyncio.sleep(0.01)
    await asyncio.gather(urgent, *background)
    assert order == ["urgent", "bg0", "bg1", "bg2"]
    assert _count_settings(tmp_path) == 4
