"""Fuzzing provider status JSON: every parser, then the job flow fed random statuses.

No input may raise anything but a ProviderError, and no job may end in an impossible
state (a failed job without a kind, money charged for a failure, progress out of range).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import ProviderError
from bot.lifecycle.flow import _apply_status
from bot.models import FailureKind, JobStatus, ProviderErrorInfo, ProviderState, ProviderStatus
from bot.providers import fal, gateway, kling, openai_videos, runway, seedance, veo
from bot.lifecycle.throttle import EditThrottle
from storage import jobs as jobstore
from tests.flow_driver import submitted_job

WORDS = st.sampled_from([
    "queued", "pending", "in_progress", "processing", "running", "completed", "succeeded", "succeed",
    "SUCCESS", "FAILURE", "failed", "cancelled", "CANCELED", "expired", "UNKNOWN", "NOT_START",
    "SUBMITTED", "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "PENDING", "THROTTLED", "RUNNING",
    "SUCCEEDED", "FAILED", "done", "", "💥",
])
KEYS = st.sampled_from([
    "id", "task_id", "status", "task_status", "progress", "url", "video_url", "result_url", "error",
    "code", "message", "data", "output", "failure", "failureCode", "done", "response", "content",
    "task_result", "videos", "video", "uri", "metadata", "created_at", "expires_at", "fail_reason",
    "generateVideoResponse", "generatedSamples", "raiMediaFilteredReasons", "detail", "seconds",
])
LEAVES = (st.none() | st.booleans() | st.integers(min_value=-10**20, max_value=10**20)
          | st.floats(allow_nan=True) | WORDS | st.text(max_size=20)
          | st.sampled_from(["http://127.0.0.1/v.mp4", "40%", "100%", "moderation_blocked", "SAFETY.INPUT.TEXT"]))
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=6),
                    max_leaves=25)

def _veo_status(body: object) -> object:
    return veo.parse_operation(body)[0]  # (status, inline video bytes)


PARSERS = [
    gateway.parse_generation, openai_videos.parse_video, runway.parse_task, _veo_status,
    kling.parse_task, seedance.parse_task, fal.parse_queue_status, fal.parse_result,
]


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=JSON, which=st.integers(min_value=0, max_value=len(PARSERS) - 1))
def test_every_parser_returns_a_status_or_a_provider_error(body, which) -> None:
    try:
        status = PARSERS[which](body)
    except ProviderError:
        return
    assert isinstance(status, ProviderStatus) and isinstance(status.state, ProviderState)
    if status.progress is not None:
        assert 0 <= status.progress <= 100
    if status.state is ProviderState.FAILED:
        assert status.error is not None and isinstance(status.error.kind, FailureKind)


STATUSES = st.builds(
    ProviderStatus,
    state=st.sampled_from(list(ProviderState)),
    progress=st.none() | st.integers(min_value=-1000, max_value=1000),
    video_url=st.none() | st.just("") | st.just("simulator://video/x.mp4"),
    error=st.none() | st.builds(ProviderErrorInfo, kind=st.sampled_from(list(FailureKind)), detail=st.text(max_size=10)),
    retry_after_s=st.none() | st.floats(min_value=0, max_value=1),
    cost_micros=st.none() | st.integers(min_value=-5, max_value=5_000_000),
)

LEDGER_FOR = {
    JobStatus.QUEUED: "reserved", JobStatus.SUBMITTED: "reserved", JobStatus.RUNNING: "reserved",
    JobStatus.SUCCEEDED: "charged", JobStatus.FAILED: "released", JobStatus.CANCELLED: "released",
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(STATUSES, min_size=1, max_size=6))
def test_random_status_sequences_never_leave_a_job_in_an_impossible_state(sequence) -> None:
    asyncio.run(_drive(sequence))


async def _drive(sequence: list[ProviderStatus]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with submitted_job(Path(tmp) / "f.db", "fuzz") as (deps, job):
            throttle = EditThrottle(per_job_s=0)
            for status in sequence:
                if job.status.terminal:
                    break
                job = await _apply_status(deps, job, status, throttle)
            job = await jobstore.get_job(deps.db, job.id)
            assert job.status in JobStatus
            if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                assert job.failure_kind is not None and job.cost_micros == 0
            if job.status is JobStatus.SUCCEEDED:
                assert 0 < job.cost_micros <= job.estimate_micros and job.video_url
            if job.progress is not None:
                assert 0 <= job.progress <= 100
            row = await deps.db.fetchone("SELECT state FROM ledger WHERE job_id = ?", (job.id,))
            assert row[0] == LEDGER_FOR[job.status]
            owed = await deps.db.fetchone("SELECT COUNT(*) FROM deliveries WHERE job_id = ?", (job.id,))
            assert owed[0] == (1 if job.status.terminal else 0)
