"""Requests of several jobs: a `/sora compare` (the set's one request message and its summary,
owed exactly once) or a long video's series of segments (one request message, no summary)."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Database
from bot.models import Job
from storage.jobs import row_to_job


@dataclass(frozen=True, slots=True)
class Compare:
    id: str
    user_id: str
    channel_id: str
    thread_ts: str | None
    status_ts: str | None
    prompt: str
    summary_state: str  # owed | done
    summary_ts: str | None
    kind: str = "compare"  # compare | series


async def get(db: Database, compare_id: str) -> Compare | None:
    row = await db.fetchone("SELECT * FROM compares WHERE id = ?", (compare_id,))
    if row is None:
        return None
    return Compare(row["id"], row["user_id"], row["channel_id"], row["thread_ts"], row["status_ts"],
                   row["prompt"], row["summary_state"], row["summary_ts"], row["kind"])


async def jobs_of(db: Database, compare_id: str) -> list[Job]:
    rows = await db.fetchall("SELECT * FROM jobs WHERE compare_id = ? ORDER BY rowid", (compare_id,))
    return [row_to_job(r) for r in rows]


async def set_message(db: Database, compare_id: str, *, channel_id: str, thread_ts: str, status_ts: str,
                      now: str) -> None:
    """Where the set's request message went; every job of the set lives in its thread."""
    async with db.write_txn() as conn:
        await conn.execute(
            "UPDATE compares SET channel_id = ?, thread_ts = ?, status_ts = ? WHERE id = ?",
            (channel_id, thread_ts, status_ts, compare_id),
        )
        await conn.execute(
            "UPDATE jobs SET channel_id = ?, thread_ts = ?, status_ts = ?, updated_at = ? WHERE compare_id = ?",
            (channel_id, thread_ts, status_ts, now, compare_id),
        )


async def all_delivered(db: Database, compare_id: str) -> bool:
    """Every job of the set has ended and its final message is in the thread."""
    row = await db.fetchone(
        """SELECT COUNT(*), SUM(CASE WHEN d.state = 'done' THEN 1 ELSE 0 END)
           FROM jobs j LEFT JOIN deliveries d ON d.job_id = j.id WHERE j.compare_id = ?""",
        (compare_id,),
    )
    return row is not None and int(row[0]) > 0 and int(row[1] or 0) == int(row[0])


async def mark_summarized(db: Database, compare_id: str, ts: str | None) -> bool:
    async with db.write_txn() as conn:
        return await conn.execute(
            "UPDATE compares SET summary_state = 'done', summary_ts = ? WHERE id = ? AND summary_state = 'owed'",
            (ts, compare_id),
        ) == 1


async def ready_summaries(db: Database) -> list[str]:
    """A job of each set whose every final message is in the thread but whose summary is still
    owed: a replica that died between the two left it (any replica may post it: see
    `Database.hold`)."""
    rows = await db.fetchall(
        """SELECT MIN(j.id) FROM compares c JOIN jobs j ON j.compare_id = c.id
           LEFT JOIN deliveries d ON d.job_id = j.id
           WHERE c.summary_state = 'owed' GROUP BY c.id
           HAVING COUNT(*) = SUM(CASE WHEN d.state = 'done' THEN 1 ELSE 0 END)"""
    )
    return [r[0] for r in rows if r[0]]


async def owed_summaries(db: Database) -> list[str]:
    """A job of each set whose summary is still owed (to watch again after a restart)."""
    rows = await db.fetchall(
        "SELECT MIN(j.id) FROM compares c JOIN jobs j ON j.compare_id = c.id"
        " WHERE c.summary_state = 'owed' GROUP BY c.id"
    )
    return [r[0] for r in rows if r[0]]
