"""manifest.yml: the commands, events, settings and scopes the code relies on.

Every Slack Web API method the code calls must have its scope in the manifest; a new call
fails here until its scope is listed in METHOD_SCOPES (and, if needed, in the manifest).

The manifest, as shipped and in its HTTP-mode form, must also pass Slack's published manifest
schema (a local copy in tests/data/slack-manifest-schema; nothing is fetched).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifest.yml"
SOURCE_DIRS = ("bot", "handlers", "storage")

SCHEMA_DIR = Path(__file__).resolve().parent / "data" / "slack-manifest-schema"
# The URLs manifest.schema.json `$ref`s, each served from its local copy (see SOURCE.md).
_SCHEMA_URL = "https://raw.githubusercontent.com/slackapi/manifest-schema/v0.5.0/schemas/"
SCHEMA_COPIES = {
    _SCHEMA_URL + "manifest.schema.1.0.0.json": "manifest.schema.1.0.0.json",
    _SCHEMA_URL + "manifest.schema.2.0.0.json": "manifest.schema.2.0.0.json",
}
HTTP_HOST = "sora.example.com"
# a commented-out URL line of the HTTP-mode form: `# url: ...` or `# request_url: ...`
_COMMENTED_URL = re.compile(
    r"^(?P<indent>[ ]*)# (?P<line>(?:request_)?url: https://YOUR-HOST/slack/events)[ ]*$", re.MULTILINE
)

# Bot scopes each Web API method needs (Slack's method reference).
METHOD_SCOPES: dict[str, set[str]] = {
    "auth.test": set(),
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.delete": {"chat:write"},
    "chat.getPermalink": set(),
    "conversations.join": {"channels:join"},
    "conversations.open": {"im:write"},
    # The v2 upload: getUploadURLExternal, POST the bytes, completeUploadExternal.
    "files.getUploadURLExternal": {"files:write"},
    "files.completeUploadExternal": {"files:write"},
    # was an upload shared; type and size of a user's image (downloading it needs files:read too)
    "files.info": {"files:read"},
    "users.info": {"users:read"},
    "users.list": {"users:read"},
    # called with the app-level token (connections:write), not a bot scope
    "apps.connections.open": set(),
    "views.open": set(),
    "views.update": set(),
    "views.push": set(),
    "views.publish": set(),
}

REQUIRED_SCOPES = {
    "app_mentions:read", "channels:join", "chat:write", "chat:write.public", "commands",
    "files:read", "files:write", "im:history", "im:write", "users:read",
}

# `deps.slack.chat_postMessage(`, `client.files_completeUploadExternal(`, `api_call("x.y"`
_CALL = re.compile(
    r"\.((?:admin|apps|auth|bookmarks|bots|canvases|chat|conversations|dnd|files|pins|reactions"
    r"|reminders|search|team|usergroups|users|views)_[A-Za-z_]+)\("
)
_API_CALL = re.compile(r"api_call\(\s*[\"']([A-Za-z]+\.[A-Za-z.]+)[\"']")


def slack_methods_called() -> dict[str, list[str]]:
    """Dotted Slack method name -> files that call it, from the app's sources."""
    found: dict[str, list[str]] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "fakeslack.py":  # the fake server, not a caller
                continue
            text = path.read_text(encoding="utf-8")
            names = [m.replace("_", ".") for m in _CALL.findall(text)] + _API_CALL.findall(text)
            for name in names:
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _commands(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["command"]: c for c in manifest["features"]["slash_commands"]}


def test_every_called_method_is_in_the_scope_table() -> None:
    called = slack_methods_called()
    # the scan must see the calls we know about, or it is looking in the wrong place
    assert {"chat.postMessage", "files.completeUploadExternal"} <= set(called)
    unknown = {m: files for m, files in called.items() if m not in METHOD_SCOPES}
    assert not unknown, f"add these Slack methods to METHOD_SCOPES (and their scopes to manifest.yml): {unknown}"


