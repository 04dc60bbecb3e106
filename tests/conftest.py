"""Shared fixtures: a clean environment, the fake Slack, and the real app served over HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from bot.app import Runtime, create_runtime, make_web_app
from bot.config import Settings
from bot.deps import Timing
from bot.fakes.fakeslack import FakeSlack
from bot.providers.base import VideoProvider
from bot.providers.simulator import SimulatorProvider
from tests.postgres import fresh_database
from tests.slack_requests import SIGNING_SECRET, mention_body, post_signed, slash_body

# A PostgreSQL server the tests may create databases on (.ci/run starts one and sets it), read
# before clean_env drops every SORA_ variable. Without it the PostgreSQL tests are skipped.
POSTGRES_URL = os.environ.get("SORA_TEST_POSTGRES_URL", "")
NO_POSTGRES = "no PostgreSQL server: set SORA_TEST_POSTGRES_URL (.ci/run starts one and sets it)"


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """The URL of a new, empty database on the test server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    async with fresh_database(POSTGRES_URL) as url:
        yield url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # tests marked both_backends run once on SQLite and once on PostgreSQL; others on SQLite
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """The database URL the bot is given: None (SQLite in tmp_path) or a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    async with fresh_postgres_database() as url:
        yield url


# Every variable the bot reads: tests never inherit the machine's keys or settings.
_ENV_PREFIXES = ("SLACK_", "SORA_", "VIDEO_GATEWAY_", "OPENAI_", "RUNWAY", "GEMINI_", "KLING_", "ARK_", "FAL_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) or name in ("PORT", "HOST"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env is read


FAST = Timing(
    poll_interval_s=0.05,
    max_poll_interval_s=0.2,
    stall_timeout_s=30.0,
    job_timeout_s=30.0,
    progress_edit_interval_s=0.0,
    submit_retry_window_s=20.0,
    rate_limit_floor_s=0.05,
    download_attempts=4,
    delivery_retry_max_s=0.5,
    lateness_floor_s=0.05,
    status_calls_per_s=10_000.0,  # tests that mean to pace set their own
)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_channel("C1", name="general", member=True)
        fake.add_user("U1", name="alice")
        fake.add_user("U2", name="bob")
        yield fake


@dataclass
class Bot:
    """The real app behind a real HTTP server, plus ways to talk to it like Slack does."""

    runtime: Runtime
    url: str
    http: httpx.AsyncClient
    slack: FakeSlack

    async def slash(self, text: str, **kw: Any) -> httpx.Response:
        kw.setdefault("response_url", self.slack.new_response_url())
        return await post_signed(self.http, self.url, slash_body(text, **kw))

    async def admin(self, text: str, **kw: Any) -> str:
        """/sora-admin: the answer arrives through response_url, as in Slack."""
        url = self.slack.new_response_url()
        kw["response_url"] = url
        resp = await post_signed(self.http, self.url, slash_body(text, command="/sora-admin", **kw))
        assert resp.status_code == 200, resp.text
        await self.slack.wait_for(lambda: bool(self.slack.responses.get(url)), timeout=5)
        return self.slack.responses[url][-1]["text"]

    async def mention(self, text: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("extra_headers", None)
        return await post_signed(self.http, self.url, mention_body(text, **kw), extra_headers=headers)

    @property
    def deps(self) -> Any:
        return self.runtime.deps


BotFactory = Callable[..., Any]


@pytest.fixture
async def make_bot(slack: FakeSlack, tmp_path: Path, backend: str | None) -> AsyncIterator[BotFactory]:
    started: list[tuple[Runtime, TestServer, httpx.AsyncClient]] = []

    async def factory(
        *,
        providers: Mapping[str, VideoProvider] | None = None,
        timing: Timing = FAST,
        include_simulator: bool | None = True,
        sim_seconds: float = 0.4,
        clock: Any = None,
        **settings: Any,
    ) -> Bot:
        values: dict[str, Any] = {
            "slack_bot_token": "xoxb-test-token",
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack.api_url,
            "sora_db_path": tmp_path / "bot.db",
            "sora_default_model": "simulator",
        }
        if backend is not None:
            values["sora_database_url"] = backend
        values.update(settings)
        s = Settings(_env_file=None, **values)
        provs = dict(providers) if providers is not None else {}
        provs.setdefault("simulator", SimulatorProvider(run_seconds=sim_seconds))
        extra = {"clock": clock} if clock is not None else {}
        runtime = await create_runtime(s, providers=provs, timing=timing, include_simulator=include_simulator, **extra)
        await runtime.start()
        server = TestServer(make_web_app(runtime), host="127.0.0.1")
        await server.start_server()
        http = httpx.AsyncClient(timeout=10)
        started.append((runtime, server, http))
        return Bot(runtime, str(server.make_url("/slack/events")), http, slack)

    yield factory
    for runtime, server, http in reversed(started):
        await http.aclose()
        await server.close()
        await runtime.close()
