"""Shared pieces of the benchmarks: process metrics from /proc, percentiles, loop lag,
subprocess handling, seeding, and the PASS/MISS report.

Everything here talks to 127.0.0.1 only and has no dependency beyond the project's own.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SIGNING_SECRET = "bench-signing-secret"
BOT_TOKEN = "xoxb-bench-token"
GATEWAY_KEY = "bench-gateway-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every variable the bot reads: a benchmark never inherits the machine's keys or settings.
_ENV_PREFIXES = ("SLACK_", "SORA_", "VIDEO_GATEWAY_", "OPENAI_", "RUNWAY", "GEMINI_", "KLING_", "ARK_", "FAL_")


# --------------------------------------------------------------------------- /proc metrics


def proc_status(pid: int | str = "self") -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _kb(value: str) -> int:
    return int(value.split()[0])


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size now (VmRSS), in MiB."""
    return _kb(proc_status(pid)["VmRSS"]) / 1024


def hwm_mb(pid: int | str = "self") -> float:
    """Peak resident set size so far (VmHWM), in MiB."""
    return _kb(proc_status(pid)["VmHWM"]) / 1024


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of the process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        data = fh.read()
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_count(pid: int | str = "self") -> int:
    return int(proc_status(pid)["Threads"])


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def _tcp_table() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) for every TCP socket on the machine."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                    table[inode] = (
                        int(local.rsplit(":", 1)[1], 16),
                        int(remote.rsplit(":", 1)[1], 16),
                        _TCP_STATES.get(state, state),
                    )
        except FileNotFoundError:
            pass
    return table


def open_sockets(pid: int | str = "self") -> dict[str, Any]:
    """The process's open sockets: total, TCP by state, and ESTABLISHED ones by remote port."""
    inodes = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.append(int(target[8:-1]))
    table = _tcp_table()
    by_state: Counter[str] = Counter()
    by_remote: Counter[int] = Counter()
    for inode in inodes:
        entry = table.get(inode)
        if entry is None:
            by_state["other"] += 1  # unix sockets, socketpairs of the event loop
            continue
        _, remote, state = entry
        by_state[state] += 1
        if state == "ESTABLISHED":
            by_remote[remote] += 1
    return {"total": len(inodes), "by_state": dict(by_state), "by_remote_port": dict(by_remote)}


class ProcSampler:
    """Samples another process's RSS, CPU and sockets in the background of this loop."""

    def __init__(self, pid: int, *, interval: float = 0.5, sockets: bool = True,
                 ports: dict[str, int] | None = None) -> None:
        self.pid, self.interval, self.sockets = pid, interval, sockets
        self.ports = ports or {}
        self.samples: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": time.monotonic(), "rss_mb": rss_mb(self.pid), "cpu_s": cpu_seconds(self.pid)}
        if self.sockets:
            socks = open_sockets(self.pid)
            s["sockets"] = socks["total"]
            for name, port in self.ports.items():
                s[f"to_{name}"] = socks["by_remote_port"].get(port, 0)
        return s

    async def _run(self) -> None:
        while True:
            try:
                self.samples.append(self.sample())
            except (FileNotFoundError, ProcessLookupError):
                return
            await asyncio.sleep(self.interval)

    def start(self) -> "ProcSampler":
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def window(self, start: float, end: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if start <= s["t"] <= end]


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else math.nan,
    }


