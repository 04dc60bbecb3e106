"""`sora-bot run` as the CLI runs it, plus a loop-lag ticker; or a bare Bolt app that only acks.

    python -m bench._botrun          # bot.cli.cmd_run with the settings from the environment
    python -m bench._botrun --bare   # AsyncApp + one /sora listener that calls ack(), same server

On SIGUSR1 the process writes its loop-lag samples and task count to $BENCH_STATS_FILE;
on SIGUSR2 every task's stack to $BENCH_STATS_FILE.tasks.txt.
$BENCH_IDLE_TASKS starts that many tasks that only sleep (the memory baseline).
Diagnosis only: $BENCH_TRACE=1 times storage calls, $BENCH_SAMPLE=1 samples the loop's stack,
$BENCH_STUB_SNIFFIO=1 provides a stub `sniffio` module, $BENCH_STUB_STORE=1 answers
reservations from memory and starts no job.
The process stops on SIGTERM/SIGINT, and by itself after 15 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench._common import LoopLag, rss_mb

MAX_LIFETIME_S = 900


class StackSampler:
    """$BENCH_SAMPLE=1: a thread that looks at the event loop thread's stack every 5 ms and
    counts the functions on it (inclusive) -- where the loop spends its time, cheaply."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.interval = interval
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.main_id = threading.get_ident()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self.main_id)
            if frame is None:
                continue
            seen = set()
            while frame is not None:
                code = frame.f_code
                seen.add(f"{Path(code.co_filename).name}:{code.co_name}")
                frame = frame.f_back
            with self._lock:
                self.samples += 1
                for key in seen:
                    self.counts[key] = self.counts.get(key, 0) + 1

    def top(self, n: int = 40) -> list[tuple[str, float]]:
        with self._lock:
            counts, total = dict(self.counts), max(1, self.samples)
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [(k, round(100 * v / total, 1)) for k, v in ranked]

    def reset(self) -> None:
        with self._lock:
            self.counts = {}
            self.samples = 0


SAMPLER: StackSampler | None = None

# "reserve": (end monotonic, seconds); "txn": (end monotonic, lock wait s, lock hold s)
TRACE: dict[str, list[tuple[float, ...]]] = {}


