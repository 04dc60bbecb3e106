"""Budget money: reservations, charges, releases, per-user limits, and daily usage."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Conn, Database

# Lock keys (see Conn.lock), always taken in this order: BUDGETS (shared by every reservation,
# exclusive for an admin changing a limit that applies to everyone), then the user's, then the
# budget day's. So a reservation never checks limits an admin is halfway through changing, and
# two reservations of one user (or, under a workspace cap, of one day) take turns.
BUDGETS_LOCK = "budgets"


def user_lock(user_id: str) -> str:
    return f"budget-user:{user_id}"


def day_lock(day: str) -> str:
    return f"budget-day:{day}"


@dataclass(frozen=True, slots=True)
class Totals:
    spent_micros: int
    reserved_micros: int

    @property
    def used_micros(self) -> int:
        return self.spent_micros + self.reserved_micros


@dataclass(frozen=True, slots=True)
class UsageRow:
    user_id: str
    date: str
    limit_micros: int
    spent_micros: int
    reserved_micros: int
    jobs: int

    @property
    def remaining_micros(self) -> int:
        return self.limit_micros - self.spent_micros - self.reserved_micros


_TOTALS_SQL = """
    SELECT COALESCE(SUM(CASE WHEN state='charged' THEN charged_micros ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state='reserved' THEN reserved_micros ELSE 0 END), 0)
    FROM ledger WHERE budget_day = ? {user_clause}
"""


# Each piece of ledger SQL is written once, on a `Conn`: transactions run through
# `Database.run_write` pass theirs, and admin work passes its `write_txn` connection.


async def user_totals(conn: Conn, user_id: str, day: str) -> Totals:
    row = await conn.fetchone(_TOTALS_SQL.format(user_clause="AND user_id = ?"), (day, user_id))
    return Totals(int(row[0]), int(row[1]))


async def workspace_totals(conn: Conn, day: str) -> Totals:
    # ledger_day_totals is kept by triggers on ledger (migration 7): a row or a few (PostgreSQL
    # spreads a day over 16, migration 10), not the whole day's ledger
    row = await conn.fetchone(
        "SELECT COALESCE(SUM(spent_micros), 0), COALESCE(SUM(reserved_micros), 0)"
        " FROM ledger_day_totals WHERE budget_day = ?", (day,)
    )
    return Totals(int(row[0]), int(row[1]))


async def user_limit(conn: Conn, user_id: str, default_micros: int) -> int:
    row = await conn.fetchone("SELECT limit_micros FROM user_limits WHERE user_id = ?", (user_id,))
    return int(row[0]) if row else default_micros


async def add_reservation(
    conn: Conn, *, job_id: str, user_id: str, day: str, amount_micros: int, at: str
) -> None:
    await conn.execute(
        "INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, state, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, 'reserved', ?, ?)",
        (job_id, user_id, day, amount_micros, at, at),
    )


# Each change of a ledger row's state writes its event by trigger (migration 11): one statement.


async def charge(conn: Conn, job_id: str, amount_micros: int, at: str) -> bool:
    """reserved -> charged. False when the reservation was already settled (idempotent)."""
    return await conn.execute(
        "UPDATE ledger SET state='charged', charged_micros=?, updated_at=?"
        " WHERE job_id=? AND state='reserved'",
        (amount_micros, at, job_id),
    ) == 1


async def release(conn: Conn, job_id: str, at: str) -> bool:
    """reserved -> released (failure, cancel, stuck). False when already settled."""
    return await conn.execute(
        "UPDATE ledger SET state='released', updated_at=? WHERE job_id=? AND state='reserved'",
        (at, job_id),
    ) == 1


async def refund(conn: Conn, job_id: str, at: str) -> int | None:
    """charged -> refunded: the money counts as unspent again. Returns the amount, or None."""
    row = await conn.fetchone(
        "UPDATE ledger SET state='refunded', updated_at=? WHERE job_id=? AND state='charged' RETURNING charged_micros",
        (at, job_id),
    )
    return int(row[0]) if row is not None else None


async def totals_for(db: Database, user_id: str, day: str, default_limit_micros: int) -> tuple[int, Totals]:
    """(limit, totals) for one user's budget day, read outside any write (one snapshot)."""
    return await db.run_read(_totals_for, user_id, day, default_limit_micros)


async def _totals_for(conn: Conn, user_id: str, day: str, default_limit_micros: int) -> tuple[int, Totals]:
    return await user_limit(conn, user_id, default_limit_micros), await user_totals(conn, user_id, day)


async def usage_for_day(db: Database, day: str, default_limit_micros: int) -> list[UsageRow]:
    """Every user with ledger activity that day, plus every user with a limit override."""
    rows = await db.fetchall(
        """
        WITH act AS (
            SELECT user_id,
                   SUM(CASE WHEN state='charged' THEN charged_micros ELSE 0 END) AS spent,
                   SUM(CASE WHEN state='reserved' THEN reserved_micros ELSE 0 END) AS reserved,
                   COUNT(*) AS jobs
            FROM ledger WHERE budget_day = ? GROUP BY user_id
        ),
        users AS (SELECT user_id FROM act UNION SELECT user_id FROM user_limits)
        SELECT u.user_id, COALESCE(l.limit_micros, ?) AS lim,
               COALESCE(a.spent, 0), COALESCE(a.reserved, 0), COALESCE(a.jobs, 0)
        FROM users u
        LEFT JOIN act a ON a.user_id = u.user_id
        LEFT JOIN user_limits l ON l.user_id = u.user_id
        ORDER BY u.user_id
        """,
        (day, default_limit_micros),
    )
    return [UsageRow(r[0], day, int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


async def set_user_limit(conn: Conn, user_id: str, limit_micros: int | None, *, at: str, by: str) -> int | None:
    """Set (or with None remove) a user's override; returns the previous override."""
    await conn.lock(user_lock(user_id))  # not while a reservation of theirs is being checked
    old = await conn.fetchone("SELECT limit_micros FROM user_limits WHERE user_id = ?", (user_id,))
    if limit_micros is None:
        await conn.execute("DELETE FROM user_limits WHERE user_id = ?", (user_id,))
    else:
        await conn.execute(
            "INSERT INTO user_limits (user_id, limit_micros, updated_at, updated_by) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(user_id) DO UPDATE SET limit_micros = excluded.limit_micros,"
            " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (user_id, limit_micros, at, by),
        )
    return int(old[0]) if old else None
