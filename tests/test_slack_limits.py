"""Slack's limits, and what the bot does when Slack says no.

The fake Slack refuses what Slack's reference says Slack refuses (checked here against
slack_sdk's client, as the bot calls it); every Block Kit payload the bot builds passes both
those limits and slack_sdk's own models with extreme inputs; and a message Slack refuses
never strands a job: a simpler form is sent, and when every form is refused the job fails as
`slack_refused`, refunded, and its owner is told.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import messages
from bot.cli import jobs_json, usage_json
from bot.fakes.fakeslack import FakeSlack
from bot.fakes.fakeslack_limits import blocks_problems, units, view_problems
from bot.surfaces.home import BudgetState, home_view
from bot.slack.messages import APPROVE_ACTION
from bot.models import FailureKind, Job, JobStatus
from bot.providers.gateway import GatewayProvider
from bot.slack.slack_text import utf16_len
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import action_body, post_signed

# 4,000 characters (the prompt limit) of what grows most when escaped, and emoji that count
# twice in UTF-16
EXTREME = ("Tom & <Jerry> 😀🎬 *bold* _it_ ~x~ `c` <!channel> " * 100)[:4000]
ISSUE_EXAMPLE = "Tom & Jerry " * 60 + "&" * 600  # a 3,987-character section before the fix


def escaped(text: str) -> str:
    """Text as Slack sends what a person typed: &, < and > escaped (a raw < is markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(text: str = "Go", value: str = "v") -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": "a", "value": value}


def _select(options: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "input", "label": {"type": "plain_text", "text": "Pick"},
            "element": {"type": "static_select", "action_id": "s", "options": options}}


def _opt(text: str = "o", value: str = "v") -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text}, "value": value}


def _modal(blocks: list[dict[str, Any]] | None = None, **over: Any) -> dict[str, Any]:
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Title"},
            "blocks": blocks if blocks is not None else [_section("hi")]}
    view.update(over)
    return view


# ------------------------------------------------------------------ the fake refuses what Slack refuses

TOO_BIG_BLOCKS = {
    "section of 3,001 characters": [_section("x" * 3001)],
    "section of 1,501 emoji (3,002 UTF-16 units)": [_section("😀" * 1501)],
    "header of 151": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    "button text of 76": [{"type": "actions", "elements": [_button("b" * 76)]}],
    "option value of 151": [_select([_opt(value="v" * 151)])],
    "option text of 76": [_select([_opt(text="t" * 76)])],
    "101 options": [_select([_opt(value=str(i)) for i in range(101)])],
    "block_id of 256": [{**_section("x"), "block_id": "b" * 256}],
    "51 blocks": [_section(str(i)) for i in range(51)],
    "a block_id twice": [{**_section("a"), "block_id": "same"}, {**_section("b"), "block_id": "same"}],
    "11 context elements": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
}


@pytest.fixture
async def fake() -> Any:
    async with FakeSlack() as f:
        f.add_channel("C1", name="general", member=True)
        yield f


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=fake.api_url)


@pytest.mark.parametrize("blocks", list(TOO_BIG_BLOCKS.values()), ids=list(TOO_BIG_BLOCKS))
async def test_the_fake_refuses_blocks_past_slacks_limits(fake, client, blocks) -> None:
    for method in (client.chat_postMessage, client.chat_postEphemeral):
        with pytest.raises(SlackApiError) as exc:
            await method(channel="C1", user="U1", text="fallback", blocks=blocks)
        assert exc.value.response["error"] == "invalid_blocks"
        assert exc.value.response["response_metadata"]["messages"]  # says what was wrong, as Slack does
    assert [m for m in fake.messages if m.blocks] == []


