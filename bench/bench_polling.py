"""Polling cost: provider status calls per finished job, and how late the video arrives.

Two ways, for jobs that render for 30 s, 2 min and 10 min:

  * simulated: the bot's own delay function, `bot.lifecycle.flow.next_poll_delay`, driven by a
    simulated clock exactly as `flow.watch` uses it (the job is submitted 0.3 s after the
    request; every poll is a status call; the job is seen finished at the first poll after
    it ends). Each length is drawn from +-10% around its nominal value, 2,000 times, so a
    lucky alignment between the schedule and the finish time cannot flatter a result.
    Beside it: a naive client polling every 5 s; the sparsest schedule that keeps every
    finish within the lateness bound without knowing when the job ends; and a
    progress-aware schedule (the proposal the bot's schedule grew from), and the bot's
    schedule against a provider that reports no progress.
  * measured: the real app (HTTP command, real GatewayProvider, fake gateway and fake Slack
    on 127.0.0.1) at 1/10 time scale: every delay in Timing is divided by 10 and the renders
    take 3 s, 12 s and 60 s. Every delay of next_poll_delay is a Timing field or a share
    of the job's age or render time, so the schedule is the same shape scaled down; the status-call counts compare directly, lateness is
    scaled back up (x10) and the fixed delivery time (download + upload) added unscaled.

Targets: for the 2-minute job, <= 1/3 of the naive client's calls; for every length, the
video in the thread within max(2 s, 10% of the job's age) of the provider finishing.
"""

from __future__ import annotations

import math
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Report, isolate_env, post_command, run, signed, slash_form, wait_until, workdir

LENGTHS = {"30 s": 30.0, "2 min": 120.0, "10 min": 600.0}
SUBMIT_AFTER_S = 0.3  # request -> provider job created (request message + submit)
TRIALS = 2000
NAIVE_S = 5.0
SCALE = 10.0
PER_LENGTH_MEASURED = 3


def bound(age_s: float) -> float:
    """The allowed lateness for a job finishing at this age."""
    return max(2.0, 0.1 * age_s)


# --------------------------------------------------------------------------- schedules (simulated clock)


def simulate_current(length: float, rng: random.Random, *, progress: bool = True) -> tuple[int, float]:
    """flow.watch's loop with the bot's next_poll_delay and PollTrack, against a provider
    like the fakes: the first poll says queued (progress 0), later ones report
    int(100 * elapsed / length) (or no progress at all with progress=False, like Veo or
    Kling); returns (status calls, lateness s)."""
    from bot.deps import Timing
    from bot.lifecycle.flow import next_poll_delay
    from bot.lifecycle.schedule import PollTrack

    random.seed(rng.random())  # next_poll_delay draws its jitter from the module-level random
    timing = Timing()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = SimpleNamespace(created_at=t0, stall_notified=False, progress=None, last_progress_at=None)
    track = PollTrack()
    finish = SUBMIT_AFTER_S + length
    t, calls = SUBMIT_AFTER_S, 0
    while True:
        t += next_poll_delay(timing, job, t0 + timedelta(seconds=t), track)  # type: ignore[arg-type]
        calls += 1
        if t >= finish:
            return calls, t - finish
        seen = 0 if calls == 1 else (int(100 * (t - SUBMIT_AFTER_S) / length) if progress else None)
        track.saw(t0 + timedelta(seconds=t), seen)


def simulate_current_no_progress(length: float, rng: random.Random) -> tuple[int, float]:
    return simulate_current(length, rng, progress=False)


def simulate_naive(length: float, rng: random.Random) -> tuple[int, float]:
    finish = SUBMIT_AFTER_S + length
    t, calls = SUBMIT_AFTER_S, 0
    while True:
        t += NAIVE_S
        calls += 1
        if t >= finish:
            return calls, t - finish


def sparsest_blind(length: float) -> int:
    """Fewest polls for a schedule that does not know the finish time and still sees every
    possible finish within bound(age): each gap may be at most bound(next poll's age)."""
    t, calls = SUBMIT_AFTER_S, 0
    while t < SUBMIT_AFTER_S + length:
        t = max(t + 2.0, t / 0.9)
        calls += 1
    return calls


def progress_delay(age: float, elapsed: float, progress: int | None) -> float:
    """PROPOSAL (not the bot's code): use the provider's progress to aim at the finish.

    Without progress, poll at max(2 s, 10% of age) -- the lateness bound itself. With
    progress p% after `elapsed` s, the earliest the job can end (progress is a whole
    number and assumed roughly linear) is elapsed*(99-p)/(p+1) s away: sleep until then
    if that is longer than the bound, else step by 80% of the bound.
    """
    budget = bound(age)
    if progress is None or progress < 1 or elapsed <= 0:
        return budget
    earliest = elapsed * (99 - progress) / (progress + 1)
    return earliest if earliest > budget else 0.8 * budget


