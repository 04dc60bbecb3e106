"""A provider's failure offers the same request on the nearest other model, run once."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bot.catalog import build_catalog
from bot.cli import jobs_json, usage_json
from bot.lifecycle.fallback import fallback_for
from bot.slack.messages import FALLBACK_ACTION, RETRY_ACTION
from bot.providers.gateway import GatewayProvider
from storage import jobs as jobstore
from tests.fakes.google_agent import FakeAgentPlatformServer, make_veo_provider
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import action_body, post_signed


@pytest.fixture
async def world(make_bot, slack):
    async with FakeGatewayServer(run_seconds=0.2) as gateway, FakeAgentPlatformServer(run_seconds=0.2) as veo, \
            httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client),
                       "veo": make_veo_provider(veo, client)},
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
    # Runway's own gen4.5 tops out at 10 s; seedance2 on Runway keeps the whole 12
    assert choice is not None and choice.spec.id == "runway/seedance2" and choice.duration_s == 12
    alone = build_catalog(providers=["gateway"], gateway_models=["sora-2"], include_simulator=True)
    assert fallback_for(alone, job) is None


async def test_automatic_fallback_runs_the_next_listed_model_once_and_says_so(make_bot, slack) -> None:
    from bot.lifecycle import flow
    from bot.config import Settings

    async with FakeGatewayServer(run_seconds=0.2, retired_models=frozenset({"sora-2"})) as gateway, \
            FakeAgentPlatformServer(run_seconds=0.2) as veo, httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client),
                       "veo": make_veo_provider(veo, client)},
            sora_default_model="sora-2", sora_fallback_models="sora-2,veo-3.1-fast,veo-3.1",
        )
        old_id = (await bot.slash("-d 8 a heron at dawn")).json()["text"].split("`")[1]
        await slack.wait_for(lambda: bool(slack.roots("C1")), timeout=5)
        root = slack.roots("C1")[0]
        await slack.wait_for(lambda: any(m.files for m in slack.thread("C1", root.ts)), timeout=10)
        await bot.runtime.poller.idle(10)

        jobs = {j["id"]: j for j in json.loads(await jobs_json(bot.deps.db))}
        assert len(jobs) == 2 and len(veo.submits) == 1 and gateway.submits == []
        new = next(j for j in jobs.values() if j["id"] != old_id)
        # the listed sora-2 is the model that failed: the next one ran, same length, same thread
        assert (new["model"], new["duration_seconds"], new["fallback_of"], new["status"]) == (
            "veo-3.1-fast", 8, old_id, "succeeded")
        assert new["thread_ts"] == jobs[old_id]["thread_ts"] == root.ts
        failure = next(m for m in slack.thread("C1", root.ts) if "(failure: `provider_retired`)" in m.text)
        assert f"running it on `veo-3.1-fast` instead (8 s, $1.20 reserved): job `{new['id']}`" in failure.text
        assert FALLBACK_ACTION not in json.dumps(root.blocks)  # no button once it runs elsewhere
        usage = json.loads(await usage_json(bot.deps, None))[0]
        assert (usage["spent_usd"], usage["reserved_usd"]) == (1.2, 0.0)

        # a later click, or the same step run again after a restart, starts nothing new
        assert (await _click(bot, old_id)).startswith("Already running it on `veo-3.1-fast`")
        old = await jobstore.get_job(bot.deps.db, old_id)
        assert await flow.start_automatic_fallback(bot.deps, old) is None
        assert len(json.loads(await jobs_json(bot.deps.db))) == 2 and len(veo.submits) == 1

    assert Settings(_env_file=None, sora_fallback_models=" Veo-3.1-fast , gen4.5 ").fallback_models == [
        "veo-3.1-fast", "gen4.5"]


async def test_an_unknown_fallback_model_stops_start_up(make_bot) -> None:
    from bot.catalog import CatalogError

    with pytest.raises(CatalogError, match="SORA_FALLBACK_MODELS: 'nope' not offered here"):
        await make_bot(sora_fallback_models="simulator,nope")


async def test_admins_set_the_fallback_list_from_slack(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN")
    assert "Automatic fallback is off" in await bot.admin("fallback", user="UADMIN")
    assert "I don't offer `nope`" in await bot.admin("fallback simulator,nope", user="UADMIN")
    assert "first model that can of: `simulator`" in await bot.admin("fallback simulator", user="UADMIN")
    assert await bot.deps.fallback_order() == ["simulator"]
    assert "Automatic fallback is off" in await bot.admin("fallback off", user="UADMIN")
    assert await bot.deps.fallback_order() == []
    assert "Sorry" in await bot.admin("fallback simulator", user="U2")
