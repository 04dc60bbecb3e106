"""Provider callbacks through the real app: a verified callback polls the job at once; a bad,
stale, unknown, duplicate or forged one changes nothing.

Polling is set to once a minute, so only a callback can make a job finish within the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.surfaces import callbacks
from bot.config import Settings
from bot.deps import Timing
from bot.models import JobStatus
from bot.providers.fal import FalProvider
from bot.providers.kling import KlingProvider
from bot.providers.openai_videos import OpenAIVideosProvider
from bot.providers.seedance import SeedanceProvider
from storage import jobs as jobstore
from tests.fakes.fal import FakeFalServer
from tests.fakes.kling_seedance_fal import FakeKlingServer, FakeSeedanceServer
from tests.fakes.providers import FakeOpenAIServer, sign_webhook
from tests.slack_requests import SIGNING_SECRET

WHSEC = "whsec_" + base64.b64encode(b"sora-bot test webhook secret 0123").decode()
OTHER_WHSEC = "whsec_" + base64.b64encode(b"somebody else's secret 0123456789").decode()

# Polls once a minute: whatever finishes sooner was woken by a callback.
SLOW = Timing(
    poll_interval_s=60.0,
    max_poll_interval_s=60.0,
    stall_timeout_s=600.0,
    job_timeout_s=600.0,
    progress_edit_interval_s=0.0,
    submit_retry_window_s=20.0,
    download_attempts=4,
    delivery_retry_max_s=0.5,
)
QUIET_S = 0.3  # how long "nothing happened" is watched for


async def _until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await _value(check()):
            await asyncio.sleep(0.01)


async def _value(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) else result


async def _submitted_job(bot: Any, text: str, *, user: str = "U1") -> Any:
    """Ask for a video; the job once its provider job id is stored."""
    resp = await bot.slash(text, user=user)
    assert "Got it" in resp.json()["text"], resp.json()
    found: list[Any] = []

    async def submitted() -> bool:
        jobs = [j for j in await jobstore.list_jobs(bot.deps.db, user_id=user) if j.provider_job_id]
        found[:] = jobs
        return bool(jobs)

    await _until(submitted)
    return found[0]


def _videos(slack: Any, job: Any) -> list[Any]:
    return [m for m in slack.thread(job.channel_id, job.thread_ts)[1:] if m.files]


async def _delivered_within(slack: Any, job: Any, started: float, limit_s: float = 1.0) -> None:
    await slack.wait_for(lambda: bool(_videos(slack, job)), timeout=5)
    assert time.monotonic() - started <= limit_s, "the video took longer than a second after the callback"


# --- with callbacks on, polling is the safety net ------------------------------------------------

# A schedule that would poll every 50-100 ms, if the provider didn't call back.
EAGER = replace(SLOW, poll_interval_s=0.05, max_poll_interval_s=0.1, callback_safety_poll_s=30.0)


async def _openai_bot(
    make_bot: Any, server: FakeOpenAIServer, client: httpx.AsyncClient, timing: Timing, *, calls_back: bool = True
) -> Any:
    provider = OpenAIVideosProvider(server.base_url, server.api_key, client=client, calls_back=calls_back)
    bot = await make_bot(providers={"openai": provider}, include_simulator=False,
                         sora_default_model="sora-2", timing=timing, openai_webhook_secret=WHSEC)
    server.configure_webhooks(bot.url.removesuffix("/slack/events") + "/callbacks/openai", WHSEC)
    return bot


async def _costs_two_status_calls(server: Any, bot: Any, slack: Any, text: str) -> None:
    """On an eager schedule: one poll before the callback, the callback's, and the video in
    the thread within a second of it."""
    job = await _submitted_job(bot, text)
    pid = await _finished_at_provider(server, job)
    assert server.polls[pid] == 1  # the first poll only: the eager schedule would have made ten

    started = time.monotonic()
    assert await server.send_callback(pid) == 200
    await _delivered_within(slack, job, started)
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] <= 2 and len(server.submits) == 1


async def test_with_callbacks_on_a_job_costs_at_most_two_status_calls(make_bot, slack) -> None:
    async with FakeOpenAIServer(run_seconds=0.6) as server, httpx.AsyncClient() as client:
        bot = await _openai_bot(make_bot, server, client, EAGER)
        await _costs_two_status_calls(server, bot, slack, "a heron at dawn")


async def test_a_lost_callback_is_caught_by_the_safety_net_poll(make_bot, slack, caplog) -> None:
    timing = replace(EAGER, callback_safety_poll_s=0.4)
    async with FakeOpenAIServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        bot = await _openai_bot(make_bot, server, client, timing)
        job = await _submitted_job(bot, "a lighthouse in fog")
        await slack.wait_for(lambda: bool(_videos(slack, job)), timeout=5)  # no callback was sent
        pid = _bare_id(job.provider_job_id)
        assert server.polls[pid] == 2  # the first poll, then the safety net's
    assert any("without a callback reaching us" in r.getMessage() for r in caplog.records)


def test_adapters_say_whether_they_call_back() -> None:
    from bot.app import build_providers

    keys = {"openai_api_key": "sk-test", "kling_access_key": "ak", "kling_secret_key": "sk",
            "ark_api_key": "ark", "fal_key": "fal"}
    named = ("openai", "kling", "seedance", "fal")
    on = build_providers(_settings(**keys, openai_webhook_secret=WHSEC, sora_public_base_url="https://bot.example.com"))
    off = build_providers(_settings(**keys))
    socket = build_providers(_settings(**keys, openai_webhook_secret=WHSEC, sora_public_base_url="https://bot.example.com",
                                       slack_app_token="xapp-1"))
    assert [on[n].calls_back for n in named] == [True, True, True, True]
    assert [off[n].calls_back for n in named] == [False, False, False, False]
    assert [socket[n].calls_back for n in named] == [False, False, False, False]  # no HTTP server
    assert not on["simulator"].calls_back


# --- OpenAI shape: Standard Webhooks -------------------------------------------------------------


@dataclass
class OpenAIWorld:
    server: FakeOpenAIServer
    bot: Any


@pytest.fixture
async def openai(make_bot, slack):
    async with FakeOpenAIServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        # polled once a minute: only a callback can finish a job within a test
        yield OpenAIWorld(server, await _openai_bot(make_bot, server, client, SLOW, calls_back=False))


def _bare_id(provider_job_id: str) -> str:
    """The provider's own id inside a stored one ("t2v:<id>", "<path>|<id>" or "<id>")."""
    return provider_job_id.rpartition("|")[2].rpartition(":")[2]


