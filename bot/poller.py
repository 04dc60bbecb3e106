"""The one owner of background work: a task per unfinished job, reaped and shut down cleanly."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter

from bot import flow
from bot.catalog import SIMULATOR
from bot.deps import Deps
from bot.models import Job
from bot.throttle import EditThrottle
from storage import jobs as jobstore

log = logging.getLogger(__name__)

# After a restart the first polls of the resumed jobs are spread over about this many
# jobs a second (at least SORA_POLL_INTERVAL): 10,000 jobs polled at once would queue for
# the provider's connections and the event loop. A provider's status-call pace lowers it.
RESUME_POLLS_PER_S = 200.0


class Poller:
    """Runs `flow.run_job` for every job it is asked to watch.

    The only caller of `create_task` in the bot. A task that crashes is logged with its job
    id and started again after a back-off: the job stays in the database, so nothing is
    lost, and every step is guarded so that running it again is safe.
    """

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.throttle = EditThrottle(per_job_s=deps.timing.progress_edit_interval_s)
        self._closing = False
        self._crashes: dict[str, int] = {}
        self._naps: dict[str, asyncio.Future[bool]] = {}  # job id -> the nap a poke ends
        self._poked: set[str] = set()  # poked while not napping: its next nap is skipped
        self._next_slot: dict[str, float] = {}  # provider -> loop time of its next free status-call slot
        # rows read by `resume`, each used once by its task's first run
        self._loaded: dict[str, tuple[Job, float | None]] = {}

    def watch(self, job_id: str, *, row: Job | None = None, first_delay_s: float | None = None) -> None:
        """Run the job's steps in a task of its own, unless one is running already.

        `row` is the job as just read (the task then doesn't read it again) and
        `first_delay_s` the delay before its first poll.
        """
        if self._closing:
            return
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            return
        if row is not None:
            self._loaded[job_id] = (row, first_delay_s)
        task = asyncio.create_task(self._guard(job_id), name=f"job:{job_id}")
        self.tasks[job_id] = task
        task.add_done_callback(lambda t, j=job_id: self._reap(j, t))

    def restart(self, job_id: str) -> None:
        """Stop the job's current task and start again from the database (after a cancel)."""
        task = self.tasks.pop(job_id, None)
        self._loaded.pop(job_id, None)
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self.watch(job_id)

    async def pace(self, provider: str, job_id: str | None = None) -> None:
        """Wait for this provider's next status-call slot: at most `status_calls_per_s`.

        Slots are handed out in arrival order, one interval apart, so with thousands of
        waiting jobs the provider sees a steady trickle rather than bursts (and the bot's
        CPU stays flat); each job's polls then come less often than its schedule asks.
        A poke of `job_id` ends the wait, as it ends a nap: a callback's poll never queues
        behind other jobs' scheduled ones (the slot it held stays unused).
        """
        per_s = self._paced_per_s(provider)
        if per_s is None:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next_slot.get(provider, 0.0))
        self._next_slot[provider] = slot + 1.0 / per_s
        if slot > now:
            if job_id is None:
                await asyncio.sleep(slot - now)
            else:
                await self.nap(job_id, slot - now)

    def _paced_per_s(self, provider: str) -> float | None:
        """Status calls a second `pace` lets through to this provider; None: not paced (the
        built-in simulator makes no calls)."""
        return None if provider == SIMULATOR else self.deps.timing.status_calls_per_s

    async def nap(self, job_id: str, delay: float) -> bool:
        """Sleep `delay` seconds between a job's polls; True when a poke cut it short.

        A future and a timer per nap, not an Event per job with a timeout around it: with
        10,000 waiting jobs the Event's waiter deque alone was ~0.6 KiB a job, and every
        timeout raised and caught an exception.
        """
        if job_id in self._poked:
            self._poked.discard(job_id)
            return True  # poked while it was busy polling: go again at once
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._naps[job_id] = fut
        timer = loop.call_later(delay, _settle, fut, False)
        try:
            return await fut
        finally:
            timer.cancel()
            if self._naps.get(job_id) is fut:
                del self._naps[job_id]

    def poke(self, job_id: str) -> bool:
        """Poll this job now (a provider said it changed). False if nobody is watching it.

        A poke is a hint: the watcher still asks the provider before acting, so a forged
        or replayed callback can at most cause one extra status call.
        """
        if job_id not in self.tasks:
            return False
        fut = self._naps.get(job_id)
        if fut is not None and not fut.done():
            fut.set_result(True)
        else:
            self._poked.add(job_id)
        return True

    def _reap(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
        self.throttle.forget(job_id)
        self._poked.discard(job_id)
        if job_id not in self.tasks:
            self._loaded.pop(job_id, None)

    async def _guard(self, job_id: str) -> None:
        while not self._closing:
            # the row from `resume` serves the first run only: a run after a crash reads afresh
            row, first_delay_s = self._loaded.pop(job_id, (None, None))
            try:
                await flow.run_job(self.deps, job_id, self.throttle, job=row, first_delay_s=first_delay_s)
                self._crashes.pop(job_id, None)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                count = self._crashes.get(job_id, 0) + 1
                self._crashes[job_id] = count
                delay = min(300.0, self.deps.timing.poll_interval_s * 2 ** min(count, 8))
                log.exception("job %s: step failed (%d); resuming in %.0fs", job_id, count, delay)
                await asyncio.sleep(delay)

    async def resume(self) -> int:
        """On start: watch every unfinished job and every final message still owed.

        One query loads them all and each task gets its row; their first polls are spread
        at random over a window that grows with their number on each provider. A window
        shorter than the provider's pace allows would only move the queue into `pace`, where
        every job would wake once more to wait again.
        """
        jobs = await jobstore.jobs_to_resume(self.deps.db)
        per_provider = Counter(job.provider for job in jobs)
        t = self.deps.timing
        windows = {provider: resume_window(count, min_s=t.poll_interval_s, paced_per_s=self._paced_per_s(provider))
                   for provider, count in per_provider.items()}
        for job in jobs:
            self.watch(job.id, row=job, first_delay_s=random.uniform(0.0, windows[job.provider]))
        if jobs:
            log.info("resumed %d job(s) from the database; first polls spread over up to %.0f s",
                     len(jobs), max(windows.values()))
        return len(jobs)

    async def close(self) -> None:
        """Stop new work, cancel every task, wait for them all."""
        self._closing = True
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results):
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                log.error("task %s ended with %r", task.get_name(), result)
        self.tasks.clear()

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until no job task is running (tests and the demo)."""
        async with asyncio.timeout(timeout):
            while self.tasks:
                await asyncio.gather(*list(self.tasks.values()), return_exceptions=True)


def resume_window(jobs: int, *, min_s: float, paced_per_s: float | None) -> float:
    """Seconds over which the first polls of `jobs` resumed jobs of one provider are spread."""
    rate = RESUME_POLLS_PER_S if paced_per_s is None else min(RESUME_POLLS_PER_S, paced_per_s)
    return max(min_s, jobs / rate)


def _settle(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)
