"""What the rest of the bot sees of storage: a `Database` and the `Conn` its transactions get.

Two backends stand behind it: embedded SQLite (`storage.sqlite`, the default) and PostgreSQL
(`storage.postgres`, for several replicas). Repository functions are written once, as
`async def f(conn: Conn, ...)` with `?` placeholders in SQL both engines run; whatever one
engine needs in its own words (locks, placeholders, migrations' text) stays in its module.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from storage.migrations import MIGRATIONS

T = TypeVar("T")
P = ParamSpec("P")

Row = Any  # sqlite3.Row or asyncpg.Record: both index by position and by column name

SCHEMA_VERSION = len(MIGRATIONS)


class TurnTimeout(TimeoutError):
    """`Database.one_at_a_time` waited longer than it was allowed for its turn."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: the turn did not come in time")


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer sora-bot: this one must not touch it."""

    def __init__(self, where: str, version: int) -> None:
        super().__init__(
            f"database {where} is at schema {version}, newer than this code ({SCHEMA_VERSION}): upgrade sora-bot"
        )


class Conn(Protocol):
    """One connection inside one transaction."""

    engine: str  # "sqlite" | "postgres"
    # appended to a SELECT whose rows a claim will update: PostgreSQL's FOR UPDATE SKIP LOCKED
    # (concurrent claimers take different rows); nothing on SQLite, which has one writer
    skip_locked: str

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def lock(self, *keys: str, shared: Sequence[str] = ()) -> None:
        """Hold `keys` (after `shared`, held shared) until the transaction ends, so that writers
        of one account take turns; one round trip for all of them.

        SQLite's BEGIN IMMEDIATE already lets one writer in at a time, so there it does
        nothing; PostgreSQL takes transaction-scoped advisory locks, in the order given. Take
        keys in one order everywhere (see `storage.ledger`), or two transactions can wait on
        each other.
        """


Txn = Callable[Concatenate[Conn, P], Awaitable[T]]


class Database(ABC):
    """One process's access to the database."""

    engine: str
    _local_turns: dict[str, asyncio.Lock]  # `one_at_a_time` inside this process, by key
    # how long one-trip writes keep trying when the database is busy (SQLite: another process
    # holds its lock; PostgreSQL: no pooled connection is free)
    BUSY_TIMEOUT_S = 10.0

    @abstractmethod
    async def open(self) -> "Database":
        """Connect and bring the schema up to date; refuses a newer schema than this code knows."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def run_write(self, fn: Txn[P, T], /, *args: Any, wait_s: float | None = None, **kwargs: Any) -> T:
        """`await fn(conn, *args, **kwargs)` in one write transaction; its result once committed.

        An exception from `fn` rolls back its work and reaches the caller. `wait_s` bounds the
        wait for the writer: a write that has not begun within it writes nothing and raises
        TimeoutError, so a deadline never leaves a late write behind. `fn` must only talk to
        the database through `conn` (SQLite runs it on the event loop without suspending).
        """

    @abstractmethod
    async def run_read(self, fn: Txn[P, T], /, *args: Any, **kwargs: Any) -> T:
        """`await fn(conn, ...)` in one read transaction: one snapshot; `fn` must not write."""

    @abstractmethod
    def write_txn(self, *, wait_s: float | None = None) -> AbstractAsyncContextManager[Conn]:
        """A multi-step write transaction (rare admin work); commits on success, rolls back on error.

        `wait_s` bounds only the wait for the writer (TimeoutError): once begun it runs to its end.
        """

    @abstractmethod
    def reading(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for several reads in a row; it must not write."""

    @abstractmethod
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """A single-statement write in its own transaction; returns the rowcount."""
        return await self.run_write(_execute, sql, tuple(params))

    @asynccontextmanager
    async def one_at_a_time(self, key: str, *, wait_s: float) -> AsyncIterator[None]:
        """Run the block while no other task, in this process or another replica, runs one for
        `key`; TimeoutError if that takes longer than `wait_s`. Unlike `hold` it keeps no
        pooled connection (and no transaction) for the while: for work that waits on Slack."""
        locks = self._local_turns
        lock = locks.setdefault(key, asyncio.Lock())
        try:
            try:
                async with asyncio.timeout(wait_s):
                    await lock.acquire()
            except TimeoutError:
                raise TurnTimeout(key) from None
            try:
                async with self._across_replicas(key, wait_s=wait_s):
                    yield
            finally:
                lock.release()
        finally:
            if not lock.locked() and locks.get(key) is lock:
                del locks[key]  # waiters hold their own reference: a new one is fine for them

    @asynccontextmanager
    async def _across_replicas(self, key: str, *, wait_s: float) -> AsyncIterator[None]:
        """`one_at_a_time` between processes: nothing to do for one process."""
        yield

    async def listen(self, on_message: Callable[[str], None]) -> None:
        """Call `on_message` with every message any replica `notify`s (PostgreSQL's LISTEN).

        One process has nobody to hear from, so SQLite hears nothing.
        """

    async def notify(self, message: str) -> None:
        """Tell every replica listening (itself included); nothing on SQLite."""

    @abstractmethod
    async def schema_version(self) -> int: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for people (no password)."""


async def _execute(conn: Conn, sql: str, params: Sequence[Any]) -> int:
    return await conn.execute(sql, params)


def database_for(url: str | None, sqlite_path: Path | str) -> Database:
    """The backend a database URL names: unset or `sqlite:///path` → SQLite, `postgresql://…` →
    PostgreSQL. Unopened."""
    from storage.sqlite import SQLiteDatabase

    if not url:
        return SQLiteDatabase(sqlite_path)
    if url.startswith("sqlite:///"):
        return SQLiteDatabase(url.removeprefix("sqlite:///") or sqlite_path)
    if url.startswith(("postgresql://", "postgres://")):
        from storage.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ValueError("SORA_DATABASE_URL must start with sqlite:/// or postgresql://")
