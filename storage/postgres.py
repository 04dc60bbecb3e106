"""The PostgreSQL backend: an asyncpg pool, a transaction per write, advisory locks for budgets,
and migrations run once for a fleet of replicas.

Repository functions write SQL with `?` placeholders (what SQLite takes); `_native` turns them
into PostgreSQL's `$1, $2, …` once per statement text. Transactions run at READ COMMITTED:
each statement sees what committed before it began, so a transaction that first takes the
lock of an account (`Conn.lock`) then reads it sees every earlier writer of that account.
That, not SERIALIZABLE and its retry loops, is what keeps `spent + reserved <= limit` when
replicas reserve at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from storage.db import Conn, Database, Row, SchemaTooNew, TurnTimeout, Txn
from storage.migrations import MIGRATIONS

T = TypeVar("T")

log = logging.getLogger(__name__)

# Any fixed number: the advisory lock every replica takes to migrate, so one migrates at a time.
_MIGRATION_LOCK = 0x50_52_41_00_01
# A deadlock victim is rolled back whole and may simply run again.
_RETRIES = 3
# The NOTIFY channel replicas tell each other things on (storage.db.Database.notify).
CHANNEL = "sora_bot"
# the longest wait between tries to open a LISTEN connection that dropped
RELISTEN_MAX_S = 30.0


@lru_cache(maxsize=2048)
def _native(sql: str) -> str:
    """`?` placeholders as `$1, $2, …`, leaving quoted text alone."""
    out: list[str] = []
    n = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs on its way back to the pool: nothing. asyncpg's default
    (unlock all, CLOSE ALL, UNLISTEN *, RESET ALL) is one more round trip per transaction, and
    this backend leaves no session state on pooled connections: their advisory locks and SETs are
    transaction-scoped (`pg_advisory_xact_lock`, `SET LOCAL`), and LISTEN and session locks have
    connections of their own. An open transaction is still rolled back by the pool first."""