async def test_the_fake_takes_blocks_at_exactly_the_limits(fake, client) -> None:
    blocks = [
        _section("x" * 3000), _section("😀" * 1500),
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        {"type": "actions", "block_id": "b" * 255, "elements": [_button("b" * 75, "v" * 2000)]},
    ]
    resp = await client.chat_postMessage(channel="C1", text="t" * 40_000, blocks=blocks)
    assert resp["ok"]
    await client.chat_update(channel="C1", ts=resp["ts"], text="t", blocks=[_section("y" * 3000)])


async def test_the_fake_refuses_too_long_text_and_bad_views(fake, client) -> None:
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C1", text="t" * 40_001)
    assert exc.value.response["error"] == "msg_too_long"
    resp = await client.chat_postMessage(channel="C1", text="short")
    with pytest.raises(SlackApiError) as exc:
        await client.chat_update(channel="C1", ts=resp["ts"], text="t", blocks=[_section("x" * 3001)])
    assert exc.value.response["error"] == "invalid_blocks"
    bad_views = [
        _modal(title={"type": "plain_text", "text": "T" * 25}),
        _modal(submit={"type": "plain_text", "text": "S" * 25}),
        _modal(private_metadata="m" * 3001),
        _modal([_section(str(i)) for i in range(101)]),
        _modal([{"type": "input", "label": {"type": "plain_text", "text": "p"},
                 "element": {"type": "plain_text_input", "action_id": "v", "max_length": 3000,
                             "initial_value": "x" * 3001}}]),
    ]
    for view in bad_views:
        with pytest.raises(SlackApiError) as exc:
            await client.views_open(trigger_id="t", view=view)
        assert exc.value.response["error"] == "invalid_arguments"
    assert (await client.views_open(trigger_id="t", view=_modal(private_metadata="m" * 3000)))["ok"]


# ------------------------------------------------------------------ what the bot builds, with extreme inputs

WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TZ = ZoneInfo("UTC")


def _job(n: int = 0, **kw: Any) -> Job:
    base: dict[str, Any] = dict(
        id=f"j{n:07d}", user_id="U1", team_id="T1", channel_id="C1", thread_ts="1764590400.000100",
        status_ts="1764590400.000100", source="command", model="simulator", provider="simulator",
        prompt=EXTREME, duration_seconds=8, resolution="720p", aspect_ratio="16:9", status=JobStatus.RUNNING,
        failure_kind=None, failure_detail=None, progress=40, provider_job_id="p1", estimate_micros=800_000,
        cost_micros=0, video_url=None, response_url=None, created_at=WHEN, submit_started_at=WHEN,
        last_progress_at=WHEN, stall_notified=False, finished_at=None, budget_day="2026-12-01",
    )
    base.update(kw)
    return Job(**base)


def _every_state() -> list[Job]:
    return [
        _job(status=JobStatus.QUEUED, progress=None), _job(status=JobStatus.RUNNING, stall_notified=True),
        _job(status=JobStatus.SUCCEEDED, cost_micros=800_000, finished_at=WHEN),
        _job(status=JobStatus.CANCELLED, failure_kind=FailureKind.CANCELLED, finished_at=WHEN),
        *(_job(status=JobStatus.FAILED, failure_kind=kind, finished_at=WHEN) for kind in FailureKind),
    ]


def _check_message(text: str, blocks: list[dict[str, Any]]) -> None:
    assert blocks_problems(blocks, max_blocks=50) == []
    assert units(text) <= 4000  # the notification text stays short, well inside 40,000


@pytest.mark.parametrize("prompt", [EXTREME, ISSUE_EXAMPLE, "&" * 4000, "😀" * 4000, "\n" * 3999 + "x"],
                         ids=["mixed", "issue-example", "ampersands", "emoji", "newlines"])
