"""Delivery memory: a 200 MB video from the provider to the Slack upload, and the RSS it costs.

`sora-bot run` (its own process) gets one /sora command whose render, at the fake gateway
(another process), is a 200 MiB file served in 1 MiB chunks; the bot downloads it
(GatewayProvider.download -> stream_to_file) and uploads it to the fake Slack's upload URL
(slack_io.upload_video). A warm-up job with a small video runs first, so first-use costs
(imports, connection pools) are not counted. RSS is sampled from /proc every 20 ms, and
VmHWM (the kernel's peak RSS) is read before and after.

Target: <= 20 MB extra RSS while the 200 MB video goes through.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench._common import (
    BotProc, ProcSampler, Report, World, bot_env, free_port, hwm_mb, isolate_env, post_command, rss_mb, run,
    signed, slash_form, wait_until, workdir,
)

SIZE = 200 * 1024 * 1024


async def main() -> int:
    report = Report("delivery_memory", "Delivery memory: a 200 MiB video, provider to Slack upload")
    report.header()
    isolate_env()
    tmp = workdir("delivery")
    async with World(tmp, run_seconds=1.0) as world:
        bot = BotProc(bot_env(world, tmp / "bot.db", port := free_port(), SORA_POLL_INTERVAL="0.5"), port, tmp)
        await bot.start()
        url = f"{bot.url}/slack/events"
        response_url = f"{world.slack_api_url.rsplit('/api/', 1)[0]}/respond/0"

        async def shared(n: int) -> bool:
            return (await world.stats())["slack"]["videos_shared"] >= n

        async with aiohttp.ClientSession() as session:
            body = slash_form("-d 8 [size=5000000] warm-up", user="U1", trigger="t.warm", response_url=response_url)
            assert (await post_command(session, url, body, signed(body))).text.startswith("Got it")
            await wait_until(lambda: shared(1), 60, "the warm-up video")
            await asyncio.sleep(2.0)
            base_rss, base_hwm = rss_mb(bot.pid), hwm_mb(bot.pid)
            sampler = ProcSampler(bot.pid, interval=0.02, sockets=False).start()
            t0 = time.monotonic()
            body = slash_form(f"-d 8 [size={SIZE}] a 200 MB video", user="U2", trigger="t.big",
                              response_url=response_url)
            assert (await post_command(session, url, body, signed(body))).text.startswith("Got it")
            await wait_until(lambda: shared(2), 120, "the 200 MB video", interval=0.1)
            took = time.monotonic() - t0
        await sampler.stop()
        end_rss, end_hwm = rss_mb(bot.pid), hwm_mb(bot.pid)
        stats = await world.stats(detail=True)
        await bot.stop()

    peak = max(s["rss_mb"] for s in sampler.samples)
    sizes = stats["slack"]["upload_sizes"]
    big = max(sizes.values()) if sizes else 0
    extra_sampled = peak - base_rss
    extra_hwm = max(0.0, end_hwm - max(base_hwm, base_rss))
    report.figure("RSS before", round(base_rss, 1), "MiB")
    report.figure("RSS peak while delivering (20 ms samples)", round(peak, 1), "MiB")
    report.figure("RSS after", round(end_rss, 1), "MiB")
    report.figure("VmHWM before / after", f"{base_hwm:.1f} / {end_hwm:.1f}", "MiB")
    report.figure("bytes served by the gateway", stats["gateway"]["bytes_served"])
    report.figure("bytes received by the Slack upload", big)
    report.figure("request to video in thread", round(took, 1), "s")
    report.check("extra RSS (sampled peak - before)", round(extra_sampled, 1), "<=", 20, "MiB")
    report.check("extra RSS (VmHWM growth)", round(extra_hwm, 1), "<=", 20, "MiB")
    report.check("whole file uploaded", big, "==", SIZE, "bytes")
    report.save()
    return 0


if __name__ == "__main__":
    run(main)
