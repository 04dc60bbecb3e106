"""This replica's leases on jobs: its id, the jobs it holds, and whether it may still act for one.

On PostgreSQL several replicas share the jobs (storage.leases): each job is watched by the
replica whose lease it holds, renewed by that replica's heartbeat (`Poller`). Before anything
another replica must not do twice (submit, settle, post the final message) a job's task asks
`check`: it passes only while the job is held and the last renewal is recent enough that no
other replica can have claimed it meanwhile, by this process's own monotonic clock. A process
frozen past its lease (SIGSTOP, a long GC, a partition) therefore stops at its next step, and
the guarded UPDATEs it would make name it as the owner (`fence`), so they change nothing once
another replica has the job.

On SQLite there is one process: everything is its own, and none of this costs anything.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.clock import iso
from storage.jobs import Lease


class LeaseLost(Exception):
    """This replica may no longer act for the job: another may own it now."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id}: this replica's lease on it is gone")
        self.job_id = job_id


def new_replica_id() -> str:
    """Unique for this process's whole life, so an id never owns a job twice (it fences)."""
    host = socket.gethostname().split(".")[0][:40] or "replica"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Leases:
    # a job may be acted on while its last renewal is younger than this share of the lease:
    # the rest is the margin for the clocks of replicas to disagree and for the step itself
    SAFE_SHARE = 2 / 3

    def __init__(self, replica_id: str, lease_s: float, *, shared: bool, clock: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.replica_id = replica_id
        self.lease_s = lease_s
        self.shared = shared
        self.held: set[str] = set()
        self._clock = clock
        self._monotonic = monotonic
        self.renewed_at = monotonic()  # a new job's lease starts with its insert

    @property
    def heartbeat_s(self) -> float:
        """How often the heartbeat renews: three times a lease, so one late beat loses nothing."""
        return self.lease_s / 3

    def new_lease(self) -> Lease | None:
        """The lease a job this replica creates starts with (None on SQLite: no owners there)."""
        if not self.shared:
            return None
        return Lease(self.replica_id, iso(self._clock() + timedelta(seconds=self.lease_s)))

    @property
    def fence(self) -> str | None:
        """The owner guarded updates require (None on SQLite)."""
        return self.replica_id if self.shared else None

    def fresh(self) -> bool:
        return self._monotonic() - self.renewed_at < self.lease_s * self.SAFE_SHARE

    def may_act(self, job_id: str) -> bool:
        return not self.shared or (job_id in self.held and self.fresh())

    def check(self, job_id: str) -> None:
        if not self.may_act(job_id):
            raise LeaseLost(job_id)
