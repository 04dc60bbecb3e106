"""Interpreter settings for the long-running `sora-bot run` process.

Both serve the Slack answer (due within 3 s, and felt well before that), which shares one
interpreter with the job work the answers start.
"""

from __future__ import annotations

import gc
import sys

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
