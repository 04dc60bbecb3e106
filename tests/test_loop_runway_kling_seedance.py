"""Runway (its own and other makers' models), Kling and Seedance through the real app (issue 17).

Each runs against its local fake, which the providers' SDKs accept (tests/test_provider_*.py).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from bot.cli import jobs_json, usage_json
from bot.deps import Timing
from bot.lifecycle.flow import _backoff
from bot.providers.kling import KlingProvider
from bot.providers.runway import RunwayProvider
from bot.providers.seedance import SeedanceProvider
from tests.conftest import FAST
from tests.fakes.kling_seedance_fal import FakeKlingServer, FakeSeedanceServer
from tests.fakes.runway_veo import FakeRunwayServer


@dataclass(frozen=True)
class Case:
    route: str
    server: type
    make: Callable[[Any, httpx.AsyncClient], Any]
    model: str
    options: str
    sent: dict[str, Any]  # what the create body must carry


def _runway(s: Any, c: httpx.AsyncClient) -> RunwayProvider:
    return RunwayProvider(s.api_key, base_url=s.base_url, client=c)


CASES = [
    Case("runway", FakeRunwayServer, _runway, "gen4.5", "-d 5",
         {"model": "gen4.5", "ratio": "1280:720", "duration": 5}),
    Case("runway", FakeRunwayServer, _runway, "runway/veo3.1", "-d 8 -r 1080p",
         {"model": "veo3.1", "ratio": "1920:1080", "duration": 8}),
    Case("runway", FakeRunwayServer, _runway, "runway/seedance2", "-d 10 -a 1:1",
         {"model": "seedance2", "ratio": "960:960", "duration": 10}),
    Case("runway", FakeRunwayServer, _runway, "runway/gemini_omni_flash", "-d 6 -a 9:16",
         {"model": "gemini_omni_flash", "ratio": "720:1280", "duration": 6}),
    Case("kling", FakeKlingServer,
         lambda s, c: KlingProvider(s.access_key, s.secret_key, base_url=s.base_url, client=c),
         "kling-3.0", "-d 12", {"model_name": "kling-v3", "duration": "12"}),
    Case("seedance", FakeSeedanceServer,
         lambda s, c: SeedanceProvider(s.api_key, base_url=s.base_url, client=c),
         "seedance-2.5", "-d 20", {"model": "dreamina-seedance-2-5-260628", "duration": 20}),
]


async def _start(make_bot: Any, case: Case, server: Any, client: httpx.AsyncClient,
                 timing: Timing = FAST) -> Any:
    return await make_bot(providers={case.route: case.make(server, client)}, include_simulator=False,
                          sora_default_model=case.model, sora_daily_budget_usd="20", timing=timing)


async def _jobs(bot: Any, text: str, *, user: str = "U1") -> list[dict[str, Any]]:
    resp = await bot.slash(text, user=user)
    assert "Got it" in resp.json()["text"], resp.json()["text"]
    await bot.runtime.poller.idle(20)
    return json.loads(await jobs_json(bot.deps.db))


@pytest.mark.parametrize("case", CASES, ids=[c.model for c in CASES])
async def test_a_video_from_each_model_lands_in_the_thread(make_bot, slack, case: Case) -> None:
    async with case.server(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        bot = await _start(make_bot, case, server, client)
        [job] = await _jobs(bot, f"{case.options} a lantern festival over a river")
        assert job["status"] == "succeeded", job
        assert (job["provider"], job["model"]) == (case.route, case.model)
        assert len(server.submits) == 1
        sent = server.submits[0]
        assert {key: sent.get(key) for key in case.sent} == case.sent
        replies = slack.thread(job["channel_id"], job["thread_ts"])[1:]
        assert len(replies) == 1 and replies[0].files


# --- what Runway reports it charged is what the ledger charges -------------------------------


@pytest.mark.parametrize(
    ("marker", "charged_usd"),
    [("[credits=30]", 0.30),  # Runway says 30 credits: $0.30 of the $0.60 reserved
     ("[credits=500]", 0.60),  # more than reserved: never more than the reservation
     ("", 0.60)],  # 12 credits/s for 5 s: the reservation exactly
)
async def test_the_charge_follows_runways_reported_cost(
    make_bot, slack, marker: str, charged_usd: float
) -> None:
    case = CASES[0]
    async with case.server(run_seconds=0.1) as server, httpx.AsyncClient() as client:
        bot = await _start(make_bot, case, server, client)
        [job] = await _jobs(bot, f"-d 5 {marker} a windmill at dusk")
        assert job["status"] == "succeeded", job
        assert job["cost_usd"] == pytest.approx(charged_usd)
        [usage] = json.loads(await usage_json(bot.deps, None))
        assert usage["spent_usd"] == pytest.approx(charged_usd) and usage["reserved_usd"] == 0


# --- Runway's retry rules: retried when nothing was made, never a second paid task -----------


async def test_a_runway_409_at_submit_is_retried_and_makes_one_task(make_bot, slack) -> None:
    case = CASES[0]
    async with case.server(run_seconds=0.1) as server, httpx.AsyncClient() as client:
        bot = await _start(make_bot, case, server, client)
        [job] = await _jobs(bot, "-d 5 [409-submit] a lighthouse")
        assert job["status"] == "succeeded", job
        assert (len(server.create_attempts), len(server.submits)) == (2, 1)


async def test_a_5xx_after_runway_made_the_task_is_never_resent(make_bot, slack) -> None:
    # the answer says x-should-retry: true, which runwayml obeys; resending would pay twice
    case = CASES[0]
    async with case.server(run_seconds=0.1) as server, httpx.AsyncClient() as client:
        bot = await _start(make_bot, case, server, client)
        [job] = await _jobs(bot, "-d 5 [500-after-create] a lighthouse")
        assert (job["status"], job["failure_kind"]) == ("failed", "provider_unavailable"), job
        assert len(server.create_attempts) == 1 and len(server.submits) == 1
        [usage] = json.loads(await usage_json(bot.deps, None))
        assert usage["spent_usd"] == 0 and usage["reserved_usd"] == 0


# --- a rate limit without Retry-After waits at least the floor -------------------------------


async def test_kling_1302_without_retry_after_waits_at_least_the_floor(make_bot, slack) -> None:
    case = CASES[4]
    floor_s = 0.4  # the poll interval is 0.05 s: without the floor the retry came far sooner
    timing = dataclasses.replace(FAST, rate_limit_floor_s=floor_s)
    async with case.server(run_seconds=0.1) as server, httpx.AsyncClient() as client:
        bot = await _start(make_bot, case, server, client, timing=timing)
        [job] = await _jobs(bot, "-d 5 [1302] a market at noon")
        assert job["status"] == "succeeded", job
        first, second = server.create_times
        assert second - first >= floor_s
        assert len(server.submits) == 1


def test_backoff_floor_applies_to_rate_limits_without_a_hint() -> None:
    random.seed(17)
    deps = SimpleNamespace(timing=Timing(poll_interval_s=0.2))  # SORA_POLL_INTERVAL may be low
    limited = [_backoff(deps, 1, None, rate_limited=True) for _ in range(200)]  # type: ignore[arg-type]
    assert Timing().rate_limit_floor_s == 1.0
    assert all(1.0 <= d <= 1.5 for d in limited)
    assert max(limited) - min(limited) > 0.2  # jittered, so refused jobs don't return together
    # other transient errors keep the short backoff; a provider's own hint still wins
    assert all(d < 0.3 for d in (_backoff(deps, 1, None) for _ in range(50)))  # type: ignore[arg-type]
    assert _backoff(deps, 1, 0.5, rate_limited=True) == 0.5  # type: ignore[arg-type]
    assert _backoff(deps, 1, 7.0, rate_limited=True) == 7.0  # type: ignore[arg-type]


# --- Seedance 2.5's longer lengths and its image's role --------------------------------------


async def test_seedance_25_makes_a_30_second_video(make_bot, slack) -> None:
    case = CASES[5]
    async with case.server(run_seconds=0.1) as server, httpx.AsyncClient() as client:
        bot = await _start(make_bot, case, server, client)
        [job] = await _jobs(bot, "-d 30 -a 9:16 a tide coming in")
        assert job["status"] == "succeeded", job
        sent = server.submits[0]
        assert (sent["model"], sent["duration"], sent["ratio"]) == (
            "dreamina-seedance-2-5-260628", 30, "9:16")