def test_every_message_the_bot_builds_fits_slack(prompt: str) -> None:
    for job in _every_state():
        job = dataclasses.replace(job, prompt=prompt)
        _check_message(*messages.request_message(job, tz=TZ, give_up_at=WHEN, fallback=("m" * 140, 10**9)))
    jobs = [_job(i, prompt=prompt, model=f"model-{'x' * 140}-{i}") for i in range(4)]
    _check_message(*messages.compare_message("c1234567", jobs))
    _check_message(*messages.compare_message("c1234567", jobs, awaiting_approval=True))
    _check_message(*messages.approval_request_message("k1", jobs, amount_micros=10**9, threshold_micros=10**6,
                                                      expires_at=WHEN, tz=TZ))
    for state in ("approved", "denied", "expired", "withdrawn"):
        _check_message(*messages.approval_decided_message(jobs, state=state, by="UADMIN", amount_micros=10**9))
    assert view_problems(messages.edit_modal(_job(prompt=prompt, status=JobStatus.FAILED,
                                                  failure_kind=FailureKind.GENERATION_FAILED))) == []


def test_the_issues_example_section_is_within_3000_and_keeps_most_of_the_prompt() -> None:
    _, blocks = messages.request_message(_job(prompt=ISSUE_EXAMPLE), tz=TZ)
    section = blocks[0]["text"]["text"]
    assert utf16_len(section) <= 3000
    assert section.endswith("…") and section.count("Tom &amp; Jerry") >= 60  # cut in the &s, not in Jerry


def test_an_echo_is_inert_and_formats_nothing() -> None:
    echoed = messages.escape_mrkdwn("<!channel> @here *bold* _it_ ~no~ `code` <@U1> &")
    for active in ("<!channel>", "@here", "*", "_", "~", "`", "<@U1>"):
        assert active not in echoed
    assert echoed.endswith("&amp;")


def test_failure_texts_bound_a_long_provider_reason() -> None:
    job = _job(status=JobStatus.FAILED, failure_kind=FailureKind.INVALID_REQUEST, finished_at=WHEN)
    text = messages.failure_message(job, provider_label="Gateway", reason="<!here> " + "r" * 10_000)
    assert utf16_len(text) < 1000 and "<!here>" not in text


def test_home_with_many_long_jobs_fits_a_view() -> None:
    budget = BudgetState(5_000_000, 0, 0, WHEN, WHEN, TZ)
    jobs = [_job(i, thread_permalink="https://fake-workspace.slack.com/archives/C1/p1?thread_ts=1&cid=C1")
            for i in range(200)]
    view = home_view(budget=budget, jobs=jobs)
    assert view_problems(view) == []


def test_the_models_answer_stays_short_with_150_models(tmp_path) -> None:
    from bot.catalog import build_catalog

    ids = [f"vendor/model-{i:03d}-{'x' * 60}" for i in range(150)]
    prices = tmp_path / "prices.toml"
    prices.write_text("".join(f'["{i}"]\n720p = 0.1\n' for i in ids), encoding="utf-8")
    text = messages.models_text(build_catalog(providers=["gateway"], gateway_models=ids, prices_file=prices))
    assert utf16_len(text) <= messages.ANSWER_CHARS and ids[0] in text
    assert "more: the request form" in text


def test_a_file_title_never_broadcasts() -> None:
    title = messages.file_title(_job(prompt="<!channel> look @here " + "y" * 500))
    assert "<!channel>" not in title and "@here" not in title and utf16_len(title) <= 100


# ------------------------------------------------------------------ through the real app


async def _jobs(bot) -> list[dict[str, Any]]:
    return json.loads(await jobs_json(bot.deps.db, limit=0))


async def _reserved(bot) -> float:
    return sum(r["reserved_usd"] for r in json.loads(await usage_json(bot.deps, None)))


def _videos(slack) -> list[Any]:
    return [m for m in slack.messages if m.files]