async def _finished_at_provider(server: Any, job: Any) -> str:
    pid = _bare_id(job.provider_job_id)
    await _until(lambda: server.jobs[pid].finished_ok(server.run_seconds))
    return pid


async def test_a_signed_completed_webhook_polls_at_once_and_delivers_within_a_second(openai, slack) -> None:
    server, bot = openai.server, openai.bot
    job = await _submitted_job(bot, "a paper boat on a puddle")
    pid = await _finished_at_provider(server, job)
    assert server.polls[pid] == 0  # the next scheduled poll is a minute away

    started = time.monotonic()
    assert await server.send_callback(pid) == 200
    await _delivered_within(slack, job, started)
    done = await jobstore.get_job(bot.deps.db, job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.cost_micros > 0
    assert server.polls[pid] <= 2 and len(server.submits) == 1


async def test_a_bad_signature_or_a_tampered_body_is_refused_and_polls_nothing(openai, slack) -> None:
    server, bot = openai.server, openai.bot
    job = await _submitted_job(bot, "a lighthouse in fog")
    pid = await _finished_at_provider(server, job)

    assert await server.send_callback(pid, secret=OTHER_WHSEC) == 401
    forged = json.dumps({"type": "video.completed", "data": {"id": pid}}).encode()
    assert await server.send_callback(pid, body=forged) == 401  # signed one body, sent another
    unsigned = await bot.http.post(server.webhook_url, content=forged)
    assert unsigned.status_code == 401
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] == 0 and not _videos(slack, job)

    started = time.monotonic()  # the genuine one still works
    assert await server.send_callback(pid) == 200
    await _delivered_within(slack, job, started)


