"""Time: an injectable clock, ISO 8601 UTC strings, and the budget day in SORA_TIMEZONE."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """'2026-11-25T16:45:44.123456Z': sortable as text."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def budget_day(now: datetime, tz: ZoneInfo) -> str:
    """The budget day (YYYY-MM-DD) that `now` falls in; days start at local midnight."""
    return now.astimezone(tz).date().isoformat()


def next_reset(now: datetime, tz: ZoneInfo) -> datetime:
    """The next local midnight, correct across DST changes (zoneinfo resolves the wall time)."""
    local_day: date = now.astimezone(tz).date() + timedelta(days=1)
    return datetime.combine(local_day, time(0, 0), tzinfo=tz).astimezone(UTC)


def humanize_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def local_hhmm(dt: datetime, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).strftime("%H:%M")
