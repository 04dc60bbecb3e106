"""Several replicas on one PostgreSQL database, in one process: two real apps (make_bot) behind
their own HTTP servers, sharing the database and the fake Slack, as two replicas behind a load
balancer would. Each watches the jobs it holds leases on; a replica that stops renewing loses
them to the other, and can then change nothing for them.

Short leases (3 s, a heartbeat every second) keep takeovers quick. A crash is the replica's
heartbeat and job tasks cancelled with nothing handed back, which is what kill -9 leaves behind.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from bot.lifecycle import flow
from bot.cli import jobs_json
from bot.models import FailureKind, JobStatus
from storage import jobs as jobstore
from tests.conftest import fresh_postgres_database
from tests.prom import parse, scrape, value
from tests.slack_requests import post_signed, slash_body

LEASE_S = 3


@pytest.fixture
async def backend():
    # every test here is about PostgreSQL: skipped without a server
    async with fresh_postgres_database() as url:
        yield url


async def _pair(make_bot, **kw):
    a = await make_bot(sora_lease_seconds=LEASE_S, **kw)
    b = await make_bot(sora_lease_seconds=LEASE_S, **kw)
    assert a.deps.leases.replica_id != b.deps.leases.replica_id
    return a, b


def _job_id(resp) -> str:
    return resp.json()["text"].split("`")[1]


def _crash(bot) -> None:
    """What kill -9 leaves: no heartbeat, no job tasks, and every lease still in the rows."""
    poller = bot.runtime.poller
    poller._closing = True
    for task in [*poller.tasks.values(), poller._heartbeat]:
        if task is not None:
            task.cancel()


def _submits(*bots) -> int:
    return sum(len(b.deps.providers["simulator"].submits) for b in bots)


async def test_each_replica_watches_the_jobs_it_accepted(make_bot, slack) -> None:
    a, b = await _pair(make_bot)
    ja = _job_id(await a.slash("a fox in the snow"))
    jb = _job_id(await b.slash("an owl at night", user="U2"))
    rows = {j["id"]: j for j in json.loads(await jobs_json(a.deps.db))}
    assert rows[ja]["owner"] == a.deps.leases.replica_id and rows[jb]["owner"] == b.deps.leases.replica_id
    assert ja in a.runtime.poller.tasks and ja not in b.runtime.poller.tasks
    await slack.wait_for(lambda: sum(bool(m.files) for m in slack.messages) == 2, timeout=10)
    await a.runtime.poller.idle(5)
    await b.runtime.poller.idle(5)
    rows = {j["id"]: j for j in json.loads(await jobs_json(a.deps.db))}
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert {r["owner"] for r in rows.values()} == {None}  # finished: nobody holds them
    assert _submits(a, b) == 2


async def test_a_dead_replicas_job_is_taken_over_and_finished_once(make_bot, slack) -> None:
    a, b = await _pair(make_bot, sim_seconds=2.0)
    job_id = _job_id(await a.slash("a lighthouse in a storm"))
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    async def submitted() -> bool:
        return (await jobstore.get_job(a.deps.db, job_id)).status is not JobStatus.QUEUED
    for _ in range(100):
        if await submitted():
            break
        await asyncio.sleep(0.05)
    held = parse((await scrape(a)).text), parse((await scrape(b)).text)
    assert [value(m, "sora_leases_held") for m in held] == [1, 0]
    _crash(a)
    started = asyncio.get_running_loop().time()
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=LEASE_S + 8)
    took = asyncio.get_running_loop().time() - started
    assert took <= LEASE_S + 5
    await b.runtime.poller.idle(5)
    job = await jobstore.get_job(b.deps.db, job_id)
    assert job.status is JobStatus.SUCCEEDED and job.cost_micros == job.estimate_micros
    assert sum(bool(m.files) for m in slack.messages) == 1
    assert _submits(a, b) == 1  # taken over, never sent again
    after = parse((await scrape(b)).text)
    assert value(after, "sora_takeovers_total") == 1
    assert value(after, "sora_jobs_finished_total", provider="simulator", model="simulator", outcome="succeeded") == 1
    ledger_rows = await b.deps.db.fetchall("SELECT state, charged_micros FROM ledger WHERE job_id = ?", (job_id,))
    assert [tuple(r) for r in ledger_rows] == [("charged", job.estimate_micros)]


async def test_a_replica_frozen_past_its_lease_changes_nothing_for_the_job_it_lost(make_bot, slack) -> None:
    a, b = await _pair(make_bot, sim_seconds=5.0)
    job_id = _job_id(await a.slash("a train crossing a bridge"))
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    # A stops renewing (frozen, cut off) while its job task goes on polling
    a.runtime.poller._heartbeat.cancel()
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=15)
    await b.runtime.poller.idle(8)
    await a.runtime.poller.idle(LEASE_S + 2)  # A's task found it no longer holds the job and stopped
    assert sum(bool(m.files) for m in slack.messages) == 1
    job = await jobstore.get_job(b.deps.db, job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert not a.deps.leases.may_act(job_id)  # by its own clock too, A may no longer act for it
    assert _submits(a, b) == 1


async def test_a_fenced_write_of_a_replica_that_lost_the_job_moves_nothing(make_bot, slack) -> None:
    a, b = await _pair(make_bot, sim_seconds=30.0)
    job_id = _job_id(await a.slash("a slow one"))
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    _crash(a)
    await asyncio.sleep(LEASE_S + 1.5)  # B claims it
    job = await jobstore.get_job(b.deps.db, job_id)
    assert job.owner == b.deps.leases.replica_id and job_id in b.runtime.poller.tasks
    # A wakes up believing it still holds the job: its checks and its writes refuse
    a.deps.leases.renewed_at = time.monotonic()
    assert a.deps.leases.may_act(job_id)  # by its own clock it would act...
    assert not await flow.fail_job(a.deps, job, FailureKind.GENERATION_FAILED, "late verdict")  # ...the row says no
    assert not await jobstore.update(a.deps.db, job_id, expect=[JobStatus.SUBMITTED, JobStatus.RUNNING],
                                     now="2026-12-06T00:00:00.000000Z", fence=a.deps.leases.fence, progress=50)
    assert (await jobstore.get_job(b.deps.db, job_id)).status in (JobStatus.SUBMITTED, JobStatus.RUNNING)


async def test_a_stopping_replica_hands_its_jobs_over_at_once(make_bot, slack) -> None:
    # a long lease: only the hand-back, not its running out, can explain a quick takeover
    a = await make_bot(sora_lease_seconds=60, sim_seconds=1.5)
    b = await make_bot(sora_lease_seconds=60, sim_seconds=1.5)
    job_id = _job_id(await a.slash("a balloon over the desert"))
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    await a.runtime.close()
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    await b.runtime.poller.idle(5)
    assert (await jobstore.get_job(b.deps.db, job_id)).status is JobStatus.SUCCEEDED
    assert sum(bool(m.files) for m in slack.messages) == 1


async def test_a_cancel_sent_to_another_replica_stops_the_job_where_it_runs(make_bot, slack) -> None:
    a, b = await _pair(make_bot, sim_seconds=30.0)
    job_id = _job_id(await a.slash("a city at dawn"))
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    resp = await b.slash(f"cancel {job_id}")
    assert "cancel" in resp.json()["text"].lower()
    await a.runtime.poller.idle(5)  # A's task heard it and delivered the cancellation
    job = await jobstore.get_job(a.deps.db, job_id)
    assert job.status is JobStatus.CANCELLED and job.cost_micros == 0
    root = slack.roots("C1")[0]
    cancelled = [m for m in slack.thread("C1", root.ts)[1:] if "cancel" in (m.text or "").lower()]
    assert len(cancelled) == 1


async def test_a_slack_retry_landing_on_the_other_replica_makes_no_second_job(make_bot, slack) -> None:
    a, b = await _pair(make_bot, sim_seconds=30.0)
    body = slash_body("a koi pond", trigger_id="trigger.same", response_url=slack.new_response_url())
    first, second = await asyncio.gather(post_signed(a.http, a.url, body), post_signed(b.http, b.url, body))
    assert first.status_code == second.status_code == 200
    jobs = json.loads(await jobs_json(a.deps.db, limit=0))
    assert len(jobs) == 1
    await asyncio.sleep(0.3)
    assert len(slack.roots("C1")) == 1
    assert _submits(a, b) == 1


async def test_healthz_names_the_replica_and_its_jobs(make_bot, slack) -> None:
    a, _ = await _pair(make_bot, sim_seconds=30.0)
    await a.slash("one")
    await a.slash("two")
    health = (await a.http.get(a.url.replace("/slack/events", "/healthz"))).json()
    assert health["replica"] == a.deps.leases.replica_id and health["owned_jobs"] == 2


async def test_a_replica_whose_lease_went_stale_neither_submits_nor_posts(make_bot, slack) -> None:
    """The last checks before a paid request and before the final message: a replica frozen
    past its lease finds, by its own clock, that it may not act, before any row says so."""
    from bot.clock import budget_day, iso
    from bot.lifecycle.delivery import deliver
    from bot.lifecycle.leases import LeaseLost
    from storage.jobs import Limits, NewJob

    a, b = await _pair(make_bot, sim_seconds=0.3)
    job_id = _job_id(await a.slash("a paper boat"))
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    await a.runtime.poller.idle(5)
    # a queued job of A's, driven by hand; then A's last renewal is older than a lease allows
    now = a.deps.clock()
    new = NewJob(user_id="U1", team_id="T0001", channel_id="C1", source="command", model="simulator",
                 provider="simulator", provider_model="simulator", prompt="a kite", duration_seconds=8,
                 resolution="720p", aspect_ratio="16:9", estimate_micros=800_000)
    got = await jobstore.reserve_request(a.deps.db, [new], limits=Limits(50_000_000, None, 10), now=iso(now),
                                         day=budget_day(now, a.deps.settings.tz), lease=a.deps.leases.new_lease())
    queued = got.jobs[0]
    a.deps.leases.held.add(queued.id)
    a.runtime.poller._heartbeat.cancel()
    a.deps.leases.renewed_at -= LEASE_S
    with pytest.raises(LeaseLost):
        await flow.submit(a.deps, queued)
    assert _submits(a, b) == 1
    assert (await jobstore.get_job(a.deps.db, queued.id)).submit_started_at is None  # nothing looks sent
    # and a final message still owed is not posted by it
    await a.deps.db.execute("UPDATE deliveries SET state = 'pending' WHERE job_id = ?", (job_id,))
    a.deps.leases.held.add(job_id)
    before = len(slack.messages)
    with pytest.raises(LeaseLost):
        await deliver(a.deps, job_id)
    assert len(slack.messages) == before


async def test_a_poke_sent_to_another_replica_reaches_the_jobs_watcher(make_bot, slack) -> None:
    from tests.conftest import FAST
    from dataclasses import replace as with_

    slow = with_(FAST, poll_interval_s=60.0, max_poll_interval_s=60.0)
    a = await make_bot(sora_lease_seconds=LEASE_S, timing=slow, sim_seconds=0.3)
    b = await make_bot(sora_lease_seconds=LEASE_S, timing=slow, sim_seconds=0.3)
    job_id = _job_id(await a.slash("a fast one"))
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    await asyncio.sleep(0.5)  # rendered; without a poke A would not look for a minute
    await b.runtime.poller.wake(job_id)  # a provider callback or an approval landing on B
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=5)


async def test_a_home_publish_waits_while_another_replica_publishes_that_home(make_bot, slack) -> None:
    from bot.surfaces import home

    a, _ = await _pair(make_bot)
    other = await asyncpg.connect(a.deps.db.url)  # another replica, in the middle of publishing U1's Home
    try:
        await other.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", "home:U1")
        publishing = asyncio.create_task(home.publish_home(a.deps, "U1"))
        await asyncio.sleep(0.4)
        assert not publishing.done()
        assert not [c for c in slack.calls_to("views.publish") if c.params.get("user_id") == "U1"]
        await other.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", "home:U1")
        await asyncio.wait_for(publishing, 5)
    finally:
        await other.close()
    assert len([c for c in slack.calls_to("views.publish") if c.params.get("user_id") == "U1"]) == 1


async def test_a_long_video_carries_on_at_another_replica_that_lacks_the_clips(make_bot, slack) -> None:
    slack.keep_upload_bytes = True
    a, b = await _pair(make_bot, sim_seconds=1.0)
    reply = (await a.slash("-d 45 a ferry crossing a fjord")).json()["text"]
    assert "45 s as 3 segments" in reply

    async def segments() -> list:
        rows = await a.deps.db.fetchall(
            "SELECT id, status, segment_index FROM jobs WHERE segment_index IS NOT NULL ORDER BY segment_index")
        return [tuple(r) for r in rows]

    for _ in range(300):
        rows = await segments()
        if rows and rows[0][1] == "succeeded":
            break
        await asyncio.sleep(0.05)
    _crash(a)
    # the replicas don't share a disk: B must fetch the first clip again from the provider
    for clip in a.deps.media_dir.glob("*.mp4"):
        clip.unlink()
    await slack.wait_for(lambda: len(slack.uploads) == 1, timeout=LEASE_S + 30)
    await b.runtime.poller.idle(10)
    rows = await segments()
    assert [r[1] for r in rows] == ["succeeded"] * 3
    assert _submits(a, b) == 3  # each segment made once, across both replicas
    import io

    import av

    with av.open(io.BytesIO(next(iter(slack.uploads.values())).data)) as box:
        assert sum(1 for _ in box.decode(box.streams.video[0])) == 45 * 8
    charged = await b.deps.db.fetchall("SELECT state, charged_micros FROM ledger")
    assert sorted(tuple(r) for r in charged) == [("charged", 1_500_000)] * 3
