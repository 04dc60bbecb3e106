"""A poll that only moves the percentage commits nothing unless the status message shows it."""

from __future__ import annotations

from pathlib import Path

from bot.slack import slack_io
from bot.lifecycle.flow import _apply_status
from bot.models import JobStatus, ProviderState, ProviderStatus
from bot.lifecycle.throttle import EditThrottle
from storage import jobs as jobstore
from tests.flow_driver import submitted_job


async def test_progress_is_stored_only_with_an_edit_and_state_changes_always(tmp_path: Path, monkeypatch) -> None:
    edits: list[int | None] = []

    async def record_edit(deps_, job, **kw) -> None:  # type: ignore[no-untyped-def]
        edits.append(job.progress)

    monkeypatch.setattr(slack_io, "update_status", record_edit)
    async with submitted_job(tmp_path / "p.db", "p") as (deps, job):
        throttle = EditThrottle(per_job_s=3600)  # one routine edit per job, then none

        job = await _apply_status(deps, job, ProviderStatus(state=ProviderState.RUNNING, progress=10), throttle)
        stored = await jobstore.get_job(deps.db, job.id)
        assert stored.status is JobStatus.RUNNING and stored.progress == 10 and edits == [10]

        job = await _apply_status(deps, job, ProviderStatus(state=ProviderState.RUNNING, progress=20), throttle)
        stored = await jobstore.get_job(deps.db, job.id)
        assert job.progress == 20 and job.last_progress_at is not None  # the watcher knows
        assert stored.progress == 10 and edits == [10]  # no edit shows it, so nothing was written

        job = await _apply_status(
            deps, job, ProviderStatus(state=ProviderState.SUCCEEDED, video_url="simulator://video/x.mp4"), throttle
        )
        stored = await jobstore.get_job(deps.db, job.id)
        assert stored.status is JobStatus.SUCCEEDED and stored.progress == 100
