"""Memory per waiting job for three ways to nap between polls, 10,000 of them, same imports as the bot.

flow._nap waits with `asyncio.wait_for(event.wait(), timeout=delay)` so a provider callback
can wake the job early. On Python 3.11 wait_for wraps the wait in a second task. This
compares that with `asyncio.timeout(delay)` around the same wait, and with a plain sleep.
Each variant runs in a fresh process; RSS (VmRSS) is read before and after the tasks exist.

No target of its own: it explains part of the RSS per job in bench_scale.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, Report, child_env, rss_mb

TASKS = 10_000


async def _nap_wait_for(event: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=600)
    except TimeoutError:
        pass


async def _nap_timeout(event: asyncio.Event) -> None:
    try:
        async with asyncio.timeout(600):
            await event.wait()
    except TimeoutError:
        pass


async def _nap_sleep(event: asyncio.Event) -> None:
    await asyncio.sleep(600)


async def _child(kind: str) -> None:
    import bot.app  # noqa: F401 -- the bot's imports, as in the real process

    assert bot.app

    nap = {"wait_for": _nap_wait_for, "timeout": _nap_timeout, "sleep": _nap_sleep}[kind]
    await asyncio.sleep(0.2)
    before = rss_mb()
    events = [asyncio.Event() for _ in range(TASKS)]
    tasks = [asyncio.create_task(nap(e)) for e in events]
    await asyncio.sleep(0.5)
    after = rss_mb()
    print(json.dumps({"kib_per_job": (after - before) * 1024 / TASKS, "tasks": len(asyncio.all_tasks()) - 1}))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        asyncio.run(_child(sys.argv[2]))
        return 0
    report = Report("wait_memory", f"Memory per waiting job, {TASKS:,} jobs napping between polls")
    report.header()
    for kind in ("sleep", "timeout", "wait_for"):
        out = subprocess.run([sys.executable, __file__, "--child", kind], env=child_env(), cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        label = {"sleep": "asyncio.sleep (no early wake-up)", "timeout": "asyncio.timeout + Event.wait",
                 "wait_for": "asyncio.wait_for(Event.wait)"}[kind]
        report.figure(f"{label}", f"{data['kib_per_job']:.2f} KiB per job, {data['tasks']:,} tasks")
        report.figures[f"{kind}_kib"] = round(data["kib_per_job"], 2)
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