@pytest.mark.parametrize("prompt", [ISSUE_EXAMPLE, EXTREME], ids=["issue-example", "extreme"])
async def test_a_long_escaped_prompt_through_sora_ends_with_the_video(make_bot, slack, prompt) -> None:
    bot = await make_bot()
    reply = (await bot.slash(escaped(prompt))).json()["text"]
    assert "reserved" in reply, reply
    await bot.runtime.poller.idle(20)
    [job] = await _jobs(bot)
    assert job["status"] == "succeeded" and job["prompt"] == prompt.strip()
    root = slack.roots("C1")[0]
    assert root.blocks and utf16_len(root.blocks[0]["text"]["text"]) <= 3000
    assert [m.thread_ts for m in _videos(slack)] == [job["thread_ts"]]
    assert all(c.refused is None for c in slack.calls)  # nothing the bot sent was refused
    assert await _reserved(bot) == 0


@pytest.fixture
async def two_models(make_bot, slack):
    """The simulator and a gateway's sora-2: two models, so a compare can run."""
    async with FakeGatewayServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        async def start(**settings: Any):
            gateway = GatewayProvider(server.base_url, server.api_key, client=client)
            return await make_bot(providers={"gateway": gateway}, sora_daily_budget_usd="50", **settings)

        yield start, server


async def test_an_extreme_prompt_through_compare_ends_with_both_videos(two_models, slack) -> None:
    start, server = two_models
    bot = await start()
    reply = (await bot.slash(f"compare -m sora-2,simulator -d 8 {escaped(EXTREME)}")).json()["text"]
    assert "reserved" in reply, reply
    await bot.runtime.poller.idle(20)
    jobs = await _jobs(bot)
    assert {j["status"] for j in jobs} == {"succeeded"} and {j["prompt"] for j in jobs} == {EXTREME.strip()}
    assert len(_videos(slack)) == 2
    assert any(m.text.startswith("*Side by side*") for m in slack.messages)
    assert all(c.refused is None for c in slack.calls)
    assert await _reserved(bot) == 0


async def test_an_extreme_prompt_through_an_approval_ends_with_the_video(make_bot, slack) -> None:
    slack.add_user("UADMIN", name="ada", is_admin=True)
    bot = await make_bot(sora_approval_over_usd="1.00", sora_admin_user_ids="UADMIN")
    reply = (await bot.slash(f"-d 20 {escaped(EXTREME)}")).json()["text"]
    assert "needs an admin's approval" in reply, reply
    await slack.wait_for(lambda: any(m.channel == "DUADMIN" for m in slack.messages), timeout=5)
    dm = next(m for m in slack.messages if m.channel == "DUADMIN")
    key = next(e["value"] for b in dm.blocks if b["type"] == "actions" for e in b["elements"])
    await post_signed(bot.http, bot.url, action_body(APPROVE_ACTION, key, user="UADMIN", channel="DUADMIN",
                                                     response_url=slack.new_response_url()))
    await bot.runtime.poller.idle(20)
    [job] = await _jobs(bot)
    assert job["status"] == "succeeded" and len(_videos(slack)) == 1
    assert dm.edits and "Approved by" in dm.text  # the decided DM replaced its blocks
    assert all(c.refused is None for c in slack.calls)
    assert await _reserved(bot) == 0


async def test_refused_blocks_fall_back_to_the_plain_words_and_the_video_still_arrives(make_bot, slack) -> None:
    for method in ("chat.postMessage", "chat.update"):
        slack.refuse(method, "invalid_blocks", when=lambda p: bool(p.get("blocks")))
    bot = await make_bot()
    await bot.slash(escaped("a paper boat & a <lighthouse>"))
    await bot.runtime.poller.idle(20)
    [job] = await _jobs(bot)
    assert job["status"] == "succeeded"
    root = slack.roots("C1")[0]
    assert not root.blocks and "a paper boat &amp; a &lt;lighthouse&gt;" in root.text
    assert f"job `{job['id']}`" in root.text  # the facts line came along
    assert [m.thread_ts for m in _videos(slack)] == [root.ts]


async def _refused_everywhere(bot, slack) -> dict[str, Any]:
    await bot.runtime.poller.idle(20)
    [job] = await _jobs(bot)
    assert job["status"] == "failed" and job["failure_kind"] == "slack_refused"
    assert job["cost_usd"] == 0 and job["provider_job_id"] is None
    assert bot.deps.providers["simulator"].submits == []
    assert await _reserved(bot) == 0
    return job


