"""Job steps (and the garbage collector) give way to unanswered Slack requests, briefly; jobs
start a few at a time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from bot.ack_first import AckFirst
from bot.process import CollectorHold


async def test_a_step_waits_for_the_pending_answer_then_goes() -> None:
    gate = AckFirst(max_wait_s=5.0)
    gate.enter()
    step = asyncio.create_task(gate.turn())
    await asyncio.sleep(0.05)
    assert not step.done()  # a request is still waiting for its answer
    gate.leave()
    await asyncio.wait_for(step, 1)
    await asyncio.wait_for(gate.turn(), 0.1)  # nothing pending: no wait at all


async def test_background_work_is_never_starved() -> None:
    gate = AckFirst(max_wait_s=0.05)
    gate.enter()  # a request that never seems to end (or requests that always overlap)
    await asyncio.wait_for(gate.turn(), 1)
    gate.leave()
    gate.leave()  # an extra leave can't make the count negative and block later turns
    gate.enter()
    assert gate.pending == 1
    gate.leave()


async def test_only_so_many_new_jobs_start_at_once() -> None:
    gate = AckFirst(starts=2)
    inside, most = 0, 0
    release = asyncio.Event()

    async def start() -> None:
        nonlocal inside, most
        async with gate.start():
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(start()) for _ in range(6)]
    await asyncio.sleep(0.05)
    assert inside == 2
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert most == 2 and inside == 0


@pytest.fixture
def collector_on() -> Iterator[None]:
    """Each test starts with the collector on and leaves it as the suite had it."""
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        (gc.enable if was else gc.disable)()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_collector_waits_while_answers_are_owed(collector_on) -> None:
    gate = AckFirst()
    gate.collector = CollectorHold()
    gate.enter()
    gate.enter()
    assert not gc.isenabled()
    gate.leave()
    assert not gc.isenabled()  # one answer is still owed
    gate.leave()
    assert gc.isenabled()


def test_under_steady_traffic_the_collector_still_runs(collector_on) -> None:
    clock = _Clock()
    hold = CollectorHold(max_hold_s=1.0, let_run_s=0.1, clock=clock)
    hold.hold()
    clock.now += 0.9
    hold.hold()
    assert not gc.isenabled()
    clock.now += 0.2  # held for 1.1 s with answers owed all along
    hold.hold()
    assert gc.isenabled() and not hold.holding
    clock.now += 0.05
    hold.hold()
    assert gc.isenabled()  # it gets its turn before being held again
    clock.now += 0.1
    hold.hold()
    assert not gc.isenabled()
    hold.release()
    assert gc.isenabled()


def test_a_collector_turned_off_elsewhere_stays_off(collector_on) -> None:
    gc.disable()
    hold = CollectorHold()
    hold.hold()
    assert not hold.holding
    hold.release()
    assert not gc.isenabled()