@pytest.mark.parametrize("skew_s", [-600, 600], ids=["ten-minutes-old", "ten-minutes-ahead"])
async def test_a_timestamp_outside_five_minutes_is_refused(openai, slack, skew_s: int) -> None:
    server, bot = openai.server, openai.bot
    job = await _submitted_job(bot, "a kite over dunes")
    pid = await _finished_at_provider(server, job)

    assert await server.send_callback(pid, timestamp=int(time.time()) + skew_s) == 401
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] == 0 and not _videos(slack, job)
    still = await jobstore.get_job(bot.deps.db, job.id)
    assert still is not None and still.status is JobStatus.SUBMITTED


async def test_a_webhook_about_an_unknown_video_is_accepted_and_changes_nothing(openai, slack) -> None:
    server, bot = openai.server, openai.bot
    job = await _submitted_job(bot, "a snail race")
    await _finished_at_provider(server, job)
    messages = len(slack.calls_to("chat.postMessage")) + len(slack.calls_to("chat.update"))

    # answered 200 so the provider stops retrying
    assert await server.send_callback("video_not_ours", event_type="video.completed") == 200
    await asyncio.sleep(QUIET_S)
    assert sum(server.polls.values()) == 0
    assert len(slack.calls_to("chat.postMessage")) + len(slack.calls_to("chat.update")) == messages
    still = await jobstore.get_job(bot.deps.db, job.id)
    assert still is not None and still.status is JobStatus.SUBMITTED


async def test_a_duplicate_delivery_polls_only_once(openai, slack) -> None:
    server, bot = openai.server, openai.bot
    job = await _submitted_job(bot, "[stuck] a glacier calving")
    pid = job.provider_job_id

    assert await server.send_callback(pid, event_type="video.completed", webhook_id="wh_once") == 200
    await _until(lambda: server.polls[pid] == 1)
    # a retry of the same delivery (same webhook-id, fresh timestamp and signature)
    assert await server.send_callback(pid, event_type="video.completed", webhook_id="wh_once") == 200
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] == 1

    assert await server.send_callback(pid, event_type="video.completed", webhook_id="wh_other") == 200
    await _until(lambda: server.polls[pid] == 2)


async def test_a_signed_but_false_failed_event_does_not_fail_a_running_job(openai, slack) -> None:
    server, bot = openai.server, openai.bot
    job = await _submitted_job(bot, "[stuck] a clock tower at noon")
    pid = job.provider_job_id

    assert await server.send_callback(pid, event_type="video.failed") == 200
    await _until(lambda: server.polls[pid] == 1)  # the bot asked the provider ...
    await asyncio.sleep(QUIET_S)
    after = await jobstore.get_job(bot.deps.db, job.id)  # ... which says it is still rendering
    assert after is not None and after.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)
    assert after.failure_kind is None and await jobstore.get_delivery(bot.deps.db, job.id) is None
    assert len(slack.thread(job.channel_id, job.thread_ts)) == 1  # no failure message


async def test_other_event_types_and_oversized_bodies_poll_nothing(openai, slack) -> None:
    server, bot = openai.server, openai.bot
    job = await _submitted_job(bot, "a heron fishing")
    pid = await _finished_at_provider(server, job)

    assert await server.send_callback(pid, event_type="batch.completed") == 200
    huge = await bot.http.post(server.webhook_url, content=b"{" + b" " * (70 * 1024) + b"}")
    assert huge.status_code == 413
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] == 0


async def test_without_a_webhook_secret_the_openai_route_is_off(make_bot) -> None:
    bot = await make_bot()
    base = bot.url.removesuffix("/slack/events")
    body = b'{"type":"video.completed","data":{"id":"video_1"}}'
    headers = sign_webhook(WHSEC, "wh_1", int(time.time()), body)
    assert (await bot.http.post(f"{base}/callbacks/openai", content=body, headers=headers)).status_code == 404
    assert (await bot.http.post(f"{base}/callbacks/kling?job=x&t=y", content=b"{}")).status_code == 404


# --- Kling, Seedance, fal: unsigned, so a per-job token in the URL -------------------------------


@dataclass(frozen=True)
class Unsigned:
    name: str
    server: type
    make: Callable[..., Any]
    model: str
    options: str


