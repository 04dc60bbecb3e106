"""Status calls to one provider are paced: many waiting jobs never add up to a flood."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx

from bot.providers.gateway import GatewayProvider
from tests.conftest import FAST
from tests.fakes.providers import FakeGatewayServer


async def test_many_waiting_jobs_share_one_providers_status_call_rate(make_bot, slack) -> None:
    async with FakeGatewayServer(run_seconds=60) as gateway, httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client)},
            timing=replace(FAST, status_calls_per_s=8.0),
            sora_default_model="sora-2", sora_max_concurrent_per_user=50, sora_daily_budget_usd="100",
        )
        for n in range(12):  # unpaced, each would poll every 0.05-0.2 s: over 60 calls a second
            await bot.slash(f"-d 4 a slow river {n}", user=f"U{n:02d}")
        await slack.wait_for(lambda: len(gateway.submits) == 12, timeout=10)
        start, before = time.monotonic(), sum(gateway.polls.values())
        await asyncio.sleep(2.0)
        calls = sum(gateway.polls.values()) - before
        elapsed = time.monotonic() - start
        # at most the rate (plus the one slot that may straddle the window), and not starved
        assert 1 <= calls <= 8.0 * elapsed + 2, (calls, elapsed)
        assert len({job_id for job_id, n in gateway.polls.items() if n}) == 12  # every job gets its turn


async def test_a_poke_ends_a_nap_or_skips_the_next_one() -> None:
    from types import SimpleNamespace

    from bot.lifecycle.poller import Poller

    poller = Poller(SimpleNamespace(timing=FAST, leases=_one_process()))  # type: ignore[arg-type]
    watcher = asyncio.get_running_loop().create_future()
    poller.tasks["j1"] = watcher  # type: ignore[assignment]
    assert poller.poke("nobody") is False  # nobody watches it: the caller falls back to polling

    assert await poller.nap("j1", 0.01) is False  # an ordinary nap runs out
    napping = asyncio.create_task(poller.nap("j1", 30))
    await asyncio.sleep(0.01)
    assert poller.poke("j1") is True
    assert await asyncio.wait_for(napping, 1) is True  # cut short at once
    assert poller.poke("j1") is True  # poked while busy polling: the next nap is skipped
    assert await asyncio.wait_for(poller.nap("j1", 30), 1) is True
    assert await poller.nap("j1", 0.01) is False  # and only that one
    assert poller._naps == {}  # nothing left behind per job
    watcher.cancel()


async def test_a_poke_ends_the_wait_for_a_status_call_slot() -> None:
    from types import SimpleNamespace

    from bot.lifecycle.poller import Poller

    poller = Poller(SimpleNamespace(timing=replace(FAST, status_calls_per_s=0.1), leases=_one_process()))  # type: ignore[arg-type]
    watcher = asyncio.get_running_loop().create_future()
    poller.tasks["j2"] = watcher  # type: ignore[assignment]
    await poller.pace("gateway", "j1")  # takes the free slot; the next is 10 s away
    queued = asyncio.create_task(poller.pace("gateway", "j2"))
    await asyncio.sleep(0.05)
    assert not queued.done()  # behind the other job's slot
    assert poller.poke("j2") is True  # its provider called back
    await asyncio.wait_for(queued, 1)  # no waiting out the queue
    assert poller._naps == {}
    watcher.cancel()


def _one_process():
    from bot.clock import utcnow
    from bot.lifecycle.leases import Leases

    return Leases("r1", 30.0, shared=False, clock=utcnow)
