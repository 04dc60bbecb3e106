"""Random sequences of ledger operations against real SQLite: the invariants after every step."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bot.errors import BudgetExceeded
from bot.models import JobStatus
from storage import jobs as jobstore
from storage import ledger
from storage.sqlite import SQLiteDatabase
from storage.jobs import Limits, NewJob, TooManyJobs

USERS = ["UA", "UB", "UC"]
NOW = "2026-03-29T00:00:00.000000Z"


class LedgerMachine(RuleBasedStateMachine):
    """A model of what each reservation should be, checked against the database."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.db = self.loop.run_until_complete(SQLiteDatabase(Path(self.tmp.name) / "l.db").open())
        self.day_index = 0
        self.default_limit = 3_000_000
        self.workspace_limit: int | None = 6_000_000
        self.overrides: dict[str, int] = {}
        self.entries: dict[str, dict] = {}  # job id -> {user, day, amount, state}

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @property
    def day(self) -> str:
        return f"2026-03-{29 + self.day_index:02d}"

    def limit_of(self, user: str) -> int:
        return self.overrides.get(user, self.default_limit)

    def used(self, *, user: str | None = None, day: str | None = None) -> int:
        return sum(
            e["amount"] for e in self.entries.values()
            if e["state"] in ("reserved", "charged") and e["day"] == (day or self.day)
            and (user is None or e["user"] == user)
        )

    @rule(user=st.sampled_from(USERS), amount=st.integers(min_value=0, max_value=2_500_000))
    def reserve(self, user: str, amount: int) -> None:
        new = NewJob(user_id=user, team_id="T", channel_id="C", source="command", model="m",
                     provider="simulator", provider_model="m", prompt="p", duration_seconds=4,
                     resolution="720p", aspect_ratio="16:9", estimate_micros=amount)
        limits = Limits(self.default_limit, self.workspace_limit, max_unfinished_per_user=1000)
        fits_user = self.used(user=user) + amount <= self.limit_of(user)
        fits_ws = self.workspace_limit is None or self.used() + amount <= self.workspace_limit
        try:
            job, created = self.run(jobstore.reserve_and_insert(self.db, new, limits=limits, day=self.day, now=NOW))
        except BudgetExceeded:
            assert not (fits_user and fits_ws), "refused a request that fits"
            return
        except TooManyJobs:  # pragma: no cover - the cap is set out of reach
            raise
        assert created and fits_user and fits_ws, "accepted a request that does not fit"
        self.entries[job.id] = {"user": user, "day": self.day, "amount": amount, "state": "reserved"}

    def _pick(self, state: str, data: st.DataObject) -> str | None:
        ids = [j for j, e in self.entries.items() if e["state"] == state]  # insertion order: replayable
        return data.draw(st.sampled_from(ids)) if ids else None

    @precondition(lambda self: any(e["state"] == "reserved" for e in self.entries.values()))
    @rule(data=st.data(), fraction=st.sampled_from([1.0, 0.5, 0.0]))
    def charge(self, data: st.DataObject, fraction: float) -> None:
        job_id = self._pick("reserved", data)
        entry = self.entries[job_id]
        amount = int(entry["amount"] * fraction)  # providers may report less than the estimate

        async def go() -> bool:
            async with self.db.write_txn() as conn:
                return await ledger.charge(conn, job_id, amount, NOW)

        assert self.run(go())
        entry.update(state="charged", amount=amount)

    @precondition(lambda self: any(e["state"] == "reserved" for e in self.entries.values()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        job_id = self._pick("reserved", data)

        async def go() -> bool:
            async with self.db.write_txn() as conn:
                return await ledger.release(conn, job_id, NOW)

        assert self.run(go())
        self.entries[job_id]["state"] = "released"

    @precondition(lambda self: any(e["state"] == "charged" for e in self.entries.values()))
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        job_id = self._pick("charged", data)

        async def go() -> int | None:
            async with self.db.write_txn() as conn:
                first = await ledger.refund(conn, job_id, NOW)
                second = await ledger.refund(conn, job_id, NOW)  # never twice
                assert second is None
                return first

        assert self.run(go()) == self.entries[job_id]["amount"]
        self.entries[job_id]["state"] = "refunded"

    @rule(data=st.data())
    def settled_entries_never_move(self, data: st.DataObject) -> None:
        ids = [j for j, e in self.entries.items() if e["state"] in ("released", "refunded")]
        if not ids:
            return
        job_id = data.draw(st.sampled_from(ids))

        async def go() -> tuple[bool, bool]:
            async with self.db.write_txn() as conn:
                return await ledger.charge(conn, job_id, 1, NOW), await ledger.release(conn, job_id, NOW)

        assert self.run(go()) == (False, False)

    @rule(user=st.sampled_from(USERS), limit=st.integers(min_value=0, max_value=5_000_000) | st.none())
    def change_user_limit(self, user: str, limit: int | None) -> None:
        async def go() -> None:
            async with self.db.write_txn() as conn:
                await ledger.set_user_limit(conn, user, limit, at=NOW, by="UADMIN")

        self.run(go())
        if limit is None:
            self.overrides.pop(user, None)
        else:
            self.overrides[user] = limit

    @rule(limit=st.integers(min_value=0, max_value=8_000_000) | st.none())
    def change_workspace_cap(self, limit: int | None) -> None:
        self.workspace_limit = limit

    @rule()
    def day_rollover(self) -> None:
        self.day_index = min(self.day_index + 1, 2)

    @invariant()
    def database_matches_the_model(self) -> None:
        for day in {e["day"] for e in self.entries.values()}:
            rows = {r.user_id: r for r in self.run(ledger.usage_for_day(self.db, day, self.default_limit))}
            for user in USERS:
                spent = sum(e["amount"] for e in self.entries.values()
                            if e["user"] == user and e["day"] == day and e["state"] == "charged")
                reserved = sum(e["amount"] for e in self.entries.values()
                               if e["user"] == user and e["day"] == day and e["state"] == "reserved")
                row = rows.get(user)
                assert (row.spent_micros if row else 0) == spent
                assert (row.reserved_micros if row else 0) == reserved

    @invariant()
    def running_day_totals_match_the_ledger(self) -> None:
        # ledger_day_totals (kept by triggers) must equal a full sum, for every day touched
        for day in {e["day"] for e in self.entries.values()} | {self.day}:
            spent = sum(e["amount"] for e in self.entries.values() if e["day"] == day and e["state"] == "charged")
            reserved = sum(e["amount"] for e in self.entries.values() if e["day"] == day and e["state"] == "reserved")

            async def totals() -> ledger.Totals:
                async with self.db.reading() as conn:
                    return await ledger.workspace_totals(conn, day)

            assert self.run(totals()) == ledger.Totals(spent, reserved)

    @invariant()
    def jobs_and_ledger_stay_apart_from_states(self) -> None:
        # every reservation belongs to exactly one stored job
        count = self.run(self.db.fetchone("SELECT COUNT(*) FROM jobs WHERE status = ?", (JobStatus.QUEUED.value,)))
        assert int(count[0]) == len(self.entries)

    def teardown(self) -> None:
        self.run(self.db.close())
        self.loop.close()
        self.tmp.cleanup()


LedgerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestLedger = LedgerMachine.TestCase
