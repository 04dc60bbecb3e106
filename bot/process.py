"""Interpreter settings for the long-running `sora-bot run` process.

All serve the Slack answer (due within 3 s, and felt well before that), which shares one
interpreter with the job work the answers start.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable

# Seconds a thread may hold the GIL while another waits for it (Python's default: 5 ms).
SWITCH_INTERVAL_S = 0.0005


def prefer_short_turns() -> None:
    """The SQLite threads (the reader's, the multi-step writer's, the checkpoint worker) need
    the GIL back after every statement, and whoever awaits them waits for that. With the
    default interval each statement could sit behind 5 ms of event-loop work: when
    reservations still ran on the writer's thread, one took up to tens of ms under load."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_startup_heap() -> None:
    """Keep what start-up made (modules, the catalog, the resumed jobs' rows and tasks) out of
    the cyclic collector's walks from now on. A full collection otherwise walks all of it,
    and each one paused the event loop, and every Slack answer in flight, for 60-130 ms
    while 100 commands a second arrived. (No collection first: with 10,000 resumed jobs it
    would pause the loop for about half a second, to free a little start-up garbage.)"""
    gc.freeze()


class CollectorHold:
    """Hold the cyclic garbage collector back while Slack waits for answers.

    A burst of commands allocates quickly and is itself the garbage: in a burst of 200,
    the collector ran about 45 times (gen 0 and 1, sometimes a full walk), 15-25 ms of the
    loop's time while every answer in flight waited. Reference counting still frees what it
    can; cycles wait for the moment no answer is owed. So the collector never waits long
    under steady traffic, it runs again after `max_hold_s` of continuous holding, for at
    least `let_run_s`. It is not touched if something else already turned it off.
    """

    def __init__(self, *, max_hold_s: float = 1.0, let_run_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_hold_s = max_hold_s
        self.let_run_s = let_run_s
        self._clock = clock
        self._since: float | None = None  # when we turned the collector off
        self._not_before = 0.0

    @property
    def holding(self) -> bool:
        return self._since is not None

    def hold(self) -> None:
        """An answer is owed (called for each request as it arrives)."""
        now = self._clock()
        if self._since is None:
            if now >= self._not_before and gc.isenabled():
                gc.disable()
                self._since = now
        elif now - self._since > self.max_hold_s:
            self.release()
            self._not_before = now + self.let_run_s

    def release(self) -> None:
        """No answer is owed any more."""
        if self._since is not None:
            self._since = None
            gc.enable()
