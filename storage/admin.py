"""Run-time settings that admins change from Slack, and the audit log of every change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from storage.db import Conn, Database
from storage.ledger import BUDGETS_LOCK

# Setting keys. Amounts are micro-dollars as decimal text; None/"" means "no cap".
DEFAULT_BUDGET = "daily_budget_micros"
WORKSPACE_BUDGET = "workspace_budget_micros"
PAUSED_REASON = "paused_reason"  # present (even empty) = paused
APPROVAL_OVER = "approval_over_micros"  # present: an admin's threshold; empty = approval off
FALLBACK_MODELS = "fallback_models"  # present: an admin's ordered list; empty = automatic fallback off


@dataclass(frozen=True, slots=True)
class Setting:
    value: str | None
    updated_at: str
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    target: str | None
    old_value: str | None
    new_value: str | None
    note: str | None


async def get_setting(conn: Conn, key: str) -> Setting | None:
    row = await conn.fetchone("SELECT value, updated_at, updated_by FROM settings WHERE key = ?", (key,))
    return Setting(row[0], row[1], row[2]) if row else None


async def read_setting(db: Database, key: str) -> Setting | None:
    row = await db.fetchone("SELECT value, updated_at, updated_by FROM settings WHERE key = ?", (key,))
    return Setting(row[0], row[1], row[2]) if row else None


async def put_setting(conn: Conn, key: str, value: str | None, *, at: str, by: str) -> None:
    await _lock_if_read_by_reservations(conn, key)
    await conn.execute(
        "INSERT INTO settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,"
        " updated_by = excluded.updated_by",
        (key, value, at, by),
    )


async def delete_setting(conn: Conn, key: str) -> None:
    await _lock_if_read_by_reservations(conn, key)
    await conn.execute("DELETE FROM settings WHERE key = ?", (key,))


async def audit(
    conn: Conn,
    *,
    at: str,
    actor: str,
    action: str,
    target: str | None = None,
    old: str | None = None,
    new: str | None = None,
    note: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, old_value, new_value, note)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (at, actor, action, target, old, new, note),
    )


async def recent_audit(db: Database, limit: int = 10) -> list[AuditEntry]:
    rows = await db.fetchall("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
    return [
        AuditEntry(r["id"], r["at"], r["actor"], r["action"], r["target"], r["old_value"],
                   r["new_value"], r["note"])
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Budgets:
    """The limits in force: the environment's defaults unless an admin has set them."""

    default_user_micros: int
    workspace_micros: int | None
    paused_reason: str | None  # None = accepting requests
    approval_over_micros: int | None = None  # requests costing more wait for an admin

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None


async def effective_budgets(
    conn: Conn, *, env_default_micros: int, env_workspace_micros: int | None,
    env_approval_micros: int | None = None,
) -> Budgets:
    rows = await conn.fetchall(
        "SELECT key, COALESCE(value, '') FROM settings WHERE key IN (?, ?, ?, ?)", BUDGET_KEYS)
    return budgets_from(
        {row[0]: row[1] for row in rows}, env_default_micros=env_default_micros,
        env_workspace_micros=env_workspace_micros, env_approval_micros=env_approval_micros,
    )


# The settings every reservation reads; `budgets_from` reads them as SELECT COALESCE(value, '')
# gives them: absent (not in the mapping) or their text ('' for an empty or NULL value).
BUDGET_KEYS = (DEFAULT_BUDGET, WORKSPACE_BUDGET, PAUSED_REASON, APPROVAL_OVER)


def budgets_from(
    present: Mapping[str, str | None], *, env_default_micros: int, env_workspace_micros: int | None,
    env_approval_micros: int | None = None,
) -> Budgets:
    """The limits in force, from the admin's settings that are present (a value None means absent)."""
    default, workspace = present.get(DEFAULT_BUDGET), present.get(WORKSPACE_BUDGET)
    paused, approval = present.get(PAUSED_REASON), present.get(APPROVAL_OVER)
    return Budgets(
        default_user_micros=int(default) if default else env_default_micros,
        # set but empty: the admin turned the cap (or the approval) off
        workspace_micros=(int(workspace) if workspace else None) if workspace is not None else env_workspace_micros,
        paused_reason=paused,  # present, even empty: paused
        approval_over_micros=(int(approval) if approval else None) if approval is not None else env_approval_micros,
    )


async def _lock_if_read_by_reservations(conn: Conn, key: str) -> None:
    # every reservation reads these under BUDGETS_LOCK shared: a change waits for those in
    # flight and holds new ones back until it commits (see storage.ledger)
    if key in _READ_BY_RESERVATIONS:
        await conn.lock(BUDGETS_LOCK)


_READ_BY_RESERVATIONS = frozenset(BUDGET_KEYS)
