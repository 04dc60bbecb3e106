"""Three real `sora-bot run` replicas (HTTP mode) on one PostgreSQL database.

Commands and mentions are spread over the replicas, each mention delivered again as Slack's
retry to a different replica; one replica is killed with SIGKILL mid-render, then the other
two are restarted one after the other (SIGTERM, start). The fake Slack and the fake gateway
live in this process, so what they record survives every replica. Afterwards every accepted
request has ended exactly once: one provider job, one video in its thread, the ledger exact to
the micro-dollar, and no user's spent + reserved above the limit at any sampled moment.

A replica frozen with SIGSTOP past its lease and then resumed does nothing for the jobs the
others took over meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter

import asyncpg
import httpx
import pytest

from bot.fakes.fakeslack import FakeSlack
from tests.botproc import BotProcess, bot_env, free_port, wait_until
from tests.conftest import fresh_postgres_database
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import mention_body, post_signed, slash_body

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

USERS = [f"U{i:02d}" for i in range(30)]
COST = 800_000  # sora-2, 8 s at $0.10/s
LIMIT = 5_000_000  # six requests of a user fit, the seventh is refused


@pytest.fixture
async def fleet(tmp_path):
    async with fresh_postgres_database() as url, FakeSlack() as slack, \
            FakeGatewayServer(run_seconds=4.0) as gateway:
        slack.add_channel("C1", name="general", member=True)
        bots = []
        for i in range(3):
            port = free_port()
            env = bot_env(slack, tmp_path / f"r{i}.db", port, SORA_DATABASE_URL=url, SORA_LEASE_SECONDS="3",
                          VIDEO_GATEWAY_BASE_URL=gateway.base_url, VIDEO_GATEWAY_API_KEY=gateway.api_key,
                          SORA_DEFAULT_MODEL="sora-2", SORA_DAILY_BUDGET_USD="5",
                          SORA_STATUS_CALLS_PER_SECOND="200")
            bots.append(BotProcess(env, port, tmp_path / f"r{i}.log"))
        yield url, slack, gateway, bots
        for bot in bots:
            if bot.proc is not None and bot.proc.returncode is None:
                bot.proc.kill()
                await bot.proc.wait()


async def _sample_budgets(url: str, seen: list[int], stop: asyncio.Event) -> None:
    """The largest spent + reserved of any user, read from the committed ledger while work runs."""
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            top = await conn.fetchval(
                "SELECT COALESCE(MAX(used), 0) FROM (SELECT SUM(CASE WHEN state = 'reserved' THEN reserved_micros"
                " WHEN state = 'charged' THEN charged_micros ELSE 0 END) AS used FROM ledger GROUP BY user_id) t")
            seen.append(int(top))
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _rows(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_three_replicas_lose_and_double_nothing_through_a_kill_and_two_restarts(fleet) -> None:
    url, slack, gateway, bots = fleet
    await asyncio.gather(*(b.start() for b in bots))
    seen: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_budgets(url, seen, stop))

    async with httpx.AsyncClient(timeout=15) as http:
        async def command(i: int) -> str:
            user = USERS[i % len(USERS)]
            bot = bots[i % 3]
            if i % 6 == 5:  # a mention, and Slack's retry of it at another replica
                body = mention_body(f"<@UBOT> mention number {i}", user=user, ts=f"1700000{i:03d}.000100",
                                    event_id=f"EvFleet{i:04d}")
                first = await post_signed(http, f"{bot.url}/slack/events", body)
                again = await post_signed(http, f"{bots[(i + 1) % 3].url}/slack/events", body,
                                          extra_headers={"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"})
                assert first.status_code == again.status_code == 200
                return "mention"
            r = await post_signed(http, f"{bot.url}/slack/events",
                                  slash_body(f"command number {i}", user=user, response_url=slack.new_response_url()))
            assert r.status_code == 200, r.text
            return "accepted" if "Got it" in r.json()["text"] else "refused"

        kinds = Counter(await asyncio.gather(*(command(i) for i in range(300))))
    assert kinds["refused"] > 0  # the budget, not luck, bounded them

    # kill -9 one replica while the renders are under way
    await wait_until(lambda: len(gateway.submits) >= 60, 20, "renders under way")
    assert await bots[0].signal(signal.SIGKILL) == -signal.SIGKILL
    for bot in bots[1:]:  # then restart the other two, one after the other
        assert await bot.signal(signal.SIGTERM) == 0
        await bot.start()

    async def all_ended() -> bool:
        rows = await _rows(url, "SELECT COUNT(*) FROM jobs WHERE status NOT IN ('succeeded','failed','cancelled')"
                                " OR id IN (SELECT job_id FROM deliveries WHERE state = 'pending')")
        return rows[0][0] == 0
    await wait_until(all_ended, 45, "every job to end and be delivered")
    stop.set()
    await sampler

    jobs = await _rows(url, "SELECT id, user_id, prompt, status, failure_kind, failure_detail, thread_ts,"
                            " channel_id, provider_job_id, cost_micros FROM jobs")
    # A create the killed replica had on its way may or may not have reached the provider: such
    # a job is failed and refunded rather than sent again (the gateway offers no lookup). The
    # restarted replicas stopped with SIGTERM, which lets a create on its way finish: none of theirs.
    failed = [j for j in jobs if j["status"] != "succeeded"]
    assert all(j["status"] == "failed" and j["failure_kind"] == "provider_unavailable"
               and "submit interrupted" in j["failure_detail"] for j in failed), failed
    assert len(failed) <= 16  # at most that many creates start at once on one replica
    # at most one create per request, and every video from the provider job its row names
    assert max(Counter(body["prompt"] for body in gateway.create_attempts).values()) == 1
    succeeded = [j for j in jobs if j["status"] == "succeeded"]
    assert len({j["provider_job_id"] for j in succeeded}) == len(succeeded)
    assert {j["provider_job_id"] for j in succeeded} <= set(gateway.jobs)
    # one final message per job: the video, or the failure's explanation
    for job in jobs:
        thread = [m for m in slack.thread(job["channel_id"], job["thread_ts"]) if m.ts != job["thread_ts"]]
        finals = [m for m in thread if m.files] if job["status"] == "succeeded" else \
            [m for m in thread if "(failure: `provider_unavailable`)" in (m.text or "")]
        assert len(finals) == 1, (job["id"], [m.text for m in thread])
    mentions = [j for j in jobs if j["thread_ts"].startswith("1700000")]
    assert len(mentions) == len({j["thread_ts"] for j in mentions})  # a retry made no second job
    # the ledger, exact to the micro-dollar: a charge per video, a release per failure
    ledger = {r["job_id"]: r for r in await _rows(url, "SELECT job_id, state, charged_micros FROM ledger")}
    assert len(ledger) == len(jobs)
    for job in jobs:
        row = ledger[job["id"]]
        if job["status"] == "succeeded":
            assert (row["state"], row["charged_micros"], job["cost_micros"]) == ("charged", COST, COST)
        else:
            assert (row["state"], job["cost_micros"]) == ("released", 0)
    per_user = Counter(j["user_id"] for j in jobs)
    assert max(per_user.values()) * COST <= LIMIT
    assert seen and max(seen) <= LIMIT
    for bot in bots[1:]:
        log = bot.log_path.read_text()
        assert "Traceback" not in log, log[-3000:]


async def test_a_replica_frozen_past_its_lease_does_nothing_for_the_jobs_it_lost(fleet) -> None:
    url, slack, gateway, bots = fleet
    a, b = bots[0], bots[1]
    await asyncio.gather(a.start(), b.start())
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(4):
            r = await post_signed(http, f"{a.url}/slack/events",
                                  slash_body(f"frozen number {i}", user=USERS[i], response_url=slack.new_response_url()))
            assert "Got it" in r.json()["text"]
    await wait_until(lambda: len(gateway.submits) == 4, 10, "four submits")
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)  # frozen: no heartbeat, no steps
    try:
        async def all_delivered() -> bool:
            rows = await _rows(url, "SELECT COUNT(*) FROM deliveries WHERE state = 'done'")
            return rows[0][0] == 4
        await wait_until(all_delivered, 20, "the other replica to finish A's jobs")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    uploads = sum(1 for m in slack.messages if m.files)
    edits_before = len(slack.messages)
    await asyncio.sleep(4)  # A's timers fire now; it must notice it lost every job
    assert sum(1 for m in slack.messages if m.files) == uploads == 4
    assert len(slack.messages) == edits_before
    assert len(gateway.create_attempts) == 4
    log = a.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    owners = await _rows(url, "SELECT DISTINCT owner FROM jobs")
    assert [r[0] for r in owners] == [None]


async def test_two_socket_mode_replicas_make_one_job_per_request(tmp_path) -> None:
    """Slack spreads Socket Mode envelopes over every open connection, a retry often to another
    one than the first delivery: the fake sends each envelope down the next socket in turn."""
    import os

    from bot.fakes.fakeslack import app_mention_payload, slash_command_payload
    from tests.test_socket_mode import APP_TOKEN, BOT_TOKEN
    from tests.test_socket_mode import BotProcess as SocketBot

    async with fresh_postgres_database() as url, FakeSlack() as fake:
        fake.add_channel("C1", name="general", member=True)
        fake.add_user("U1", name="alice")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SORA_", "VIDEO_", "OPENAI_"))},
            "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_URL": fake.api_url,
            "SORA_DATABASE_URL": url, "SORA_LEASE_SECONDS": "3", "SORA_SIMULATOR_SECONDS": "0.5",
            "SORA_POLL_INTERVAL": "0.1", "SORA_DAILY_BUDGET_USD": "50", "SORA_MAX_CONCURRENT_PER_USER": "30",
        }
        replicas = [SocketBot(env, tmp_path / f"s{i}.log") for i in range(2)]
        try:
            await replicas[0].start(fake)
            assert replicas[1].proc is None
            await replicas[1].start(fake)  # returns once a socket is open: wait for the second
            await fake.wait_for_socket(count=2, timeout=20)

            mentions = []
            for i in range(8):
                slash = await fake.send_envelope(
                    "slash_commands", slash_command_payload(f"socket command {i}", response_url=fake.new_response_url()))
                assert "Got it" in (await fake.wait_for_ack(slash, timeout=3))["payload"]["text"]
                mention = fake.add_message("C1", f"<@UBOT> socket mention {i}", user="U1")
                mentions.append(mention)
                payload = app_mention_payload(mention.text, user="U1", channel="C1", ts=mention.ts,
                                              event_id=f"EvSock{i:03d}")
                first = await fake.send_envelope("events_api", payload)  # to one replica...
                retry = await fake.send_envelope("events_api", payload, retry_attempt=1, retry_reason="timeout")
                for envelope_id in (first, retry):  # ...and its retry to the other
                    await fake.wait_for_ack(envelope_id, timeout=3)

            def all_videos() -> bool:
                return sum(1 for m in fake.messages if m.files) >= 16
            await fake.wait_for(all_videos, timeout=20)
            await asyncio.sleep(0.5)  # room for a second video, were there one
            jobs = await replicas[0].jobs()
            assert len(jobs) == 16 and {j["status"] for j in jobs} == {"succeeded"}
            for mention in mentions:
                assert sum(1 for j in jobs if j["thread_ts"] == mention.ts) == 1
                assert sum(1 for m in fake.thread("C1", mention.ts)[1:] if m.files) == 1
            assert sum(1 for m in fake.messages if m.files) == 16
            for replica in replicas:
                assert await replica.signal(signal.SIGTERM) == 0
                assert "Traceback" not in replica.log()
        finally:
            for replica in replicas:
                if replica.proc is not None and replica.proc.returncode is None:
                    replica.proc.kill()
                    await replica.proc.wait()
