"""Slack's answers first: background job steps give way while requests wait for theirs.

Everything runs on one event loop, so a burst of new jobs (each posting a message and
submitting to a provider) queues ahead of the next command's handler and its ack. Job
steps that can wait a moment take a turn here first: none while any Slack request is
still unanswered (for at most `max_wait_s`, so background work is never starved), and
only `starts` new jobs start at once, so the queue in front of an ack stays short.

The defaults come from bench/bench_ack_sustained.py at 100 commands a second on 2 cores:
fewer starts answered faster but let new jobs fall behind the arrivals (12: ack p99
56 ms, 85% of the jobs submitted within the run); 16 kept up (96%) at an ack p99 of
about 90 ms; without this the p99 was 743 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class AckFirst:
    def __init__(self, *, max_wait_s: float = 0.05, starts: int = 16) -> None:
        self.max_wait_s = max_wait_s
        self.pending = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._starts = asyncio.Semaphore(starts)

    def enter(self) -> None:
        """A Slack request arrived: hold back job steps until it is answered."""
        self.pending += 1
        self._quiet.clear()

    def leave(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.pending = 0
            self._quiet.set()

    async def turn(self) -> None:
        """Wait until no Slack request is waiting for its answer (or `max_wait_s` passed)."""
        if self.pending == 0:
            return
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._quiet.wait()
        except TimeoutError:
            pass

    @asynccontextmanager
    async def start(self) -> AsyncIterator[None]:
        """A new job's first steps (its message, its submit): a few at a time, after a turn."""
        async with self._starts:
            await self.turn()
            yield