def simulate_progress(length: float, rng: random.Random) -> tuple[int, float]:
    """The proposal against a provider like the fakes: the first poll says queued (no
    progress), later ones report int(100 * elapsed / length)."""
    finish = SUBMIT_AFTER_S + length
    t, calls, progress = SUBMIT_AFTER_S, 0, None
    while True:
        t += progress_delay(t, t - SUBMIT_AFTER_S, progress)
        calls += 1
        if t >= finish:
            return calls, t - finish
        progress = None if calls == 1 else int(100 * (t - SUBMIT_AFTER_S) / length)


def simulated(report: Report) -> dict[str, dict[str, float]]:
    rng = random.Random(11)
    out: dict[str, dict[str, float]] = {}
    for label, nominal in LENGTHS.items():
        row: dict[str, float] = {}
        for name, fn in (("current", simulate_current), ("naive", simulate_naive), ("progress", simulate_progress),
                         ("noprogress", simulate_current_no_progress)):
            calls, late_ratio, worst_late, ok = [], [], 0.0, 0
            for _ in range(TRIALS):
                length = nominal * rng.uniform(0.9, 1.1)
                n, late = fn(length, rng)
                calls.append(n)
                allowed = bound(SUBMIT_AFTER_S + length)
                late_ratio.append(late / allowed)
                worst_late = max(worst_late, late)
                ok += late <= allowed
            row[f"{name}_calls"] = sum(calls) / len(calls)
            row[f"{name}_calls_max"] = max(calls)
            row[f"{name}_worst_late_s"] = worst_late
            row[f"{name}_worst_late_share"] = max(late_ratio)
            row[f"{name}_on_time"] = ok / TRIALS
        row["sparsest_blind_calls"] = sparsest_blind(nominal)
        out[label] = row
        allowed = bound(nominal)
        report.figure(f"sim {label}: current calls (mean / max)", f"{row['current_calls']:.1f} / {row['current_calls_max']}")
        report.figure(f"sim {label}: naive 5 s calls (mean)", round(row["naive_calls"], 1))
        report.figure(f"sim {label}: current / naive", round(row["current_calls"] / row["naive_calls"], 2), "x")
        report.figure(f"sim {label}: current worst lateness (allowed ~{allowed:.0f} s)",
                      round(row["current_worst_late_s"], 1), "s")
        report.figure(f"sim {label}: current on time", round(100 * row["current_on_time"], 1), "% of jobs")
        report.figure(f"sim {label}: sparsest blind schedule on time", row["sparsest_blind_calls"], "calls")
        report.figure(f"sim {label}: current, provider without progress: calls (mean / max)",
                      f"{row['noprogress_calls']:.1f} / {row['noprogress_calls_max']}")
        report.figure(f"sim {label}: current, provider without progress: worst lateness",
                      round(row["noprogress_worst_late_s"], 1), "s")
        report.figure(f"sim {label}: progress-aware proposal calls (mean / max)",
                      f"{row['progress_calls']:.1f} / {row['progress_calls_max']}")
        report.figure(f"sim {label}: progress-aware worst lateness", round(row["progress_worst_late_s"], 1), "s")
    return out


# --------------------------------------------------------------------------- measured (real app, 1/10 time)


