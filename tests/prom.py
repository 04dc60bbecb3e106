"""Reading a bot's /metrics in tests: every sample keyed by name and labels."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def usd(micros: int) -> Decimal:
    return Decimal(micros) / 10**6


async def scrape(bot: Any, path: str = "/metrics") -> httpx.Response:
    return await bot.http.get(bot.url.replace("/slack/events", path))
