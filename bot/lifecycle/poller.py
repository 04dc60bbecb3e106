"""The one owner of background work: a task per unfinished job, reaped and shut down cleanly.

With several replicas (PostgreSQL) it also owns this replica's lease heartbeat: renewing the
leases of the jobs it watches, stopping the tasks of any it lost, claiming jobs nobody holds
(a replica that died or handed its jobs back), and hearing other replicas' pokes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bot import logs
from bot.lifecycle import flow
from bot.catalog import SIMULATOR
from bot.clock import iso
from bot.deps import Deps
from bot.lifecycle.leases import LeaseLost
from bot.models import Job
from bot.lifecycle.throttle import EditThrottle
from storage import compares
from storage import jobs as jobstore
from storage import leases as leasestore

log = logging.getLogger(__name__)

# After a restart the first polls of the resumed jobs are spread over about this many
# jobs a second (at least SORA_POLL_INTERVAL): 10,000 jobs polled at once would queue for
# the provider's connections and the event loop. A provider's status-call pace lowers it.
RESUME_POLLS_PER_S = 200.0
# jobs claimed in one statement: a takeover of thousands goes in a few short transactions
CLAIM_BATCH = 500
# how long a stop waits for create requests already on their way (and their ids' storing)
STOP_GRACE_S = 10.0
# a claim tries this long after another replica's lease runs out (the clocks' margin)
CLAIM_AFTER_EXPIRY_S = 0.2

T = TypeVar("T")


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
        self.leases = deps.leases
        self._heartbeat: asyncio.Task[None] | None = None
        self._claim_now = asyncio.Event()  # another replica handed its jobs back
        self._beat = asyncio.Event()  # set after each renewal, then replaced
        self._unstoppable: set[asyncio.Task[Any]] = set()

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

    def finish_even_if_stopped(self, step: Coroutine[Any, Any, T]) -> "asyncio.Future[T]":
        """Run `step` so that cancelling its caller (a stop) doesn't cut it off: `close` waits
        for it (up to STOP_GRACE_S). For a create request on its way and the storing of its id."""
        task = asyncio.create_task(step, name="unstoppable")
        self._unstoppable.add(task)
        task.add_done_callback(self._unstoppable.discard)
        return asyncio.shield(task)

    def take(self, job: Job, *, first_delay_s: float | None = None) -> None:
        """Watch a job this replica has just come to own (it created or claimed it)."""
        if self.leases.shared:
            self.leases.held.add(job.id)
        self.watch(job.id, row=job, first_delay_s=first_delay_s)

    async def wake(self, job_id: str) -> None:
        """Make whoever watches this job look at it now (a callback, an approval).

        Here when this replica watches it; else, with several replicas, the owner hears it
        through the database; on SQLite a job nobody watches is watched here.
        """
        if self.poke(job_id):
            return
        if self.leases.shared:
            await self.deps.db.notify(f"wake:{job_id}")
        else:
            self.watch(job_id)

    async def restart_anywhere(self, job_id: str) -> None:
        """`restart` on whichever replica watches the job (a cancel clicked on any of them)."""
        if job_id in self.tasks or not self.leases.shared:
            self.restart(job_id)
        else:
            await self.deps.db.notify(f"restart:{job_id}")

    def heard(self, message: str) -> None:
        """A message another replica sent through the database (see `wake`, `close`)."""
        what, _, job_id = message.partition(":")
        if what == "claim":
            self._claim_now.set()
        elif what == "wake" and not self.poke(job_id) and job_id in self.leases.held:
            self.watch(job_id)
        elif what == "restart" and job_id in self.tasks:
            self.restart(job_id)

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
        logs.job_context(job_id=job_id)  # this task's lines name its job, even a crash before its row is read
        while not self._closing:
            # the row from `resume` serves the first run only: a run after a crash reads afresh
            row, first_delay_s = self._loaded.pop(job_id, (None, None))
            try:
                await flow.run_job(self.deps, job_id, self.throttle, job=row, first_delay_s=first_delay_s)
                self._crashes.pop(job_id, None)
                await self._let_go(job_id)
                return
            except LeaseLost:
                # this replica was too late renewing (frozen, cut off): go on only if the next
                # heartbeat finds the job still ours. Else stop: another replica has it, or,
                # should a later heartbeat find it still ours, that beat watches it again
                if not await self._still_held(job_id):
                    log.warning("job %s: this replica may not act for it now; its watch stops here", job_id)
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
        every job would wake once more to wait again. With several replicas: only the jobs
        nobody holds (claimed), and the heartbeat starts.
        """
        if self.leases.shared:
            await self.deps.db.listen(self.heard)
            count = await self._claim_free()
            self._heartbeat = asyncio.create_task(self._keep_leases(), name="leases")
            return count
        jobs = await jobstore.jobs_to_resume(self.deps.db)
        self._watch_spread(jobs)
        if jobs:
            log.info("resumed %d job(s) from the database", len(jobs))
        return len(jobs)

    def _watch_spread(self, jobs: list[Job], *, take: bool = False) -> None:
        per_provider = Counter(job.provider for job in jobs)
        t = self.deps.timing
        windows = {provider: resume_window(count, min_s=t.poll_interval_s, paced_per_s=self._paced_per_s(provider))
                   for provider, count in per_provider.items()}
        for job in jobs:
            first = random.uniform(0.0, windows[job.provider])
            if take:
                self.take(job, first_delay_s=first)
            else:
                self.watch(job.id, row=job, first_delay_s=first)
        if jobs:
            log.info("watching %d job(s); first polls spread over up to %.0f s", len(jobs), max(windows.values()))

    # --- leases (several replicas) -------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Renew this replica's leases and claim jobs nobody holds, every third of a lease, and
        at once when another replica's leases run out (so a dead replica's jobs wait for the
        lease, not for the lease and the next heartbeat)."""
        wait_s = self.leases.heartbeat_s
        while not self._closing:
            try:
                await asyncio.wait_for(self._claim_now.wait(), wait_s)
            except TimeoutError:
                pass
            self._claim_now.clear()
            try:
                await self._renew()
                await self._claim_free()
                # a set whose summary a replica that died (or lost its jobs) still owed
                for job_id in await compares.ready_summaries(self.deps.db):
                    self.watch(job_id)
                wait_s = await self._until_next_expiry()
            except asyncio.CancelledError:
                raise
            except Exception:
                wait_s = self.leases.heartbeat_s
                log.exception("lease heartbeat failed; trying again in %.0f s", wait_s)

    async def _until_next_expiry(self) -> float:
        """Seconds to the next beat: the heartbeat's period, or less when another replica's
        lease runs out sooner (it renews long before that, unless it is gone)."""
        now = self.deps.clock()
        soonest = await leasestore.next_expiry(self.deps.db, self.leases.replica_id)
        if soonest is None:
            return self.leases.heartbeat_s
        left = (soonest - now).total_seconds() + CLAIM_AFTER_EXPIRY_S
        return min(self.leases.heartbeat_s, max(left, CLAIM_AFTER_EXPIRY_S))

    async def _renew(self) -> None:
        started = time.monotonic()
        before = set(self.leases.held)  # jobs taken after this are renewed by the next beat
        kept = await leasestore.renew(self.deps.db, self.leases.replica_id, until=self._lease_until())
        self.leases.renewed_at = started
        for job_id in before - kept:
            # another replica claimed it after this one's lease ran out: stop, touch nothing
            log.warning("job %s: its lease was taken over by another replica; stopping here", job_id)
            self.leases.held.discard(job_id)
            task = self.tasks.get(job_id)
            if task is not None and not task.done():
                task.cancel()
        for job_id in kept.difference(self.tasks):
            # still ours, but its task gave up (a late heartbeat): watch it again
            self.leases.held.add(job_id)
            self.watch(job_id)
        beat, self._beat = self._beat, asyncio.Event()
        beat.set()

    async def _claim_free(self) -> int:
        fresh: list[Job] = []
        while not self._closing:
            now = self.deps.clock()
            jobs = await leasestore.claim(self.deps.db, self.leases.replica_id, until=self._lease_until(now),
                                          now=iso(now), limit=CLAIM_BATCH)
            # one of its own, claimed back after this replica's lease ran out: its task goes on
            self.leases.held.update(job.id for job in jobs)
            fresh += (job for job in jobs if job.id not in self.tasks)
            if len(jobs) < CLAIM_BATCH:
                break
        # first polls spread over one window for all of them, not one per batch
        self._watch_spread(fresh, take=True)
        # jobs nobody watched: a dead or stopped replica's (this one's own before a restart, too)
        self.deps.metrics.takeovers.inc(len(fresh))
        return len(fresh)

    def _lease_until(self, now: datetime | None = None) -> str:
        return iso((now or self.deps.clock()) + timedelta(seconds=self.leases.lease_s))

    async def _still_held(self, job_id: str) -> bool:
        """After a LeaseLost: wait for the next renewal, then whether the job is still ours."""
        try:
            await asyncio.wait_for(self._beat.wait(), self.leases.lease_s)
        except TimeoutError:
            return False
        return self.leases.may_act(job_id)

    async def _let_go(self, job_id: str) -> None:
        """A job that needs nobody now: its lease goes back (its row keeps no owner)."""
        if self.leases.shared and job_id in self.leases.held:
            self.leases.held.discard(job_id)
            await leasestore.release(self.deps.db, self.leases.replica_id, [job_id])

    async def close(self) -> None:
        """Stop new work, cancel every task, wait for them all; hand this replica's leases back
        and tell the other replicas, so they take its jobs over at once."""
        self._closing = True
        tasks = list(self.tasks.values())
        if self._heartbeat is not None:
            tasks.append(self._heartbeat)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results):
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                log.error("task %s ended with %r", task.get_name(), result)
        self.tasks.clear()
        if self._unstoppable:
            _, late = await asyncio.wait(set(self._unstoppable), timeout=STOP_GRACE_S)
            for task in late:  # a create that hangs past the grace: its job is looked up later
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.leases.shared:
            try:
                handed = await leasestore.release(self.deps.db, self.leases.replica_id)
                self.leases.held.clear()
                if handed:
                    await self.deps.db.notify("claim")
                    log.info("handed %d job(s) back for the other replicas", handed)
            except Exception:  # the leases run out by themselves: only slower
                log.exception("could not hand the leases back; other replicas take the jobs over when they run out")

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
