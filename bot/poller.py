"""The one owner of background work: a task per unfinished job, reaped and shut down cleanly."""

from __future__ import annotations

import asyncio
import logging

from bot import flow
from bot.deps import Deps
from bot.throttle import EditThrottle
from storage import jobs as jobstore

log = logging.getLogger(__name__)


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
        self._wake: dict[str, asyncio.Event] = {}

    def watch(self, job_id: str) -> None:
        if self._closing:
            return
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._guard(job_id), name=f"job:{job_id}")
        self.tasks[job_id] = task
        task.add_done_callback(lambda t, j=job_id: self._reap(j, t))

    def restart(self, job_id: str) -> None:
        """Stop the job's current task and start again from the database (after a cancel)."""
        task = self.tasks.pop(job_id, None)
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self.watch(job_id)

    def wake_event(self, job_id: str) -> asyncio.Event:
        """What a job's watcher naps on between polls (see `poke`)."""
        return self._wake.setdefault(job_id, asyncio.Event())

    def poke(self, job_id: str) -> bool:
        """Poll this job now (a provider said it changed). False if nobody is watching it.

        A poke is a hint: the watcher still asks the provider before acting, so a forged
        or replayed callback can at most cause one extra status call.
        """
        if job_id not in self.tasks:
            return False
        self.wake_event(job_id).set()
        return True

    def _reap(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
        self.throttle.forget(job_id)
        self._wake.pop(job_id, None)

    async def _guard(self, job_id: str) -> None:
        while not self._closing:
            try:
                await flow.run_job(self.deps, job_id, self.throttle)
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
        """On start: watch every unfinished job and every final message still owed."""
        ids = await jobstore.unfinished_job_ids(self.deps.db)
        ids += [j for j in await jobstore.pending_delivery_ids(self.deps.db) if j not in ids]
        for job_id in ids:
            self.watch(job_id)
        if ids:
            log.info("resumed %d job(s) from the database", len(ids))
        return len(ids)

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
