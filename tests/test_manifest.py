"""manifest.yml: the commands, events, settings and scopes the code relies on.

Every Slack Web API method the code calls must have its scope in the manifest; a new call
fails here until its scope is listed in METHOD_SCOPES (and, if needed, in the manifest).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifest.yml"
SOURCE_DIRS = ("bot", "handlers", "storage")

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
    "files.getUploadURLExternal": {"files:write", "files:read"},
    "files.completeUploadExternal": {"files:write", "files:read"},
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
    assert text.count("# request_url: https://YOUR-HOST/slack/events") >= 4


def test_every_listener_the_app_registers_is_declared(manifest: dict[str, Any]) -> None:
    """Shortcuts, slash commands and events the code listens for must exist in the manifest."""
    from handlers.modals import GLOBAL_SHORTCUT, MESSAGE_SHORTCUT

    shortcuts = {(s["callback_id"], s["type"]) for s in manifest["features"]["shortcuts"]}
    assert {(GLOBAL_SHORTCUT, "global"), (MESSAGE_SHORTCUT, "message")} <= shortcuts
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "app_home_opened", "message.im"} <= events
    assert "im:history" in manifest["oauth_config"]["scopes"]["bot"]
