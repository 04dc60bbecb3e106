"""Runway, Veo, Kling, Seedance and fal through the real app, each against its local fake."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bot.cli import jobs_json, usage_json
from bot.providers.fal import FalProvider
from bot.providers.kling import KlingProvider
from bot.providers.runway import RunwayProvider
from bot.providers.seedance import SeedanceProvider
from tests.fakes.fal import FakeFalServer
from tests.fakes.google_agent import FakeAgentPlatformServer, make_veo_provider
from tests.fakes.kling_seedance_fal import FakeKlingServer, FakeSeedanceServer
from tests.fakes.runway_veo import FakeRunwayServer


@dataclass(frozen=True)
class Case:
    provider: str
    server: type
    make: Callable[[Any, httpx.AsyncClient], Any]
    model: str
    options: str
    blocked_input: str  # marker -> blocked_input
    blocked_output: str  # marker -> blocked_output
    rate_limited: str = "[429-submit]"  # marker: the first create is refused with a 429


CASES = [
    Case("runway", FakeRunwayServer, lambda s, c: RunwayProvider(s.api_key, base_url=s.base_url, client=c),
         "gen4.5", "-d 5", "[safety-input]", "[safety-output]"),
    Case("veo", FakeAgentPlatformServer, lambda s, c: make_veo_provider(s, c),
         "veo-3.1", "-d 8 -r 1080p", "[prompt-refused]", "[rai]"),
    Case("kling", FakeKlingServer, lambda s, c: KlingProvider(s.access_key, s.secret_key, base_url=s.base_url, client=c),
         "kling-3.0", "-d 5 -a 1:1", "[1301]", "[failed-risk]", "[1303]"),
    Case("seedance", FakeSeedanceServer, lambda s, c: SeedanceProvider(s.api_key, base_url=s.base_url, client=c),
         "seedance-2.0", "-d 5", "[input-sensitive]", "[output-sensitive]"),
    Case("fal", FakeFalServer, lambda s, c: FalProvider(s.api_key, queue_url=s.base_url, client=c),
         "fal/fal-ai/kling-video/v3/standard/text-to-video", "-d 5", "[content-policy]", "[result-422]"),
]


@pytest.fixture(params=CASES, ids=[c.provider for c in CASES])
async def world(request, make_bot, slack):
    case: Case = request.param
    async with case.server(run_seconds=0.3) as server, httpx.AsyncClient() as client:
        provider = case.make(server, client)
        bot = await make_bot(providers={case.provider: provider}, include_simulator=False,
                             sora_default_model=case.model, sora_daily_budget_usd="20")
        yield case, server, bot


async def _one_job(bot, text: str) -> dict:
    resp = await bot.slash(text)
    assert "Got it" in resp.json()["text"], resp.json()["text"]
    await bot.runtime.poller.idle(20)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 1
    return jobs[0]


async def test_a_video_from_each_provider_lands_in_the_thread(world, slack) -> None:
    case, server, bot = world
    job = await _one_job(bot, f"{case.options} a lantern festival over a river")
    assert job["status"] == "succeeded" and job["provider"] == case.provider and job["model"] == case.model
    assert len(server.submits) == 1 and job["cost_usd"] > 0
    replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
    assert len(replies) == 1 and replies[0].files
    assert "models" in (await bot.slash("models")).json()["text"].lower()


async def test_each_providers_safety_signals_map_to_the_right_kind(world, slack) -> None:
    case, server, bot = world
    job = await _one_job(bot, f"{case.options} {case.blocked_input} a riot")
    assert job["failure_kind"] == "blocked_input", job
    await bot.runtime.poller.idle(5)
    resp = await bot.slash(f"{case.options} {case.blocked_output} a crowd", user="U2")
    assert "Got it" in resp.json()["text"]
    await bot.runtime.poller.idle(20)
    jobs = {j["user_id"]: j for j in json.loads(await jobs_json(bot.deps.db))}
    assert jobs["U2"]["failure_kind"] == "blocked_output"
    for row in json.loads(await usage_json(bot.deps, None)):
        assert row["spent_usd"] == 0 and row["reserved_usd"] == 0


async def test_models_offered_are_only_those_of_configured_providers(world, slack) -> None:
    case, server, bot = world
    offered = bot.deps.catalog.ids()
    assert case.model in offered and all(bot.deps.catalog.get(m).provider == case.provider for m in offered)


async def test_a_429_at_submit_is_retried_and_makes_one_job(world, slack) -> None:
    case, server, bot = world
    job = await _one_job(bot, f"{case.options} {case.rate_limited} a windmill at dusk")
    assert job["status"] == "succeeded", job
    assert len(server.create_attempts) == 2 and len(server.submits) == 1


async def test_a_failed_download_is_retried_without_a_second_submit(world, slack) -> None:
    case, server, bot = world
    job = await _one_job(bot, f"{case.options} [download-502] a harbour at night")
    assert job["status"] == "succeeded", job
    assert len(server.submits) == 1 and sum(server.downloads.values()) >= 2
    replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
    assert len(replies) == 1 and replies[0].files
