"""Job leases: which replica watches which unfinished job, until when, and taking over the rest.

A job needs a watcher while it is unfinished or its final message is still owed. Its row
names the replica watching it (`owner`) and until when (`lease_until`, ISO-8601 UTC, compared
as text as every timestamp here is). The owner's heartbeat renews all its leases in one
statement; another replica claims a job once its lease has run out, in batches, skipping rows
another claimer holds locked. Replica ids are new at every start, so an id also fences: a
process that lost a job can't pass a guard that names it as the owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from bot.clock import parse_iso
from bot.models import UNFINISHED, Job
from storage.db import Conn, Database
from storage.jobs import row_to_job

_NEEDS_WATCHING = (
    f"(status IN ({','.join('?' for _ in UNFINISHED)})"
    " OR id IN (SELECT job_id FROM deliveries WHERE state = 'pending'))"
)


async def renew(db: Database, owner: str, *, until: str) -> set[str]:
    """Extend every lease `owner` still holds; the ids of those jobs (the rest were taken over)."""
    rows = await db.run_write(_renew, owner, until)
    return {r[0] for r in rows}


async def _renew(conn: Conn, owner: str, until: str) -> list[object]:
    return await conn.fetchall("UPDATE jobs SET lease_until = ? WHERE owner = ? RETURNING id", (until, owner))


async def claim(db: Database, owner: str, *, until: str, now: str, limit: int, any_lease: bool = False) -> list[Job]:
    """Take up to `limit` jobs that need a watcher and have none: never leased, handed back, or
    whose lease ran out before `now` (`any_lease`: whatever their lease, for the only process
    of an embedded database at start). Oldest first; rows another replica is claiming at this
    moment are skipped, not waited for."""
    return await db.run_write(_claim, owner, until, now, limit, any_lease)


async def _claim(conn: Conn, owner: str, until: str, now: str, limit: int, any_lease: bool) -> list[Job]:
    free = "1 = 1" if any_lease else "(owner IS NULL OR lease_until IS NULL OR lease_until < ?)"
    params: tuple[object, ...] = () if any_lease else (now,)
    rows = await conn.fetchall(
        f"""UPDATE jobs SET owner = ?, lease_until = ?
            WHERE id IN (SELECT id FROM jobs WHERE {free} AND {_NEEDS_WATCHING}
                         ORDER BY created_at LIMIT ?{conn.skip_locked})
            RETURNING *""",
        (owner, until, *params, *UNFINISHED, limit),
    )
    return sorted((row_to_job(r) for r in rows), key=lambda j: j.created_at)


async def release(db: Database, owner: str, job_ids: Iterable[str] | None = None) -> int:
    """Hand leases back (a finished job, or every job at shutdown) so another replica may
    claim them at once instead of after they run out. Only the owner's own."""
    return await db.run_write(_release, owner, None if job_ids is None else list(job_ids))


async def _release(conn: Conn, owner: str, job_ids: list[str] | None) -> int:
    if job_ids is None:
        return await conn.execute("UPDATE jobs SET owner = NULL, lease_until = NULL WHERE owner = ?", (owner,))
    if not job_ids:
        return 0
    marks = ",".join("?" for _ in job_ids)
    return await conn.execute(
        f"UPDATE jobs SET owner = NULL, lease_until = NULL WHERE owner = ? AND id IN ({marks})", (owner, *job_ids))


async def next_expiry(db: Database, owner: str) -> datetime | None:
    """When the soonest lease of another replica on a job that needs watching runs out."""
    row = await db.fetchone(
        f"SELECT MIN(lease_until) FROM jobs WHERE owner IS NOT NULL AND owner <> ? AND {_NEEDS_WATCHING}",
        (owner, *UNFINISHED))
    return parse_iso(row[0]) if row and row[0] else None
