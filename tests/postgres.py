"""A fresh database on a local PostgreSQL server, dropped afterwards (tests and benchmarks)."""

from __future__ import annotations

import secrets
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit


@asynccontextmanager
async def fresh_database(server_url: str, *, prefix: str = "sora_test") -> AsyncIterator[str]:
    """The URL of a new, empty database `<prefix>_<hex>` on the server; dropped WITH (FORCE)."""
    import asyncpg

    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except asyncpg.PostgresError as exc:  # a leftover database is no failure of the caller
            warnings.warn(f"could not drop database {name}: {exc}", stacklevel=1)
        finally:
            await admin.close()
