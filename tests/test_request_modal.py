"""The request modal, shortcuts, DMs and follow-up mentions, through the real app."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.models.blocks import Option, OptionGroup
from slack_sdk.models.views import View

from bot.surfaces import request_modal as rm
from bot.catalog import MODEL_ID_MAX, RESOLUTION_MAX
from bot.cli import jobs_json
from bot.providers.gateway import GatewayProvider
from tests.fakes.google_agent import FakeAgentPlatformServer, make_veo_provider
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import mention_body, post_signed, view_submission_body

MODAL_BLOCKS = {"input", "context", "section", "actions", "divider", "header"}
INPUT_ELEMENTS = {"plain_text_input", "static_select", "multi_static_select", "file_input", "conversations_select"}


def assert_valid_modal(view: dict[str, Any]) -> None:
    """The Block Kit rules the bot's modals rely on (Slack rejects views that break them)."""
    assert view["type"] == "modal" and len(view["blocks"]) <= 100
    assert len(view["title"]["text"]) <= 24 and len(view.get("private_metadata", "")) <= 3000
    ids = [b.get("block_id") for b in view["blocks"] if b.get("block_id")]
    assert len(ids) == len(set(ids)) and all(len(i) <= 255 for i in ids)
    for block in view["blocks"]:
        assert block["type"] in MODAL_BLOCKS, block
        if block["type"] == "input":
            element = block["element"]
            assert element["type"] in INPUT_ELEMENTS and len(block["label"]["text"]) <= 2000
            if element["type"] in ("static_select", "multi_static_select"):
                options = _menu_options(element)
                assert 1 <= len(options)
                assert all(len(o["text"]["text"]) <= 75 and len(o["value"]) <= 150 for o in options)
                if "initial_option" in element:
                    assert element["initial_option"] in options
        if block["type"] == "context":
            assert all(len(e["text"]) <= 3000 for e in block["elements"])
    assert_slack_sdk_accepts(view)


def assert_slack_sdk_accepts(view: dict[str, Any]) -> None:
    """slack_sdk's own models: the view; through to_dict each block and element (block ids,
    100 options or groups); and each option and group, which the element keeps as dicts."""
    View(**view).validate_json()
    View(**view).to_dict()
    for block in view["blocks"]:
        element = block.get("element") or {}
        for group in element.get("option_groups") or []:
            OptionGroup(**group).to_dict()
        for option in [*(element.get("options") or []), *filter(None, [element.get("initial_option")])]:
            Option(**option).to_dict()


def _menu_options(element: dict[str, Any]) -> list[dict[str, Any]]:
    """A select's options, whether plain or in groups."""
    assert ("options" in element) != ("option_groups" in element), element
    return element.get("options") or [o for g in element["option_groups"] for o in g["options"]]


def _form(body: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(body)})


def _shortcut(callback_id: str, *, kind: str, user: str = "U1", message: dict | None = None, channel: str = "C1") -> str:
    body: dict[str, Any] = {"type": kind, "callback_id": callback_id, "trigger_id": "trig.sc", "user": {"id": user},
                            "team": {"id": "T0001"}, "api_app_id": "A1", "token": "x"}
    if kind == "message_action":
        body.update(message=message, channel={"id": channel}, response_url="", message_ts=message["ts"])
    return _form(body)


def _values(view: dict[str, Any], *, prompt: str | None = "a koi pond in the rain", channel: str | None = "C1",
            **picks: str) -> dict[str, Any]:
    """State values as Slack would send them for this view, with chosen options."""
    values: dict[str, Any] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        bid, element = block["block_id"], block["element"]
        if element["type"] == "plain_text_input":
            values[bid] = {"value": {"type": "plain_text_input", "value": prompt}}
        elif element["type"] == "static_select":
            name = bid.split(":")[0]
            chosen = picks.get(name) or (element.get("initial_option") or {}).get("value")
            values[bid] = {element["action_id"]: {"type": "static_select",
                                                  "selected_option": {"value": chosen} if chosen else None}}
        elif element["type"] == "conversations_select":
            values[bid] = {"value": {"type": "conversations_select", "selected_conversation": channel}}
        elif element["type"] == "multi_static_select":
            chosen = [m for m in (picks.get(bid) or "").split(",") if m]
            values[bid] = {"value": {"type": "multi_static_select",
                                     "selected_options": [{"value": m} for m in chosen]}}
        elif element["type"] == "file_input":
            values[bid] = {"value": {"type": "file_input", "files": []}}
    return values


