"""The whole loop against local fake provider servers, in both API shapes.

Each case is a prompt marker the fake understands; the assertions are what the user sees
in the thread, what `jobs --json` reports, the ledger, and how many jobs were created.
"""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest

from bot.cli import jobs_json, usage_json
from bot.providers.gateway import GatewayProvider
from bot.providers.openai_videos import OpenAIVideosProvider
from tests.conftest import FAST
from tests.fakes.providers import FakeGatewayServer, FakeOpenAIServer

SHAPES = ["gateway", "openai"]


@pytest.fixture(params=SHAPES)
async def world(request, make_bot, slack):
    shape = request.param
    server_cls = FakeGatewayServer if shape == "gateway" else FakeOpenAIServer
    async with server_cls(run_seconds=0.4, slow_seconds=0.6) as server:
        # a short read timeout makes `[slow-submit]` an ambiguous submit
        client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.3))
        provider_cls = GatewayProvider if shape == "gateway" else OpenAIVideosProvider
        provider = provider_cls(server.base_url, server.api_key, client=client)

        async def start(**kw):
            timing = kw.pop("timing", FAST)
            return await make_bot(providers={shape: provider}, include_simulator=False,
                                  sora_default_model="sora-2", timing=timing, **kw)

        yield shape, server, start
        await client.aclose()


async def _run(bot, slack, text: str) -> dict:
    resp = await bot.slash(text)
    assert "Got it" in resp.json()["text"], resp.json()
    await bot.runtime.poller.idle(20)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 1
    return jobs[0]


def _replies(slack, job: dict) -> list:
    return slack.thread(job["channel_id"], job["thread_ts"])[1:]


async def _ledger_clean(bot) -> dict:
    usage = json.loads(await usage_json(bot.deps, None))
    assert usage[0]["reserved_usd"] == 0
    return usage[0]


async def test_success_uploads_the_video_and_charges_once(world, slack) -> None:
    shape, server, start = world
    bot = await start()
    job = await _run(bot, slack, "-d 8 a heron fishing at dawn")
    assert job["status"] == "succeeded" and job["provider"] == shape and job["cost_usd"] == 0.8
    assert len(server.submits) == 1
    sent = server.submits[0]
    if shape == "openai":
        assert sent["seconds"] == "8" and sent["size"] == "1280x720" and sent["model"] == "sora-2"
    else:
        assert sent["duration"] == 8 and sent["resolution"] == "720p"
    assert sent["prompt"] == "a heron fishing at dawn"  # options removed
    replies = _replies(slack, job)
    assert len(replies) == 1 and replies[0].files and replies[0].files[0]["size"] > 0
    assert (await _ledger_clean(bot))["spent_usd"] == 0.8


@pytest.mark.parametrize(
    ("marker", "kind", "words"),
    [
        ("[blocked-input]", "blocked_input", "safety filter rejected your prompt (reason: violence)"),
        ("[blocked-output]", "blocked_output", "held back by the provider's safety filter"),
        ("[fail]", "generation_failed", "failed to render"),
        ("[retired]", "provider_retired", "no longer available"),
        ("[quota]", "quota_exhausted", "credits are used up"),
        ("[expired]", "result_expired", "link expired"),
    ],
)
async def test_each_failure_is_explained_in_the_thread_and_refunded(world, slack, marker, kind, words) -> None:
    shape, server, start = world
    bot = await start()
    job = await _run(bot, slack, f"{marker} a parade")
    assert job["status"] == "failed" and job["failure_kind"] == kind and job["cost_usd"] == 0
    replies = _replies(slack, job)
    assert len(replies) == 1
    assert words in replies[0].text and f"`{kind}`" in replies[0].text and "not charged" in replies[0].text
    usage = await _ledger_clean(bot)
    assert usage["spent_usd"] == 0 and usage["remaining_usd"] == usage["limit_usd"]
    assert len(server.submits) <= 1


@pytest.mark.parametrize("world", ["gateway"], indirect=True)  # OpenAI's object has no URL field
async def test_gateway_success_without_a_url_is_a_failure(world, slack) -> None:
    shape, server, start = world
    bot = await start()
    job = await _run(bot, slack, "[no-url] a comet")
    assert job["failure_kind"] == "generation_failed"
    await _ledger_clean(bot)


@pytest.mark.parametrize("marker", ["[429-submit]", "[503-submit]"])
async def test_a_refused_submit_is_retried_and_creates_exactly_one_job(world, slack, marker) -> None:
    shape, server, start = world
    bot = await start()
    job = await _run(bot, slack, f"{marker} a windmill")
    assert job["status"] == "succeeded"
    assert len(server.create_attempts) == 2 and len(server.submits) == 1


@pytest.mark.parametrize("marker", ["[5xx-poll]", "[malformed]", "[download-502]"])
async def test_transient_poll_and_download_trouble_still_ends_in_success(world, slack, marker) -> None:
    shape, server, start = world
    bot = await start()
    job = await _run(bot, slack, f"{marker} a glass of water")
    assert job["status"] == "succeeded" and len(server.submits) == 1
    assert len(_replies(slack, job)) == 1
    if marker == "[download-502]":
        assert sum(server.downloads.values()) == 2


async def test_a_job_stuck_at_99_percent_ends_as_stuck(world, slack) -> None:
    shape, server, start = world
    bot = await start(timing=replace(FAST, stall_timeout_s=0.4, job_timeout_s=1.5))
    job = await _run(bot, slack, "[stuck] a loading bar")
    assert job["status"] == "failed" and job["failure_kind"] == "stuck" and job["progress"] == 99
    replies = _replies(slack, job)
    assert len(replies) == 1 and "may still bill the workspace" in replies[0].text
    await _ledger_clean(bot)
    if shape == "gateway":
        assert server.cancels, "the stuck job is cancelled at the provider where it allows"


async def test_an_ambiguous_submit_never_creates_a_second_job(world, slack) -> None:
    shape, server, start = world
    bot = await start()
    job = await _run(bot, slack, "[slow-submit] a ferry crossing")
    assert len(server.create_attempts) == 1
    if shape == "openai":
        # the list call finds the job the timed-out create made: adopted, not re-sent
        assert job["status"] == "succeeded" and job["provider_job_id"] in server.jobs
    else:
        # no lookup on this shape: fail safe rather than risk paying twice
        assert job["status"] == "failed" and job["failure_kind"] == "provider_unavailable"
        await _ledger_clean(bot)


async def test_over_budget_never_reaches_the_provider(world, slack) -> None:
    shape, server, start = world
    bot = await start(sora_daily_budget_usd="0.50")
    resp = await bot.slash("-d 8 a castle")
    assert "$0.50 left" in resp.json()["text"]
    assert server.create_attempts == []
