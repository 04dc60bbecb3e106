"""Slack's markup never reaches a model: mentions, channels, links and escapes become the words a
person saw; a file that isn't an image is refused before any charge; and the request and edit
modals carry a prompt as long as `/sora` takes. Through the real app with signed requests,
plus `to_plain` on its own."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.surfaces import request_modal as rm
from bot.cli import jobs_json, usage_json
from bot.slack.messages import EDIT_ACTION, EDIT_MODAL
from bot.providers.gateway import GatewayProvider
from bot.slack.slack_text import to_plain, utf16_len
from tests.fakes.providers import FakeGatewayServer
from tests.slack_requests import action_body, post_signed, view_submission_body

PROMPT_BLOCKS = ("prompt", "prompt_2", "prompt_3")


# ---------------------------------------------------------------------------- to_plain


@pytest.mark.parametrize(("slack_text", "names", "plain"), [
    ("<@U2>", {"U2": "bob"}, "@bob"),
    ("<@W2>", {"W2": "erin"}, "@erin"),  # an Enterprise Grid user id
    ("<@U2|bob>", {}, "@bob"),  # the legacy labelled form, without a lookup
    ("<@U2|bob>", {"U2": "Robert"}, "@Robert"),  # a looked-up name wins over the label
    ("<@U2>", {}, "@someone"),  # no name found in time
    ("<#C123|general>", {}, "#general"),
    ("<#C123>", {}, "#channel"),
    ("<https://x.example/a|the docs>", {}, "the docs"),
    ("<https://x.example/a>", {}, "https://x.example/a"),
    ("<https://x.example/a?b=1&amp;c=2>", {}, "https://x.example/a?b=1&c=2"),
    ("<mailto:ann@x.example|write to Ann>", {}, "write to Ann"),
    ("<!here>", {}, "@here"),
    ("<!channel>", {}, "@channel"),
    ("<!everyone>", {}, "@everyone"),
    ("<!subteam^S1|@design>", {}, "@design"),
    ("<!subteam^S1>", {}, "@group"),
    ("<!date^1392734382^{date_short}|Feb 18, 2014>", {}, "Feb 18, 2014"),
    ("fish &amp; chips &lt;3 &gt; all", {}, "fish & chips <3 > all"),
    ("&amp;lt;", {}, "&lt;"),  # a person typed "&lt;": unescaped once, not twice
    ("&amp;amp;", {}, "&amp;"),
    ("&copy; &quot;", {}, "&copy; &quot;"),  # only Slack's three escapes are undone
])
def test_each_slack_markup_form_becomes_what_a_person_reads(slack_text: str, names: dict, plain: str) -> None:
    assert to_plain(slack_text, names) == plain
    # and in the middle of a sentence, the words around it stay as they are
    assert to_plain(f"a cat, {slack_text}, at dusk", names) == f"a cat, {plain}, at dusk"


def test_only_the_bots_own_mention_is_dropped() -> None:
    text = "<@UBOT> a duet for <@U2> and <@UBOT|sora-bot>"
    assert to_plain(text, {"U2": "bob", "UBOT": "sora-bot"}, drop_user="UBOT") == "  a duet for @bob and  "
    assert to_plain(text, {"U2": "bob", "UBOT": "sora-bot"}) == "@sora-bot a duet for @bob and @sora-bot"


@pytest.mark.parametrize("text", [
    "",
    "a golden retriever running through autumn leaves",
    "100% @ noon # 3 ! really | twice ^ up; a > b? no: a < b",  # markup's characters, but no markup
    "line one\n  line two\twith a tab 😀🎬 ünïcödé",
])
def test_text_without_markup_is_unchanged(text: str) -> None:
    assert to_plain(text, {"U2": "bob"}, drop_user="UBOT") == text


_ids = st.from_regex(r"[UW][A-Z0-9]{1,10}", fullmatch=True)
_label = st.text(st.characters(blacklist_characters="<>&\n", blacklist_categories=("Cs",)), max_size=12)
_markup = st.one_of(
    st.builds(lambda u: f"<@{u}>", _ids),
    st.builds(lambda u, label: f"<@{u}|{label}>", _ids, _label),
    st.builds(lambda c, label: f"<#C{c}|{label}>", st.integers(0, 999), _label),
    st.builds(lambda c: f"<#C{c}>", st.integers(0, 999)),
    st.builds(lambda label: f"<https://x.example/p?a=1&amp;b=2|{label}>", _label),
    st.just("<https://x.example/a>"),
    st.sampled_from(["<!here>", "<!channel>", "<!everyone>", "<!subteam^S1|@design>", "<!subteam^S1>",
                     "<!date^1392734382^{date}|Feb 18>", "<!unknown>", "<@>", "<#>", "<!>"]),
    st.builds(lambda label: f"<!subteam^S9|{label}>", _label),
)
# what else Slack sends around markup: words, its escapes (but not &lt;, a "<" a person typed),
# and markup's own characters standing alone
_words = st.one_of(
    st.text(st.characters(blacklist_characters="<>&", blacklist_categories=("Cs",)), max_size=8),
    st.sampled_from(["&amp;", "&gt;", "&amp;lt;", "@", "#", "!", "|", "^", "@U2", "#C1", "!here", " ", "\n"]),
)


@given(pieces=st.lists(st.one_of(_markup, _words), max_size=12),
       names=st.dictionaries(_ids, st.text(st.characters(blacklist_characters="<>&", blacklist_categories=("Cs",)),
                                           min_size=1, max_size=8), max_size=3),
       drop=st.one_of(st.none(), _ids))
def test_no_slack_markup_survives_to_plain(pieces: list[str], names: dict[str, str], drop: str | None) -> None:
    plain = to_plain("".join(pieces), names, drop_user=drop)
    assert "<@" not in plain and "<#" not in plain and "<!" not in plain


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A piece of a message as Slack sends it, and what a person reads there.
_typed = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
                   st.sampled_from(["&", "<", ">", "&amp;", "&lt;", "&gt;", "amp;", "lt;", "<@U2>", "<!here>", "<#C1>"]))
_literal = _typed.map(lambda t: (_escape(t), t))
_shown = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1, max_size=10)
_encoded = st.one_of(
    _literal,
    st.sampled_from(["U2", "U3"]).map(lambda u: (f"<@{u}>", {"U2": "@bob", "U3": "@someone"}[u])),
    _shown.filter(lambda s: not s.startswith("@")).map(lambda s: (f"<@U4|{_escape(s)}>", f"@{s}")),
    _shown.map(lambda s: (f"<#C9|{_escape(s)}>", f"#{s}")),
    _shown.map(lambda s: (f"<https://x.example/?q=1&amp;r=2|{_escape(s)}>", s)),
    st.just(("<https://x.example/?q=1&amp;r=2>", "https://x.example/?q=1&r=2")),
    st.just(("<!here>", "@here")),
    st.just(("<!subteam^S1|@design>", "@design")),
)


@given(st.lists(_encoded, max_size=10))
def test_a_message_reads_as_the_person_wrote_it_whatever_they_typed(pieces: list[tuple[str, str]]) -> None:
    """Slack escapes what a person types (& < >) and wraps what they picked (a mention, a link):
    `to_plain` gives back exactly the typed text with the picks as words, even where the typed
    text looks like markup or like an escape."""
    sent = "".join(s for s, _ in pieces)
    assert to_plain(sent, {"U2": "bob"}) == "".join(p for _, p in pieces)


# ---------------------------------------------------------------------------- helpers


async def _jobs(bot) -> list[dict[str, Any]]:
    return json.loads(await jobs_json(bot.deps.db, limit=0))


async def _usage(bot) -> list[dict[str, Any]]:
    return json.loads(await usage_json(bot.deps, None))


def _event_body(event: dict[str, Any], event_id: str) -> str:
    return json.dumps({"token": "x", "team_id": "T0001", "api_app_id": "A1", "type": "event_callback",
                       "event_id": event_id, "event_time": 1, "event": event,
                       "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True}]})


def _message_shortcut(message: dict[str, Any], *, user: str = "U1", channel: str = "C1") -> str:
    """The payload Slack sends when a person runs the "Make a video" message shortcut."""
    return urlencode({"payload": json.dumps({
        "type": "message_action", "callback_id": "sora_from_message", "trigger_id": "trig.msg",
        "user": {"id": user}, "team": {"id": "T0001"}, "channel": {"id": channel}, "api_app_id": "A1",
        "token": "x", "response_url": "", "message_ts": message["ts"], "message": message,
    })})


async def _opened_view(bot, before: int) -> dict[str, Any]:
    """The view the app opened, which the fake Slack accepted (it refuses what Slack refuses)."""
    await bot.slack.wait_for(lambda: len(bot.slack.calls_to("views.open")) > before, timeout=5)
    call = bot.slack.calls_to("views.open")[-1]
    assert call.refused is None, call.refused
    assert bot.slack.views[-1]["method"] == "views.open"
    return call.params["view"]


def _prompt_inputs(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b["element"] for b in view["blocks"] if b.get("block_id") in PROMPT_BLOCKS]


def _prompt_values(pieces: list[str]) -> dict[str, Any]:
    return {bid: {"value": {"type": "plain_text_input", "value": piece}} for bid, piece in zip(PROMPT_BLOCKS, pieces)}


def _form_values(view: dict[str, Any], pieces: list[str]) -> dict[str, Any]:
    """State values as Slack sends them for the request form: the prompt pieces, each select's
    shown choice, and the channel C1 where the form asks for one."""
    values = _prompt_values(pieces)
    for block in view["blocks"]:
        element = block.get("element") or {}
        if element.get("type") == "static_select":
            values[block["block_id"]] = {element["action_id"]: {"type": "static_select",
                                                                 "selected_option": element.get("initial_option")}}
        elif element.get("type") == "conversations_select":
            values[block["block_id"]] = {element["action_id"]: {"type": "conversations_select",
                                                                "selected_conversation": "C1"}}
    return values


# ---------------------------------------------------------------------------- mentions


async def test_a_mention_reaches_the_model_as_the_words_people_saw(make_bot, slack) -> None:
    bot = await make_bot()
    slack.add_channel("C9", name="garden")
    text = "<@UBOT> a cat with <@U2> in <#C9|garden>, see <https://x.example|the docs> &amp; more"
    root = slack.add_message("C1", text, user="U1")
    resp = await bot.mention(text, ts=root.ts)
    assert resp.status_code == 200
    sim = bot.deps.providers["simulator"]
    await slack.wait_for(lambda: bool(sim.submits), timeout=10)
    expected = "a cat with @bob in #garden, see the docs & more"
    assert sim.submits[0].prompt == expected
    await bot.runtime.poller.idle(10)
    (job,) = await _jobs(bot)
    assert job["prompt"] == expected and job["status"] == "succeeded"
    looked_up = [c.params["user"] for c in slack.calls_to("users.info")]
    assert "U2" in looked_up and "UBOT" not in looked_up  # bob's name; the bot's own mention needs none


async def test_names_are_looked_up_once_and_a_missing_person_falls_back_to_the_label(make_bot, slack) -> None:
    bot = await make_bot()
    sim = bot.deps.providers["simulator"]
    first = slack.add_message("C1", "<@UBOT> a duet for <@U2> and <@U7|carol> and <@U8>", user="U1")
    await bot.mention(first.text, ts=first.ts)
    await slack.wait_for(lambda: len(sim.submits) == 1, timeout=10)
    # U7 and U8 aren't in the workspace (users.info: user_not_found): the label, else "someone"
    assert sim.submits[0].prompt == "a duet for @bob and @carol and @someone"
    second = slack.add_message("C1", "<@UBOT> a solo for <@U2>", user="U1")
    await bot.mention(second.text, ts=second.ts)
    await slack.wait_for(lambda: len(sim.submits) == 2, timeout=10)
    assert sim.submits[1].prompt == "a solo for @bob"
    assert [c.params["user"] for c in slack.calls_to("users.info")].count("U2") == 1  # bob's name was kept


async def test_a_slow_name_lookup_does_not_hold_up_the_request(make_bot, slack) -> None:
    bot = await make_bot()
    sim = bot.deps.providers["simulator"]
    hold = slack.hold_next("users.info")
    try:
        root = slack.add_message("C1", "<@UBOT> a dance for <@U2>", user="U1")
        await bot.mention(root.text, ts=root.ts)
        await slack.wait_for(lambda: bool(sim.submits), timeout=10)
        assert hold.reached.is_set() and sim.submits[0].prompt == "a dance for @someone"
    finally:
        hold.release()
    await bot.runtime.poller.idle(10)
    assert [j["status"] for j in await _jobs(bot)] == ["succeeded"]


@pytest.mark.parametrize("where", ["mention", "dm"])
async def test_a_file_that_is_not_an_image_is_refused_by_name_before_any_charge(make_bot, slack, where) -> None:
    bot = await make_bot()
    notes = slack.add_file("F0TXT1", b"a shot list\n", name="shot-list.txt", mimetype="text/plain")
    png = slack.add_file("F0PNG1", b"\x89PNG\r\n\x1a\n", name="dog.png", mimetype="image/png")
    if where == "mention":
        root = slack.add_message("C1", "<@UBOT> make a video from these notes", user="U1")
        event = {"type": "app_mention", "user": "U1", "text": root.text, "ts": root.ts, "channel": "C1",
                 "event_ts": root.ts, "files": [png, notes]}
    else:
        root = slack.add_message("DU1", "make a video from these notes", user="U1")
        event = {"type": "message", "subtype": "file_share", "channel": "DU1", "channel_type": "im", "user": "U1",
                 "text": root.text, "ts": root.ts, "event_ts": root.ts, "files": [png, notes]}
    resp = await post_signed(bot.http, bot.url, _event_body(event, f"EvTxt-{where}"))
    assert resp.status_code == 200
    await slack.wait_for(lambda: bool(slack.ephemerals), timeout=5)
    (refusal,) = slack.ephemerals
    assert refusal.ephemeral_to == "U1" and refusal.channel == root.channel
    assert "`shot-list.txt`" in refusal.text and "dog.png" not in refusal.text
    assert "only start a video from an image" in refusal.text and "Nothing was charged" in refusal.text
    await bot.runtime.poller.idle(5)
    assert await _jobs(bot) == []
    assert bot.deps.providers["simulator"].submits == []
    assert all(row["reserved_usd"] == 0 and row["spent_usd"] == 0 for row in await _usage(bot))
    assert not any(m.files for m in slack.messages)


# ---------------------------------------------------------------------------- the message shortcut


async def test_the_message_shortcut_prefills_the_words_people_saw(make_bot, slack) -> None:
    bot = await make_bot()
    msg = slack.add_message("C1", "a lighthouse for <@U2> &amp; <#C1|general> at dusk &lt;3", user="U2")
    resp = await post_signed(bot.http, bot.url, _message_shortcut({"ts": msg.ts, "text": msg.text, "user": "U2"}))
    assert resp.status_code == 200
    view = await _opened_view(bot, 0)
    (prompt,) = _prompt_inputs(view)
    assert prompt["initial_value"] == "a lighthouse for @bob & #general at dusk <3"
    assert not any(b["type"] == "context" and "characters long" in json.dumps(b) for b in view["blocks"])


async def test_a_message_too_long_for_a_prompt_is_cut_and_the_form_says_so(make_bot, slack) -> None:
    bot = await make_bot()
    text = "".join(f"scene {n}: a storm rolls in. " for n in range(400))[:4999] + "!"
    assert len(text) == 5000 and text == text.strip()
    msg = slack.add_message("C1", text, user="U2")
    await post_signed(bot.http, bot.url, _message_shortcut({"ts": msg.ts, "text": text, "user": "U2"}))
    view = await _opened_view(bot, 0)
    inputs = _prompt_inputs(view)
    assert len(inputs) == 2 and all(utf16_len(i["initial_value"]) <= 3000 for i in inputs)
    assert "".join(i["initial_value"] for i in inputs) == text[:4000]
    notes = [e["text"] for b in view["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert any("5,000 characters" in n and "first 4,000" in n for n in notes), notes
    # nothing is charged for opening the form
    assert await _jobs(bot) == [] and await _usage(bot) == []

    # submitted as it was prefilled, the form makes one job with the whole 4,000 characters
    body = view_submission_body(rm.MODAL, private_metadata=view["private_metadata"],
                                values=_form_values(view, [i["initial_value"] for i in inputs]), view_id="VLONG")
    resp = await post_signed(bot.http, bot.url, body)
    assert resp.status_code == 200 and not resp.content, resp.text
    await bot.runtime.poller.idle(10)
    (job,) = await _jobs(bot)
    assert job["prompt"] == text[:4000].strip() and job["status"] == "succeeded"
    assert job["thread_ts"] == msg.ts


# ---------------------------------------------------------------------------- long prompts in modals


async def test_the_request_form_rebuilds_a_4000_character_prompt_from_its_pieces(make_bot, slack) -> None:
    bot = await make_bot()
    resp = await bot.slash("")  # /sora with no text opens the form
    assert resp.status_code == 200
    view = await _opened_view(bot, 0)
    assert view["callback_id"] == rm.MODAL
    prompt = ("a koi pond in the rain, lanterns & ripples 😀 " * 100)[:3999] + "!"
    assert len(prompt) == 4000
    pieces = [prompt[:2500], prompt[2500:]]
    body = view_submission_body(rm.MODAL, private_metadata=view["private_metadata"],
                                values=_form_values(view, pieces), view_id="VPIECES")
    resp = await post_signed(bot.http, bot.url, body)
    assert resp.status_code == 200 and not resp.content, resp.text
    sim = bot.deps.providers["simulator"]
    await bot.runtime.poller.idle(10)
    (job,) = await _jobs(bot)
    assert job["prompt"] == prompt and sim.submits[0].prompt == prompt and job["status"] == "succeeded"


async def test_edit_and_retry_carries_a_whole_4000_character_prompt(make_bot, slack) -> None:
    bot = await make_bot()
    # half emoji (two UTF-16 units each), with the three characters Slack escapes
    prompt = ("[fail] " + ("😀🎬" * 6 + " a &<b> ") * 300)[:3999] + "z"
    assert len(prompt) == 4000 and utf16_len(prompt) > 6000
    resp = await bot.slash(prompt.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    assert resp.status_code == 200
    await bot.runtime.poller.idle(10)
    (old,) = await _jobs(bot)
    job_id = old["id"]
    assert old["status"] == "failed" and old["prompt"] == prompt

    before = len(slack.calls_to("views.open"))
    resp = await post_signed(bot.http, bot.url, action_body(EDIT_ACTION, job_id, response_url=slack.new_response_url()))
    assert resp.status_code == 200
    view = await _opened_view(bot, before)
    assert view["callback_id"] == EDIT_MODAL and view["private_metadata"] == job_id
    inputs = _prompt_inputs(view)
    assert len(inputs) == 3 and all(utf16_len(i["initial_value"]) <= 3000 for i in inputs)
    assert "".join(i["initial_value"] for i in inputs) == prompt

    pieces = [i["initial_value"] for i in inputs]
    pieces[0] = pieces[0].removeprefix("[fail] ")
    edited = "".join(pieces)
    body = view_submission_body(EDIT_MODAL, private_metadata=job_id, values=_prompt_values(pieces), view_id="VEDIT")
    resp = await post_signed(bot.http, bot.url, body)
    assert resp.status_code == 200 and not resp.content, resp.text
    await bot.runtime.poller.idle(10)
    new = next(j for j in await _jobs(bot) if j["id"] != job_id)
    assert new["prompt"] == edited and new["status"] == "succeeded"
    assert bot.deps.providers["simulator"].submits[-1].prompt == edited
    await slack.wait_for(lambda: any(m.files for m in slack.thread("C1", new["thread_ts"])), timeout=10)
    assert all(row["reserved_usd"] == 0 for row in await _usage(bot))


def test_a_display_name_is_kept_as_the_person_set_it() -> None:
    # only what Slack escaped is unescaped: a name from users.info may hold "&amp;" itself
    assert to_plain("<@U2> &amp; co", {"U2": "Tom &amp; Jerry"}) == "@Tom &amp; Jerry & co"
    assert to_plain("<https://x.example|a &amp; b>") == "a & b"


async def test_a_slack_connect_file_stub_is_checked_by_id_not_refused(make_bot, slack) -> None:
    """Slack Connect sends `{"mode": "file_access", "file_access": "check_file_info"}` with no
    mimetype: the bot treats it as the image it may be (files.info decides), not as "not an image"."""
    # Sora 2 through a gateway can't start from an image (the simulator now can)
    async with FakeGatewayServer(run_seconds=0.3) as gateway, httpx.AsyncClient() as client:
        bot = await make_bot(providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client)},
                             include_simulator=False, video_gateway_models="sora-2", sora_default_model="sora-2")
        slack.add_file("F0IMG9", b"\x89PNG\r\n\x1a\n", name="dog.png", mimetype="image/png")
        root = slack.add_message("C1", "<@UBOT> a dog", user="U1")
        event = {"type": "app_mention", "user": "U1", "text": root.text, "ts": root.ts, "channel": "C1",
                 "event_ts": root.ts,
                 "files": [{"id": "F0IMG9", "mode": "file_access", "file_access": "check_file_info"}]}
        resp = await post_signed(bot.http, bot.url, _event_body(event, "EvStub-1"))
        assert resp.status_code == 200
        await slack.wait_for(lambda: bool(slack.ephemerals), timeout=5)
        (answer,) = slack.ephemerals
        # taken as the image it may be (this model can't start from one: that is the refusal)
        assert "isn't one" not in answer.text and "can't start from an image" in answer.text
        assert gateway.create_attempts == []
