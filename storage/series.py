"""A long video's segments in the database: the chain each one continues, and stopping the rest."""

from __future__ import annotations

from bot.models import UNFINISHED, Job
from storage import ledger
from storage.db import Conn, Database
from storage.jobs import get_job, row_to_job

# More links than any video SORA_MAX_VIDEO_SECONDS allows (600 s of 1 s clips): a bound on a
# walk over rows that point at each other, not a limit anyone meets.
_MAX_LINKS = 700


async def chain(db: Database, job: Job) -> list[Job]:
    """The segments that play up to and including `job`, first to last, following `after_job`
    (across a series that carried on a stopped one)."""
    links = [job]
    while links[-1].after_job is not None and len(links) < _MAX_LINKS:
        before = await get_job(db, links[-1].after_job)
        if before is None:
            break
        links.append(before)
    return links[::-1]


async def following(db: Database, job_id: str) -> Job | None:
    """The unfinished segment that continues this one, if any (to wake it)."""
    placeholders = ",".join("?" for _ in UNFINISHED)
    row = await db.fetchone(
        f"SELECT * FROM jobs WHERE after_job = ? AND status IN ({placeholders}) ORDER BY created_at DESC LIMIT 1",
        (job_id, *UNFINISHED),
    )
    return row_to_job(row) if row else None


async def is_last(conn: Conn, job: Job) -> bool:
    """No later segment in its series: its video is the whole one."""
    row = await conn.fetchone(
        "SELECT COUNT(*) FROM jobs WHERE compare_id = ? AND segment_index > ?", (job.compare_id, job.segment_index)
    )
    return int(row[0]) == 0


async def stop_later_in(conn: Conn, job: Job, *, detail: str, now: str) -> list[Job]:
    """Cancel the series' segments after `job` that haven't ended, releasing each reservation,
    in the caller's transaction. They owe no message: `job`'s own says what happened."""
    placeholders = ",".join("?" for _ in UNFINISHED)
    rows = await conn.fetchall(
        f"SELECT id FROM jobs WHERE compare_id = ? AND segment_index > ? AND status IN ({placeholders})",
        (job.compare_id, job.segment_index, *UNFINISHED),
    )
    stopped = []
    for row in rows:
        job_id = row[0]
        moved = await conn.execute(
            f"UPDATE jobs SET status = 'cancelled', failure_kind = 'cancelled', failure_detail = ?, cost_micros = 0,"
            f" finished_at = ?, updated_at = ? WHERE id = ? AND status IN ({placeholders})",
            (detail, now, now, job_id, *UNFINISHED),
        )
        if moved == 1:
            await ledger.release(conn, job_id, now)
            stopped.append(row_to_job(await conn.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))))
    return stopped