class LoopLag:
    """A ticker that sleeps `interval` and records how much longer than that it took."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (monotonic time, lag seconds)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        interval = self.interval
        while True:
            start = time.perf_counter()
            await asyncio.sleep(interval)
            lag = time.perf_counter() - start - interval
            self.samples.append((time.monotonic(), max(0.0, lag)))

    def start(self) -> "LoopLag":
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bench:loop-lag")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def lags(self, start: float = 0.0, end: float = math.inf) -> list[float]:
        return [lag for t, lag in self.samples if start <= t <= end]


def lag_summary(lags: Sequence[float]) -> dict[str, float]:
    return {k.replace("_ms", "_lag_ms"): v for k, v in summary_ms(lags).items()}


# --------------------------------------------------------------------------- machine and report


def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = _kb(line.split(":", 1)[1])
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        # other work on the machine skews every figure: the 1-minute load average at start
        "loadavg_1m": os.getloadavg()[0],
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Check:
    name: str
    measured: float
    op: str
    target: float
    unit: str
    ok: bool
    note: str = ""


@dataclass
class Report:
    """What a benchmark prints and saves: figures, and checks against the targets."""

    name: str
    title: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=dict)

    def figure(self, key: str, value: Any, unit: str = "") -> None:
        self.figures[key] = value
        print(f"  {key:<46} {_fmt(value)} {unit}".rstrip(), flush=True)

    def check(self, name: str, measured: float, op: str, target: float, unit: str = "", note: str = "") -> bool:
        ok = {"<=": measured <= target, ">=": measured >= target, "==": measured == target}[op]
        if isinstance(measured, float) and math.isnan(measured):
            ok = False
        self.checks.append(Check(name, measured, op, target, unit, ok, note))
        verdict = "PASS" if ok else "MISS"
        extra = f"  ({note})" if note else ""
        print(f"  [{verdict}] {name}: measured {_fmt(measured)} {unit}, target {op} {_fmt(target)} {unit}{extra}",
              flush=True)
        return ok

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def header(self) -> None:
        self.machine = m = machine()
        print(f"== {self.title} ==", flush=True)
        print(f"   {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB, Python {m['python']}, {m['date_utc']} UTC,"
              f" load average {m['loadavg_1m']:.2f}", flush=True)

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        data = {
            "name": self.name,
            "title": self.title,
            "machine": self.machine,
            "seconds": round(time.time() - self.started, 1),
            "figures": self.figures,
            "checks": [c.__dict__ for c in self.checks],
            "notes": self.notes,
        }
        path.write_text(json.dumps(data, indent=2, default=str))
        passed = sum(c.ok for c in self.checks)
        met = f"{passed}/{len(self.checks)} targets met" if self.checks else "no targets (figures only)"
        print(f"   {met}; results in bench/results/{path.name}", flush=True)
        return path


# --------------------------------------------------------------------------- environment and processes


def isolate_env() -> None:
    """Drop the bot's variables from this process and leave the repo (no stray .env is read)."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) or name in ("PORT", "HOST"):
            del os.environ[name]


def workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"sora-bench-{prefix}-"))
    os.chdir(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES) and k not in ("PORT", "HOST")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def bot_env(world: "World", db_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The bot's settings as `sora-bot run` reads them: fake Slack, the bench gateway, a temp DB."""
    values = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": world.slack_api_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SORA_DB_PATH": str(db_path),
        "VIDEO_GATEWAY_BASE_URL": world.gateway_base_url,
        "VIDEO_GATEWAY_API_KEY": GATEWAY_KEY,
        "SORA_DEFAULT_MODEL": "sora-2",
        "SORA_LOG_LEVEL": "INFO",
    }
    values.update(extra)
    return child_env(**values)


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll `predicate` (sync or async) until truthy; returns the seconds it took."""
    start = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


_CHILDREN: list["Child"] = []


def kill_children() -> None:
    """SIGKILL every child this benchmark started that is still running (by its pid)."""
    for child in _CHILDREN:
        if child.proc is not None and child.proc.returncode is None:
            try:
                os.kill(child.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Child:
    """A subprocess with its output in a log file; killed (by pid) when the benchmark ends."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.args, self.env, self.log_path, self.cwd = list(args), env, log_path, cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, *, stdout_pipe: bool = False) -> None:
        log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.args, env=self.env, cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else log, stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        log.close()
        _CHILDREN.append(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if not self.running:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class World:
    """The fake Slack and the bench gateway, served by a process of their own (bench/_world.py)."""

    def __init__(self, tmp: Path, **options: Any) -> None:
        args = ["-m", "bench._world"]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value not in (None, False):
                args += [flag, str(value)]
        self.child = Child(args, child_env(), tmp / "world.log", tmp)
        self.info: dict[str, Any] = {}
        self.http: Any = None

    async def __aenter__(self) -> "World":
        import httpx

        await self.child.start(stdout_pipe=True)
        assert self.child.proc is not None and self.child.proc.stdout is not None
        line = await asyncio.wait_for(self.child.proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"world did not start:\n{self.child.log_tail()}")
        self.info = json.loads(line)
        self.http = httpx.AsyncClient(timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.aclose()
        await self.child.stop()

    @property
    def slack_api_url(self) -> str:
        return self.info["slack_api_url"]

    @property
    def gateway_base_url(self) -> str:
        return self.info["gateway_base_url"]

    @property
    def gateway_port(self) -> int:
        return int(self.info["gateway_port"])

    @property
    def slack_port(self) -> int:
        return int(self.info["slack_port"])

    async def stats(self, detail: bool = False) -> dict[str, Any]:
        r = await self.http.get(f"{self.info['control_url']}/stats", params={"detail": "1" if detail else "0"})
        r.raise_for_status()
        return r.json()

    async def call(self, what: str, **params: Any) -> dict[str, Any]:
        r = await self.http.post(f"{self.info['control_url']}/{what}", json=params)
        r.raise_for_status()
        return r.json()


class BotProc:
    """`sora-bot run` (or the bare Bolt app) through bench/_botrun.py, with a loop-lag ticker inside."""

    def __init__(self, env: dict[str, str], port: int, tmp: Path, *, name: str = "bot", bare: bool = False,
                 idle_tasks: int = 0, lag_interval: float = 0.02) -> None:
        self.port, self.tmp, self.name = port, tmp, name
        self.stats_file = tmp / f"{name}.stats.json"
        env = dict(env, BENCH_STATS_FILE=str(self.stats_file), BENCH_LAG_INTERVAL=str(lag_interval))
        if idle_tasks:
            env["BENCH_IDLE_TASKS"] = str(idle_tasks)
        args = ["-m", "bench._botrun"] + (["--bare"] if bare else [])
        self.child = Child(args, env, tmp / f"{name}.log", tmp)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.pid

    async def start(self, timeout: float = 60.0, *, healthy: bool = True) -> float:
        """Start; wait for /healthz to answer (or, with healthy=False, only for the port to
        accept connections -- `sora-bot run` opens it once every job's task exists).
        Returns seconds from exec to that moment."""
        import httpx

        await self.child.start()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if not self.child.running:
                    raise RuntimeError(f"{self.name} exited early:\n{self.child.log_tail()}")
                try:
                    if not healthy:
                        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                        writer.close()
                        return time.monotonic() - self.child.started_at
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return time.monotonic() - self.child.started_at
                except (httpx.HTTPError, OSError):
                    pass
                await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.name} never became healthy:\n{self.child.log_tail()}")

    async def wait_loaded(self, jobs: int, timeout: float, interval: float = 2.0) -> tuple[float, list[dict[str, Any]]]:
        """Wait until `jobs` job tasks are inside flow.watch (job loaded, next poll scheduled or
        under way); returns (seconds since exec, the task-state snapshots taken on the way)."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = await self.inner_stats(timeout=30)
            states = stats["job_tasks"]["states"]
            watching = stats["job_tasks"]["in_watch"]
            seen.append({"t": time.monotonic() - self.child.started_at, "states": states, "in_watch": watching,
                         "rss_mb": stats["rss_mb"]})
            if watching >= jobs:
                return seen[-1]["t"], seen
            await asyncio.sleep(interval)
        raise TimeoutError(f"{self.name}: jobs not all loaded after {timeout:.0f}s: {seen[-1] if seen else ''}")

    async def health(self, timeout: float = 10.0) -> dict[str, Any]:
        import httpx

        async with httpx.AsyncClient(timeout=timeout) as http:
            return (await http.get(f"{self.url}/healthz")).json()

    async def inner_stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask the process (SIGUSR1) to write its loop-lag samples and task states. The signal
        is sent again every 2 s: asyncio drops a signal when its wake-up pipe is full, which
        happens when the loop is far behind on thread callbacks."""
        before = self.stats_file.stat().st_mtime_ns if self.stats_file.exists() else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(self.pid, signal.SIGUSR1)
            resend = time.monotonic() + 2.0
            while time.monotonic() < min(resend, deadline):
                if self.stats_file.exists() and self.stats_file.stat().st_mtime_ns != before:
                    try:
                        return json.loads(self.stats_file.read_text())
                    except ValueError:
                        pass
                await asyncio.sleep(0.02)
        raise TimeoutError(f"{self.name} wrote no stats")

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return await self.child.stop(sig)


def lags_between(stats: dict[str, Any], start: float, end: float = math.inf) -> list[float]:
    return [lag for t, lag in stats["lag"] if start <= t <= end]


# --------------------------------------------------------------------------- Slack requests


def slash_form(text: str, *, user: str, trigger: str, response_url: str, channel: str = "C1",
               team: str = "T0001") -> str:
    from urllib.parse import urlencode

    return urlencode({
        "token": "legacy", "team_id": team, "team_domain": "bench", "channel_id": channel,
        "channel_name": "general", "user_id": user, "user_name": user.lower(),
        "command": "/sora", "text": text, "api_app_id": "A1", "response_url": response_url,
        "trigger_id": trigger,
    })


def signed(body: str, *, secret: str = SIGNING_SECRET) -> dict[str, str]:
    from slack_sdk.signature import SignatureVerifier

    ts = str(int(time.time()))
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
    }


