"""The SQLite connection pair (one writer, one reader), WAL, and numbered migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

# Each entry is one migration; PRAGMA user_version records how many have run.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "jobs, ledger, deliveries",
        """
        CREATE TABLE jobs (
            id                TEXT PRIMARY KEY,
            dedupe_key        TEXT UNIQUE,
            user_id           TEXT NOT NULL,
            team_id           TEXT,
            channel_id        TEXT NOT NULL,
            thread_ts         TEXT,
            status_ts         TEXT,
            source            TEXT NOT NULL,
            response_url      TEXT,
            model             TEXT NOT NULL,
            provider          TEXT NOT NULL,
            provider_model    TEXT NOT NULL,
            prompt            TEXT NOT NULL,
            duration_seconds  INTEGER NOT NULL,
            resolution        TEXT NOT NULL,
            aspect_ratio      TEXT NOT NULL,
            status            TEXT NOT NULL CHECK (status IN
                ('queued','submitted','running','succeeded','failed','cancelled')),
            failure_kind      TEXT,
            failure_detail    TEXT,
            progress          INTEGER,
            provider_job_id   TEXT,
            estimate_micros   INTEGER NOT NULL CHECK (estimate_micros >= 0),
            cost_micros       INTEGER NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
            video_url         TEXT,
            budget_day        TEXT NOT NULL,
            created_at        TEXT NOT NULL,
            updated_at        TEXT NOT NULL,
            submit_started_at TEXT,
            submitted_at      TEXT,
            last_progress_at  TEXT,
            stall_notified    INTEGER NOT NULL DEFAULT 0,
            last_status_edit_at TEXT,
            finished_at       TEXT,
            CHECK (status NOT IN ('failed','cancelled') OR failure_kind IS NOT NULL),
            CHECK (status NOT IN ('submitted','running','succeeded') OR provider_job_id IS NOT NULL)
        );
        CREATE INDEX jobs_status ON jobs(status);
        CREATE INDEX jobs_user_status ON jobs(user_id, status);
        CREATE INDEX jobs_created ON jobs(created_at);

        -- One account row per job: reserved on accept, then charged or released.
        CREATE TABLE ledger (
            job_id          TEXT PRIMARY KEY REFERENCES jobs(id),
            user_id         TEXT NOT NULL,
            budget_day      TEXT NOT NULL,
            reserved_micros INTEGER NOT NULL CHECK (reserved_micros >= 0),
            charged_micros  INTEGER NOT NULL DEFAULT 0 CHECK (charged_micros >= 0),
            state           TEXT NOT NULL CHECK (state IN ('reserved','charged','released','refunded')),
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL
        );
        CREATE INDEX ledger_user_day ON ledger(user_id, budget_day, state);
        CREATE INDEX ledger_day ON ledger(budget_day, state);

        -- Append-only history of every money movement, for audits and explanations.
        CREATE TABLE ledger_events (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id        TEXT NOT NULL,
            user_id       TEXT NOT NULL,
            budget_day    TEXT NOT NULL,
            event         TEXT NOT NULL,
            amount_micros INTEGER NOT NULL,
            at            TEXT NOT NULL
        );

        -- Per-user limit overrides (admin commands fill this in).
        CREATE TABLE user_limits (
            user_id      TEXT PRIMARY KEY,
            limit_micros INTEGER NOT NULL CHECK (limit_micros >= 0),
            updated_at   TEXT NOT NULL,
            updated_by   TEXT
        );

        -- The outbox: the final message each job still owes its thread.
        CREATE TABLE deliveries (
            job_id      TEXT PRIMARY KEY REFERENCES jobs(id),
            kind        TEXT NOT NULL CHECK (kind IN ('video','failure','cancelled')),
            state       TEXT NOT NULL CHECK (state IN ('pending','done')),
            file_path   TEXT,
            message_ts  TEXT,
            method      TEXT,
            attempts    INTEGER NOT NULL DEFAULT 0,
            last_error  TEXT,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        CREATE INDEX deliveries_state ON deliveries(state);
        """,
    ),
    (
        "run-time settings and the audit log",
        """
        -- Values admins change from Slack; once set they win over the environment.
        CREATE TABLE settings (
            key        TEXT PRIMARY KEY,
            value      TEXT,
            updated_at TEXT NOT NULL,
            updated_by TEXT
        );

        CREATE TABLE audit_log (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            at        TEXT NOT NULL,
            actor     TEXT NOT NULL,
            action    TEXT NOT NULL,
            target    TEXT,
            old_value TEXT,
            new_value TEXT,
            note      TEXT
        );
        CREATE INDEX audit_at ON audit_log(at);
        """,
    ),
    (
        "the uploaded file of a delivery",
        """
        -- Set before files.completeUploadExternal: after a crash, files.info on it tells
        -- whether the video was already shared, so it is never posted twice.
        ALTER TABLE deliveries ADD COLUMN upload_file_id TEXT;
        """,
    ),
    (
        "reference images for image-to-video",
        """
        -- A prepared image file beside the database; it outlives restarts like the job does.
        ALTER TABLE jobs ADD COLUMN reference_image_path TEXT;
        ALTER TABLE jobs ADD COLUMN reference_image_mime TEXT
        """,
    ),
    (
        "provider callbacks",
        """
        -- Callbacks name the provider's job id; this finds our job from it.
        CREATE INDEX jobs_provider_job ON jobs(provider, provider_job_id);

        -- Deliveries already acted on: providers retry, attackers replay.
        CREATE TABLE webhook_deliveries (
            provider    TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (provider, delivery_id)
        );
        CREATE INDEX webhook_deliveries_received ON webhook_deliveries(received_at);
        """,
    ),
    (
        "compares, fallbacks and approvals",
        """
        -- One `/sora compare`: its jobs share the id, one request message and one summary.
        CREATE TABLE compares (
            id            TEXT PRIMARY KEY,
            user_id       TEXT NOT NULL,
            channel_id    TEXT NOT NULL,
            thread_ts     TEXT,
            status_ts     TEXT,
            prompt        TEXT NOT NULL,
            summary_state TEXT NOT NULL DEFAULT 'owed' CHECK (summary_state IN ('owed','done')),
            summary_ts    TEXT,
            created_at    TEXT NOT NULL
        );
        ALTER TABLE jobs ADD COLUMN compare_id TEXT REFERENCES compares(id);
        CREATE INDEX jobs_compare ON jobs(compare_id);

        -- The failed job a fallback job replaces (button or automatic).
        ALTER TABLE jobs ADD COLUMN fallback_of TEXT;

        -- A request over the approval threshold: its jobs wait in 'queued' until decided.
        -- The key is the job id, or the compare id for a compare.
        CREATE TABLE approvals (
            key          TEXT PRIMARY KEY,
            user_id      TEXT NOT NULL,
            amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
            threshold_micros INTEGER NOT NULL,
            state        TEXT NOT NULL CHECK (state IN ('pending','approved','denied','expired','withdrawn')),
            decided_by   TEXT,
            decided_at   TEXT,
            created_at   TEXT NOT NULL,
            expires_at   TEXT NOT NULL
        );
        -- The admin DMs that carry a request's Approve/Deny buttons, edited once decided.
        CREATE TABLE approval_messages (
            key        TEXT NOT NULL REFERENCES approvals(key),
            channel_id TEXT NOT NULL,
            ts         TEXT NOT NULL,
            PRIMARY KEY (key, channel_id)
        );
        ALTER TABLE jobs ADD COLUMN approval_key TEXT REFERENCES approvals(key);
        CREATE INDEX jobs_approval ON jobs(approval_key);
        """,
    ),
)


def _create_private_file(path: Path) -> None:
    """The database holds prompts: create it readable by us only, before SQLite opens it.

    SQLite gives its -wal and -shm files the database file's mode. Never open and close
    these files once a connection is open: closing any descriptor drops this process's
    POSIX locks on the file, and another process could then checkpoint the WAL away.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
    os.chmod(path, 0o600)


class Database:
    """One process's access to the SQLite file.

    Writes go through `write_txn()` (BEGIN IMMEDIATE on the single writer connection, one
    at a time); reads use a second connection so they never see a half-done transaction.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # SQLite keeps a connection's read snapshot while any of its statements is unfinished;
        # two interleaved reads would share an old snapshot and miss a fresh commit. So reads
        # on the shared reader take turns (each is short).
        self._read_lock = asyncio.Lock()

    async def open(self) -> "Database":
        _create_private_file(self.path)
        self._writer = await self._connect()
        try:
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await self._migrate(self._writer)
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise
        for companion in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if companion.exists():  # chmod needs no descriptor, so locks stay intact
                os.chmod(companion, 0o600)
        return self

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database {self.path.name} is at schema {version}, newer than this code "
                f"({len(MIGRATIONS)}): upgrade sora-bot"
            )
        for number, (name, sql) in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("migrating database to schema %d (%s)", number, name)
            await conn.execute("BEGIN IMMEDIATE")
            try:
                # comments may hold semicolons: drop them before splitting statements
                code = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
                for statement in code.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version={number}")
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def write_txn(self, *, wait_s: float | None = None) -> AsyncIterator[aiosqlite.Connection]:
        """One serialised BEGIN IMMEDIATE transaction; commits on success, rolls back on error.

        `wait_s` bounds only the wait for the writer (TimeoutError): once the transaction has
        begun it runs to its end, so a deadline can never leave half a job behind.
        """
        assert self._writer is not None, "database not open"
        if wait_s is None:
            await self._write_lock.acquire()
        else:
            async with asyncio.timeout(wait_s):
                await self._write_lock.acquire()
        try:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                # BEGIN runs on aiosqlite's thread even when its caller is cancelled (the
                # poller cancels a job's task on /sora cancel): end that transaction while
                # the lock is still held, or every later BEGIN fails
                with contextlib.suppress(sqlite3.OperationalError):
                    await self._writer.execute("ROLLBACK")
                raise
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            else:
                await self._writer.execute("COMMIT")
        finally:
            self._write_lock.release()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The read connection, held alone, for helpers written against a connection.

        Everything done inside sees one consistent snapshot; they must not write.
        """
        assert self._reader is not None, "database not open"
        async with self._read_lock:
            yield self._reader

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.reading() as conn, conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.reading() as conn, conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """A single-statement write in its own transaction; returns the rowcount."""
        async with self.write_txn() as conn:
            cur = await conn.execute(sql, tuple(params))
            return cur.rowcount

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None


async def fetchone_in(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    async with conn.execute(sql, params) as cur:
        return await cur.fetchone()
