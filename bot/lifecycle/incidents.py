"""Provider incidents admins must hear about (credits used up, key refused): one DM each.

An incident opens with the first such failure and closes with the provider's next
success, so a burst of failed jobs sends one message, not one per job.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot.clock import iso
from bot.deps import Deps
from bot.models import FailureKind
from storage.db import Conn

log = logging.getLogger(__name__)

ALERT_KINDS = (FailureKind.QUOTA_EXHAUSTED, FailureKind.AUTH_FAILED)


def incident_key(provider: str, kind: FailureKind) -> str:
    """The settings key an open incident is kept under (App Home shows them too)."""
    return f"incident.{provider}.{kind.value}"


async def open_incident(deps: Deps, provider: str, kind: FailureKind, *, job_id: str) -> bool:
    """Record the incident; DM the admins only when it is new. Returns True if they were told."""
    if kind not in ALERT_KINDS:
        return False
    now = iso(deps.clock())
    if not await deps.db.run_write(_open_in, incident_key(provider, kind), job_id, now):
        return False
    label = deps.provider_label(provider)
    what = (
        f"{label}'s credits are used up" if kind is FailureKind.QUOTA_EXHAUSTED
        else f"{label} refused the bot's API key"
    )
    text = (
        f":rotating_light: {what} (job `{job_id}` failed with `{kind.value}`). Video requests on "
        f"this provider will keep failing until it is fixed: "
        + ("top up the account." if kind is FailureKind.QUOTA_EXHAUSTED else "check the key in the bot's environment.")
        + " People's budgets were not charged. I'll tell you once, not per job."
    )
    told = 0
    for admin_id in await admin_recipients(deps):
        try:
            dm = await deps.slack.conversations_open(users=admin_id)
            await deps.slack.chat_postMessage(channel=dm["channel"]["id"], text=text)
            told += 1
        except SlackApiError as exc:
            log.warning("could not DM admin %s about %s: %s", admin_id, kind.value, exc.response.get("error"))
    if not told:
        log.warning("no admin could be told that %s (%s)", what, kind.value)
    return told > 0


async def _open_in(conn: Conn, key: str, job_id: str, now: str) -> bool:
    """False when the incident is open already."""
    return await conn.execute(
        "INSERT INTO settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, 'bot')"
        " ON CONFLICT(key) DO NOTHING",
        (key, job_id, now),
    ) == 1


async def close_incidents(deps: Deps, provider: str) -> None:
    """The provider works again: the next failure is news."""
    await deps.db.run_write(close_incidents_in, provider)


async def close_incidents_in(conn: Conn, provider: str) -> None:
    """`close_incidents` inside a caller's transaction (a success closes them in the one
    that records it: no commit of its own)."""
    keys = [incident_key(provider, k) for k in ALERT_KINDS]
    await conn.execute(f"DELETE FROM settings WHERE key IN ({','.join('?' for _ in keys)})", keys)


async def admin_recipients(deps: Deps) -> list[str]:
    """SORA_ADMIN_USER_IDS, else the workspace's admins and owners (users.list)."""
    named = sorted(deps.settings.admin_user_ids)
    if named:
        return named
    found: list[str] = []
    cursor = None
    try:
        while True:
            page = await deps.slack.users_list(limit=200, cursor=cursor)
            for member in page.get("members") or []:
                if member.get("deleted") or member.get("is_bot"):
                    continue
                if member.get("is_admin") or member.get("is_owner") or member.get("is_primary_owner"):
                    found.append(str(member["id"]))
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor or len(found) >= 20:
                break
    except SlackApiError as exc:
        log.warning("could not list workspace admins: %s", exc.response.get("error"))
    return found[:20]
