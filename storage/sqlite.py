"""The SQLite backend: the loop's batched write connection, a writer and a reader thread, WAL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from storage.db import Conn, Database, Row, SchemaTooNew, Txn
from storage.migrations import MIGRATIONS

T = TypeVar("T")

log = logging.getLogger(__name__)


def _statements(sql: str) -> Iterator[str]:
    """A migration's statements. Trigger bodies hold semicolons, so a piece ends a statement
    only when SQLite says the text so far is complete."""
    # comments may hold semicolons: drop them before splitting statements
    code = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    pending = ""
    for piece in code.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending


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


class _Gate:
    """Who may queue work for one connection (the reader's thread, or the loop's writes), and when.

    Queued work runs one item (or one batch) at a time, in order. One-trip work (a whole
    transaction or read in one function) therefore needs no lock: it is queued at once, and
    many can be in flight. Work that spans several trips (`write_txn`, `reading`) takes the
    lock and closes the gate, so nothing is queued between its steps; one-trip work waits
    only while the gate is closed. Waiting on a lock for every one-trip item would cost an
    event-loop turn per hand-over, which under load was most of the time a write took.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self._open = asyncio.Event()
        self._open.set()
        self._waiting = 0  # one-trip work held at the closed gate
        self._drained = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def pass_through(self) -> None:
        self._waiting += 1
        try:
            while not self._open.is_set():
                await self._open.wait()
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._drained.set()

    @asynccontextmanager
    async def exclusive(self, wait_s: float | None = None) -> AsyncIterator[None]:
        async with asyncio.timeout(wait_s):  # None: no limit
            await self.lock.acquire()
            try:
                # Work held up by the previous holder goes first; else a caller that runs one
                # multi-step transaction after another would keep the gate shut for good.
                while self._waiting:
                    self._drained.clear()
                    await self._drained.wait()
            except BaseException:
                self.lock.release()
                raise
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()
            self.lock.release()


class _Write:
    """One `run_write` call waiting for the next batch."""

    __slots__ = ("done", "fn", "args", "kwargs", "deadline")

    def __init__(self, done: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], deadline: float | None) -> None:
        self.done, self.fn, self.args, self.kwargs, self.deadline = done, fn, args, kwargs, deadline


