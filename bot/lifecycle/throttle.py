"""Bounds how often the bot edits progress messages, per job and across all jobs."""

from __future__ import annotations

import time


class EditThrottle:
    """Per-job minimum interval plus a workspace-wide token bucket.

    `chat.update` is a Tier 3 method (about 50 a minute): a thousand running jobs must share
    that, so routine progress edits are dropped, not queued, when the bucket is empty.
    State changes (forced edits) skip the per-job interval but still take a token if one is
    free, so they are never dropped.
    """

    def __init__(self, *, per_job_s: float, per_minute: int = 40) -> None:
        self.per_job_s = per_job_s
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.last_edit: dict[str, float] = {}

    def allow(self, job_id: str, *, force: bool = False) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if not force:
            last = self.last_edit.get(job_id)
            if last is not None and now - last < self.per_job_s:
                return False
            if self.tokens < 1:
                return False
        self.tokens = max(0.0, self.tokens - 1)
        self.last_edit[job_id] = now
        return True

    def forget(self, job_id: str) -> None:
        self.last_edit.pop(job_id, None)
