"""A poll that only moves the percentage commits nothing unless the status message shows it."""

from __future__ import annotations

from pathlib import Path

from bot import slack_io
from bot.app import create_runtime
from bot.config import Settings
from bot.flow import _apply_status, _spec_for, accept_request
from bot.models import JobStatus, ProviderState, ProviderStatus
from bot.parsing import JobRequest
from bot.providers.simulator import SimulatorProvider
from bot.throttle import EditThrottle
from storage import jobs as jobstore
from tests.conftest import FAST


async def test_progress_is_stored_only_with_an_edit_and_state_changes_always(tmp_path: Path, monkeypatch) -> None:
    sim = SimulatorProvider(run_seconds=0.01)
    settings_ = Settings(_env_file=None, slack_bot_token="xoxb-x", slack_api_url="http://127.0.0.1:9/api/",
                         sora_db_path=tmp_path / "p.db")
    runtime = await create_runtime(settings_, providers={"simulator": sim}, timing=FAST)
    deps = runtime.deps
    deps.poller = None
    edits: list[int | None] = []

    async def record_edit(deps_, job, **kw) -> None:  # type: ignore[no-untyped-def]
        edits.append(job.progress)

    monkeypatch.setattr(slack_io, "update_status", record_edit)
    try:
        request = JobRequest.model_validate(
            {"prompt": "p", "model": "simulator", "duration_s": 8, "resolution": "720p", "aspect_ratio": "16:9"},
            context={"catalog": deps.catalog},
        )
        job, _ = await accept_request(deps, request, user_id="U1", team_id="T", channel_id="C1", source="command")
        provider_id = await sim.submit(_spec_for(deps, job))
        await jobstore.update(deps.db, job.id, expect=[JobStatus.QUEUED], now="2026-01-01T00:00:00.000000Z",
                              status=JobStatus.SUBMITTED, provider_job_id=provider_id)
        job = await jobstore.get_job(deps.db, job.id)
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
    finally:
        await runtime.close()