async def _opened(slack, before: int) -> dict[str, Any]:
    await slack.wait_for(lambda: len(slack.views) > before, timeout=5)
    return slack.views[-1]["params"]["view"]


@pytest.fixture
async def two_models(make_bot, slack):
    """The simulator (4–20 s) and Veo 3.1 (4/6/8 s; 1080p only at 8 s)."""
    async with FakeAgentPlatformServer(run_seconds=0.3) as veo, httpx.AsyncClient() as client:
        bot = await make_bot(providers={"veo": make_veo_provider(veo, client)},
                             include_simulator=True)
        yield bot


async def test_sora_with_no_text_opens_the_form(make_bot, slack) -> None:
    bot = await make_bot()
    resp = await bot.slash("")
    assert resp.status_code == 200
    view = await _opened(slack, 0)
    assert_valid_modal(view)
    assert view["callback_id"] == rm.MODAL
    cost = next(b for b in view["blocks"] if b.get("block_id") == "cost")["elements"][0]["text"]
    assert cost == "8 s × $0.10 = *$0.80* · you have $5.00 left today"


async def test_changing_the_model_updates_the_choices_and_the_cost(two_models, slack) -> None:
    bot = two_models
    await post_signed(bot.http, bot.url, _shortcut("sora_generate", kind="shortcut"))
    view = await _opened(slack, 0)
    models = next(b for b in view["blocks"] if b.get("block_id") == "model")["element"]["options"]
    assert {o["value"] for o in models} == {"simulator", "veo-3.1", "veo-3.1-fast", "veo-3.1-lite"}
    state = {"values": _values(view, model="veo-3.1")}
    action = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T0001"}, "api_app_id": "A1",
              "trigger_id": "t", "view": {**view, "id": "V42", "hash": "h1", "state": state},
              "actions": [{"action_id": rm.MODEL_ACTION, "block_id": "model", "type": "static_select",
                           "selected_option": {"value": "veo-3.1"}}]}
    await post_signed(bot.http, bot.url, _form(action))
    await slack.wait_for(lambda: any(v["method"] == "views.update" for v in slack.views), timeout=5)
    update = next(v for v in slack.views if v["method"] == "views.update")["params"]
    assert update["view_id"] == "V42" and update["hash"] == "h1"
    new = update["view"]
    assert_valid_modal(new)
    lengths = next(b for b in new["blocks"] if b["block_id"].startswith("duration:"))["element"]["options"]
    # one clip's lengths, then the longer ones Veo makes by extending, up to its 37 s
    assert [o["value"] for o in lengths] == ["4", "6", "8", "10", "12", "15", "20", "24", "30", "37"]
    assert lengths[3]["text"]["text"] == "10 s (in segments)"
    cost = next(b for b in new["blocks"] if b.get("block_id") == "cost")["elements"][0]["text"]
    assert cost.startswith("8 s × $0.40 = *$3.20*")
    assert any(b.get("block_id") == "image" for b in new["blocks"])  # Veo can start from an image


async def test_submissions_show_problems_on_the_field(two_models, slack) -> None:
    bot = two_models
    view = await rm.build_view(bot.deps, "U1", rm.defaults(bot.deps), rm.Target())

    async def submit(values: dict[str, Any], view_id: str = "V1") -> dict[str, Any]:
        resp = await post_signed(bot.http, bot.url, view_submission_body(rm.MODAL, private_metadata="{}", values=values, view_id=view_id))
        return resp.json() if resp.content else {}

    empty = await submit(_values(view, prompt="  "))
    assert empty["response_action"] == "errors" and "what to make" in empty["errors"]["prompt"]
    nowhere = await submit(_values(view, channel=None))
    assert "Pick where" in nowhere["errors"]["channel"]
    # Veo at 1080p allows only 8 s: the error lands on the length field of that view
    veo_view = await rm.build_view(bot.deps, "U1", rm.Choices("veo-3.1", 8, "1080p", "16:9"), rm.Target())
    values = _values(veo_view)
    duration_block = next(k for k in values if k.startswith("duration:"))
    values[duration_block][rm.DURATION_ACTION]["selected_option"] = {"value": "4"}
    too_short = await submit(values)
    assert too_short["errors"] == {duration_block: too_short["errors"][duration_block]}
    assert "at 1080p" in too_short["errors"][duration_block]
    # over budget: said on the length field, with what is left
    big = _values(veo_view)
    await bot.slash("-m simulator -d 20 something that takes most of the budget")
    over = await submit(big)
    assert "left of your $5.00" in next(iter(over["errors"].values()))
    assert len(json.loads(await jobs_json(bot.deps.db))) == 1