def _pragmas(busy_timeout_s: float) -> tuple[str, ...]:
    """Every connection's settings."""
    return (f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(exc)


class _SyncConn:
    """A plain sqlite3 connection as a `Conn`, on the thread that owns it.

    Its methods never suspend, so a repository coroutine over it runs to its end in one
    `_drive`: the loop's batched writes and the reader's thread run the same async functions
    PostgreSQL awaits for real.
    """

    engine = "sqlite"
    skip_locked = ""
    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.raw.execute(sql, params).rowcount

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return fetchone_sync(self.raw, sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.raw.execute(sql, params).fetchall()

    async def lock(self, *keys: str, shared: Sequence[str] = ()) -> None:
        return None  # BEGIN IMMEDIATE already admits one writer at a time


class _ThreadConn:
    """An aiosqlite connection as a `Conn`: each statement is one trip to its thread."""

    engine = "sqlite"
    skip_locked = ""
    __slots__ = ("conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self.conn._execute(_on_raw, self.conn, execute_sync, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self.conn._execute(_on_raw, self.conn, fetchone_sync, sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self.conn._execute(_on_raw, self.conn, _fetchall_sync, sql, params)

    async def lock(self, *keys: str, shared: Sequence[str] = ()) -> None:
        return None


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it only awaits a `_SyncConn`) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite transaction function awaited something other than its connection")


class SQLiteDatabase(Database):
    """One process's access to the SQLite file.

    One-trip writes (`run_write`) run on the event loop's own connection, batched: every
    write asked for in one turn of the loop shares one BEGIN IMMEDIATE … COMMIT, each inside
    a savepoint of its own. A reservation is a fraction of a millisecond of SQLite work; handing
    it to a thread cost more than that in hand-overs and GIL waits, and a COMMIT per write cost
    as much as the write. That connection never waits on SQLite's lock (busy_timeout 0): when
    another process holds it, the batch is tried again a few milliseconds later, so the loop is
    never blocked, and it never checkpoints (a checkpoint syncs the disk): a third connection
    does that on a worker thread.

    Multi-step transactions (`write_txn`, rare admin work) run on a writer connection with a
    thread of its own, and one-trip writes wait while one is open. Reads use a fourth connection
    so they never see a half-done transaction. Relies on aiosqlite's `Connection._execute`
    (run a callable on the connection's thread) and `_conn`.
    """

    engine = "sqlite"
    # how long the loop's writes keep trying while another process holds SQLite's lock
    # (the other connections' busy_timeout)
    BUSY_TIMEOUT_S = 10.0
    # a commit is checkpointed into the database file at most this long after it
    CHECKPOINT_AFTER_S = 1.0

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local_turns = {}
        self._conn: sqlite3.Connection | None = None  # the loop's write connection
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._write_gate = _Gate()
        # Held alone (without closing the gate) it excludes only other multi-step writers:
        # enough for a caller that hands the writer's thread one whole transaction, as the
        # benchmark's prototype does.
        self._write_lock = self._write_gate.lock
        # SQLite keeps a connection's read snapshot while any of its statements is unfinished;
        # two interleaved reads would share an old snapshot and miss a fresh commit. One-trip
        # reads finish their statements inside their trip; `reading()` holds the reader alone.
        self._read_gate = _Gate()
        self._queue: list[_Write] = []
        self._flush_handle: asyncio.Handle | None = None
        self._txn_open = False  # a write_txn holds SQLite's write lock on the writer's thread
        self._busy_since: float | None = None
        self._busy_delay = 0.0
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._checkpoint_run: asyncio.Future[Any] | None = None
        self._checkpoint_again = False

    async def open(self) -> "SQLiteDatabase":
        _create_private_file(self.path)
        self._writer = await self._connect()
        try:
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await self._migrate(self._writer)
            self._reader = await self._connect()
            self._conn = self._plain_connection(busy_timeout_s=0)
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = self._plain_connection(check_same_thread=False)
        except BaseException:
            await self.close()
            raise
        for companion in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if companion.exists():  # chmod needs no descriptor, so locks stay intact
                os.chmod(companion, 0o600)
        return self

    def _plain_connection(self, *, busy_timeout_s: float = BUSY_TIMEOUT_S,
                          check_same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=check_same_thread)
        conn.row_factory = sqlite3.Row
        for pragma in _pragmas(busy_timeout_s):
            conn.execute(pragma)
        return conn

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        for pragma in _pragmas(self.BUSY_TIMEOUT_S):
            await conn.execute(pragma)
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise SchemaTooNew(self.path.name, version)
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("migrating database to schema %d (%s)", number, migration.name)
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(migration.sqlite):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version={number}")
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def write_txn(self, *, wait_s: float | None = None) -> AsyncIterator[Conn]:
        """One serialised BEGIN IMMEDIATE transaction; commits on success, rolls back on error.

        `wait_s` bounds only the wait for the writer (TimeoutError): once the transaction has
        begun it runs to its end, so a deadline can never leave half a job behind.
        Each statement inside is a trip to the writer's thread while every other write waits:
        frequent transactions use `run_write` instead.
        """
        assert self._writer is not None, "database not open"
        writer = self._writer
        async with self._write_gate.exclusive(wait_s):
            # writes already queued were asked for first: they commit before this begins
            if self._queue:
                async with asyncio.timeout(wait_s):
                    await self._enqueue(_nothing, (), {}, None)
            self._txn_open = True
            try:
                try:
                    await writer.execute("BEGIN IMMEDIATE")
                except asyncio.CancelledError:
                    # BEGIN runs on aiosqlite's thread even when its caller is cancelled (the
                    # poller cancels a job's task on /sora cancel): end that transaction while
                    # the gate is still held, or every later BEGIN fails
                    with contextlib.suppress(sqlite3.OperationalError):
                        await writer.execute("ROLLBACK")
                    raise
                try:
                    yield _ThreadConn(writer)
                except BaseException:
                    await writer.execute("ROLLBACK")
                    raise
                else:
                    await writer.execute("COMMIT")
            finally:
                self._txn_open = False
                self._schedule_flush()

    async def run_write(
        self, fn: Txn[..., T], /, *args: Any, wait_s: float | None = None, **kwargs: Any
    ) -> T:
        """`await fn(conn, *args, **kwargs)` inside BEGIN IMMEDIATE … COMMIT, on the event loop.

        `conn` wraps a plain sqlite3.Connection and never suspends, so `fn` runs to its end in
        one go (it must await nothing else). `fn` runs inside a savepoint of a transaction it
        may share with other writes asked for in the same turn of the loop: an exception from
        it rolls back its own work only and reaches its caller; its result is returned once the
        shared COMMIT is done (if the COMMIT fails, every caller in the batch gets that error,
        and nothing of theirs is stored). `fn` must only talk to SQLite, must be short (it
        holds the event loop), and must not commit, roll back or use savepoints named `w`.

        `wait_s` bounds the wait for the writer: a write that has not begun within `wait_s`
        (while a `write_txn` is open, or another process holds SQLite's lock) writes nothing
        and raises TimeoutError, so a deadline never leaves a late write behind; writes with a
        deadline go first in their batch. A cancelled caller's write still runs unless it had
        a deadline (then it never runs once the caller is gone).
        """
        assert self._conn is not None, "database not open"
        loop = asyncio.get_running_loop()
        deadline = None if wait_s is None else loop.time() + wait_s
        if not self._write_gate.is_open:
            if wait_s is None:
                await self._write_gate.pass_through()
            else:
                try:
                    async with asyncio.timeout(wait_s):
                        await self._write_gate.pass_through()
                except TimeoutError:
                    raise TimeoutError("the writer was not free in time") from None
        # no await between the gate and the queue: nothing multi-step can begin in between
        return await self._enqueue(fn, args, kwargs, deadline)

    def _enqueue(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                 deadline: float | None) -> asyncio.Future[T]:
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(done, fn, args, kwargs, deadline))
        self._schedule_flush()
        return done

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._queue and not self._txn_open:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _cancel_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def _flush(self) -> None:
        """Run every queued write in one transaction (a loop callback)."""
        self._flush_handle = None
        conn = self._conn
        if self._txn_open or not self._queue or conn is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        batch: list[_Write] = []
        for w in self._queue:
            if w.deadline is not None:
                if w.done.done():  # its caller gave up: it never runs
                    continue
                if now > w.deadline:
                    w.done.set_exception(TimeoutError("the writer was not free in time"))
                    continue
            batch.append(w)
        self._queue = []
        if not batch:
            return
        batch.sort(key=lambda w: w.deadline is None)  # a Slack answer waits on the first kind
        refused = _begin(conn, batch)
        if refused is not None:
            if _is_busy(refused):
                self._retry_later(batch, refused, now)
            return
        self._busy_since = None
        try:
            outcomes = _run_batch(conn, batch)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # one write can break the shared COMMIT (a deferred constraint): run each alone,
            # so only that one fails
            locked = [w for w in batch if not self._run_alone(conn, w)]
            if locked:
                self._retry_later(locked, sqlite3.OperationalError("database is locked"), now)
        except BaseException:
            _fail(batch, RuntimeError("the write was interrupted and rolled back"))
            raise
        else:
            _deliver(outcomes)
        self._after_commit(loop)

    def _run_alone(self, conn: sqlite3.Connection, w: _Write) -> bool:
        """One write in a transaction of its own; False if SQLite was locked before it began."""
        refused = _begin(conn, [w])
        if refused is not None:
            return not _is_busy(refused)
        try:
            outcomes = _run_batch(conn, [w])
        except Exception as exc:
            _fail([w], exc)
        else:
            _deliver(outcomes)
        return True

    def _retry_later(self, batch: list[_Write], exc: sqlite3.OperationalError, now: float) -> None:
        """Another process holds SQLite's lock: try again soon, without blocking the loop."""
        if self._busy_since is None:
            self._busy_since, self._busy_delay = now, 0.002
        else:
            self._busy_delay = min(self._busy_delay * 2, 0.05)
        if now - self._busy_since > self.BUSY_TIMEOUT_S:
            self._busy_since = None
            _fail(batch, exc)
            return
        self._queue[:0] = batch
        deadlines = [w.deadline for w in batch if w.deadline is not None]
        delay = min([self._busy_delay, *(d - now for d in deadlines)])
        loop = asyncio.get_running_loop()
        self._flush_handle = loop.call_later(max(delay, 0.0) + 0.0005, self._flush)

    def _after_commit(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._checkpoint_run is not None:
            self._checkpoint_again = True
        elif self._checkpoint_timer is None:
            self._checkpoint_timer = loop.call_later(self.CHECKPOINT_AFTER_S, self._checkpoint)

    def _checkpoint(self) -> None:
        """Copy committed pages into the database file, on a worker thread: a checkpoint
        syncs the disk, which the loop's connection must never wait for."""
        self._checkpoint_timer = None
        if self._checkpointer is None:
            return
        loop = asyncio.get_running_loop()
        self._checkpoint_again = False
        run = loop.run_in_executor(None, _checkpoint_sync, self._checkpointer)
        self._checkpoint_run = run

        def finished(fut: asyncio.Future[Any]) -> None:
            self._checkpoint_run = None
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("WAL checkpoint failed: %s", fut.exception())
            if self._checkpoint_again and self._checkpointer is not None:
                self._after_commit(loop)

        run.add_done_callback(finished)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Conn]:
        """The read connection, held alone, for helpers written against a connection.

        Everything done inside sees one consistent snapshot; they must not write.
        """
        assert self._reader is not None, "database not open"
        async with self._read_gate.exclusive():
            yield _ThreadConn(self._reader)

    async def run_read(self, fn: Txn[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(conn, *args, **kwargs)` on the reader's thread, in one read transaction.

        One round trip, one snapshot for every statement inside; `fn` must not write.
        """
        reader = await self._pass_reader()
        return await reader._execute(_in_read_transaction, reader, fn, args, kwargs)

    async def _pass_reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "database not open"
        if not self._read_gate.is_open:
            await self._read_gate.pass_through()
        return self._reader

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        reader = await self._pass_reader()
        return await reader._execute(_fetchall, reader, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        reader = await self._pass_reader()
        return await reader._execute(_fetchone, reader, sql, params)

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    def describe(self) -> str:
        return f"SQLite {self.path}"

    async def close(self) -> None:
        self._cancel_flush()
        if self._queue and not self._txn_open:
            self._flush()  # what was asked for before the close (unless SQLite is busy)
        self._cancel_flush()  # a retry the flush may have scheduled
        _fail(self._queue, RuntimeError("the database was closed"))
        self._queue = []
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._checkpoint_run is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint_run
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None
        # the last connection to close checkpoints the WAL into the file and removes it
        for plain in (self._checkpointer, self._conn):
            if plain is not None:
                plain.close()
        self._checkpointer = self._conn = None


def _begin(conn: sqlite3.Connection, writes: list[_Write]) -> sqlite3.OperationalError | None:
    """BEGIN IMMEDIATE for `writes`: None once begun, else SQLite's error. A busy error (another
    process holds the lock) decides nothing for them; any other fails them."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not _is_busy(exc):
            _fail(writes, exc)
        return exc
    return None


def _run_batch(conn: sqlite3.Connection, batch: list[_Write]) -> list[tuple[_Write, bool, Any]]:
    """Each write in its own savepoint of the open transaction, then COMMIT.

    Returns each write's (write, ok, result or exception); raises (after ROLLBACK) when the
    transaction as a whole fails, its COMMIT included."""
    outcomes: list[tuple[_Write, bool, Any]] = []
    try:
        for w in batch:
            conn.execute("SAVEPOINT w")
            try:
                value = _drive(w.fn(_SyncConn(conn), *w.args, **w.kwargs))
            except Exception as exc:
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
                outcomes.append((w, False, exc))
            else:
                conn.execute("RELEASE w")
                outcomes.append((w, True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT may have ended it already
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _deliver(outcomes: list[tuple[_Write, bool, Any]]) -> None:
    for w, ok, value in outcomes:
        if not w.done.done():
            if ok:
                w.done.set_result(value)
            else:
                w.done.set_exception(value)


def _fail(writes: Iterable[_Write], exc: BaseException) -> None:
    for w in writes:
        if not w.done.done():
            w.done.set_exception(exc)


async def _nothing(conn: Conn) -> None:
    return None


def _checkpoint_sync(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def fetchone_sync(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    cur = conn.execute(sql, params)
    try:
        return cur.fetchone()
    finally:
        # an unfinished statement would pin the connection's read snapshot
        cur.close()


def execute_sync(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    return conn.execute(sql, params).rowcount


# These run on an aiosqlite connection's own thread (handed over by `_execute`), where its
# sqlite3 connection may be used directly.


def _on_raw(conn: aiosqlite.Connection, fn: Callable[..., T], sql: str, params: Sequence[Any]) -> T:
    return fn(conn._conn, sql, params)


def _fetchall_sync(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _fetchone(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> Any:
    return fetchone_sync(conn._conn, sql, params)


def _fetchall(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn._conn.execute(sql, params).fetchall()


def _in_read_transaction(
    conn: aiosqlite.Connection, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    raw = conn._conn
    raw.execute("BEGIN")
    try:
        return _drive(fn(_SyncConn(raw), *args, **kwargs))
    finally:
        raw.execute("COMMIT")
