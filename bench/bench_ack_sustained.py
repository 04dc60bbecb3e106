"""Ack latency under sustained load: 100 signed /sora commands per second for 30 s, open loop.

Arrivals follow the clock, not the answers (request i is due at t0 + i/100 s, and its
latency counts from then, so a slow server cannot slow the load down). Each command is a
new user's, so none is refused by a budget. Renders take 2 minutes at the fake gateway,
which reports rising progress; every job stays in flight during the 30 s, so the bot is
also polling a growing number of jobs, as it would in production.

Target: p99 <= 50 ms and no errors. Answers slower than 3 s count as errors too (Slack
gives up on an ack after 3 s and shows the user a timeout).

`--replicas N` (N > 1): N `sora-bot run` replicas on one fresh PostgreSQL database (the local
test server, see bench/_postgres.py), the commands dealt round-robin over them as a load
balancer would; CPU, lag and health figures are the first replica's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench._common import (
    BotProc, ProcSampler, Report, World, bot_env, free_port, isolate_env, lags_between, post_command, run,
    signed, slash_form, summary_ms, workdir,
)
from bench._postgres import fresh_database

RATE = 100
SECONDS = 30
SLACK_ACK_LIMIT_S = 3.0
WARMUP = 20


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=RATE, help="commands per second (default %(default)s)")
    p.add_argument("--seconds", type=int, default=SECONDS, help="how long (default %(default)s)")
    p.add_argument("--trace", action="store_true", help="time the bot's storage calls (diagnosis only)")
    p.add_argument("--replicas", type=int, default=1, help="replicas on one PostgreSQL database (default: 1, SQLite)")
    args = p.parse_args()
    return await sustained(args.rate, args.seconds, args.trace, args.replicas)


async def sustained(rate: int, seconds: int, trace: bool = False, replicas: int = 1) -> int:
    RATE, SECONDS = rate, seconds  # noqa: N806
    name = "ack_sustained" if (rate, seconds) == (100, 30) else f"ack_sustained_{rate}per_s"
    name += f"_{replicas}_replicas" if replicas > 1 else ""
    name += "_traced" if trace else ""
    on = f", {replicas} replicas on PostgreSQL" if replicas > 1 else ""
    report = Report(name, f"Ack latency, {RATE} /sora commands per second for {SECONDS} s (open loop){on}")
    report.header()
    isolate_env()
    tmp = workdir("sustained")
    database = fresh_database() if replicas > 1 else contextlib.nullcontext(None)
    async with World(tmp, run_seconds=120.0, light_slack=True) as world, database as pg_url:
        extra = {"BENCH_TRACE": "1"} if trace else {}
        if pg_url:
            extra["SORA_DATABASE_URL"] = pg_url
        bots = []
        for i in range(replicas):
            env = bot_env(world, tmp / f"bot{i}.db", port := free_port(), **extra)
            bots.append(BotProc(env, port, tmp, name="bot" if i == 0 else f"bot{i}"))
        await asyncio.gather(*(b.start() for b in bots))
        bot = bots[0]
        urls = [f"{b.url}/slack/events" for b in bots]
        response_url = f"{world.slack_api_url.rsplit('/api/', 1)[0]}/respond/0"
        total = RATE * SECONDS
        bodies = []
        for i in range(total + WARMUP):
            body = slash_form(f"-d 8 a lighthouse in a storm, take {i}", user=f"U{i:05d}",
                              trigger=f"trig.s.{i}", response_url=response_url)
            bodies.append((body, signed(body)))
        sampler = ProcSampler(bot.pid, interval=1.0, ports={"gateway": world.gateway_port}).start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            # warm-up: Bolt's auth.test and lazy imports, not counted
            await asyncio.gather(*(post_command(session, urls[i % replicas], b, h)
                                   for i, (b, h) in enumerate(bodies[total:])))
            await asyncio.sleep(1.0)
            stats_before = await world.stats()
            tasks: list[asyncio.Task] = []
            send_lateness: list[float] = []
            t0 = time.perf_counter()
            m0 = time.monotonic()
            for i in range(total):
                due = t0 + i / RATE
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                send_lateness.append(time.perf_counter() - due)
                body, headers = bodies[i]
                tasks.append(asyncio.create_task(post_command(session, urls[i % replicas], body, headers, start=due)))
            m1 = time.monotonic()
            done, pending = await asyncio.wait(tasks, timeout=30)
            for task in pending:
                task.cancel()
            sent = [t.result() for t in done]
        stats_after = await world.stats()
        inner = await bot.inner_stats()
        health = await bot.health()
        await sampler.stop()
        for b in bots:
            await b.stop()

    lat = [s.latency_s for s in sent]
    s = summary_ms(lat)
    slow = [x for x in sent if x.latency_s > SLACK_ACK_LIMIT_S]
    errors = [x for x in sent if x.status != 200 or x.error or not x.text.startswith("Got it")
              or x.latency_s > SLACK_ACK_LIMIT_S]
    lost = len(pending)
    report.figure("commands sent", total)
    report.figure("answered", len(sent))
    report.figure("p50", s["p50_ms"], "ms")
    report.figure("p90", s["p90_ms"], "ms")
    report.figure("p99", s["p99_ms"], "ms")
    report.figure("max", s["max_ms"], "ms")
    for k in range(3):
        part = [x.latency_s for i, x in enumerate(sent) if k * total // 3 <= i < (k + 1) * total // 3]
        report.figure(f"p99 in seconds {k * SECONDS // 3}-{(k + 1) * SECONDS // 3}", summary_ms(part)["p99_ms"], "ms")
    report.figure("answers slower than Slack's 3 s", len(slow))
    statuses: dict[str, int] = {}
    for x in sent:
        key = x.error.split(":")[0] if x.error else (f"{x.status} Got it" if x.text.startswith("Got it")
                                                      else f"{x.status} {x.text[:30]!r}")
        statuses[key] = statuses.get(key, 0) + 1
    report.figure("answers by kind", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    report.figure("client send lateness p99", summary_ms(send_lateness)["p99_ms"], "ms")
    window = sampler.window(m0, m1)
    if len(window) >= 2:
        cpu = (window[-1]["cpu_s"] - window[0]["cpu_s"]) / (window[-1]["t"] - window[0]["t"])
        report.figure("bot CPU during the window", round(100 * cpu, 1), "% of a core")
        report.figure("bot RSS at the end", round(window[-1]["rss_mb"], 1), "MiB")
    lags = lags_between(inner, m0, m1)
    report.figure("bot event-loop lag p99 / max", f"{summary_ms(lags)['p99_ms']} / {summary_ms(lags)['max_ms']}", "ms")
    g0, g1 = stats_before["gateway"], stats_after["gateway"]
    report.figure("provider submits / polls during the run", f"{g1['submits'] - g0['submits']} / {g1['polls'] - g0['polls']}")
    got_it = sum(1 for x in sent if x.text.startswith("Got it"))
    stored = health["unfinished_jobs"] - WARMUP
    report.figure("jobs stored (beyond the warm-up) / 'Got it' answers", f"{stored} / {got_it}")
    report.figure("jobs stored although the answer was not 'Got it'", max(0, stored - got_it))
    if trace:
        txns = [x for x in inner["trace"].get("txn", []) if m0 <= x[0] <= m1]
        reserves = [d for t, d in inner["trace"].get("reserve", []) if m0 <= t <= m1]
        hold = [x[2] for x in txns]
        report.figure("traced: write transactions/s", round(len(txns) / (m1 - m0), 1), "/s")
        report.figure("traced: write lock held, share of the time", round(100 * sum(hold) / (m1 - m0), 1), "%")
        report.figure("traced: lock hold p50 / p99 / max",
                      f"{summary_ms(hold)['p50_ms']} / {summary_ms(hold)['p99_ms']} / {summary_ms(hold)['max_ms']}", "ms")
        report.figure("traced: lock wait p99 / max",
                      f"{summary_ms([x[1] for x in txns])['p99_ms']} / {summary_ms([x[1] for x in txns])['max_ms']}", "ms")
        report.figure("traced: reserve_and_insert p50 / p99",
                      f"{summary_ms(reserves)['p50_ms']} / {summary_ms(reserves)['p99_ms']}", "ms")
        slowest = sorted(txns, key=lambda x: -x[2])[:5]
        report.figure("traced: slowest holds (s after start)",
                      ", ".join(f"{x[2] * 1000:.0f} ms @ {x[0] - m0:.1f}" for x in slowest))
    report.check("p99", s["p99_ms"], "<=", 50, "ms")
    report.check("failed commands (error, not answered, not accepted, or > 3 s)", len(errors) + lost, "==", 0)
    report.save()
    return 0


if __name__ == "__main__":
    run(main)
