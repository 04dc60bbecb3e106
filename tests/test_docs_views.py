"""docs/*.json show what the bot's views look like; they must match what the code builds.

Regenerate after changing a builder: `UPDATE_DOCS=1 pytest tests/test_docs_views.py`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.slack import messages
from bot.surfaces import request_modal as rm
from bot.models import FailureKind, Job, JobStatus

DOCS = Path(__file__).resolve().parent.parent / "docs"
WHEN = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def _job(**kw) -> Job:
    base = dict(
        id="k7f3q2mz", user_id="U0ALICE", team_id="T1", channel_id="C0VIDEOS", thread_ts="1764079200.000100",
        status_ts="1764079200.000100", source="command", model="veo-3.1", provider="veo",
        prompt="a golden retriever running through autumn leaves", duration_seconds=8, resolution="720p",
        aspect_ratio="16:9", status=JobStatus.RUNNING, failure_kind=None, failure_detail=None, progress=40,
        provider_job_id="models/veo/operations/abc", estimate_micros=3_200_000, cost_micros=0, video_url=None,
        response_url=None, created_at=WHEN, submit_started_at=WHEN, last_progress_at=WHEN, stall_notified=False,
        finished_at=None, budget_day="2026-11-25",
    )
    base.update(kw)
    return Job(**base)


def _check(name: str, payload: dict) -> None:
    path = DOCS / name
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_DOCS"):
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{name} is stale: rerun with UPDATE_DOCS=1"


def test_request_message_examples() -> None:
    tz = ZoneInfo("Europe/Berlin")
    _, running = messages.request_message(_job(), tz=tz)
    _, failed = messages.request_message(
        _job(status=JobStatus.FAILED, failure_kind=FailureKind.STUCK, progress=99), tz=tz)
    _check("request-message-running.json", {"blocks": running})
    _check("request-message-failed.json", {"blocks": failed})


def test_compare_and_approval_examples() -> None:
    from datetime import timedelta

    done = WHEN + timedelta(seconds=64)
    parts = [
        _job(id="a2b3c4d5", model="sora-2", provider="gateway", estimate_micros=800_000, cost_micros=800_000,
             status=JobStatus.SUCCEEDED, progress=100, finished_at=done, compare_id="q8r9s2t3"),
        _job(id="e6f7g8h9", model="veo-3.1-fast", estimate_micros=1_200_000, progress=55, compare_id="q8r9s2t3"),
        _job(id="j2k3m4n5", model="gen4.5", provider="runway", estimate_micros=960_000, status=JobStatus.FAILED,
             failure_kind=FailureKind.PROVIDER_UNAVAILABLE, progress=None, finished_at=WHEN + timedelta(seconds=5),
             compare_id="q8r9s2t3"),
    ]
    _, blocks = messages.compare_message("q8r9s2t3", parts)
    _check("compare-message.json", {"blocks": blocks})
    _, dm = messages.approval_request_message(
        "k7f3q2mz", [_job(model="sora-2-pro", provider="gateway", resolution="1024p", duration_seconds=20,
                          status=JobStatus.QUEUED, estimate_micros=10_000_000)],
        amount_micros=10_000_000, threshold_micros=5_000_000, expires_at=WHEN + timedelta(hours=24),
        tz=ZoneInfo("Europe/Berlin"))
    _check("approval-request.json", {"blocks": dm})


def test_long_video_examples() -> None:
    from datetime import timedelta

    from slack_sdk.models.blocks import Block

    def seg(i: int, **kw) -> Job:
        values = dict(id=f"s{i}x4y5z6", model="gen4.5", provider="runway", duration_seconds=10,
                      estimate_micros=1_200_000, compare_id="v3w4x5y6", segment_index=i,
                      after_job=f"s{i - 1}x4y5z6" if i else None, continuation="last_frame" if i else "first",
                      status=JobStatus.QUEUED, progress=None,
                      prompt="a lighthouse keeper climbs the stairs" if i == 0 else "the lamp turns on at dusk")
        values.update(kw)
        return _job(**values)

    done = dict(status=JobStatus.SUCCEEDED, cost_micros=1_200_000, progress=100, finished_at=WHEN + timedelta(minutes=2))
    _, running = messages.series_message("v3w4x5y6", [seg(0, **done), seg(1, status=JobStatus.RUNNING, progress=35),
                                                      seg(2)])
    _, stopped = messages.series_message("v3w4x5y6", [
        seg(0, **done), seg(1, status=JobStatus.FAILED, failure_kind=FailureKind.GENERATION_FAILED, attempts=1,
                           finished_at=WHEN + timedelta(minutes=5)),
        seg(2, status=JobStatus.CANCELLED, failure_kind=FailureKind.CANCELLED)])
    for blocks in (running, stopped):  # what Slack takes, by slack_sdk's own Block Kit models
        for block in Block.parse_all(blocks):
            block.validate_json()
    _check("series-message-running.json", {"blocks": running})
    _check("series-message-stopped.json", {"blocks": stopped})


def test_edit_modal_example() -> None:
    _check("edit-modal.json", messages.edit_modal(_job(status=JobStatus.FAILED, failure_kind=FailureKind.BLOCKED_INPUT)))


async def test_request_modal_example(make_bot) -> None:
    bot = await make_bot()
    view = await rm.build_view(bot.deps, "U0ALICE", rm.defaults(bot.deps, "a paper boat in the rain"), rm.Target())
    _check("request-modal.json", view)