UNSIGNED = [
    Unsigned("kling", FakeKlingServer,
             lambda s, c, cb: KlingProvider(s.access_key, s.secret_key, base_url=s.base_url, client=c,
                                            callback_url_for=cb),
             "kling-3.0", "-d 5 -a 1:1"),
    Unsigned("seedance", FakeSeedanceServer,
             lambda s, c, cb: SeedanceProvider(s.api_key, base_url=s.base_url, client=c, callback_url_for=cb),
             "seedance-2.0", "-d 5"),
    Unsigned("fal", FakeFalServer,
             lambda s, c, cb: FalProvider(s.api_key, queue_url=s.base_url, client=c, callback_url_for=cb,
                                          jwks_url=s.jwks_url),
             "fal/fal-ai/kling-video/v3/standard/text-to-video", "-d 5"),
]


@asynccontextmanager
async def _unsigned_world(case: Unsigned, make_bot: Any, timing: Timing, run_seconds: float) -> AsyncIterator[tuple[Any, Any]]:
    """The case's fake server and a bot whose adapter sends callback URLs to this bot."""
    key = callbacks.callback_key(SIGNING_SECRET)
    base: list[str] = []  # known once the bot's server is up

    def callback_url_for(job_id: str) -> str:
        return callbacks.callback_url(base[0], case.name, job_id, key)

    async with case.server(run_seconds=run_seconds) as server, httpx.AsyncClient() as client:
        provider = case.make(server, client, callback_url_for)
        assert provider.calls_back
        # the setting turns the routes on; the URLs point at the test server instead
        bot = await make_bot(providers={case.name: provider}, include_simulator=False,
                             sora_default_model=case.model, sora_daily_budget_usd="20", timing=timing,
                             sora_public_base_url="https://bot.example.com")
        base.append(bot.url.removesuffix("/slack/events"))
        yield server, bot


@pytest.fixture(params=UNSIGNED, ids=[u.name for u in UNSIGNED])
async def unsigned(request, make_bot, slack):
    case: Unsigned = request.param
    async with _unsigned_world(case, make_bot, SLOW, run_seconds=0.2) as (server, bot):
        yield case, server, bot


def _sent_callback_url(case: Unsigned, server: Any, pid: str) -> str:
    job = server.jobs[pid]
    return job.extra["fal_webhook"] if case.name == "fal" else job.body["callback_url"]


async def test_a_callback_with_a_valid_token_polls_at_once_and_delivers(unsigned, slack) -> None:
    case, server, bot = unsigned
    job = await _submitted_job(bot, f"{case.options} a tram in the rain")
    pid = await _finished_at_provider(server, job)
    url = urlsplit(_sent_callback_url(case, server, pid))
    assert url.path == f"/callbacks/{case.name}" and parse_qs(url.query)["job"] == [job.id]
    assert server.polls[pid] == 0
    found = await jobstore.find_by_provider_job(bot.deps.db, case.name, pid)  # the bare provider id
    assert found is not None and found.id == job.id

    started = time.monotonic()
    assert await server.send_callback(pid) == 200
    await _delivered_within(slack, job, started)
    done = await jobstore.get_job(bot.deps.db, job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert server.polls[pid] <= 2 and len(server.submits) == 1

    assert await server.send_callback(pid) == 200  # a late repeat: the job is finished, nothing more
    await asyncio.sleep(QUIET_S)
    assert len(_videos(slack, job)) == 1


@pytest.mark.parametrize("case", UNSIGNED, ids=[u.name for u in UNSIGNED])
async def test_with_callback_urls_a_job_costs_at_most_two_status_calls(case: Unsigned, make_bot, slack) -> None:
    async with _unsigned_world(case, make_bot, EAGER, run_seconds=0.6) as (server, bot):
        await _costs_two_status_calls(server, bot, slack, f"{case.options} a kite over dunes")


async def test_a_callback_with_a_wrong_token_is_refused_and_polls_nothing(unsigned, slack) -> None:
    case, server, bot = unsigned
    job = await _submitted_job(bot, f"{case.options} a fox in snow")
    pid = await _finished_at_provider(server, job)
    good = _sent_callback_url(case, server, pid)
    base = good.partition("?")[0]
    key = callbacks.callback_key(SIGNING_SECRET)
    body = json.dumps({"task_id": pid, "id": pid, "request_id": pid, "status": "succeeded"}).encode()

    wrong = [
        f"{base}?job={job.id}&t=AAAAAAAAAAAAAAAAAAAAAA",
        f"{base}?job={job.id}",
        f"{base}?job=someother&t={callbacks.job_token(key, case.name, job.id)}",  # token of another job
        f"{base}?job={job.id}&t={callbacks.job_token(callbacks.callback_key('not-ours'), case.name, job.id)}",
    ]
    other = "seedance" if case.name != "seedance" else "kling"  # a token for another provider's route
    wrong.append(f"{base}?job={job.id}&t={callbacks.job_token(key, other, job.id)}")
    for url in wrong:
        assert (await bot.http.post(url, content=body)).status_code == 401, url
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] == 0 and not _videos(slack, job)

    started = time.monotonic()
    assert await server.send_callback(pid) == 200
    await _delivered_within(slack, job, started)


