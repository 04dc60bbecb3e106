"""Slack's documented limits on messages, blocks and views, as the fake Slack enforces them.

The fake answers what Slack answers (`invalid_blocks`, `msg_too_long`, `invalid_arguments`)
for a payload Slack would refuse, so the bot meets the same walls here as in production.
Two independent checks, and a payload must pass both:

- the limits below, written from Slack's Block Kit reference (docs.slack.dev/reference/block-kit:
  blocks, block elements, composition objects, views) and the chat.postMessage reference. They
  are counted in UTF-16 code units, which is never less than what Slack counts (an emoji may
  count twice), so the fake is never more lenient than Slack;
- slack_sdk's own Block Kit models (`validate_json()`), applied to every nested block,
  element and option: slack_sdk checks only the object it is called on.

These limits are deliberately not imported from the bot: a fake that shares the product's
idea of a limit can't catch the product getting it wrong.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.basic_objects import JsonObject
from slack_sdk.models.blocks import Block, BlockElement, Option, OptionGroup
from slack_sdk.models.views import View

MESSAGE_TEXT = 40_000  # chat.postMessage `text`; longer: msg_too_long
MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100  # modals and the Home tab
TEXT_OBJECT = 3000
SECTION_TEXT = 3000
SECTION_FIELDS = 10
SECTION_FIELD_TEXT = 2000
HEADER_TEXT = 150
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
URL = 3000
OPTION_TEXT = 75
OPTION_VALUE = 150
OPTION_DESCRIPTION = 75
SELECT_OPTIONS = 100
OPTION_GROUPS = 100
OPTION_GROUP_LABEL = 75
PLACEHOLDER = 150
ID = 255  # block_id, action_id, callback_id, external_id
INPUT_LABEL = 2000
INPUT_HINT = 2000
PLAIN_TEXT_INPUT = 3000  # max_length and initial_value of a plain_text_input
VIEW_TITLE = 24  # title, submit and close of a modal
PRIVATE_METADATA = 3000

_SELECTS = {"static_select", "multi_static_select", "external_select", "multi_external_select"}


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class Problems:
    """What is wrong with one payload, each with the path Slack's error messages would give."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, path: str, what: str) -> None:
        self.found.append(f"{what} [json-pointer:{path}]")

    def text(self, obj: Any, path: str, limit: int, *, required: bool = True) -> None:
        if obj is None:
            if required:
                self.add(path, "missing required field: text")
            return
        value = obj.get("text") if isinstance(obj, dict) else obj
        if not isinstance(value, str):
            self.add(path, "must be a string")
        elif units(value) > limit:
            self.add(path, f"must be less than {limit + 1} characters")
        elif required and not value:
            self.add(path, "must be more than 0 characters")

    def array(self, value: Any, path: str, most: int, *, least: int = 0) -> list[Any]:
        """`value` if it is an array of `least` to `most` items, else [] with the problem noted."""
        if isinstance(value, list) and least <= len(value) <= most:
            return value
        self.add(path, f"must be an array of {least} to {most} items")
        return []

    def string(self, value: Any, path: str, limit: int) -> None:
        if value is not None and (not isinstance(value, str) or units(value) > limit):
            self.add(path, f"must be a string of at most {limit} characters")


def _option(p: Problems, option: Any, path: str) -> None:
    if not isinstance(option, dict):
        p.add(path, "must be an object")
        return
    p.text(option.get("text"), f"{path}/text", OPTION_TEXT)
    value = option.get("value")
    if not isinstance(value, str) or not value:
        p.add(f"{path}/value", "missing required field: value")
    p.string(value, f"{path}/value", OPTION_VALUE)
    if option.get("description") is not None:
        p.text(option["description"], f"{path}/description", OPTION_DESCRIPTION)


def _element(p: Problems, element: Any, path: str) -> None:
    if not isinstance(element, dict) or not element.get("type"):
        p.add(path, "must be an element object with a type")
        return
    p.string(element.get("action_id"), f"{path}/action_id", ID)
    kind = element["type"]
    if element.get("placeholder") is not None:
        p.text(element["placeholder"], f"{path}/placeholder", PLACEHOLDER)
    if kind == "button":
        p.text(element.get("text"), f"{path}/text", BUTTON_TEXT)
        p.string(element.get("value"), f"{path}/value", BUTTON_VALUE)
        p.string(element.get("url"), f"{path}/url", URL)
    elif kind in _SELECTS:
        options, groups = element.get("options"), element.get("option_groups")
        if options is not None and groups is not None:
            p.add(path, "must provide either options or option_groups, not both")
        if options is not None:
            for i, option in enumerate(p.array(options, f"{path}/options", SELECT_OPTIONS)):
                _option(p, option, f"{path}/options/{i}")
        if groups is not None:
            for i, group in enumerate(p.array(groups, f"{path}/option_groups", OPTION_GROUPS)):
                gpath = f"{path}/option_groups/{i}"
                p.text((group or {}).get("label"), f"{gpath}/label", OPTION_GROUP_LABEL)
                members = p.array((group or {}).get("options"), f"{gpath}/options", SELECT_OPTIONS, least=1)
                for j, option in enumerate(members):
                    _option(p, option, f"{gpath}/options/{j}")
        if element.get("initial_option") is not None:
            _option(p, element["initial_option"], f"{path}/initial_option")
        for i, option in enumerate(element.get("initial_options") or []):
            _option(p, option, f"{path}/initial_options/{i}")
    elif kind == "plain_text_input":
        max_length = element.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or not 1 <= max_length <= PLAIN_TEXT_INPUT):
            p.add(f"{path}/max_length", f"must be between 1 and {PLAIN_TEXT_INPUT}")
        initial = element.get("initial_value")
        if initial is not None:
            cap = max_length if isinstance(max_length, int) else PLAIN_TEXT_INPUT
            p.string(initial, f"{path}/initial_value", min(cap, PLAIN_TEXT_INPUT))