def _trace_storage() -> None:
    """$BENCH_TRACE=1: time reserve_request (every accepted request's reservation), and each write transaction's wait and hold, from outside.

    Wraps the functions at their module attributes (the bot looks them up at call time);
    the bot's code is unchanged.
    """
    import time
    from contextlib import asynccontextmanager

    from storage import jobs as jobstore
    from storage.sqlite import SQLiteDatabase

    original_reserve = jobstore.reserve_request

    async def reserve_request(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await original_reserve(*args, **kw)
        finally:
            TRACE.setdefault("reserve", []).append((time.monotonic(), time.perf_counter() - t0))

    jobstore.reserve_request = reserve_request
    original_txn = SQLiteDatabase.write_txn
    original_run_write = SQLiteDatabase.run_write

    # "wait": from the call until the transaction's work starts (the gate, the wait for the
    # loop's batch or the writer's thread, BEGIN); "hold": the work itself. The originals keep
    # their exclusion.
    @asynccontextmanager
    async def write_txn(self: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        async with original_txn(self, **kw) as conn:
            t1 = time.perf_counter()
            try:
                yield conn
            finally:
                TRACE.setdefault("txn", []).append((time.monotonic(), t1 - t0, time.perf_counter() - t1))

    async def run_write(self: Any, fn: Any, /, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        spans: list[tuple[float, float]] = []

        async def timed(conn: Any, *a: Any, **k: Any) -> Any:
            t1 = time.perf_counter()
            try:
                return await fn(conn, *a, **k)
            finally:
                spans.append((t1 - t0, time.perf_counter() - t1))

        try:
            return await original_run_write(self, timed, *args, **kw)
        finally:
            if spans:
                TRACE.setdefault("txn", []).append((time.monotonic(), *spans[0]))

    SQLiteDatabase.write_txn = write_txn  # type: ignore[method-assign]
    SQLiteDatabase.run_write = run_write  # type: ignore[method-assign]


def _stub_storage() -> None:
    """$BENCH_STUB_STORE=1 (diagnosis only): answer every reservation from memory -- nothing
    is stored and no job task starts -- so a burst measures the app without its SQLite work
    and its jobs: the parse, the caps' inputs, Bolt, the listener and the answer."""
    from bot.lifecycle.poller import Poller
    from storage import jobs as jobstore

    async def reserve_request(db: Any, news: list[Any], *, day: str, now: str, **_: Any) -> Any:
        jobs = [jobstore._stored_job(n, jobstore.new_job_id(), day=day, now=now, compare_id=None, approval_key=None)
                for n in news]
        return jobstore.Reserved(jobs, True)

    jobstore.reserve_request = reserve_request  # type: ignore[assignment]
    Poller.watch = lambda self, job_id, **_: None  # type: ignore[method-assign]


def _job_task_states() -> dict[str, Any]:
    """Where each `job:*` task is waiting, by the two innermost bot functions on its await
    chain: "watch>_nap" (loaded, waiting for its next poll), "get_job>fetchone" (loading)."""
    from collections import Counter

    states: Counter[str] = Counter()
    in_watch = 0
    for task in asyncio.all_tasks():
        if not task.get_name().startswith("job:"):
            continue
        names = []
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            path = coro.cr_code.co_filename
            if any(part in path for part in ("/bot/", "/storage/", "/handlers/")):
                names.append(coro.cr_code.co_name)
            coro = coro.cr_await
        states[">".join(names[-2:]) or "?"] += 1
        in_watch += "watch" in names
    return {"states": dict(states), "in_watch": in_watch}


def _dump(lag: LoopLag) -> None:
    path = Path(os.environ["BENCH_STATS_FILE"])
    data = {
        "pid": os.getpid(),
        "tasks": len(asyncio.all_tasks()),
        "job_tasks": _job_task_states(),
        "rss_mb": rss_mb(),
        "lag": lag.samples,
        "trace": TRACE,
    }
    if SAMPLER is not None:
        data["profile_samples"] = SAMPLER.samples
        data["profile"] = SAMPLER.top()
        if os.environ.get("BENCH_SAMPLE_RESET") == "1":
            SAMPLER.reset()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _dump_tasks() -> None:
    """Every task's stack, to $BENCH_STATS_FILE.tasks.txt (for finding where a job waits)."""
    import io

    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"--- {task.get_name()}\n")
        task.print_stack(limit=12, file=out)
    Path(os.environ["BENCH_STATS_FILE"] + ".tasks.txt").write_text(out.getvalue())


async def _bare(settings: Any) -> int:
    """The bare stack: the same Bolt settings, server and logging, and a listener that only acks."""
    from aiohttp import web
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.async_app import AsyncApp

    from bot.slack.slack_io import make_slack_client

    client = make_slack_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    app = AsyncApp(client=client, signing_secret=settings.slack_signing_secret.get_secret_value(),
                   process_before_response=False)

    @app.command("/sora")
    async def sora(ack: Any) -> None:
        await ack()

    async def events(request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "unfinished_jobs": 0, "watching": 0})

    web_app = web.Application(client_max_size=1 << 20)
    web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", healthz)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(web_app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    print("bare app is running", flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


async def _main(bare: bool) -> int:
    from bot.cli import cmd_run, configure_logging
    from bot.config import load_settings

    settings = load_settings()
    if os.environ.get("BENCH_TRACE") == "1":
        _trace_storage()
    if os.environ.get("BENCH_STUB_STORE") == "1":
        _stub_storage()
    if os.environ.get("BENCH_SAMPLE") == "1":
        global SAMPLER
        SAMPLER = StackSampler()
    configure_logging(settings)  # as `sora-bot run` sets it up
    lag = LoopLag(float(os.environ.get("BENCH_LAG_INTERVAL", "0.02"))).start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, _dump, lag)
    loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
    idle = [asyncio.create_task(asyncio.sleep(MAX_LIFETIME_S)) for _ in range(int(os.environ.get("BENCH_IDLE_TASKS", "0")))]
    main = asyncio.create_task(_bare(settings) if bare else cmd_run(settings, argparse.Namespace()))
    done, _ = await asyncio.wait({main}, timeout=MAX_LIFETIME_S)
    for task in idle:
        task.cancel()
    if not done:
        print("bench bot: lifetime exceeded; stopping", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)
        await main
    await lag.stop()
    return main.result()


if __name__ == "__main__":
    if os.environ.get("BENCH_STUB_SNIFFIO") == "1":
        # Experiment only: what installing `sniffio` would save. httpcore imports it on every
        # request and lock; when it is missing each of those imports searches sys.path again.
        import types

        stub = types.ModuleType("sniffio")
        stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
        sys.modules["sniffio"] = stub
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare", action="store_true")
    sys.exit(asyncio.run(_main(parser.parse_args().bare)))
