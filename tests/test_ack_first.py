"""Job steps give way to unanswered Slack requests, briefly, and start a few at a time."""

from __future__ import annotations

import asyncio

from bot.lifecycle.ack_first import AckFirst


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
