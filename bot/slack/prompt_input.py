"""The prompt field of the request and edit modals: as long a prompt as `/sora` takes.

A plain_text_input holds at most 3,000 characters (Block Kit reference) and `/sora` takes
4,000, so a longer prompt is spread over a second (and, for a prompt of emoji, which count
twice in UTF-16, a third) input instead of being cut without a word.
"""

from __future__ import annotations

from typing import Any

from bot.parsing import MAX_PROMPT_CHARS
from bot.slack.slack_text import utf16_len

INPUT_CHARS = 3000  # plain_text_input's maximum, counted here in UTF-16 units (the safe measure)
BLOCK_IDS = ("prompt", "prompt_2", "prompt_3")  # 3 × 3,000 units hold any 4,000-character prompt
ACTION_ID = "value"


def split_prompt(prompt: str) -> list[str]:
    """The prompt in pieces of at most INPUT_CHARS units, cut at a space where one is near."""
    pieces: list[str] = []
    rest = prompt
    while utf16_len(rest) > INPUT_CHARS:
        cut = _longest_fit(rest)
        space = rest.rfind(" ", 0, cut)
        if space > cut - 200:
            cut = space + 1  # the space stays with the first piece: joining restores the prompt
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return [*pieces, rest] if rest or not pieces else pieces


def _longest_fit(text: str) -> int:
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > INPUT_CHARS:
            return i
    return len(text)


def blocks(prompt: str, *, label: str, placeholder: str | None = None) -> list[dict[str, Any]]:
    """The prompt's input blocks, prefilled; one for a prompt that fits, more when it doesn't."""
    pieces = split_prompt(prompt) if prompt else [""]
    out = []
    for n, (block_id, piece) in enumerate(zip(BLOCK_IDS, pieces)):
        element: dict[str, Any] = {"type": "plain_text_input", "action_id": ACTION_ID, "multiline": True,
                                   "max_length": INPUT_CHARS}
        if piece:
            element["initial_value"] = piece
        if placeholder and n == 0:
            element["placeholder"] = {"type": "plain_text", "text": placeholder}
        block: dict[str, Any] = {"type": "input", "block_id": block_id, "element": element,
                                 "label": {"type": "plain_text", "text": label if n == 0 else f"{label} (continued)"}}
        if n:
            block["optional"] = True
        out.append(block)
    if len(pieces) > 1:
        hint = (f"This prompt is longer than one field holds ({INPUT_CHARS:,}), so it continues below. "
                f"Prompts may be up to {MAX_PROMPT_CHARS:,} characters.")
    else:
        # Slack's field stops the typing at its limit (nothing is cut silently); say where more fits
        hint = (f"Up to {INPUT_CHARS:,} characters here; `/sora <prompt>` or a mention takes up to "
                f"{MAX_PROMPT_CHARS:,}.")
    out[0]["hint"] = {"type": "plain_text", "text": hint}
    return out


def read(values: dict[str, Any]) -> str | None:
    """The prompt a submitted view holds, its pieces joined; None when the form has no prompt."""
    pieces = []
    for block_id in BLOCK_IDS:
        value = ((values.get(block_id) or {}).get(ACTION_ID) or {}).get("value")
        if block_id == BLOCK_IDS[0] and not isinstance(value, str) and block_id not in values:
            return None
        if isinstance(value, str):
            pieces.append(value)
    return "".join(pieces)