def test_manifest_metadata_and_identity(manifest: dict[str, Any]) -> None:
    assert manifest["_metadata"] == {"major_version": 2, "minor_version": 1}
    assert manifest["display_information"]["name"] == "Sora Bot"
    assert manifest["display_information"]["description"]
    bot_user = manifest["features"]["bot_user"]
    assert bot_user["display_name"] == "sora-bot"
    assert bot_user["always_online"] is True


def test_slash_commands_and_escaping(manifest: dict[str, Any]) -> None:
    commands = _commands(manifest)
    assert set(commands) == {"/sora", "/sora-admin"}
    # /sora: plain text, so an echoed prompt never pings; /sora-admin: users arrive as ids
    assert commands["/sora"]["should_escape"] is False
    assert commands["/sora-admin"]["should_escape"] is True
    for command in commands.values():
        assert command["description"] and command["usage_hint"]
    assert "-m model" in commands["/sora"]["usage_hint"]
    assert "budget set @user" in commands["/sora-admin"]["usage_hint"]


def test_required_bot_scopes(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert REQUIRED_SCOPES <= scopes, f"missing: {REQUIRED_SCOPES - scopes}"


def test_every_called_method_has_its_scope(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    missing = {
        method: METHOD_SCOPES[method] - scopes
        for method in slack_methods_called()
        if method in METHOD_SCOPES and not METHOD_SCOPES[method] <= scopes
    }
    assert not missing, f"manifest.yml lacks scopes for: {missing}"


def test_settings(manifest: dict[str, Any]) -> None:
    settings = manifest["settings"]
    assert {"app_mention", "app_home_opened"} <= set(settings["event_subscriptions"]["bot_events"])
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False
    app_home = manifest["features"]["app_home"]
    assert app_home["home_tab_enabled"] is True
    assert app_home["messages_tab_enabled"] is True
    assert app_home["messages_tab_read_only_enabled"] is False


def test_http_mode_instructions_stay_in_the_file() -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    assert "socket_mode_enabled" in text
    # slash commands take `url`; event_subscriptions and interactivity take `request_url`
    assert text.count("      # url: https://YOUR-HOST/slack/events\n") == 2
    assert text.count("    # request_url: https://YOUR-HOST/slack/events\n") == 2
    assert len(_COMMENTED_URL.findall(text)) == 4


def test_every_listener_the_app_registers_is_declared(manifest: dict[str, Any]) -> None:
    """Shortcuts, slash commands and events the code listens for must exist in the manifest."""
    from handlers.modals import GLOBAL_SHORTCUT, MESSAGE_SHORTCUT

    shortcuts = {(s["callback_id"], s["type"]) for s in manifest["features"]["shortcuts"]}
    assert {(GLOBAL_SHORTCUT, "global"), (MESSAGE_SHORTCUT, "message")} <= shortcuts
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "app_home_opened", "message.im"} <= events
    assert "im:history" in manifest["oauth_config"]["scopes"]["bot"]


# --- Slack's manifest schema -------------------------------------------------------------------


def _never_fetch(uri: str) -> Any:
    raise LookupError(f"{uri} is not among the local schema copies; the tests never fetch (see SCHEMA_COPIES)")


@pytest.fixture(scope="module")
def schema_validator() -> Any:
    """Draft 7 validator for Slack's top-level manifest schema, its `$ref`s served from the copies."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT7

    def load(name: str) -> Any:
        return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))

    registry = referencing.Registry(retrieve=_never_fetch).with_resources(
        (url, referencing.Resource(load(name), specification=DRAFT7)) for url, name in SCHEMA_COPIES.items()
    )
    top = load("manifest.schema.json")
    jsonschema.Draft7Validator.check_schema(top)
    return jsonschema.Draft7Validator(top, registry=registry)


def _leaf_errors(error: Any) -> list[Any]:
    """The errors behind a oneOf/anyOf failure, instead of its one 'is not valid under any of' line.

    The top-level schema is a oneOf of [a selector on _metadata.major_version, that version's
    schema]; there only the branches whose selector matched are followed (all, if none did).
    """
    if not error.context:
        return [error]
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    selected = list(branches.values())
    if list(error.absolute_schema_path) == ["oneOf"]:
        selected = [
            subs for subs in selected
            if not any(list(sub.relative_schema_path)[1:3] == ["allOf", 0] for sub in subs)
        ] or selected
    return [leaf for subs in selected for sub in subs for leaf in _leaf_errors(sub)]


def schema_errors(validator: Any, document: Any) -> list[str]:
    """Every schema violation in `document`, as 'path: message', sorted."""
    found = {
        f"{leaf.json_path}: {leaf.message[:300]}"
        for error in validator.iter_errors(document)
        for leaf in _leaf_errors(error)
    }
    return sorted(found)


def _assert_valid(validator: Any, document: Any, what: str) -> None:
    errors = schema_errors(validator, document)
    assert not errors, f"{what} fails Slack's manifest schema:\n" + "\n".join(errors)


def http_mode_text() -> str:
    """manifest.yml edited as its comments (and the README) say for HTTP mode."""
    text = MANIFEST.read_text(encoding="utf-8")
    assert text.count("  socket_mode_enabled: true\n") == 1
    text = text.replace("  socket_mode_enabled: true\n", "  socket_mode_enabled: false\n")
    text, uncommented = _COMMENTED_URL.subn(r"\g<indent>\g<line>", text)
    assert uncommented == 4  # under both slash commands, event_subscriptions and interactivity
    return text.replace("YOUR-HOST", HTTP_HOST)


def test_schema_copies_cover_every_remote_ref() -> None:
    """A refreshed schema that points at other URLs must fail here, not by trying to fetch them."""
    refs: set[str] = set()
    for path in SCHEMA_DIR.glob("*.json"):
        refs |= set(re.findall(r'"\$ref"\s*:\s*"([^"#][^"]*)"', path.read_text(encoding="utf-8")))
    assert refs, "expected manifest.schema.json to $ref the versioned schemas"
    assert refs <= set(SCHEMA_COPIES), f"not served from a local copy: {refs - set(SCHEMA_COPIES)}"


def test_schema_validator_never_fetches(schema_validator: Any) -> None:
    referencing = pytest.importorskip("referencing")
    elsewhere = schema_validator.evolve(schema={"$ref": _SCHEMA_URL + "manifest.schema.3.0.0.json"})
    with pytest.raises(referencing.exceptions.Unresolvable) as caught:
        elsewhere.validate({})
    # refused by _never_fetch, not tried over the network
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, LookupError) and "never fetch" in str(e) for e in chain), chain


def test_manifest_passes_slacks_schema(manifest: dict[str, Any], schema_validator: Any) -> None:
    _assert_valid(schema_validator, manifest, "manifest.yml")


def test_http_mode_manifest_passes_slacks_schema(schema_validator: Any) -> None:
    yaml = pytest.importorskip("yaml")
    http = yaml.safe_load(http_mode_text())
    _assert_valid(schema_validator, http, "manifest.yml in its HTTP-mode form")

    endpoint = f"https://{HTTP_HOST}/slack/events"
    settings = http["settings"]
    assert settings["socket_mode_enabled"] is False
    for command in http["features"]["slash_commands"]:
        assert command.get("url") == endpoint, command["command"]
        assert "request_url" not in command
    assert settings["event_subscriptions"]["request_url"] == endpoint
    assert settings["interactivity"]["request_url"] == endpoint


def test_slacks_schema_rejects_the_old_mistakes(manifest: dict[str, Any], schema_validator: Any) -> None:
    """The check can fail: what Slack refused before is refused here too."""
    long_name = json.loads(json.dumps(manifest))
    long_name["features"]["shortcuts"][1]["name"] = "Make a video from this message"  # 30 > 24
    assert schema_errors(schema_validator, long_name) == [
        "$.features.shortcuts[1].name: 'Make a video from this message' is too long"
    ]

    request_url = json.loads(json.dumps(manifest))
    request_url["features"]["slash_commands"][0]["request_url"] = f"https://{HTTP_HOST}/slack/events"
    errors = schema_errors(schema_validator, request_url)
    assert len(errors) == 1 and errors[0].startswith("$.features.slash_commands[0]: "), errors
    assert "'request_url' was unexpected" in errors[0]