def _rowcount(status: str) -> int:
    """The row count in a command tag: 'UPDATE 3', 'INSERT 0 1', 'DELETE 0'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PgConn:
    engine = "postgres"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    __slots__ = ("conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _rowcount(await self.conn.execute(_native(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self.conn.fetchrow(_native(sql), *params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self.conn.fetch(_native(sql), *params))

    async def lock(self, *keys: str, shared: Sequence[str] = ()) -> None:
        # one statement; PostgreSQL computes a select list left to right, so the order holds
        calls = [f"pg_advisory_xact_lock_shared(hashtextextended(${n}, 0))" for n in range(1, len(shared) + 1)]
        calls += [f"pg_advisory_xact_lock(hashtextextended(${n}, 0))"
                  for n in range(len(shared) + 1, len(shared) + len(keys) + 1)]
        if calls:
            await self.conn.execute(f"SELECT {', '.join(calls)}", *shared, *keys)


class PostgresDatabase(Database):
    """One replica's pool of connections to the shared PostgreSQL database."""

    engine = "postgres"
    POOL_SIZE = 10

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._local_turns = {}
        self._listener: asyncpg.Connection | None = None  # LISTEN needs a connection of its own
        self._on_message: Callable[[str], None] | None = None
        self._relisten: asyncio.Task[None] | None = None  # reopening a LISTEN connection that dropped
        # session-level advisory locks (`one_at_a_time`), one query at a time on it
        self._session: asyncpg.Connection | None = None
        self._session_lock = asyncio.Lock()

    async def open(self) -> "PostgresDatabase":
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.POOL_SIZE, reset=_keep_session)
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise
        return self

    async def migrate(self) -> int:
        """Bring the schema up to date, once for the fleet: replicas that start together
        wait on one lock, and the later ones find nothing left to do. Returns the version."""
        async with self._acquire(None) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            if version > len(MIGRATIONS):
                raise SchemaTooNew(self.describe(), version)
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                log.info("migrating database to schema %d (%s)", number, migration.name)
                await conn.execute(migration.postgres)  # several statements: the simple protocol
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
            return max(version, len(MIGRATIONS))

    @asynccontextmanager
    async def _acquire(self, wait_s: float | None) -> AsyncIterator[asyncpg.Connection]:
        assert self._pool is not None, "database not open"
        try:
            conn = await self._pool.acquire(timeout=wait_s)
        except (TimeoutError, asyncio.TimeoutError):
            raise TimeoutError("the writer was not free in time") from None
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def run_write(self, fn: Txn[..., T], /, *args: Any, wait_s: float | None = None, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        deadline = None if wait_s is None else loop.time() + wait_s
        async with self._acquire(wait_s) as conn:
            for attempt in range(_RETRIES):
                try:
                    async with conn.transaction():
                        if deadline is not None:
                            # a lock held elsewhere past the deadline ends the transaction with
                            # nothing written, as a busy SQLite does
                            left_ms = max(int((deadline - loop.time()) * 1000), 1)
                            await conn.execute(f"SET LOCAL lock_timeout = {left_ms}")
                        return await fn(_PgConn(conn), *args, **kwargs)
                except asyncpg.LockNotAvailableError:
                    raise TimeoutError("the writer was not free in time") from None
                except asyncpg.DeadlockDetectedError:
                    if attempt == _RETRIES - 1:
                        raise
                    log.info("a write was chosen as a deadlock's victim; running it again")
        raise AssertionError("unreachable")  # pragma: no cover

    async def run_read(self, fn: Txn[..., T], /, *args: Any, **kwargs: Any) -> T:
        async with self._acquire(None) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await fn(_PgConn(conn), *args, **kwargs)

    @asynccontextmanager
    async def write_txn(self, *, wait_s: float | None = None) -> AsyncIterator[Conn]:
        async with self._acquire(wait_s) as conn, conn.transaction():
            yield _PgConn(conn)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Conn]:
        async with self._acquire(None) as conn:
            yield _PgConn(conn)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        assert self._pool is not None, "database not open"
        return await self._pool.fetchrow(_native(sql), *params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        assert self._pool is not None, "database not open"
        return list(await self._pool.fetch(_native(sql), *params))

    @asynccontextmanager
    async def _across_replicas(self, key: str, *, wait_s: float) -> AsyncIterator[None]:
        # a session-level advisory lock on a connection of its own: nothing pooled is kept
        # while the block waits on Slack, and a replica that dies lets go with its session
        conn = await self._session_connection()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            async with self._session_lock:
                if await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key):
                    break
            if loop.time() >= deadline:
                raise TurnTimeout(key)
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            async with self._session_lock:
                if not conn.is_closed():
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)

    async def _session_connection(self) -> asyncpg.Connection:
        async with self._session_lock:
            if self._session is None or self._session.is_closed():
                self._session = await asyncpg.connect(self.url)
            return self._session

    async def listen(self, on_message: Callable[[str], None]) -> None:
        self._on_message = on_message
        await self._open_listener()

    async def _open_listener(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.add_listener(CHANNEL, self._heard)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if self._on_message is not None:
            self._on_message(payload)

    def _listener_lost(self, _conn: object) -> None:
        # a restarted server, a failover, a proxy's idle timeout: until it is back, the
        # heartbeat's claims and the safety polls still find every job, only later
        log.warning("the LISTEN connection to %s closed; opening it again", self.describe())
        self._listener = None
        if self._relisten is None or self._relisten.done():
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.5
        while self._pool is not None:
            try:
                await self._open_listener()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.info("the LISTEN connection is not back yet (%s); next try in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RELISTEN_MAX_S)
                continue
            log.info("the LISTEN connection to %s is back", self.describe())
            # a replica that stopped meanwhile told nobody here: look for the jobs it handed back
            self._heard(None, 0, CHANNEL, "claim")
            return

    async def notify(self, message: str) -> None:
        assert self._pool is not None, "database not open"
        await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, message)

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT max(version) FROM schema_version")
        return int(row[0] or 0) if row else 0

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return f"PostgreSQL {user}{host}{port}{parts.path or '/'}"

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._relisten is not None:
            self._relisten.cancel()
            await asyncio.gather(self._relisten, return_exceptions=True)
            self._relisten = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.remove_termination_listener(self._listener_lost)  # this close is no loss
            await listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