async def test_a_long_length_says_its_plan_and_submits_one_video_of_segments(two_models, slack) -> None:
    bot = two_models
    veo = await rm.build_view(bot.deps, "U1", rm.Choices("veo-3.1", 30, "720p", "16:9", "a kite"), rm.Target())
    assert_valid_modal(veo)
    cost = next(b for b in veo["blocks"] if b.get("block_id") == "cost")["elements"][0]["text"]
    # the plan before anything is reserved: Veo's clips can't make 30 s exactly
    assert cost.startswith("29 s as 4 segments on `veo-3.1` (8 + 7 + 7 + 7 s), *$11.60* in all;"), cost
    assert "more than you have left" in cost

    view = await rm.build_view(bot.deps, "U1", rm.Choices("simulator", 30, "720p", "16:9"), rm.Target())
    values = _values(view, model="simulator", duration="30")
    resp = await post_signed(bot.http, bot.url, view_submission_body(rm.MODAL, private_metadata="{}",
                                                                     values=values, view_id="V31"))
    assert resp.status_code == 200 and not resp.content
    await bot.runtime.poller.idle(20)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert sorted(j["duration_seconds"] for j in jobs) == [15, 15]
    assert len({j["compare_id"] for j in jobs}) == 1 and all(j["status"] == "succeeded" for j in jobs)
    assert sum(1 for m in slack.messages if m.files) == 1


async def test_a_valid_submission_makes_one_job_in_the_picked_channel(two_models, slack) -> None:
    bot = two_models
    slack.add_channel("C9", name="videos", member=True)
    view = await rm.build_view(bot.deps, "U1", rm.defaults(bot.deps), rm.Target())
    values = _values(view, channel="C9", model="simulator", duration="6", aspect="9:16")
    body = view_submission_body(rm.MODAL, private_metadata="{}", values=values, view_id="V77")
    first = await post_signed(bot.http, bot.url, body)
    again = await post_signed(bot.http, bot.url, body)  # a double submit
    assert first.status_code == 200 and not first.content and again.status_code == 200
    await bot.runtime.poller.idle(10)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 1
    job = jobs[0]
    assert (job["channel_id"], job["duration_seconds"], job["aspect_ratio"]) == ("C9", 6, "9:16")
    assert job["status"] == "succeeded" and slack.thread("C9", job["thread_ts"])[-1].files


async def test_compare_models_in_the_form_runs_a_compare(two_models, slack) -> None:
    bot = two_models
    view = await rm.build_view(bot.deps, "U1", rm.defaults(bot.deps), rm.Target())
    assert_valid_modal(view)
    compare_block = next(b for b in view["blocks"] if b.get("block_id") == "compare")
    assert [o["value"] for o in compare_block["element"]["options"]] == ["veo-3.1", "veo-3.1-fast", "veo-3.1-lite"]
    values = _values(view, model="simulator", duration="8", compare="veo-3.1")
    resp = await post_signed(bot.http, bot.url, view_submission_body(rm.MODAL, private_metadata="{}", values=values))
    assert resp.status_code == 200 and not resp.content
    await slack.wait_for(lambda: slack.roots("C1") and any(
        m.text.startswith("*Side by side*") for m in slack.thread("C1", slack.roots("C1")[0].ts)), timeout=10)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert sorted((j["model"], j["duration_seconds"], j["status"]) for j in jobs) == [
        ("simulator", 8, "succeeded"), ("veo-3.1", 8, "succeeded")]
    assert len({j["compare_id"] for j in jobs}) == 1 and len(slack.roots("C1")) == 1
    # a compare doesn't fit the budget: said on the compare field, nothing stored
    values = _values(view, model="simulator", duration="20", compare="veo-3.1")
    resp = await post_signed(bot.http, bot.url, view_submission_body(rm.MODAL, private_metadata="{}", values=values,
                                                                    view_id="V2"))
    assert "These 2 videos would cost $5.20" in resp.json()["errors"]["compare"]
    assert len(json.loads(await jobs_json(bot.deps.db))) == 2