async def test_a_repeated_callback_body_polls_once(unsigned, slack) -> None:
    case, server, bot = unsigned
    job = await _submitted_job(bot, f"{case.options} [stuck] a waterfall")
    pid = _bare_id(job.provider_job_id)
    body = json.dumps({"task_id": pid, "id": pid, "request_id": pid, "status": "OK"}).encode()

    assert await server.send_callback(pid, body=body) == 200
    await _until(lambda: server.polls[pid] == 1)
    assert await server.send_callback(pid, body=body) == 200
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] == 1
    after = await jobstore.get_job(bot.deps.db, job.id)
    assert after is not None and not after.status.terminal


async def test_a_callback_naming_another_provider_job_polls_nothing(unsigned, slack) -> None:
    case, server, bot = unsigned
    job = await _submitted_job(bot, f"{case.options} a market at dawn")
    pid = await _finished_at_provider(server, job)
    body = json.dumps({"task_id": "999", "id": "cgt-999", "request_id": "999", "status": "OK"}).encode()

    assert await server.send_callback(pid, body=body) == 200
    await asyncio.sleep(QUIET_S)
    assert server.polls[pid] == 0


async def test_a_still_running_kling_callback_does_not_poll_early(make_bot, slack) -> None:
    key = callbacks.callback_key(SIGNING_SECRET)
    base: list[str] = []
    async with FakeKlingServer(run_seconds=30) as server, httpx.AsyncClient() as client:
        provider = KlingProvider(server.access_key, server.secret_key, base_url=server.base_url, client=client,
                                 callback_url_for=lambda j: callbacks.callback_url(base[0], "kling", j, key))
        bot = await make_bot(providers={"kling": provider}, include_simulator=False, sora_default_model="kling-3.0",
                             sora_daily_budget_usd="20", timing=SLOW, sora_public_base_url="https://bot.example.com")
        base.append(bot.url.removesuffix("/slack/events"))
        job = await _submitted_job(bot, "-d 5 -a 1:1 a slow sunrise")
        pid = job.provider_job_id.partition(":")[2]

        assert await server.send_callback(pid) == 200  # task_status "processing"
        await asyncio.sleep(QUIET_S)
        assert server.polls[pid] == 0


# --- settings -------------------------------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, slack_signing_secret=SIGNING_SECRET, **values)


def test_callback_urls_only_when_a_public_base_url_is_set_in_http_mode() -> None:
    assert callbacks.url_builder(_settings(), "kling") is None
    assert callbacks.url_builder(
        _settings(sora_public_base_url="https://bot.example.com", slack_app_token="xapp-1"), "kling"
    ) is None  # Socket Mode serves no HTTP
    build = callbacks.url_builder(_settings(sora_public_base_url="https://bot.example.com/"), "kling")
    assert build is not None
    url = urlsplit(build("k7m2p9qx"))
    assert (url.scheme, url.netloc, url.path) == ("https", "bot.example.com", "/callbacks/kling")
    token = parse_qs(url.query)["t"][0]
    assert parse_qs(url.query)["job"] == ["k7m2p9qx"] and len(token) >= 22
    assert token == callbacks.job_token(callbacks.callback_key(SIGNING_SECRET), "kling", "k7m2p9qx")
    assert token != callbacks.job_token(callbacks.callback_key(SIGNING_SECRET), "kling", "k7m2p9qy")


@pytest.mark.parametrize(("name", "value"), [
    ("sora_public_base_url", "bot.example.com"),
    ("openai_webhook_secret", "not-a-whsec"),
    ("openai_webhook_secret", "whsec_!!!"),
])
def test_bad_callback_settings_stop_start_up(name: str, value: str) -> None:
    from bot.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=name.upper()):
        load_settings(_env_file=None, **{name: value})