async def test_a_message_slack_refuses_in_every_form_fails_the_job_refunded_and_says_so(make_bot, slack) -> None:
    slack.refuse("chat.postMessage", "invalid_blocks")
    bot = await make_bot()
    url = slack.new_response_url()
    reply = (await bot.slash("a paper boat", response_url=url)).json()["text"]
    assert "$0.80 reserved" in reply
    job = await _refused_everywhere(bot, slack)
    refused = [c for c in slack.calls_to("chat.postMessage") if c.refused]
    assert len(refused) == 3  # blocks, words with the buttons, words alone: then it stops
    [told] = slack.responses[url]
    assert "Slack refused" in told["text"] and job["id"] in told["text"] and "not charged" in told["text"]
    # and after a restart nothing is tried again
    await bot.runtime.poller.resume()
    await bot.runtime.poller.idle(5)
    assert len([c for c in slack.calls_to("chat.postMessage") if c.refused]) == 3


async def test_a_refused_mention_is_answered_by_ephemeral(make_bot, slack) -> None:
    slack.refuse("chat.postMessage", "msg_too_long")
    bot = await make_bot()
    await bot.mention("<@UBOT> a paper boat")
    job = await _refused_everywhere(bot, slack)
    [note] = [m for m in slack.ephemerals if m.ephemeral_to == "U1"]
    assert "Slack refused" in note.text and job["id"] in note.text


async def test_a_compare_slack_refuses_fails_every_model_and_says_so_once(two_models, slack) -> None:
    start, server = two_models
    slack.refuse("chat.postMessage", "invalid_blocks")
    bot = await start()
    url = slack.new_response_url()
    reply = (await bot.slash("compare -m sora-2,simulator -d 8 a fox", response_url=url)).json()["text"]
    assert "reserved" in reply, reply
    await bot.runtime.poller.idle(20)
    jobs = await _jobs(bot)
    assert len(jobs) == 2 and {j["failure_kind"] for j in jobs} == {"slack_refused"}
    assert await _reserved(bot) == 0
    assert bot.deps.providers["simulator"].submits == [] and server.create_attempts == []
    [told] = slack.responses[url]
    assert "`sora-2`" in told["text"] and "`simulator`" in told["text"]
    assert not any(m.text.startswith("*Side by side*") for m in slack.messages)


def test_an_unknown_model_answer_names_a_few_of_150(tmp_path) -> None:
    from bot.catalog import build_catalog
    from bot.errors import InvalidRequest
    from bot.parsing import parse_command

    ids = [f"vendor/model-{i:03d}" for i in range(150)]
    prices = tmp_path / "prices.toml"
    prices.write_text("".join(f'["{i}"]\n720p = 0.1\n' for i in ids), encoding="utf-8")
    catalog = build_catalog(providers=["gateway"], gateway_models=ids, prices_file=prices)
    with pytest.raises(InvalidRequest) as exc:
        parse_command("-m nope a cat", catalog)
    assert "`vendor/model-019`" in exc.value.user_message() and "and 130 more" in exc.value.user_message()
    assert utf16_len(exc.value.user_message()) < 1000


async def test_a_status_edit_gives_the_message_new_block_ids(make_bot, slack) -> None:
    bot = await make_bot()
    await bot.slash("a paper boat")
    await bot.runtime.poller.idle(20)
    root = slack.roots("C1")[0]
    versions = [blocks for _, blocks in root.edits] + [root.blocks]
    assert len(versions) >= 2
    ids = [tuple(b["block_id"] for b in blocks) for blocks in versions]
    # a version whose blocks changed has ids of its own (Slack clients keep blocks by id)
    for a, b, ids_a, ids_b in zip(versions, versions[1:], ids, ids[1:]):
        assert (a == b) or not set(ids_a) & set(ids_b)