# As long as Slack allows: the longest block id, `duration:{model}:{resolution}`, must still fit.
LONG_ID = ("zeta-labs/" + "text-to-video-extended-" * 7).ljust(MODEL_ID_MAX, "x")[:MODEL_ID_MAX]
LONG_RES = "2160p-hdr-".ljust(RESOLUTION_MAX, "x")


@pytest.fixture
async def many_models(make_bot, slack, tmp_path):
    """150 models through the gateway, priced in a SORA_PRICES file; the last one's id and
    resolution are as long as the catalog allows."""
    ids = [f"model-{n:03d}" for n in range(1, 150)] + [LONG_ID]
    prices = tmp_path / "prices.toml"
    prices.write_text("".join(f'["{m}"]\n720p = 0.05\n' for m in ids[:-1]) + f'["{LONG_ID}"]\n"{LONG_RES}" = 0.07\n')
    async with FakeGatewayServer(run_seconds=0.3) as gateway, httpx.AsyncClient() as client:
        bot = await make_bot(providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client)},
                             include_simulator=False, video_gateway_models=",".join(ids), sora_prices=prices,
                             sora_default_model="model-001")
        yield bot, gateway, ids


async def test_150_models_fit_slacks_menus_and_the_150th_can_be_chosen(many_models, slack) -> None:
    bot, gateway, ids = many_models
    await bot.slash("")
    view = await _opened(slack, 0)
    assert_valid_modal(view)
    model = next(b for b in view["blocks"] if b.get("block_id") == "model")["element"]
    assert [g["label"]["text"] for g in model["option_groups"]] == ["The video gateway (1/2)", "The video gateway (2/2)"]
    assert [o["value"] for o in _menu_options(model)] == ids  # every model can be picked
    assert model["initial_option"]["value"] == "model-001"
    compare = next(b for b in view["blocks"] if b.get("block_id") == "compare")["element"]
    assert [o["value"] for o in _menu_options(compare)] == ids[1:]

    # Slack sends a grouped option's choice as it sends a plain one
    action = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T0001"}, "api_app_id": "A1",
              "trigger_id": "t", "view": {**view, "id": "V150", "hash": "h1", "state": {"values": _values(view, model=LONG_ID)}},
              "actions": [{"action_id": rm.MODEL_ACTION, "block_id": "model", "type": "static_select",
                           "selected_option": {"value": LONG_ID}}]}
    await post_signed(bot.http, bot.url, _form(action))
    await slack.wait_for(lambda: any(v["method"] == "views.update" for v in slack.views), timeout=5)
    new = next(v for v in slack.views if v["method"] == "views.update")["params"]["view"]
    assert_valid_modal(new)
    assert next(b for b in new["blocks"] if b.get("block_id") == "model")["element"]["initial_option"]["value"] == LONG_ID
    assert f"duration:{LONG_ID}:{LONG_RES}" in [b.get("block_id") for b in new["blocks"]]
    assert LONG_ID not in [o["value"] for o in _menu_options(
        next(b for b in new["blocks"] if b.get("block_id") == "compare")["element"])]

    body = view_submission_body(rm.MODAL, private_metadata="{}", values=_values(new, model=LONG_ID), view_id="V150")
    resp = await post_signed(bot.http, bot.url, body)
    assert resp.status_code == 200 and not resp.content
    await bot.runtime.poller.idle(10)
    (job,) = json.loads(await jobs_json(bot.deps.db))
    assert (job["model"], job["resolution"], job["status"]) == (LONG_ID, LONG_RES, "succeeded")
    assert gateway.submits[-1]["model"] == LONG_ID


