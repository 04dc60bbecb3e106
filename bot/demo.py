"""`sora-bot demo`: the real app against an embedded fake Slack and the simulator.

It sends signed slash commands over HTTP, like Slack would, and prints each thread as a
transcript. Exit 0 only when every scenario ended the way it should.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.app import create_runtime, make_web_app
from bot.cli import jobs_json, usage_json
from bot.config import Settings
from bot.deps import Timing
from bot.fakes.fakeslack import FakeSlack

CHANNEL = "C0DEMO"
USER = "U0ALICE"


@dataclass(frozen=True)
class Scenario:
    title: str
    text: str
    expect_status: str | None  # None: refused, no job
    expect_kind: str | None = None


SCENARIOS = [
    Scenario("A success with the video", "-d 8 a golden retriever running through autumn leaves", "succeeded"),
    Scenario("A moderation block", "[blocked] a brawl outside a stadium", "failed", "blocked_input"),
    Scenario("A stuck job", "-d 6 [stuck] a time-lapse of a glacier melting", "failed", "stuck"),
    Scenario("A long video, made as two segments and joined", "-d 24 a paper boat drifting down a rainy street",
             "succeeded"),
    Scenario("A budget refusal", "-d 20 an aerial tour of a neon city at night", None),
]


async def _send(http: httpx.AsyncClient, url: str, secret: str, text: str, response_url: str, n: int) -> dict:
    body = urlencode({
        "team_id": "T0DEMO", "channel_id": CHANNEL, "channel_name": "video-lab", "user_id": USER,
        "user_name": "alice", "command": "/sora", "text": text, "response_url": response_url,
        "trigger_id": f"demo.{n}.{secrets.token_hex(4)}", "api_app_id": "ADEMO",
    })
    ts = str(int(time.time()))
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
    }
    r = await http.post(url, content=body, headers=headers)
    r.raise_for_status()
    return r.json() if r.content else {}


async def run_demo(out: "object" = sys.stdout) -> int:
    print_ = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="sora-demo-") as tmp:
        async with FakeSlack() as slack:
            slack.add_channel(CHANNEL, name="video-lab", member=True)
            slack.add_user(USER, name="alice")
            settings = Settings(
                _env_file=None,
                slack_bot_token="xoxb-demo",
                slack_signing_secret=secret,
                slack_api_url=slack.api_url,
                sora_db_path=Path(tmp) / "demo.db",
                sora_daily_budget_usd="5.00",
                sora_max_concurrent_per_user=5,
                sora_simulator_seconds=3.0,
            )
            timing = Timing(poll_interval_s=0.3, max_poll_interval_s=0.5, stall_timeout_s=2.0,
                            job_timeout_s=7.0, progress_edit_interval_s=0.5)
            runtime = await create_runtime(settings, timing=timing)
            runner = web.AppRunner(make_web_app(runtime))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            url = f"http://127.0.0.1:{port}/slack/events"
            print_("sora-bot demo: the real app, a fake Slack workspace and the built-in simulator")
            print_(f"budget: $5.00 a day for <@{USER}>; simulator renders take ~3 s\n")
            ok = True
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    acks = []
                    for n, sc in enumerate(SCENARIOS):
                        rurl = slack.new_response_url()
                        ack = await _send(http, url, secret, sc.text, rurl, n)
                        acks.append(ack)
                        await asyncio.sleep(0.2)  # keeps the threads in scenario order
                    await runtime.poller.idle(30)
                jobs = json.loads(await jobs_json(runtime.deps.db, limit=0))
                by_prompt = {j["prompt"]: j for j in jobs}
                roots = slack.roots(CHANNEL)
                for sc, ack in zip(SCENARIOS, acks):
                    print_(f"━━ {sc.title} ━━")
                    print_(f"  /sora {sc.text}")
                    print_(f"  (only you can see this) {ack.get('text', '')}")
                    job = next((j for p, j in by_prompt.items() if p in sc.text), None)
                    if sc.expect_status is None:
                        good = job is None and "left" in ack.get("text", "")
                    else:
                        good = job is not None and job["status"] == sc.expect_status and job["failure_kind"] == sc.expect_kind
                        root = next((m for m in roots if job and m.ts == job["thread_ts"]), None)
                        if root is not None:
                            print_("\n".join("  " + line for line in slack.render_thread(CHANNEL, root.ts).splitlines()))
                        finals = [m for m in slack.thread(CHANNEL, root.ts)[1:]] if root else []
                        good = good and len(finals) == 1
                    print_(f"  => {'as expected' if good else 'NOT AS EXPECTED'}\n")
                    ok = ok and good
                print_("━━ sora-bot usage --json ━━")
                print_(await usage_json(runtime.deps, None))
            finally:
                await runner.cleanup()
                await runtime.close()
    print_("demo finished: every scenario behaved" if ok else "demo finished: some scenarios misbehaved")
    return 0 if ok else 1


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_demo())