def _block(p: Problems, block: Any, path: str) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        p.add(path, "must be a block object with a type")
        return
    p.string(block.get("block_id"), f"{path}/block_id", ID)
    kind = block["type"]
    if kind == "section":
        if block.get("text") is None and block.get("fields") is None:
            p.add(path, "must provide text or fields")
        if block.get("text") is not None:
            p.text(block["text"], f"{path}/text", SECTION_TEXT)
        if block.get("fields") is not None:
            for i, f in enumerate(p.array(block["fields"], f"{path}/fields", SECTION_FIELDS)):
                p.text(f, f"{path}/fields/{i}", SECTION_FIELD_TEXT)
        if block.get("accessory") is not None:
            _element(p, block["accessory"], f"{path}/accessory")
    elif kind == "header":
        p.text(block.get("text"), f"{path}/text", HEADER_TEXT)
    elif kind == "context":
        for i, e in enumerate(p.array(block.get("elements"), f"{path}/elements", CONTEXT_ELEMENTS, least=1)):
            if isinstance(e, dict) and e.get("type") in ("mrkdwn", "plain_text"):
                p.text(e, f"{path}/elements/{i}", TEXT_OBJECT)
    elif kind == "actions":
        for i, e in enumerate(p.array(block.get("elements"), f"{path}/elements", ACTIONS_ELEMENTS, least=1)):
            _element(p, e, f"{path}/elements/{i}")
    elif kind == "input":
        p.text(block.get("label"), f"{path}/label", INPUT_LABEL)
        if block.get("hint") is not None:
            p.text(block["hint"], f"{path}/hint", INPUT_HINT)
        _element(p, block.get("element"), f"{path}/element")


def _sdk(p: Problems, obj: Any, path: str) -> None:
    """slack_sdk's validation of `obj` and of every object inside it."""
    try:
        obj.validate_json()
    except SlackObjectFormationError as exc:
        p.add(path, f"slack_sdk: {exc}")
        return
    for name in sorted(obj.attributes):
        value = getattr(obj, name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(values):
            child = _parsed(name, item)
            if child is not None:
                _sdk(p, child, f"{path}/{name}" + (f"/{i}" if value is not item else ""))


def _parsed(name: str, item: Any) -> JsonObject | None:
    """slack_sdk keeps some nested parts as plain dicts (an input's element, a select's
    options): parse those too, so its validators see them."""
    if isinstance(item, JsonObject):
        return item
    if not isinstance(item, dict):
        return None
    try:
        if name in ("element", "elements", "accessory") and item.get("type") not in ("mrkdwn", "plain_text", "image"):
            return BlockElement.parse(item)  # type: ignore[return-value]
        if name in ("options", "initial_options", "initial_option"):
            return Option(**{k: v for k, v in item.items()})
        if name == "option_groups":
            return OptionGroup(**item)
    except (TypeError, SlackObjectFormationError, KeyError):
        return None
    return None


def blocks_problems(blocks: Any, *, max_blocks: int, path: str = "/blocks") -> list[str]:
    p = Problems()
    if not isinstance(blocks, list):
        p.add(path, "must be an array")
        return p.found
    if len(blocks) > max_blocks:
        p.add(path, f"must be an array of at most {max_blocks} items")
    ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    if len(ids) != len(set(ids)):
        p.add(path, "block_id must be unique")
    for i, block in enumerate(blocks):
        _block(p, block, f"{path}/{i}")
    if not p.found:
        for i, block in enumerate(blocks):
            parsed = Block.parse(block) if isinstance(block, dict) else None
            if parsed is not None:
                _sdk(p, parsed, f"{path}/{i}")
    return p.found


def view_problems(view: Any) -> list[str]:
    p = Problems()
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        p.add("/view", "must be a modal or home view")
        return p.found
    if view["type"] == "modal":
        p.text(view.get("title"), "/view/title", VIEW_TITLE)
        for key in ("submit", "close"):
            if view.get(key) is not None:
                p.text(view[key], f"/view/{key}", VIEW_TITLE)
    p.string(view.get("private_metadata"), "/view/private_metadata", PRIVATE_METADATA)
    p.string(view.get("callback_id"), "/view/callback_id", ID)
    p.string(view.get("external_id"), "/view/external_id", ID)
    found = p.found + blocks_problems(view.get("blocks"), max_blocks=VIEW_BLOCKS, path="/view/blocks")
    if not found:
        # slack_sdk also wants 1 to 100 blocks in a view, where Slack's reference names only the
        # 100: the SDK that ships today wins, so an empty view is refused here
        try:
            View(**view).validate_json()
        except (SlackObjectFormationError, TypeError) as exc:
            found.append(f"slack_sdk: {exc} [json-pointer:/view]")
    return found
