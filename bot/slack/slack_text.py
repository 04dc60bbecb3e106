"""Slack's text, both ways: its markup turned into what a person meant, and its measure.

Message text from Slack carries markup: `<@U123>` for a mention, `<#C123|general>` for a
channel, `<https://…|label>` for a link, `<!here>` for a broadcast, and `&amp;`, `&lt;`,
`&gt;` for the three characters it escapes (docs.slack.dev, "Formatting text for app
surfaces"). A video model should get the words a person saw, never that markup.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)

_MARKUP = re.compile(r"<([^<>\n]*)>")
_USER = re.compile(r"@([UW][A-Z0-9]+)")
NAME_LOOKUP_TIMEOUT_S = 0.75  # a slash command's reservation still has to fit in Slack's 3 s
NAME_TTL_S = 3600.0


def utf16_len(text: str) -> int:
    """Length as Slack's limits may count it: UTF-16 code units (the safe measure)."""
    return len(text.encode("utf-16-le")) // 2


def unescape(text: str) -> str:
    """Undo Slack's escaping (only these three; `&copy;` typed by a person stays as typed)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def user_ids(text: str) -> list[str]:
    """The users mentioned in Slack message text, in order, once each."""
    found: dict[str, None] = {}
    for inner in _MARKUP.findall(text or ""):
        m = _USER.match(inner)
        if m:
            found[m.group(1)] = None
    return list(found)


def to_plain(text: str, names: Mapping[str, str] | None = None, *, drop_user: str | None = None) -> str:
    """Slack message text as a person reads it: `<@U1>` -> `@alice`, `<#C1|general>` ->
    `#general`, `<https://x|docs>` -> `docs`, `<!here>` -> `@here`, `&amp;` -> `&`.

    `names`: display names by user id; `drop_user`'s mentions (the bot's own) are removed.
    """
    names = names or {}

    def plain(inner: str) -> str:
        # Slack escaped the labels it sent; a name from users.info is as the person set it
        target, _, label = inner.partition("|")
        label = unescape(label)
        if target.startswith("@"):
            user = target[1:]
            if user == drop_user:
                return " "
            return "@" + (names.get(user) or label.lstrip("@") or "someone")
        if target.startswith("#"):
            return f"#{label or 'channel'}"
        if target.startswith("!"):
            word = target[1:]
            if word.startswith("subteam^"):
                return label if label.startswith("@") else f"@{label or 'group'}"
            if word in ("here", "channel", "everyone"):
                return f"@{word}"
            return label  # <!date^…|fallback> and other special forms
        return label or unescape(target)  # a link: its label, else its address

    text = text or ""
    out: list[str] = []
    at = 0
    for m in _MARKUP.finditer(text):
        out += [unescape(text[at:m.start()]), plain(m.group(1))]
        at = m.end()
    out.append(unescape(text[at:]))
    return "".join(out)


async def plain_prompt(deps: "Deps", text: str, *, drop_user: str | None = None) -> str:
    """`to_plain` with each mentioned person's display name, looked up (and cached) briefly."""
    wanted = [u for u in user_ids(text) if u != drop_user]
    names = await display_names(deps, wanted) if wanted else {}
    return to_plain(text, names, drop_user=drop_user)


class _Names:
    """users.info answers, kept an hour: names change rarely, and a miss only costs a label."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[str, float]] = {}

    def get(self, user_id: str) -> str | None:
        hit = self.known.get(user_id)
        if hit is not None and time.monotonic() - hit[1] < NAME_TTL_S:
            return hit[0]
        return None


_caches: weakref.WeakKeyDictionary[Any, _Names] = weakref.WeakKeyDictionary()


async def display_names(deps: "Deps", ids: Iterable[str]) -> dict[str, str]:
    """Display names by id, from users.info; a person not found in time is left out."""
    cache = _caches.setdefault(deps.slack, _Names())
    ids = list(ids)
    names = {u: n for u in ids if (n := cache.get(u)) is not None}
    missing = [u for u in ids if u not in names]

    async def one(user_id: str) -> None:
        try:
            user = (await deps.slack.users_info(user=user_id)).get("user") or {}
        except SlackApiError as exc:
            log.info("users.info %s: %s", user_id, exc.response.get("error"))
            return
        except aiohttp.ClientError as exc:
            log.info("users.info %s: %s", user_id, type(exc).__name__)
            return
        profile = user.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name")
        if isinstance(name, str) and name:
            names[user_id] = name
            cache.known[user_id] = (name, time.monotonic())

    if missing:
        try:
            async with asyncio.timeout(NAME_LOOKUP_TIMEOUT_S):
                await asyncio.gather(*(one(u) for u in missing[:20]))
        except TimeoutError:
            log.info("display names: users.info too slow for %d user(s); using labels", len(missing))
    return names
