"""A fresh PostgreSQL database for a benchmark, on the local test server, dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from tests.postgres import fresh_database as _fresh

# the role .ci/postgres makes; $SORA_TEST_POSTGRES_URL names another server
DEFAULT_URL = "postgresql://sora_test:sora_test@127.0.0.1:5432/postgres"


def server_url() -> str:
    url = os.environ.get("SORA_TEST_POSTGRES_URL") or DEFAULT_URL
    host = urlsplit(url).hostname or "localhost"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"the benchmarks talk to 127.0.0.1 only; the server URL names {host!r}")
    return url


@asynccontextmanager
async def fresh_database(base: str | None = None) -> AsyncIterator[str]:
    """The URL of a new database `sora_bench_<hex>`; dropped (WITH FORCE) when done."""
    async with _fresh(base or server_url(), prefix="sora_bench") as url:
        yield url
