"""Checks every provider adapter's tests share: no key in errors, JSON-like fuzz bodies."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from bot.errors import SoraError


def assert_key_hidden(exc: SoraError, key: str) -> None:
    """The key appears in none of the texts an error can carry to a log or a person."""
    for text in (str(exc), repr(exc), exc.message, exc.detail, getattr(exc, "reason", None)):
        assert key not in (text or "")


def json_like(words: SearchStrategy[str]) -> SearchStrategy[object]:
    """Nested JSON-ish values, biased toward a provider's own vocabulary (`words`)."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | words
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(words | st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=25,
    )