@dataclass
class Sent:
    latency_s: float
    status: int
    text: str
    error: str | None = None


async def post_command(session: Any, url: str, body: str, headers: dict[str, str], start: float | None = None) -> Sent:
    """POST one signed command with aiohttp; latency counts from `start` (default: now)."""
    import aiohttp

    t0 = time.perf_counter() if start is None else start
    try:
        async with session.post(url, data=body.encode(), headers=headers) as resp:
            raw = await resp.read()
            latency = time.perf_counter() - t0
            text = ""
            try:
                text = json.loads(raw).get("text", "") if raw else ""
            except ValueError:
                text = raw[:200].decode(errors="replace")
            return Sent(latency, resp.status, text)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return Sent(time.perf_counter() - t0, 0, "", f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- seeding


async def seed_running_jobs(db_path: Path, count: int, *, max_age_s: float = 600.0, users: int = 1000,
                            progress: int = 50, seed: int = 7) -> None:
    """Store `count` jobs the way the bot leaves them mid-render: reserved in the ledger,
    `running` with a provider job id and a request message, ages spread evenly over
    [0, max_age_s). The schema comes from the bot's own migrations (Database.open); the
    rows go in with one executemany each (reserve_and_insert is measured on its own).
    """
    import random

    from bot.clock import iso
    from storage.sqlite import SQLiteDatabase
    from storage.jobs import new_job_id

    rng = random.Random(seed)
    db = await SQLiteDatabase(db_path).open()
    await db.close()
    now = datetime.now(UTC)
    day = now.date().isoformat()
    jobs, ledger_rows = [], []
    for n in range(count):
        job_id = new_job_id()
        user = f"U{n % users:05d}"
        age = max_age_s * (n + rng.random()) / count if max_age_s > 0 else 0.0
        created = iso(now - timedelta(seconds=age))
        ts = f"1700000000.{n:06d}"
        jobs.append((job_id, user, f"[stuck] seeded job {n}", f"task_seed_{job_id}", day, created, iso(now),
                     created, iso(now), progress, ts, ts))
        ledger_rows.append((job_id, user, day, 800_000, created, created))
    conn = sqlite3.connect(db_path)
    try:
        conn.executemany(
            "INSERT INTO jobs (id, user_id, team_id, channel_id, source, model, provider, provider_model, prompt,"
            " duration_seconds, resolution, aspect_ratio, status, provider_job_id, estimate_micros, budget_day,"
            " created_at, updated_at, submitted_at, last_progress_at, progress, thread_ts, status_ts)"
            " VALUES (?, ?, 'T0001', 'C1', 'command', 'sora-2', 'gateway', 'sora-2', ?, 8, '720p', '16:9',"
            " 'running', ?, 800000, ?, ?, ?, ?, ?, ?, ?, ?)",
            jobs,
        )
        conn.executemany(
            "INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'reserved', ?, ?)", ledger_rows)  # the reserve events by trigger
        conn.commit()
    finally:
        conn.close()


def count_rows(db_path: Path, sql: str, params: Iterable[Any] = ()) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql, tuple(params)).fetchone()[0])
    finally:
        conn.close()


def run(main: Callable[[], Awaitable[int]]) -> None:
    """Run a benchmark's async main and exit, even if a failure left a database thread behind."""
    import traceback

    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    kill_children()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
