"""Slash text parsing: options anywhere, friendly errors, and no crash on any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.catalog import build_catalog
from bot.errors import InvalidRequest
from bot.slack.messages import escape_mrkdwn
from bot.parsing import Budget, Cancel, Generate, Help, Models, Status, parse_command

CATALOG = build_catalog(providers=["gateway"], gateway_models=["sora-2", "sora-2-pro"], include_simulator=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", Help()), ("", Help()), ("  models ", Models()), ("budget", Budget()),
        ("status", Status(None)), ("status abc123", Status("abc123")), ("cancel abc123", Cancel("abc123")),
    ],
)
def test_subcommands(text, expected) -> None:
    assert parse_command(text, CATALOG) == expected


def test_words_that_start_a_prompt_are_still_prompts() -> None:
    cmd = parse_command("help me film a sunset", CATALOG)
    assert isinstance(cmd, Generate) and cmd.request.prompt == "help me film a sunset"


@pytest.mark.parametrize(
    "text",
    [
        "--model sora-2-pro --duration 12 --resolution 1024p --aspect 9:16 a city",
        "-m sora-2-pro -d 12s -r 1024 -a portrait a city",
        "a city -m sora-2-pro -d=12 -r=1024p --aspect=9x16",
        "—model sora-2-pro —duration 12 -r 1024p -a 9:16 a city",
    ],
)
def test_options_in_any_position_and_spelling(text) -> None:
    cmd = parse_command(text, CATALOG)
    assert isinstance(cmd, Generate)
    r = cmd.request
    assert (r.model, r.duration_s, r.resolution, r.aspect_ratio, r.prompt) == ("sora-2-pro", 12, "1024p", "9:16", "a city")


def test_defaults_come_from_the_model() -> None:
    r = parse_command("-m sora-2-pro a city", CATALOG).request
    assert (r.duration_s, r.resolution, r.aspect_ratio) == (10, "720p", "16:9")


def test_slack_escapes_are_undone_and_control_characters_dropped() -> None:
    r = parse_command("fish &amp; chips \x00\x07 &lt;3", CATALOG).request
    assert r.prompt == "fish & chips <3"


def test_unbalanced_quotes_are_just_text() -> None:
    r = parse_command('a "quoted prompt with an \'odd quote', CATALOG).request
    assert r.prompt.startswith('a "quoted')


def test_a_huge_prompt_is_refused_naming_the_limit() -> None:
    with pytest.raises(InvalidRequest, match="4,000"):
        parse_command("x" * 100_000, CATALOG)


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused_clearly(text) -> None:
    try:
        cmd = parse_command(text, CATALOG)
    except InvalidRequest as exc:
        assert exc.user_message()
        return
    if isinstance(cmd, Generate):
        spec = CATALOG.get(cmd.request.model)
        assert spec is not None and cmd.request.duration_s in spec.durations
        assert 0 < len(cmd.request.prompt) <= 4000


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=400))
def test_an_echoed_prompt_never_contains_an_active_mention(text) -> None:
    echoed = escape_mrkdwn(text)
    for active in ("<!channel>", "<!here>", "<!everyone>", "<@", "<!subteam"):
        assert active not in echoed
    lowered = echoed.lower()
    for word in ("@channel", "@here", "@everyone"):
        assert word not in lowered
    assert len(echoed) <= 2500 * 5
