"""The polling schedule on a simulated clock: status calls per job and how late the video is seen.

The provider here behaves like the fakes: the first poll says queued (progress 0), later
polls report int(100 * elapsed / length) or, for providers like Veo, no progress at all.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from bot.catalog import build_catalog
from bot.deps import Timing
from bot.lifecycle.schedule import PollTrack, allowed_lateness, next_poll_delay

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SUBMIT_AFTER_S = 0.3
NAIVE_S = 5.0


def _job(**kw: object) -> SimpleNamespace:
    values: dict[str, object] = {"created_at": T0, "stall_notified": False, "progress": None, "last_progress_at": None}
    values.update(kw)
    values.setdefault("started_at", values["created_at"])  # Job.started_at: not a long video's segment
    return SimpleNamespace(**values)


def _simulate(
    length_s: float, *, progress: bool = True, queue_s: float = 0.0, min_render_s: float = 0.0,
    timing: Timing | None = None, seed: int = 0,
) -> tuple[int, float, list[float]]:
    """(status calls, lateness s, poll times) for one job ending at submit + queue + length."""
    timing = timing or Timing()
    rng = random.Random(seed)
    job, track = _job(), PollTrack()
    start = SUBMIT_AFTER_S + queue_s
    finish = start + length_s
    t, times = SUBMIT_AFTER_S, []
    while True:
        t += next_poll_delay(timing, job, T0 + timedelta(seconds=t), track, min_render_s=min_render_s, rng=rng)  # type: ignore[arg-type]
        times.append(t)
        if t >= finish:
            return len(times), t - finish, times
        if len(times) == 1 or t < start:
            seen: int | None = 0
        else:
            seen = int(100 * (t - start) / length_s) if progress else None
        track.saw(T0 + timedelta(seconds=t), seen)


def _naive_calls(length_s: float) -> int:
    """A client polling every 5 s from the submit."""
    return math.ceil(length_s / NAIVE_S)


@pytest.mark.parametrize("nominal_s", [30.0, 120.0, 600.0])
@pytest.mark.parametrize("progress", [True, False])
def test_every_finish_is_seen_within_the_allowed_lateness(nominal_s: float, progress: bool) -> None:
    rng = random.Random(7)
    for trial in range(200):
        length = nominal_s * rng.uniform(0.9, 1.1)
        _, late, _ = _simulate(length, progress=progress, seed=trial)
        assert late <= allowed_lateness(Timing(), SUBMIT_AFTER_S + length), (length, late)


def test_a_two_minute_job_with_progress_costs_at_most_a_third_of_a_naive_poller() -> None:
    rng = random.Random(3)
    calls = [_simulate(120.0 * rng.uniform(0.9, 1.1), seed=k)[0] for k in range(200)]
    assert sum(calls) / len(calls) <= _naive_calls(120.0) / 3
    assert max(calls) <= 8


@pytest.mark.parametrize(("nominal_s", "most"), [(30.0, 5), (600.0, 27)])
def test_progress_keeps_short_and_long_jobs_cheap(nominal_s: float, most: int) -> None:
    rng = random.Random(4)
    calls = [_simulate(nominal_s * rng.uniform(0.9, 1.1), seed=k)[0] for k in range(200)]
    assert max(calls) <= most


def test_the_first_poll_waits_sora_poll_interval_and_no_gap_exceeds_the_cap() -> None:
    timing = Timing(poll_interval_s=5.0, max_poll_interval_s=30.0)
    for progress in (True, False):
        _, _, times = _simulate(600.0, progress=progress, timing=timing)
        assert 4.5 <= times[0] - SUBMIT_AFTER_S <= 5.0
        gaps = [b - a for a, b in zip([SUBMIT_AFTER_S, *times], times)]
        assert max(gaps) <= 30.0


def test_a_provider_queue_before_progress_starts_does_not_make_the_video_late() -> None:
    for queue_s in (3.0, 20.0, 60.0):
        for length in (30.0, 120.0):
            _, late, _ = _simulate(length, queue_s=queue_s)
            assert late <= allowed_lateness(Timing(), SUBMIT_AFTER_S + queue_s + length), (queue_s, length)


def test_a_minimum_render_time_saves_calls_without_progress_and_stays_on_time() -> None:
    without = _simulate(30.0, progress=False)
    with_min = _simulate(30.0, progress=False, min_render_s=20.0)
    assert with_min[0] < without[0]
    assert with_min[1] <= allowed_lateness(Timing(), 30.3)


def test_a_stalled_job_is_polled_half_as_often_up_to_twice_the_cap() -> None:
    timing = Timing()
    track = PollTrack()
    track.saw(T0 + timedelta(seconds=5), 0)
    now = T0 + timedelta(seconds=300)
    calm = next_poll_delay(timing, _job(), now, track, rng=random.Random(1))  # type: ignore[arg-type]
    stalled = next_poll_delay(timing, _job(stall_notified=True), now, track, rng=random.Random(1))  # type: ignore[arg-type]
    assert stalled == pytest.approx(2 * calm)
    old = T0 + timedelta(seconds=1500)
    assert next_poll_delay(timing, _job(stall_notified=True), old, track) <= 2 * timing.max_poll_interval_s  # type: ignore[arg-type]


def test_a_restarted_watcher_uses_the_progress_the_database_remembers() -> None:
    """After a restart the stored progress and when it was first seen are one observation,
    so a single new poll gives the rate and the next wait is long, not a step."""
    timing = Timing()
    job = _job(progress=20, last_progress_at=T0 + timedelta(seconds=24.3))  # 2-min job
    track = PollTrack.from_job(job)  # type: ignore[arg-type]
    track.saw(T0 + timedelta(seconds=36.3), 30)
    delay = next_poll_delay(timing, job, T0 + timedelta(seconds=36.3), track)  # type: ignore[arg-type]
    assert delay > 0.8 * allowed_lateness(timing, 36.3) * 2


def test_progress_that_goes_back_to_zero_forgets_the_old_rate() -> None:
    track = PollTrack()
    track.saw(T0 + timedelta(seconds=5), 10)
    track.saw(T0 + timedelta(seconds=10), 20)
    track.saw(T0 + timedelta(seconds=15), 0)
    assert track.first is None and track.latest is None and track.quiet_at == T0 + timedelta(seconds=15)


def test_veo_models_carry_a_documented_minimum_render_time() -> None:
    catalog = build_catalog(providers=["veo", "gateway"], gateway_models=["sora-2"], default_model=None,
                            prices_file=None, include_simulator=False)
    assert catalog.get("veo-3.1").min_render_s > 0  # type: ignore[union-attr]
    assert catalog.get("sora-2").min_render_s == 0  # type: ignore[union-attr]


def test_progress_that_stands_still_means_a_slow_render_and_polls_back_off_to_the_cap() -> None:
    timing = Timing()
    job = _job()
    track = PollTrack()
    track.saw(T0 + timedelta(seconds=5), 0)
    track.saw(T0 + timedelta(seconds=10), 40)
    track.saw(T0 + timedelta(seconds=70), 40)  # a minute without a change: under 1% a minute
    delay = next_poll_delay(timing, job, T0 + timedelta(seconds=70), track)  # type: ignore[arg-type]
    assert delay >= 0.9 * timing.max_poll_interval_s


def test_a_provider_that_calls_back_is_polled_only_as_a_safety_net() -> None:
    timing = Timing(callback_safety_poll_s=300.0)
    rng = random.Random(1)
    track = PollTrack()
    first = next_poll_delay(timing, _job(), T0, track, calls_back=True, rng=rng)
    assert first <= timing.poll_interval_s  # SORA_POLL_INTERVAL: the job is seen under way
    track.saw(T0 + timedelta(seconds=5), 0)
    for polls, progress in ((1, 40), (2, 80), (3, 90)):
        assert track.polls == polls
        delay = next_poll_delay(timing, _job(), T0 + timedelta(seconds=10 * polls), track, calls_back=True, rng=rng)
        assert 270.0 <= delay <= 300.0  # whatever the progress says: the callback tells the end
        track.saw(T0 + timedelta(seconds=10 * polls + 1), progress)