async def test_a_message_shortcut_prefills_and_answers_in_that_thread(make_bot, slack) -> None:
    bot = await make_bot()
    msg = slack.add_message("C1", "a lighthouse &amp; a storm at dusk", user="U2")
    await post_signed(bot.http, bot.url, _shortcut("sora_from_message", kind="message_action",
                                                     message={"ts": msg.ts, "text": msg.text, "user": "U2"}))
    view = await _opened(slack, 0)
    assert_valid_modal(view)
    assert view["blocks"][0]["element"]["initial_value"] == "a lighthouse & a storm at dusk"
    assert not any(b.get("block_id") == "channel" for b in view["blocks"])  # the target is fixed
    values = _values(view, prompt="a lighthouse & a storm at dusk")
    body = view_submission_body(rm.MODAL, private_metadata=view["private_metadata"], values=values, view_id="V5")
    await post_signed(bot.http, bot.url, body)
    await bot.runtime.poller.idle(10)
    job = json.loads(await jobs_json(bot.deps.db))[0]
    assert job["thread_ts"] == msg.ts and job["status"] == "succeeded"
    assert any(m.files for m in slack.thread("C1", msg.ts))


async def test_a_direct_message_is_a_request_answered_in_its_thread(make_bot, slack) -> None:
    bot = await make_bot()
    dm = slack.add_message("DU1", "-d 4 a snowy owl", user="U1")
    event = {"type": "message", "channel": "DU1", "channel_type": "im", "user": "U1",
             "text": dm.text, "ts": dm.ts}
    body = json.dumps({"token": "x", "team_id": "T0001", "api_app_id": "A1", "type": "event_callback",
                       "event_id": "EvDM1", "event_time": 1, "event": event})
    await post_signed(bot.http, bot.url, body)
    await slack.wait_for(lambda: any(m.files for m in slack.messages if m.channel == "DU1"), timeout=10)
    await bot.runtime.poller.idle(10)
    job = json.loads(await jobs_json(bot.deps.db))[0]
    assert (job["channel_id"], job["thread_ts"], job["duration_seconds"]) == ("DU1", dm.ts, 4)
    assert any(m.files for m in slack.messages if m.channel == "DU1")
    # the bot's own DM posts are not requests
    own = {**event, "user": "UBOT", "bot_id": "BBOT", "text": "Here is your video", "ts": "1700000099.000001"}
    await post_signed(bot.http, bot.url, json.dumps({"token": "x", "team_id": "T0001", "api_app_id": "A1",
                                                      "type": "event_callback", "event_id": "EvDM2",
                                                      "event_time": 1, "event": own}))
    await bot.runtime.poller.idle(5)
    assert len(json.loads(await jobs_json(bot.deps.db))) == 1


async def test_again_in_a_thread_reuses_the_previous_options(make_bot, slack) -> None:
    bot = await make_bot()
    root = slack.add_message("C1", "<@UBOT> -d 6 -a 9:16 a city street", user="U1")
    await post_signed(bot.http, bot.url, mention_body(root.text, ts=root.ts, event_id="EvA1"))
    await slack.wait_for(lambda: sum(1 for m in slack.messages if m.files) == 1, timeout=10)
    follow = slack.add_message("C1", "<@UBOT> again but at night", user="U1", thread_ts=root.ts)
    await post_signed(bot.http, bot.url, mention_body(follow.text, ts=follow.ts, thread_ts=root.ts, event_id="EvA2"))
    await slack.wait_for(lambda: sum(1 for m in slack.messages if m.files) == 2, timeout=10)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert len(jobs) == 2
    newest = jobs[0]
    assert newest["prompt"] == "again but at night"
    assert (newest["duration_seconds"], newest["aspect_ratio"], newest["thread_ts"]) == (6, "9:16", root.ts)


async def test_a_deleted_thread_parent_does_not_lose_the_video(make_bot, slack) -> None:
    bot = await make_bot()
    # a mention whose message Slack no longer knows (deleted before the bot answered)
    await post_signed(bot.http, bot.url, mention_body("<@UBOT> a red kite", ts="1600000000.000001", event_id="EvGone"))
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    await bot.runtime.poller.idle(10)
    job = json.loads(await jobs_json(bot.deps.db))[0]
    assert job["status"] == "succeeded" and job["thread_ts"] != "1600000000.000001"
    assert sum(1 for m in slack.messages if m.files) == 1
