"""Scale: 10,000 unfinished jobs in one `sora-bot run` process against a gateway that says "running".

The jobs are stored the way the bot leaves them mid-render (running, provider job id set,
request message posted), aged evenly over 0-10 minutes -- the steady state of a bot taking
new jobs all the time -- and the bot is started on that database. The fake gateway
answers "processing" with constant progress for every one of them.

Start-up is reported apart: until every job task has loaded its job and entered
flow.watch (seen from inside: bench/_botrun.py reads each task's await chain). Then, over
a 45 s window starting 5 s later: RSS, CPU (utime + stime from /proc), open sockets (and
those to the gateway's port), event-loop lag (a 20 ms ticker inside the bot), provider
status calls per second.

Baseline: the same process with an empty database and 10,000 tasks that only sleep.

Targets: RSS <= 120 MB; CPU <= 5% of one core while waiting; sockets to the provider
<= the per-provider limit (8); loop lag p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    BotProc, ProcSampler, Report, World, bot_env, free_port, isolate_env, lags_between, run,
    seed_running_jobs, summary_ms, workdir,
)

JOBS = 10_000
LOAD_TIMEOUT_S = 150.0
SETTLE_S = 5.0
WINDOW_S = 45.0
PROVIDER_LIMIT = 8  # GatewayProvider's default max_concurrency, as build_providers creates it


def cpu_share(samples: list[dict]) -> float:
    if len(samples) < 2:
        return float("nan")
    return 100 * (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / (samples[-1]["t"] - samples[0]["t"])


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rising-progress", action="store_true", help="progress changes on every poll")
    p.add_argument("--log-level", default="INFO", help="SORA_LOG_LEVEL of the bot (default INFO, as shipped)")
    p.add_argument("--window", type=float, default=WINDOW_S)
    p.add_argument("--stub-sniffio", action="store_true",
                   help="experiment: give httpcore the `sniffio` module it imports per request")
    args = p.parse_args()
    extra = {"SORA_LOG_LEVEL": args.log_level}
    if args.stub_sniffio:
        extra["BENCH_STUB_SNIFFIO"] = "1"

    suffix = ("_rising" if args.rising_progress else "") + ("" if args.log_level == "INFO" else f"_{args.log_level.lower()}")
    suffix += "_sniffio" if args.stub_sniffio else ""
    report = Report(f"scale{suffix}", f"Scale: {JOBS:,} unfinished jobs in one process"
                    + (" (progress rising)" if args.rising_progress else "")
                    + ("" if args.log_level == "INFO" else f" (log level {args.log_level})")
                    + (" (sniffio stubbed)" if args.stub_sniffio else ""))
    report.header()
    isolate_env()
    tmp = workdir("scale")
    async with World(tmp, unknown_running=True, rising_progress=args.rising_progress, light_slack=True) as world:
        # baseline: the same stack, no jobs, 10,000 idle tasks
        base = BotProc(bot_env(world, tmp / "empty.db", port0 := free_port(), **extra),
                       port0, tmp, name="baseline", idle_tasks=JOBS)
        await base.start()
        await asyncio.sleep(3)
        b_sampler = ProcSampler(base.pid, interval=0.5, ports={"gateway": world.gateway_port}).start()
        await asyncio.sleep(10)
        await b_sampler.stop()
        await base.stop()

        t0 = time.perf_counter()
        await seed_running_jobs(tmp / "bot.db", JOBS)
        report.figure("seeding 10,000 running jobs took", round(time.perf_counter() - t0, 2), "s")

        bot = BotProc(bot_env(world, tmp / "bot.db", port := free_port(), **extra),
                      port, tmp)
        listening_after = await bot.start(healthy=False)
        sampler = ProcSampler(bot.pid, interval=0.5, ports={"gateway": world.gateway_port,
                                                            "slack": world.slack_port}).start()
        started = bot.child.started_at
        t_h = time.monotonic()

        async def first_health() -> tuple[dict, float]:
            h = await bot.health(timeout=LOAD_TIMEOUT_S)
            return h, time.monotonic() - t_h
        first = asyncio.create_task(first_health())
        loaded_after, load_trace = await bot.wait_loaded(JOBS, timeout=LOAD_TIMEOUT_S)
        health, healthz_first_s = await first
        loaded_at = started + loaded_after
        g_loaded = (await world.stats())["gateway"]
        await asyncio.sleep(SETTLE_S)
        w0 = time.monotonic()
        g_w0 = (await world.stats())["gateway"]
        await asyncio.sleep(args.window)
        w1 = time.monotonic()
        g_end = (await world.stats())["gateway"]
        inner = await bot.inner_stats()
        health_end = await bot.health()
        await sampler.stop()
        await bot.stop()

    base_rss = max(s["rss_mb"] for s in b_sampler.samples)
    loading = sampler.window(started, loaded_at)
    window = sampler.window(w0, w1)
    rss_max = max(s["rss_mb"] for s in sampler.samples)
    rss_window = max(s["rss_mb"] for s in window)
    gw_max = max(s.get("to_gateway", 0) for s in sampler.samples)
    sock_max = max(s.get("sockets", 0) for s in sampler.samples)
    lag_window = lags_between(inner, w0, w1)
    lag_load = lags_between(inner, started, loaded_at)
    polls = g_end["polls"] - g_w0["polls"]

    report.figure("baseline (no jobs, 10,000 idle tasks): RSS", round(base_rss, 1), "MiB")
    report.figure("baseline: CPU while idle", round(cpu_share(b_sampler.samples), 2), "% of a core")
    report.figure("exec to listening (10,000 tasks created)", round(listening_after, 2), "s")
    report.figure("first /healthz answer took", round(healthz_first_s, 2), "s")
    report.figure("exec to every job loaded and in watch()", round(loaded_after, 1), "s")
    report.figure("status calls before every job was loaded", g_loaded["polls"])
    report.figure("while loading: RSS max", round(max(s["rss_mb"] for s in loading), 1) if loading else 0.0, "MiB")
    report.figure("while loading: CPU", round(cpu_share(loading), 1), "% of a core")
    report.figure("while loading: loop lag p99 / max",
                  f"{summary_ms(lag_load)['p99_ms']} / {summary_ms(lag_load)['max_ms']}", "ms")
    report.figure("RSS max (whole run)", round(rss_max, 1), "MiB")
    report.figure(f"RSS max in the {args.window:.0f} s window", round(rss_window, 1), "MiB")
    report.figure("RSS above baseline in the window, per job", round((rss_window - base_rss) * 1024 / JOBS, 2), "KiB")
    report.figure(f"CPU in the {args.window:.0f} s window", round(cpu_share(window), 1), "% of a core")
    report.figure("status calls per second in the window", round(polls / (w1 - w0), 1), "/s")
    if polls and len(window) >= 2:
        cpu_ms = 1000 * (window[-1]["cpu_s"] - window[0]["cpu_s"]) / polls
        report.figure("bot CPU per status call", round(cpu_ms, 3), "ms")
    report.figure("gateway: TCP connections ever opened", g_end["connections_seen"])
    report.figure("bot: open sockets, max", sock_max)
    report.figure("bot: sockets to the gateway, max", gw_max)
    report.figure("loop lag in the window p50 / p99 / max",
                  f"{summary_ms(lag_window)['p50_ms']} / {summary_ms(lag_window)['p99_ms']} / "
                  f"{summary_ms(lag_window)['max_ms']}", "ms")
    report.figure("jobs watched at start / at the end", f"{health['watching']} / {health_end['watching']}")

    report.check("RSS (whole run, incl. loading)", round(rss_max, 1), "<=", 120, "MiB",
                 note=f"baseline {base_rss:.1f} MiB")
    report.check("RSS (steady window)", round(rss_window, 1), "<=", 120, "MiB")
    report.check("CPU while waiting", round(cpu_share(window), 1), "<=", 5, "% of a core",
                 note=f"{polls / (w1 - w0):.0f} status calls/s")
    report.check("sockets to the provider", gw_max, "<=", PROVIDER_LIMIT)
    report.check("event-loop lag p99", summary_ms(lag_window)["p99_ms"], "<=", 20, "ms")
    report.check("every job watched", health_end["watching"], ">=", JOBS)
    report.save()
    return 0


if __name__ == "__main__":
    run(main)
