"""A job already accepted and submitted to the simulator, for tests that drive the flow's
steps by hand (no poller, no Slack)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.app import create_runtime
from bot.config import Settings
from bot.deps import Deps
from bot.lifecycle.flow import _spec_for, accept_request
from bot.models import Job, JobStatus
from bot.parsing import JobRequest
from bot.providers.simulator import SimulatorProvider
from storage import jobs as jobstore
from tests.conftest import FAST


@asynccontextmanager
async def submitted_job(db_path: Path, prompt: str) -> AsyncIterator[tuple[Deps, Job]]:
    sim = SimulatorProvider(run_seconds=0.01)
    settings_ = Settings(_env_file=None, slack_bot_token="xoxb-x", slack_api_url="http://127.0.0.1:9/api/",
                         sora_db_path=db_path)
    runtime = await create_runtime(settings_, providers={"simulator": sim}, timing=FAST)
    deps = runtime.deps
    deps.poller = None
    try:
        request = JobRequest.model_validate(
            {"prompt": prompt, "model": "simulator", "duration_s": 8, "resolution": "720p", "aspect_ratio": "16:9"},
            context={"catalog": deps.catalog},
        )
        job, _ = await accept_request(deps, request, user_id="U1", team_id="T", channel_id="C1", source="command")
        provider_id = await sim.submit(await _spec_for(deps, job))
        await jobstore.update(deps.db, job.id, expect=[JobStatus.QUEUED], now="2026-01-01T00:00:00.000000Z",
                              status=JobStatus.SUBMITTED, provider_job_id=provider_id)
        yield deps, await jobstore.must_get_job(deps.db, job.id)
    finally:
        await runtime.close()
