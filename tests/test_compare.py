"""`/sora compare`: one prompt on several models, reserved together, settled one by one."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.catalog import build_catalog
from bot.cli import jobs_json, usage_json
from bot.errors import InvalidRequest
from bot.slack.messages import COMPARE_CANCEL_ACTION, FALLBACK_ACTION
from bot.parsing import Compare, parse_command
from bot.providers.gateway import GatewayProvider
from tests.fakes.google_agent import FakeAgentPlatformServer, make_veo_provider
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import action_body, post_signed

# the storage a job's life touches, on both engines
pytestmark = pytest.mark.both_backends


@pytest.fixture
async def world(make_bot, slack):
    async with FakeGatewayServer(run_seconds=0.3, retired_models=frozenset({"sora-2-pro"})) as gateway, \
            FakeAgentPlatformServer(run_seconds=0.3) as veo, httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client),
                       "veo": make_veo_provider(veo, client)},
            include_simulator=True, sora_default_model="sora-2",
        )
        yield bot, gateway, veo


def _summaries(slack, thread_ts: str) -> list:
    return [m for m in slack.thread("C1", thread_ts) if m.text.startswith("*Side by side*")]


async def test_three_models_one_failing_charges_each_part_on_its_own(world, slack) -> None:
    bot, gateway, veo = world
    reply = (await bot.slash("compare -m sora-2,sora-2-pro,veo-3.1-fast -d 8 a paper boat in the rain")).json()["text"]
    assert reply.startswith("Comparing `sora-2`, `sora-2-pro`, `veo-3.1-fast`") and "$4.40 reserved in all" in reply

    # one request message for the whole set, with each model's price and the total
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1, timeout=5)
    root = slack.roots("C1")[0]
    shown = json.dumps(root.blocks, ensure_ascii=False)
    for line in ("`sora-2` · 8 s · 720p · 16:9 · $0.80", "`sora-2-pro` · 8 s · 720p · 16:9 · $2.40",
                 "`veo-3.1-fast` · 8 s · 720p · 16:9 · $1.20", "Total $4.40, reserved"):
        assert line in shown

    await slack.wait_for(lambda: len(_summaries(slack, root.ts)) == 1, timeout=15)
    await bot.runtime.poller.idle(10)
    thread = slack.thread("C1", root.ts)
    videos = [m for m in thread if m.files]
    assert sorted(m.text.split("`")[1] for m in videos) == ["sora-2", "veo-3.1-fast"]
    for m in videos:  # labelled with the model, its cost and how long it took
        assert ", charged $" in m.text and "ready in " in m.text
    assert any("charged $0.80" in m.text for m in videos) and any("charged $1.20" in m.text for m in videos)
    failure = [m for m in thread if "(failure: `provider_retired`)" in m.text]
    assert len(failure) == 1 and failure[0].text.startswith("<@U1> *`sora-2-pro`*:")
    assert "You were not charged" in failure[0].text

    summary = _summaries(slack, root.ts)[0].text.splitlines()
    assert summary[1].startswith("• `sora-2` · ") and summary[1].endswith("· $0.80 · :white_check_mark: video above")
    assert summary[2].startswith("• `sora-2-pro` · ") and summary[2].endswith("· $0.00 · :x: `provider_retired`")
    assert summary[3].startswith("• `veo-3.1-fast` · ") and summary[3].endswith("· $1.20 · :white_check_mark: video above")
    assert summary[4] == "Charged $2.00 in all; the other $2.40 of the $4.40 reserved is back in <@U1>'s budget."

    # each part settled on its own: two charges, one release, nothing left reserved
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 3 and len({j["compare_id"] for j in jobs}) == 1 and jobs[0]["compare_id"]
    assert {j["model"]: (j["status"], j["cost_usd"]) for j in jobs} == {
        "sora-2": ("succeeded", 0.8), "sora-2-pro": ("failed", 0.0), "veo-3.1-fast": ("succeeded", 1.2)}
    rows = await bot.deps.db.fetchall(
        "SELECT j.model, l.state, l.reserved_micros, l.charged_micros FROM ledger l JOIN jobs j ON j.id = l.job_id")
    assert sorted(tuple(r) for r in rows) == [
        ("sora-2", "charged", 800_000, 800_000), ("sora-2-pro", "released", 2_400_000, 0),
        ("veo-3.1-fast", "charged", 1_200_000, 1_200_000)]
    usage = json.loads(await usage_json(bot.deps, None))[0]
    assert (usage["spent_usd"], usage["reserved_usd"], usage["remaining_usd"]) == (2.0, 0.0, 3.0)
    assert len(gateway.submits) == 1 and len(veo.submits) == 1  # the retired model was tried once, made nothing

    # the set's message shows the outcome, no buttons left, and no fallback for a compare's part
    final = root.blocks  # the message as it reads now (edits keep the earlier versions)
    assert "All done: charged $2.00 of the $4.40 reserved" in json.dumps(final, ensure_ascii=False)
    assert FALLBACK_ACTION not in json.dumps(final, ensure_ascii=False) and COMPARE_CANCEL_ACTION not in json.dumps(final, ensure_ascii=False)
    assert len(_summaries(slack, root.ts)) == 1


async def test_a_compare_is_one_request_for_the_budget_and_the_cap(world, slack) -> None:
    bot, gateway, veo = world
    # $0.80 + $2.40 + $3.20 = $6.40 is over the $5.00 budget: refused whole, nothing stored or sent
    reply = (await bot.slash("compare -m sora-2,sora-2-pro,veo-3.1 -d 8 a fox")).json()["text"]
    assert "These 3 videos would cost $6.40" in reply and "$5.00 left" in reply
    assert json.loads(await jobs_json(bot.deps.db)) == [] and gateway.create_attempts == [] and veo.submits == []

    # three unfinished requests is the cap (3): a compare of two takes one slot, not two
    bot2 = bot
    await bot2.slash("-m simulator -d 4 [slow] one")
    await bot2.slash("-m simulator -d 4 two")
    reply = (await bot2.slash("compare -m sora-2,veo-3.1-fast -d 8 three")).json()["text"]
    assert reply.startswith("Comparing"), reply
    assert "unfinished video jobs (the limit is 3)" in (await bot2.slash("-m simulator -d 4 four")).json()["text"]


async def test_cancel_all_stops_every_model_and_releases_the_total(make_bot, slack) -> None:
    async with FakeGatewayServer(run_seconds=30) as gateway, FakeAgentPlatformServer(run_seconds=30) as veo, \
            httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client),
                       "veo": make_veo_provider(veo, client)},
            sora_default_model="sora-2", sora_daily_budget_usd="20",
        )
        reply = (await bot.slash("compare -d 8 a slow heron")).json()["text"]
        compare_id = reply.split("compare `")[1].split("`")[0]
        await slack.wait_for(lambda: len(gateway.submits) == 2 and len(veo.submits) == 2, timeout=10)
        url = slack.new_response_url()
        await post_signed(bot.http, bot.url, action_body(COMPARE_CANCEL_ACTION, compare_id, user="U2", response_url=url))
        await slack.wait_for(lambda: bool(slack.responses.get(url)), timeout=5)
        assert "Only <@U1> or an admin" in slack.responses[url][-1]["text"]
        url = slack.new_response_url()
        await post_signed(bot.http, bot.url, action_body(COMPARE_CANCEL_ACTION, compare_id, response_url=url))
        await slack.wait_for(lambda: bool(slack.responses.get(url)), timeout=5)
        assert "Cancelled `sora-2`, `sora-2-pro`, `veo-3.1`, `veo-3.1-fast` of compare" in slack.responses[url][-1]["text"]
        root = slack.roots("C1")[0]
        await slack.wait_for(lambda: len(_summaries(slack, root.ts)) == 1, timeout=10)
        usage = json.loads(await usage_json(bot.deps, None))[0]
        assert (usage["spent_usd"], usage["reserved_usd"]) == (0.0, 0.0)
        assert {j["status"] for j in json.loads(await jobs_json(bot.deps.db))} == {"cancelled"}


def test_planning_picks_models_that_make_the_length_and_refuses_odd_sets() -> None:
    catalog = build_catalog(providers=["gateway", "veo", "runway", "kling", "fal"], gateway_models=["sora-2", "sora-2-pro"],
                            include_simulator=True, default_model="sora-2")
    plan = parse_command("compare a cat", catalog)
    assert isinstance(plan, Compare)
    assert len(plan.requests) == 4 and all(r.duration_s == 8 for r in plan.requests)
    assert "simulator" not in [r.model for r in plan.requests]  # play money only when it is all there is
    ten = parse_command("compare -d 10 a cat", catalog)
    assert all(r.duration_s == 10 for r in ten.requests) and "veo-3.1" not in [r.model for r in ten.requests]
    fal_veo = "fal/fal-ai/veo3.1/fast"  # makes 4, 6 or 8 s: nearest to 12 is 8
    named = parse_command(f"compare -m {fal_veo},kling-3.0 a cat", catalog)
    assert [(r.model, r.duration_s) for r in named.requests] == [(fal_veo, 8), ("kling-3.0", 8)]
    for text, words in [
        ("compare -m sora-2 a cat", "2 to 4 models"),
        ("compare -m sora-2,sora-2 a cat", "named twice"),
        ("compare -m sora-2,nope a cat", "`nope`"),
        ("compare -m sora-2,veo-3.1 -d 12 a cat", "`veo-3.1` can't make a 12 s video"),
        ("compare -m sora-2,sora-2-pro,veo-3.1,gen4.5,kling-3.0 a cat", "you named 5"),
        ("compare", "Tell me what to compare"),
        ("compare -d 60 a cat", "and no model here can make a 60 s video"),
        ("compare -d 25 a cat", "and only `sora-2-pro` here can make a 25 s video"),
    ]:
        with pytest.raises(InvalidRequest) as err:
            parse_command(text, catalog)
        assert words in err.value.user_message(), (text, err.value.user_message())


async def test_a_summary_still_owed_at_a_stop_is_posted_after_the_restart(world, make_bot, slack) -> None:
    bot, gateway, veo = world
    await bot.slash("compare -m sora-2,veo-3.1-fast -d 8 a lighthouse")
    root_ts = None

    def summarized() -> bool:
        nonlocal root_ts
        roots = slack.roots("C1")
        root_ts = roots[0].ts if roots else None
        return bool(root_ts) and len(_summaries(slack, root_ts)) == 1

    await slack.wait_for(summarized, timeout=15)
    await bot.runtime.poller.idle(10)
    # as if the process stopped after the last result, before the summary was recorded
    await bot.deps.db.execute("UPDATE compares SET summary_state = 'owed', summary_ts = NULL")
    await bot.runtime.close()
    again = await make_bot(providers=dict(bot.deps.providers), sora_default_model="sora-2")
    await slack.wait_for(lambda: len(_summaries(slack, root_ts)) == 2, timeout=10)
    await again.runtime.poller.idle(10)
    row = await again.deps.db.fetchone("SELECT summary_state, summary_ts FROM compares")
    assert row[0] == "done" and row[1] == _summaries(slack, root_ts)[-1].ts
    assert len(gateway.submits) == 1 and len(veo.submits) == 1  # nothing ran again
