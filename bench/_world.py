"""The fakes in a process of their own, so their CPU and memory are not the bot's.

Prints one JSON line (URLs and ports) on stdout, then serves until SIGTERM/SIGINT.
A control server answers GET /stats and POST /mark (see BenchGateway.mark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from aiohttp import web

from bench._fakes import BenchGateway, TimedSlack


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run-seconds", type=float, default=2.0)
    p.add_argument("--unknown-running", action="store_true")
    p.add_argument("--rising-progress", action="store_true")
    p.add_argument("--keep-poll-times", action="store_true")
    p.add_argument("--light-slack", action="store_true", help="drop FakeSlack's per-call log")
    args = p.parse_args()

    slack = TimedSlack()
    slack.keep_records = not args.light_slack
    await slack.start()
    slack.add_channel("C1", name="general", member=True)
    gateway = BenchGateway(run_seconds=args.run_seconds, unknown_running=args.unknown_running,
                           rising_progress=args.rising_progress, keep_poll_times=args.keep_poll_times)
    await gateway.start()

    async def stats(request: web.Request) -> web.Response:
        detail = request.query.get("detail") == "1"
        return web.json_response({"gateway": gateway.stats(detail), "slack": slack.stats(detail)})

    async def mark(request: web.Request) -> web.Response:
        gateway.mark()
        return web.json_response({"ok": True})

    control = web.Application()
    control.router.add_get("/stats", stats)
    control.router.add_post("/mark", mark)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = int(runner.addresses[0][1])

    print(json.dumps({
        "slack_api_url": slack.api_url,
        "slack_port": int(slack.base_url.rsplit(":", 1)[1]),
        "gateway_base_url": gateway.base_url,
        "gateway_port": gateway.port,
        "control_url": f"http://127.0.0.1:{control_port}",
    }), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # never outlive a benchmark that died without stopping us
        await asyncio.wait_for(stop.wait(), timeout=900)
    except TimeoutError:
        print("world: 15 minutes passed; stopping", file=sys.stderr)
    await runner.cleanup()
    await gateway.stop()
    await slack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
