"""The budget day starts at local midnight in SORA_TIMEZONE, across DST changes too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.clock import budget_day, next_reset

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def test_the_day_follows_local_midnight_not_utc() -> None:
    # 23:30 UTC on the 24th is already the 25th in Berlin (UTC+1 in November)
    assert budget_day(datetime(2026, 11, 24, 23, 30, tzinfo=UTC), BERLIN) == "2026-11-25"
    assert budget_day(datetime(2026, 11, 24, 22, 59, tzinfo=UTC), BERLIN) == "2026-11-24"
    # and still the 24th in New York (UTC-5)
    assert budget_day(datetime(2026, 11, 25, 4, 59, tzinfo=UTC), NEW_YORK) == "2026-11-24"


def test_spring_forward_day_is_23_hours_long() -> None:
    # Berlin moves from CET to CEST on 2026-03-29: that day starts 23:00Z and ends 22:00Z
    start = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert budget_day(start, BERLIN) == "2026-03-29"
    reset = next_reset(start, BERLIN)
    assert reset == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)
    assert reset - start == timedelta(hours=23)
    assert budget_day(reset - timedelta(seconds=1), BERLIN) == "2026-03-29"
    assert budget_day(reset, BERLIN) == "2026-03-30"


def test_fall_back_day_is_25_hours_long() -> None:
    # Berlin returns to CET on 2026-10-25: that day starts 22:00Z and ends 23:00Z next day
    start = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert budget_day(start, BERLIN) == "2026-10-25"
    reset = next_reset(start, BERLIN)
    assert reset - start == timedelta(hours=25)
    # 02:30 local happens twice that night; both belong to the same budget day
    assert budget_day(datetime(2026, 10, 25, 0, 30, tzinfo=UTC), BERLIN) == "2026-10-25"
    assert budget_day(datetime(2026, 10, 25, 1, 30, tzinfo=UTC), BERLIN) == "2026-10-25"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_spending_before_local_midnight_does_not_count_after_it(make_bot, slack) -> None:
    clock = Clock(datetime(2026, 3, 29, 21, 50, tzinfo=UTC))  # 23:50 CEST on the 29th
    bot = await make_bot(clock=clock, sora_timezone="Europe/Berlin", sora_daily_budget_usd="1.00", sim_seconds=600)
    assert "Got it" in (await bot.slash("-d 8 before midnight")).json()["text"]
    assert "$0.20 left" in (await bot.slash("-d 8 still the same day")).json()["text"]
    budget = (await bot.slash("budget")).json()["text"]
    assert "Resets at 00:00 Europe/Berlin, in 10 min" in budget
    clock.now = datetime(2026, 3, 29, 22, 0, 1, tzinfo=UTC)  # 00:00:01 CEST on the 30th
    assert "Got it" in (await bot.slash("-d 8 after midnight")).json()["text"]
    jobs = json.loads((await bot.deps.db.fetchall("SELECT json_group_array(budget_day) FROM jobs"))[0][0])
    assert sorted(jobs) == ["2026-03-29", "2026-03-30"]
