"""A provider's failure offers the same request on the nearest other model, run once."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bot.catalog import build_catalog
from bot.cli import jobs_json, usage_json
from bot.fallback import fallback_for
from bot.messages import FALLBACK_ACTION, RETRY_ACTION
from bot.providers.gateway import GatewayProvider
from bot.providers.veo import VeoProvider
from storage import jobs as jobstore
from tests.fakes.providers import FakeGatewayServer
from tests.fakes.runway_veo import FakeVeoServer
from tests.slack_requests import action_body, post_signed


@pytest.fixture
async def world(make_bot, slack):
    async with FakeGatewayServer(run_seconds=0.2) as gateway, FakeVeoServer(run_seconds=0.2) as veo, \
            httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client),
                       "veo": VeoProvider(veo.api_key, base_url=veo.base_url, client=client)},
            include_simulator=True, sora_default_model="sora-2",
        )
        yield bot, gateway, veo


def _buttons(message) -> list[dict]:
    return [el for b in message.blocks if b.get("type") == "actions" for el in b["elements"]]


async def _click(bot, job_id: str, user: str = "U1") -> str:
    url = bot.slack.new_response_url()
    await post_signed(bot.http, bot.url, action_body(FALLBACK_ACTION, job_id, user=user, response_url=url))
    await bot.slack.wait_for(lambda: bool(bot.slack.responses.get(url)), timeout=5)
    return bot.slack.responses[url][-1]["text"]


async def test_a_retired_model_offers_the_nearest_model_and_runs_there_once(world, slack) -> None:
    bot, gateway, veo = world
    old_id = (await bot.slash("-d 8 [retired] a heron at dawn")).json()["text"].split("`")[1]
    await bot.runtime.poller.idle(10)
    old = json.loads(await jobs_json(bot.deps.db))[0]
    assert old["failure_kind"] == "provider_retired"
    buttons = _buttons(slack.roots("C1")[0])
    assert buttons[0]["action_id"] == FALLBACK_ACTION and buttons[0]["text"]["text"] == "Run on veo-3.1-fast ($1.20)"
    assert RETRY_ACTION not in [b["action_id"] for b in buttons]  # the same model would fail again

    assert "Only <@U1>" in await _click(bot, old_id, user="U2")
    first, second = await asyncio.gather(_click(bot, old_id), _click(bot, old_id))  # a double click
    assert sorted(t.split()[0] for t in (first, second)) == ["Already", "Running"]
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    await bot.runtime.poller.idle(10)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 2 and len(veo.submits) == 1
    new = next(j for j in jobs if j["id"] != old_id)
    assert (new["model"], new["duration_seconds"], new["prompt"], new["status"]) == (
        "veo-3.1-fast", 8, old["prompt"], "succeeded")
    note = slack.thread("C1", old["thread_ts"])[-1].text
    assert "Running this on `veo-3.1-fast` instead" in note and "`provider_retired`" in note
    usage = json.loads(await usage_json(bot.deps, None))[0]
    assert usage["spent_usd"] == 1.2 and usage["reserved_usd"] == 0  # the failed job cost nothing


async def test_the_fallback_obeys_the_budget(world, slack) -> None:
    bot, gateway, veo = world
    old_id = (await bot.slash("-d 8 [retired] a heron at dawn")).json()["text"].split("`")[1]
    await bot.runtime.poller.idle(10)
    for n in range(2):  # $4.00 of $5.00 spent or reserved: $1.00 left, the fallback costs $1.20
        await bot.slash(f"-m simulator -d 20 a long one {n}")
    text = await _click(bot, old_id)
    assert "$1.20" in text and "$1.00 left of your $5.00" in text
    assert veo.submits == []


async def test_no_fallback_for_failures_that_another_model_would_not_fix(world, slack) -> None:
    bot, gateway, veo = world
    await bot.slash("[blocked-input] a fight")
    await bot.runtime.poller.idle(10)
    job = await jobstore.list_jobs(bot.deps.db)
    assert fallback_for(bot.deps.catalog, job[0]) is None
    assert FALLBACK_ACTION not in [b["action_id"] for b in _buttons(slack.roots("C1")[0])]


def test_the_nearest_model_keeps_the_length_and_never_falls_back_to_play_money() -> None:
    from dataclasses import replace

    from tests.test_docs_views import _job
    from bot.models import FailureKind, JobStatus

    catalog = build_catalog(providers=["gateway", "runway"], gateway_models=["sora-2"], include_simulator=True)
    job = replace(_job(), model="sora-2", provider="gateway", duration_seconds=12, estimate_micros=1_200_000,
                  status=JobStatus.FAILED, failure_kind=FailureKind.QUOTA_EXHAUSTED)
    choice = fallback_for(catalog, job)
    assert choice is not None and choice.spec.id == "gen4.5" and choice.duration_s == 10  # Runway's longest
    alone = build_catalog(providers=["gateway"], gateway_models=["sora-2"], include_simulator=True)
    assert fallback_for(alone, job) is None
