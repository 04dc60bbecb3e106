"""Resuming after a restart: which jobs come back, and that each finishes once, never resubmitted."""

from __future__ import annotations

from pathlib import Path

from bot.models import FailureKind, JobStatus
from bot.lifecycle.poller import RESUME_POLLS_PER_S, resume_window
from bot.providers.simulator import SimulatorProvider
from storage import jobs as jobstore
from storage.sqlite import SQLiteDatabase
from storage.jobs import Limits, NewJob
from tests.botproc import wait_until

NOW = "2026-11-25T10:00:00.000000Z"
DAY = "2026-11-25"
LIMITS = Limits(user_limit_micros=50_000_000, workspace_limit_micros=None, max_unfinished_per_user=100)


def _new(n: int) -> NewJob:
    return NewJob(
        user_id="U1", team_id="T1", channel_id="C1", source="command", model="simulator",
        provider="simulator", provider_model="simulator", prompt=f"a dog {n}", duration_seconds=8,
        resolution="720p", aspect_ratio="16:9", estimate_micros=800_000,
    )


async def test_resume_loads_unfinished_jobs_and_owed_messages_not_settled_ones(tmp_path: Path) -> None:
    db = await SQLiteDatabase(tmp_path / "jobs.db").open()
    try:
        ids = [(await jobstore.reserve_and_insert(db, _new(n), limits=LIMITS, day=DAY, now=NOW))[0].id
               for n in range(5)]
        queued, running, owed, delivered, failed_quietly = ids
        await jobstore.update(db, running, expect=[JobStatus.QUEUED], now=NOW, status=JobStatus.RUNNING,
                              provider_job_id="p1", progress=40)
        for job_id in (owed, delivered, failed_quietly):
            async with db.write_txn() as conn:
                await jobstore.update_job(conn, job_id, expect=[JobStatus.QUEUED], now=NOW,
                                          set_={"status": JobStatus.FAILED, "failure_kind": FailureKind.STUCK})
                if job_id != failed_quietly:
                    await jobstore.add_delivery(conn, job_id, "failure", now=NOW)
        await jobstore.mark_delivered(db, delivered, message_ts="1.2", method="message", now=NOW)

        resumed = await jobstore.jobs_to_resume(db)
        assert {j.id for j in resumed} == {queued, running, owed}
        row = next(j for j in resumed if j.id == running)
        assert (row.status, row.provider_job_id, row.progress) == (JobStatus.RUNNING, "p1", 40)
    finally:
        await db.close()


async def test_jobs_resumed_from_their_rows_finish_once_without_a_second_submit(make_bot, slack) -> None:
    first = await make_bot(sim_seconds=1.5, sora_max_concurrent_per_user=10, sora_daily_budget_usd="20")
    for n in range(6):
        r = await first.slash(f"a heron fishing, take {n}")
        assert "Got it" in r.json()["text"]

    async def all_rendering() -> bool:
        jobs = await jobstore.list_jobs(first.deps.db)
        return len(jobs) == 6 and all(j.status in (JobStatus.SUBMITTED, JobStatus.RUNNING) for j in jobs)
    await wait_until(all_rendering, 10, "six jobs rendering")
    await first.runtime.close()  # the process stops with every job mid-render

    again = SimulatorProvider(run_seconds=1.5)
    second = await make_bot(providers={"simulator": again}, sora_max_concurrent_per_user=10, sora_daily_budget_usd="20")
    assert len(second.runtime.poller.tasks) == 6
    await second.runtime.poller.idle(timeout=20)

    jobs = await jobstore.list_jobs(second.deps.db)
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
    assert again.submits == []
    uploads = [m for m in slack.messages if m.files]
    assert len(uploads) == 6


def test_first_polls_after_a_restart_are_spread_no_faster_than_the_provider_is_paced() -> None:
    # a faster spread would only park the jobs in the pace queue, each waking twice
    assert resume_window(10_000, min_s=5, paced_per_s=10) == 1_000
    assert resume_window(10_000, min_s=5, paced_per_s=500) == 10_000 / RESUME_POLLS_PER_S
    assert resume_window(10_000, min_s=5, paced_per_s=None) == 10_000 / RESUME_POLLS_PER_S  # the simulator
    assert resume_window(12, min_s=5, paced_per_s=10) == 5  # a few jobs: soon
