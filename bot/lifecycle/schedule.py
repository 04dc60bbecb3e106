"""When to ask a provider about a job next: few status calls, and the video on time.

The aim: the video reaches the thread within max(`lateness_floor_s`, 10% of the job's age)
of the provider finishing, with as few status calls as that allows. A schedule that only
knows the job's age cannot do both (it must poll at least every 10% of the age), so this
one estimates the earliest moment the job could be done and sleeps until then:

* from the provider's progress, when it reports some: progress is assumed to grow roughly
  linearly once it has started, so two of our own observations (p1 at t1, p2 at t2, both
  whole percentages) bound the rate from above by (p2 + 1 - p1) / (t2 - t1), and the job
  cannot end before (99 - p2) / rate after t2;
* else from the model's minimum render time (`ModelSpec.min_render_s`), counted from the
  job's creation.

From that moment (and whenever nothing is known) it steps by 80% of the allowed lateness,
so a finish between two polls is seen in time. `SORA_POLL_INTERVAL` is the first poll's
delay, as the contract says; every delay is capped at `max_poll_interval_s`, so progress
in the thread never goes staler than that; a job reported as stalled is polled half as
often; jitter only ever shortens a delay, so it can't make a video late.

Provider progress that is not linear (gateways that fake 10 -> 50 -> 100, renders that
speed up at the end) can make a video later than the target, never later than the cap.

A provider that calls back (bot/surfaces/callbacks.py: a signed webhook, or the callback URL we gave
it) says when the job ends, and its callback wakes the job at once; then, after the first
poll (at `SORA_POLL_INTERVAL`, which shows the job is under way), polling is only the safety
net for a callback that never comes, every `callback_safety_poll_s`: two status calls per
job in all. Progress in the thread then stays where the first poll left it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.deps import Timing
    from bot.models import Job

# The video may reach the thread this share of the job's age after the provider finished.
LATENESS_SHARE = 0.1
# Step by this much of the allowed lateness near a possible finish: the rest absorbs the
# time a status call and the download take.
STEP_SHARE = 0.8
# With a single progress observation the rate is guessed from when the job started to
# show progress; that guess is wrong by the provider's queue time, so only this share of
# it is slept before a second observation pins the rate down.
ONE_POINT_SHARE = 0.25


@dataclass(slots=True)
class PollTrack:
    """What one watcher has seen of its job, in memory: enough to estimate the rate.

    `first` is the first observation of a whole percentage >= 1 and `latest` the last poll
    that reported progress; `quiet_at` is the last poll that showed no progress (the render
    had not visibly started then).
    """

    polls: int = 0
    first: tuple[datetime, int] | None = None
    latest: tuple[datetime, int] | None = None
    quiet_at: datetime | None = None

    @classmethod
    def from_job(cls, job: "Job") -> "PollTrack":
        """Start from what the database remembers: the progress and when it was first seen."""
        track = cls()
        if job.progress is not None and job.progress >= 1 and job.last_progress_at is not None:
            track.first = track.latest = (job.last_progress_at, job.progress)
        return track

    def saw(self, at: datetime, progress: int | None) -> None:
        """Record one successful status call's progress (None: the provider gave none)."""
        self.polls += 1
        if progress is None:
            if self.first is None:
                self.quiet_at = at
            return
        if progress < 1:
            # not started, or started over: what came before says nothing about this render
            self.first = self.latest = None
            self.quiet_at = at
            return
        if self.first is None or progress < self.first[1]:
            self.first = self.latest = (at, progress)
        else:
            self.latest = (at, progress)


def allowed_lateness(timing: "Timing", age_s: float) -> float:
    """How late a video that finishes at this age may reach the thread."""
    return max(timing.lateness_floor_s, LATENESS_SHARE * age_s)


def earliest_finish_in(
    job: "Job", track: PollTrack, now: datetime, *, min_render_s: float = 0.0
) -> tuple[float, float]:
    """(bound, guess): seconds from `now` before which the job cannot be done, and a softer
    guess from a single progress observation (0 when nothing is known)."""
    bound = min_render_s - (now - job.started_at).total_seconds()
    guess = 0.0
    first, latest = track.first, track.latest
    if first is not None and latest is not None:
        (t1, p1), (t2, p2) = first, latest
        span = (t2 - t1).total_seconds()
        if span > 0:
            # progress that has not moved for a while bounds the rate too: it is slow
            rate = (p2 + 1 - p1) / span  # percent per second, at most
            bound = max(bound, (99 - p2) / rate - (now - t2).total_seconds())
        else:
            # one value so far: guess the rate from when progress started to show
            since = track.quiet_at or job.started_at
            elapsed = (t1 - since).total_seconds()
            if elapsed > 0:
                guess = ONE_POINT_SHARE * (elapsed * (99 - p1) / (p1 + 1) - (now - t1).total_seconds())
    return max(0.0, bound), max(0.0, guess)


def next_poll_delay(
    timing: "Timing", job: "Job", now: datetime, track: PollTrack, *, min_render_s: float = 0.0,
    calls_back: bool = False, rng: random.Random | None = None,
) -> float:
    """Seconds until the next status call of `job` (see the module's docstring).

    Pure apart from the jitter (drawn from `rng`, else the module-level `random`), so it
    can be driven by a simulated clock.
    """
    if calls_back and track.polls > 0:
        return timing.callback_safety_poll_s * (rng or random).uniform(0.9, 1.0)
    if track.polls == 0:
        delay = timing.poll_interval_s
    else:
        age = max(0.0, (now - job.started_at).total_seconds())
        step = STEP_SHARE * allowed_lateness(timing, age)
        bound, guess = earliest_finish_in(job, track, now, min_render_s=min_render_s)
        # the job can't end before `bound`, so a poll one step after it still sees any
        # finish in time
        delay = max(bound + step, guess)
    delay = min(delay, timing.max_poll_interval_s)
    if job.stall_notified:
        delay = min(timing.max_poll_interval_s * 2, delay * 2)
    # downwards only: spreads jobs started together without making any of them late
    return delay * (rng or random).uniform(0.9, 1.0)
