"""Spend over a range of budget days, read from the ledger: per user, model and provider, per day.

What the money columns mean (every amount comes from the `ledger` row of a job whose budget
day is in the range, so the report always agrees with the budgets to the micro-dollar):

- charged: what was charged, refunded or not: `charged_micros` of rows in state 'charged' or
  'refunded' (a refund keeps the row's `charged_micros`). It equals the sum of the range's
  'charge' events in `ledger_events`.
- refunded: `charged_micros` of rows in state 'refunded'; equals the sum of 'refund' events.
- net = charged - refunded: rows in state 'charged', the "spent" that budgets, `usage` and
  the workspace cap count.

Reservations of unfinished jobs are none of these: they are not money spent yet. A refund
counts on the budget day of the job it refunds, as the budgets do, not on the day it was made.
Jobs and failures are counted from `jobs` by the same budget day; a failure is a job with a
failure kind (a cancel included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from storage.db import Conn


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One (user, model, provider), or a roll-up of several (then the other keys are '')."""

    user_id: str
    model: str
    provider: str
    charged_micros: int = 0
    refunded_micros: int = 0
    jobs: int = 0
    failures: Mapping[str, int] = field(default_factory=dict)  # failure kind -> jobs

    @property
    def net_micros(self) -> int:
        return self.charged_micros - self.refunded_micros

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


@dataclass(frozen=True, slots=True)
class SpendReport:
    first_day: str  # budget days, YYYY-MM-DD, both included
    last_day: str
    rows: list[SpendRow]  # by user, model, provider
    daily: dict[str, dict[str, int]]  # every day of the range -> model -> net micros (non-zero)

    @property
    def days(self) -> list[str]:
        return list(self.daily)

    @property
    def models(self) -> list[str]:
        """Every model with a row in the range, sorted: the chart's colours follow this order."""
        return sorted({r.model for r in self.rows})

    def total(self) -> SpendRow:
        return _sum("", "", "", self.rows)

    def by(self, key: str) -> list[SpendRow]:
        """Rows rolled up by 'user_id', 'model' or 'provider', biggest net spend first."""
        keyed: dict[str, list[SpendRow]] = {}
        for r in self.rows:
            keyed.setdefault(getattr(r, key), []).append(r)
        out = [_sum(**{"user_id": "", "model": "", "provider": "", key: k}, rows=rs) for k, rs in keyed.items()]
        return sorted(out, key=lambda r: (-r.net_micros, -r.jobs, getattr(r, key)))

    def top_users(self, n: int = 10) -> list[SpendRow]:
        """The `n` users with the biggest net spend (only those who spent something)."""
        return [r for r in self.by("user_id") if r.net_micros > 0][:n]

    def day_totals(self) -> dict[str, int]:
        return {day: sum(models.values()) for day, models in self.daily.items()}


def _sum(user_id: str, model: str, provider: str, rows: Iterable[SpendRow]) -> SpendRow:
    charged = refunded = jobs = 0
    failures: dict[str, int] = {}
    for r in rows:
        charged += r.charged_micros
        refunded += r.refunded_micros
        jobs += r.jobs
        for kind, n in r.failures.items():
            failures[kind] = failures.get(kind, 0) + n
    return SpendRow(user_id, model, provider, charged, refunded, jobs, failures)


def days_between(first_day: str, last_day: str) -> list[str]:
    """Every budget day from `first_day` to `last_day`, both included."""
    first, last = date.fromisoformat(first_day), date.fromisoformat(last_day)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


# Money by budget day and (user, model, provider). PostgreSQL's SUM of BIGINT is NUMERIC:
# int() below takes it exactly, as Decimal, never through a float.
_MONEY_SQL = """
    SELECT l.budget_day, j.user_id, j.model, j.provider,
           COALESCE(SUM(CASE WHEN l.state IN ('charged', 'refunded') THEN l.charged_micros ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN l.state = 'refunded' THEN l.charged_micros ELSE 0 END), 0)
    FROM ledger l JOIN jobs j ON j.id = l.job_id
    WHERE l.budget_day BETWEEN ? AND ?
    GROUP BY l.budget_day, j.user_id, j.model, j.provider
"""

_Key = tuple[str, str, str]  # user, model, provider

_JOBS_SQL = """
    SELECT user_id, model, provider, failure_kind, COUNT(*)
    FROM jobs WHERE budget_day BETWEEN ? AND ?
    GROUP BY user_id, model, provider, failure_kind
"""


async def spend_report(conn: Conn, first_day: str, last_day: str) -> SpendReport:
    """The range's money, jobs and failures; run it in one read (`Database.run_read`) so the
    money and the job counts come from one snapshot."""
    money: dict[_Key, list[int]] = {}
    daily: dict[str, dict[str, int]] = {day: {} for day in days_between(first_day, last_day)}
    for day, user, model, provider, charged, refunded in await conn.fetchall(_MONEY_SQL, (first_day, last_day)):
        charged, refunded = int(charged), int(refunded)
        sums = money.setdefault((user, model, provider), [0, 0])
        sums[0] += charged
        sums[1] += refunded
        if charged - refunded:  # a day's models with nothing spent would only be noise
            per_model = daily[day]
            per_model[model] = per_model.get(model, 0) + charged - refunded
    counts: dict[_Key, list[int]] = {}
    failures: dict[_Key, dict[str, int]] = {}
    for user, model, provider, kind, n in await conn.fetchall(_JOBS_SQL, (first_day, last_day)):
        key = (user, model, provider)
        counts.setdefault(key, [0])[0] += int(n)
        if kind is not None:
            failures.setdefault(key, {})[kind] = int(n)
    rows = [
        SpendRow(*key, *money.get(key, (0, 0)), counts.get(key, [0])[0], failures.get(key, {}))
        for key in sorted(money.keys() | counts.keys())
    ]
    return SpendReport(first_day, last_day, rows, daily)


async def net_by_day(conn: Conn, first_day: str, last_day: str) -> dict[str, int]:
    """Net spend (rows in state 'charged') of every day in the range, days without any as 0."""
    rows = await conn.fetchall(
        "SELECT budget_day, COALESCE(SUM(charged_micros), 0) FROM ledger"
        " WHERE budget_day BETWEEN ? AND ? AND state = 'charged' GROUP BY budget_day",
        (first_day, last_day),
    )
    found = {str(r[0]): int(r[1]) for r in rows}
    return {day: found.get(day, 0) for day in days_between(first_day, last_day)}

