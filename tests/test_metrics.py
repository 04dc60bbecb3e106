"""/metrics and /readyz through the real app: counts and dollars equal to what happened.

The scripted run's truth comes from outside the metrics: the ledger and jobs tables, the fake
Slack's own record of calls, and the requests the test sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli import jobs_json
from bot.fakes.fakeslack import FakeSlack, slash_command_payload
from bot.providers.gateway import GatewayProvider
from tests.botproc import free_port
from tests.conftest import FAST
from tests.fakes.providers import FakeGatewayServer
from tests.prom import parse, scrape, total, usd, value
from tests.test_failure_kinds import TABLE

TIMING = replace(FAST, submit_retry_window_s=1.2, download_attempts=3, stall_timeout_s=0.5, job_timeout_s=2.5)

async def ledger_by_provider(db: Any) -> dict[str, dict[str, int]]:
    """Reserved, charged, released and refunded micros per provider, from the ledger alone."""
    rows = await db.fetchall(
        "SELECT j.provider, l.state, l.reserved_micros, l.charged_micros FROM ledger l JOIN jobs j ON j.id = l.job_id")
    out: dict[str, dict[str, int]] = {}
    for provider, state, reserved, charged in rows:
        t = out.setdefault(provider, dict.fromkeys(("reserved", "charged", "released", "refunded"), 0))
        t["reserved"] += int(reserved)
        if state in ("charged", "refunded"):
            t["charged"] += int(charged)  # a refund gives a charge back; it was charged first
        if state == "refunded":
            t["refunded"] += int(charged)
        if state == "released":
            t["released"] += int(reserved)
    return out


async def test_metrics_match_a_scripted_run(make_bot, slack) -> None:
    slack.add_user("UADMIN", name="ada", is_admin=True)
    for n in range(len(TABLE)):
        slack.add_user(f"UK{n:02d}", name=f"kind{n}")
    slack.add_user("U3", name="carol")
    async with FakeGatewayServer(run_seconds=0.3) as server, httpx.AsyncClient() as client:
        provider = GatewayProvider(server.base_url, server.api_key, client=client)
        bot = await make_bot(providers={"gateway": provider}, timing=TIMING)
        # a Slack 429 on the first request message: the client waits Retry-After and tries again
        slack.fail_next("chat.postMessage", status=429, retry_after=0.01)
        sent = 0
        for i in range(3):
            await bot.slash(f"a paper lantern number {i}", user="U1")
            sent += 1
        # every failure kind a provider can cause, each from a user of its own (3 unfinished each)
        for n, (_kind, marker, _words) in enumerate(TABLE):
            await bot.slash(f"-m sora-2 {marker} a paper lantern", user=f"UK{n:02d}")
            sent += 1
        # refused before anything is stored: a bad option, and a request over the user's budget
        # (the first $2 one fits the default $5; after the admin's $1 limit the second doesn't)
        await bot.slash("-d 999 too long", user="U2")
        await bot.slash("-m sora-2 -d 20 fits the budget", user="U3")
        await bot.admin("budget set <@U3> 1", user="UADMIN")
        await bot.slash("-m sora-2 -d 20 over budget", user="U3")
        sent += 3
        await bot.runtime.poller.idle(30)
        jobs = json.loads(await jobs_json(bot.deps.db))
        first = next(j for j in jobs if j["prompt"] == "a paper lantern number 0")
        await bot.admin(f"refund {first['id']}", user="UADMIN")
        await bot.runtime.poller.idle(10)
        resp = await scrape(bot)
        downloads = dict(server.downloads)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
    m = parse(resp.text)

    # requests: 17 accepted (3 simulator, 14 gateway), 2 refused (the budget set is an admin's)
    assert value(m, "sora_requests_accepted_total", source="command") == 17
    assert value(m, "sora_requests_refused_total", reason="invalid_request") == 1
    assert value(m, "sora_requests_refused_total", reason="user_budget") == 1
    # jobs: one per failure kind on the gateway, three successes on the simulator
    for kind, _marker, _words in TABLE:
        assert value(m, "sora_jobs_finished_total", provider="gateway", model="sora-2", outcome=kind) == 1, kind
    assert value(m, "sora_jobs_finished_total", provider="simulator", model="simulator", outcome="succeeded") == 3
    assert value(m, "sora_jobs_finished_total", provider="gateway", model="sora-2", outcome="succeeded") == 1
    assert total(m, "sora_jobs_finished_total") == len(jobs) == 17
    assert value(m, "sora_jobs_in_flight") == 0

    # dollars: exactly what the ledger holds, per provider
    books = await ledger_by_provider(bot.deps.db)
    assert books["simulator"]["refunded"] == 800_000 and books["simulator"]["charged"] == 2_400_000
    for provider_name, t in books.items():
        for what in ("reserved", "charged", "released", "refunded"):
            got = Decimal(repr(value(m, f"sora_{what}_usd_total", provider=provider_name)))
            assert got == usd(t[what]), (provider_name, what, got, t[what])

    # provider calls: every status call of a finished job is in the per-job histogram too
    status_calls = total(m, "sora_provider_calls_total", call="status")
    assert status_calls > 0 and status_calls == total(m, "sora_status_calls_per_job_sum")
    assert total(m, "sora_status_calls_per_job_count") == sum(
        1 for j in jobs if j["provider_job_id"] is not None)
    submitted = sum(1 for j in jobs if j["provider"] == "gateway" and j["provider_job_id"] is not None)
    assert value(m, "sora_provider_calls_total", provider="gateway", call="create", result="ok") == submitted
    assert value(m, "sora_provider_calls_total", provider="gateway", call="create", result="invalid_request") == 1
    assert value(m, "sora_provider_calls_total", provider="gateway", call="create", result="auth_failed") == 1
    # every download the fake served, whatever it answered, and the three of the always-502 job
    assert total(m, "sora_provider_calls_total", provider="gateway", call="download") == sum(downloads.values())
    assert value(m, "sora_provider_calls_total", provider="gateway", call="download",
                 result="download_failed") >= TIMING.download_attempts
    assert total(m, "sora_provider_call_seconds_count", provider="gateway") == total(
        m, "sora_provider_calls_total", provider="gateway")

    # Slack: one 429, retried; the calls counted as ok are the fake's answered ones
    assert value(m, "sora_slack_rate_limited_total", method="chat.postMessage") == 1
    posts = slack.calls_to("chat.postMessage")
    assert value(m, "sora_slack_calls_total", method="chat.postMessage", result="ok") == len(posts) - 1
    assert value(m, "sora_slack_call_seconds_count", method="chat.postMessage") == len(posts) - 1

    # acks: every slash command the test sent (and the two admin ones), none slower than 3 s
    assert value(m, "sora_ack_seconds_count", surface="command") == sent + 2
    assert value(m, "sora_ack_seconds_bucket", surface="command", le="3.0") == sent + 2
    # one lateness per uploaded video (the four successes; a refund leaves the upload be)
    assert value(m, "sora_delivery_lateness_seconds_count") == 4

    # low cardinality: no user, job id or prompt in any label
    labels = {v for (_n, ls) in m for _k, v in ls}
    private = {j["id"] for j in jobs} | {j["user_id"] for j in jobs} | {"U1", "U2", "U3", "UADMIN"}
    assert not labels & private
    assert not any("lantern" in v for v in labels)


async def test_callbacks_are_counted_by_result(make_bot, slack) -> None:
    bot = await make_bot(sora_public_base_url="https://bot.example")
    base = bot.url.replace("/slack/events", "")
    assert (await bot.http.post(f"{base}/callbacks/kling?job=abc&t=forged", content=b"{}")).status_code == 401
    assert (await bot.http.post(f"{base}/callbacks/openai", content=b"{}")).status_code == 404  # webhooks off
    m = parse((await scrape(bot)).text)
    assert value(m, "sora_callbacks_total", provider="kling", result="refused") == 1
    assert value(m, "sora_callbacks_total", provider="openai", result="refused") == 1


async def test_readyz_follows_slack_auth(make_bot, slack) -> None:
    bot = await make_bot()
    ok = await scrape(bot, "/readyz")
    assert ok.status_code == 200 and ok.json() == {"ready": True, "database": "ok", "slack": "ok"}
    # a passing auth.test is remembered for a minute: forget it, as a minute later would
    bot.runtime.readiness._auth_ok_until = 0.0
    slack.fail_next("auth.test", error="invalid_auth")
    bad = await scrape(bot, "/readyz")
    assert bad.status_code == 503 and bad.json()["slack"] == "auth.test refused: invalid_auth"
    assert (await scrape(bot, "/readyz")).status_code == 200  # asked again at once, and fine
    assert (await scrape(bot, "/healthz")).status_code == 200  # liveness never asks Slack


@pytest.mark.both_backends
async def test_readyz_fails_while_the_database_is_unreachable(make_bot, slack, backend) -> None:
    if backend is None:
        pytest.skip("an embedded SQLite file can't be unreachable; PostgreSQL's server can")
    import asyncpg

    bot = await make_bot()
    assert (await scrape(bot, "/readyz")).status_code == 200
    name = backend.rsplit("/", 1)[1]
    admin = await asyncpg.connect(backend.rsplit("/", 1)[0] + "/postgres")
    try:
        # the server turns this database's clients away and drops the ones it has
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        down = await scrape(bot, "/readyz")
        assert down.status_code == 503, down.text
        assert down.json()["database"].startswith("unreachable"), down.json()
        assert (await scrape(bot, "/readyz")).status_code == 503
        alive = await scrape(bot, "/healthz")  # liveness: restarting would not bring the database back
        assert alive.status_code == 200 and alive.json()["unfinished_jobs"] is None
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()

    async def ready() -> bool:
        return (await scrape(bot, "/readyz")).status_code == 200

    for _ in range(50):
        if await ready():
            break
        await asyncio.sleep(0.1)
    assert await ready()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
async def test_socket_mode_serves_probes_and_metrics_on_port(tmp_path: Path) -> None:
    from tests.test_socket_mode import APP_TOKEN, BOT_TOKEN, BotProcess

    port = free_port()
    async with FakeSlack() as fake:
        fake.add_channel("C1", name="general", member=True)
        fake.add_user("U1", name="alice")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SORA_", "VIDEO_", "OPENAI_"))},
            "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_URL": fake.api_url,
            "SORA_DB_PATH": str(tmp_path / "bot.db"), "SORA_SIMULATOR_SECONDS": "0.3",
            "SORA_POLL_INTERVAL": "0.1", "PORT": str(port), "HOST": "127.0.0.1",
        }
        bot = BotProcess(env, tmp_path / "bot.log")
        await bot.start(fake)
        try:
            slash = await fake.send_envelope(
                "slash_commands", slash_command_payload("a paper crane", response_url=fake.new_response_url()))
            await fake.wait_for_ack(slash, timeout=3)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/healthz")).json()["ok"] is True
                ready = await http.get("/readyz")
                assert ready.status_code == 200 and ready.json()["slack"] == "connected"
                m = parse((await http.get("/metrics")).text)
                assert value(m, "sora_ack_seconds_count", surface="command") == 1
                assert value(m, "sora_requests_accepted_total", source="command") == 1
                # Slack's traffic comes over the socket: nothing else is served here
                assert (await http.post("/slack/events", content=b"{}")).status_code in (404, 405)
        finally:
            assert await bot.signal(signal.SIGTERM) == 0
        assert "Traceback" not in bot.log(), bot.log()
