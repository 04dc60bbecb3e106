"""Approval requests for expensive video requests: their state, decisions and admin DMs.

A request over the threshold is stored reserved and 'pending'; an admin's decision or the
expiry moves it once (guarded UPDATE), in the same transaction that releases the money of
a denied or expired request and writes the audit line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.clock import parse_iso
from bot.models import FailureKind, JobStatus
from storage import admin, ledger
from storage.db import Database, Row
from storage.jobs import add_delivery


@dataclass(frozen=True, slots=True)
class Approval:
    key: str
    user_id: str
    amount_micros: int
    threshold_micros: int
    state: str  # pending | approved | denied | expired | withdrawn (its owner cancelled it)
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime
    expires_at: datetime


def _row(row: Row) -> Approval:
    return Approval(
        key=row["key"], user_id=row["user_id"], amount_micros=int(row["amount_micros"]),
        threshold_micros=int(row["threshold_micros"]), state=row["state"], decided_by=row["decided_by"],
        decided_at=parse_iso(row["decided_at"]), created_at=parse_iso(row["created_at"]),  # type: ignore[arg-type]
        expires_at=parse_iso(row["expires_at"]),  # type: ignore[arg-type]
    )


async def get(db: Database, key: str) -> Approval | None:
    row = await db.fetchone("SELECT * FROM approvals WHERE key = ?", (key,))
    return _row(row) if row else None


_AUDIT_ACTIONS = {"approved": "approval.approve", "denied": "approval.deny", "expired": "approval.expire",
                  "withdrawn": "approval.withdraw"}


@dataclass(frozen=True, slots=True)
class Decision:
    moved: bool  # False: it was decided already (see `approval`)
    approval: Approval
    job_ids: list[str]  # the request's jobs that were still waiting


async def decide(db: Database, key: str, *, state: str, by: str, now: str) -> Decision | None:
    """pending -> approved | denied | expired, once. Denied and expired release the money.

    None when there is no such request. The audit line is written in the same transaction.
    """
    assert state in ("approved", "denied", "expired", "withdrawn")
    async with db.write_txn() as conn:
        rows = await conn.fetchall(
            "SELECT id, segment_index FROM jobs WHERE approval_key = ? AND status = 'queued' ORDER BY rowid", (key,))
        waiting = [r[0] for r in rows]
        # a long video's segments are one video: its first segment's message speaks for them
        silent = {r[0] for r in rows[1:] if r[1] is not None}
        moved = False
        if state != "withdrawn" or not waiting:  # withdrawn only once no part still waits
            moved = await conn.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ? WHERE key = ? AND state = 'pending'",
                (state, by, now, key),
            ) == 1
        row = await conn.fetchone("SELECT * FROM approvals WHERE key = ?", (key,))
        if row is None:
            return None
        if moved and state in ("denied", "expired"):
            detail = f"approval {state}" + (f" by {by}" if state == "denied" else "")
            for job_id in waiting:
                await conn.execute(
                    "UPDATE jobs SET status = ?, failure_kind = ?, failure_detail = ?, cost_micros = 0,"
                    " finished_at = ?, updated_at = ? WHERE id = ? AND status = 'queued'",
                    (JobStatus.CANCELLED.value, FailureKind.CANCELLED.value, detail, now, now, job_id),
                )
                await ledger.release(conn, job_id, now)
                if job_id not in silent:
                    await add_delivery(conn, job_id, "cancelled", now=now)
        approval = _row(row)
        if moved:
            await admin.audit(
                conn, at=now, actor=by, action=_AUDIT_ACTIONS[state], target=key, new=str(approval.amount_micros),
                note=f"request by {approval.user_id}; {len(waiting)} job(s)",
            )
        return Decision(moved, approval, waiting)


async def add_message(db: Database, key: str, channel_id: str, ts: str) -> None:
    await db.execute(
        "INSERT INTO approval_messages (key, channel_id, ts) VALUES (?, ?, ?)"
        " ON CONFLICT (key, channel_id) DO UPDATE SET ts = excluded.ts", (key, channel_id, ts))


async def messages_of(db: Database, key: str) -> dict[str, str]:
    """channel id -> ts of the admin DMs that carry this request's buttons."""
    rows = await db.fetchall("SELECT channel_id, ts FROM approval_messages WHERE key = ?", (key,))
    return {r[0]: r[1] for r in rows}
