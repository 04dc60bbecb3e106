"""Progress edits are bounded per job and across all jobs; state changes always go out."""

from __future__ import annotations

from bot.lifecycle.throttle import EditThrottle


def test_routine_edits_respect_the_per_job_interval() -> None:
    throttle = EditThrottle(per_job_s=60, per_minute=100)
    assert throttle.allow("a")
    assert not throttle.allow("a")
    assert throttle.allow("b")


def test_a_thousand_jobs_share_one_budget_of_edits() -> None:
    throttle = EditThrottle(per_job_s=0, per_minute=40)
    allowed = sum(throttle.allow(f"job{i}") for i in range(1000))
    assert allowed == 40


def test_forced_edits_are_never_dropped() -> None:
    throttle = EditThrottle(per_job_s=60, per_minute=1)
    assert throttle.allow("a")
    assert all(throttle.allow("a", force=True) for _ in range(5))
    assert not throttle.allow("b")