async def measured(report: Report) -> dict[str, dict[str, float]]:
    import aiohttp
    from aiohttp import web

    from bench._common import BOT_TOKEN, GATEWAY_KEY, SIGNING_SECRET
    from bench._fakes import BenchGateway, TimedSlack
    from bot.app import create_runtime, make_web_app
    from bot.config import Settings
    from bot.deps import Timing
    from bot.providers.gateway import GatewayProvider

    tmp = workdir("polling")
    slack = TimedSlack()
    await slack.start()
    slack.add_channel("C1", name="general", member=True)
    gateway = BenchGateway(keep_poll_times=True)
    await gateway.start()
    d = Timing()
    timing = Timing(
        poll_interval_s=d.poll_interval_s / SCALE, max_poll_interval_s=d.max_poll_interval_s / SCALE,
        stall_timeout_s=d.stall_timeout_s / SCALE, job_timeout_s=d.job_timeout_s / SCALE,
        progress_edit_interval_s=d.progress_edit_interval_s / SCALE,
        submit_retry_window_s=d.submit_retry_window_s / SCALE, download_attempts=d.download_attempts,
        delivery_retry_max_s=d.delivery_retry_max_s / SCALE, lateness_floor_s=d.lateness_floor_s / SCALE,
        # a rate: ten times as many calls a second in a tenth of the time
        status_calls_per_s=d.status_calls_per_s * SCALE,
    )
    settings = Settings(_env_file=None, slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=slack.api_url, sora_db_path=tmp / "bot.db", sora_default_model="sora-2",
                        video_gateway_base_url=gateway.base_url, video_gateway_api_key=GATEWAY_KEY)
    runtime = await create_runtime(settings, providers={"gateway": GatewayProvider(gateway.base_url, GATEWAY_KEY)},
                                   timing=timing, include_simulator=False)
    await runtime.start()
    runner = web.AppRunner(make_web_app(runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        async with aiohttp.ClientSession() as session:
            n = 0
            for label, nominal in LENGTHS.items():
                for k in range(PER_LENGTH_MEASURED):
                    body = slash_form(f"-d 8 [run={nominal / SCALE}] a fox in snow ({label} #{k})",
                                      user=f"U{n:03d}", trigger=f"trig.p.{n}", response_url="")
                    sent = await post_command(session, url, body, signed(body))
                    assert sent.text.startswith("Got it"), sent
                    n += 1
        total = n
        await wait_until(lambda: len(slack.video_shared_at) >= total, max(LENGTHS.values()) / SCALE + 30,
                         "every video in its thread", interval=0.01)
        rows = await runtime.deps.db.fetchall("SELECT id, provider_job_id FROM jobs")
        by_provider = {r[1]: r[0] for r in rows}
    finally:
        await runner.cleanup()
        await runtime.close()
        await gateway.stop()
        await slack.stop()

    out: dict[str, dict[str, float]] = {}
    for label, nominal in LENGTHS.items():
        jobs = [j for j in gateway.jobs.values() if f"({label} #" in j.prompt]
        calls = [j.polls for j in jobs]
        poll_late = [(j.poll_times[-1] - j.finishes_at) * SCALE for j in jobs]
        deliver = [slack.video_shared_at[by_provider[j.id]] - j.poll_times[-1] for j in jobs]
        late = [p + dlv for p, dlv in zip(poll_late, deliver)]
        naive = math.ceil(nominal / NAIVE_S)
        out[label] = {"calls_mean": sum(calls) / len(calls), "calls_max": max(calls),
                      "worst_late_s": max(late), "deliver_s": max(deliver), "naive": naive}
        report.figure(f"measured {label}: status calls per job (each of {len(jobs)})", ", ".join(map(str, calls)))
        report.figure(f"measured {label}: worst lateness at full scale", round(max(late), 1), "s")
        report.figure(f"measured {label}: of which download + upload (unscaled)", round(max(deliver), 3), "s")
    return out


async def main() -> int:
    report = Report("polling", "Polling cost: status calls per job and lateness of the video")
    report.header()
    isolate_env()
    sim = simulated(report)
    meas = await measured(report)

    two = sim["2 min"]
    report.check("2-min job: current calls / naive (simulated)", round(two["current_calls"] / two["naive_calls"], 2),
                 "<=", round(1 / 3, 2), "x", note=f"{two['current_calls']:.1f} vs {two['naive_calls']:.1f} calls")
    m2 = meas["2 min"]
    report.check("2-min job: current calls / naive (measured)", round(m2["calls_mean"] / m2["naive"], 2), "<=",
                 round(1 / 3, 2), "x", note=f"{m2['calls_mean']:.1f} vs {m2['naive']} calls")
    for label, nominal in LENGTHS.items():
        s = sim[label]
        report.check(f"{label}: worst lateness (simulated)", round(s["current_worst_late_s"], 1), "<=",
                     round(bound(nominal), 1), "s", note=f"{100 * s['current_on_time']:.0f}% of jobs on time")
        report.check(f"{label}: worst lateness (measured)", round(meas[label]["worst_late_s"], 1), "<=",
                     round(bound(nominal), 1), "s")
    report.note("No schedule that ignores progress can meet both targets for the 2-min job: seeing every "
                f"finish within max(2 s, 10% of age) takes at least {two['sparsest_blind_calls']} calls "
                f"(naive: {two['naive_calls']:.0f}; 1/3 of naive: {two['naive_calls'] / 3:.0f}).")
    report.note(f"The progress-aware proposal needs {two['progress_calls']:.1f} calls for 2 min, worst lateness "
                f"{two['progress_worst_late_s']:.1f} s (simulated, linear progress).")
    report.save()
    return 0


if __name__ == "__main__":
    run(main)
