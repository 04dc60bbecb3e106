"""Cost of one provider status call in the HTTP client, outside the bot.

The bot's provider adapters send every request through an httpx.AsyncClient built by
`bot.providers.http.build_client` (8 connections) behind an 8-slot semaphore; its transport
is aiohttp (`bot.providers.transport.AiohttpTransport`). This measures requests per second
and CPU per request for that client against the bench gateway (its own process, on
127.0.0.1), at 1, 8 and 64 callers, next to httpx with its own transport (what the bot used
before), next to a plain aiohttp ClientSession with the same connection limit, and (when
`sniffio` is missing) next to httpx with a stub `sniffio` (httpcore imports it for every
request and lock; when it is not installed each import searches sys.path again).

No target of its own: it explains the CPU per status call in bench_scale.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import types
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Report, World, cpu_seconds, isolate_env, run, workdir

REQUESTS = 600
CALLERS = (1, 8, 64)


async def measure(get, callers: int) -> tuple[float, float, float]:
    """(requests/s, median latency ms, CPU ms per request) for REQUESTS calls."""
    sem = asyncio.Semaphore(8)
    lat: list[float] = []
    left = REQUESTS

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with sem:
                t = time.perf_counter()
                await get()
                lat.append(time.perf_counter() - t)

    t0, c0 = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return REQUESTS / elapsed, 1000 * statistics.median(lat), 1000 * cpu / REQUESTS


async def main() -> int:
    import aiohttp
    import httpx

    from bot.providers.http import build_client

    report = Report("http_client", "CPU per provider status call: the bot's client (httpx over aiohttp) vs httpx's own transport vs aiohttp")
    report.header()
    isolate_env()
    tmp = workdir("httpclient")
    import importlib.util

    sniffio_missing = importlib.util.find_spec("sniffio") is None
    report.figure("sniffio installed", "no" if sniffio_missing else "yes")
    async with World(tmp, unknown_running=True, light_slack=True) as world:
        url = f"{world.gateway_base_url}/videos/generations/task_probe"
        headers = {"Authorization": "Bearer k"}

        async def run_httpx(label: str, own_transport: bool = False) -> None:
            if own_transport:
                client = httpx.AsyncClient(
                    timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True,
                    limits=httpx.Limits(max_connections=8, max_keepalive_connections=8))
            else:
                client = build_client(max_connections=8)

            async def get() -> None:
                r = await client.get(url, headers=headers)
                r.json()
            await measure(get, 8)  # warm the pool
            for n in CALLERS:
                rate, p50, cpu = await measure(get, n)
                report.figure(f"{label}, {n} callers", f"{rate:,.0f} req/s, p50 {p50:.2f} ms, CPU {cpu:.2f} ms/req")
                report.figures[f"{label}_{n}_cpu_ms"] = round(cpu, 3)
            await client.aclose()

        await run_httpx("bot client (httpx over aiohttp)")
        await run_httpx("httpx, its own transport", own_transport=True)
        if sniffio_missing:
            stub = types.ModuleType("sniffio")
            stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
            sys.modules["sniffio"] = stub
            await run_httpx("httpx, its own transport + sniffio stub", own_transport=True)
            del sys.modules["sniffio"]

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
            async def get() -> None:
                async with session.get(url, headers=headers) as r:
                    await r.json()
            await measure(get, 8)
            for n in CALLERS:
                rate, p50, cpu = await measure(get, n)
                report.figure(f"aiohttp, {n} callers", f"{rate:,.0f} req/s, p50 {p50:.2f} ms, CPU {cpu:.2f} ms/req")
                report.figures[f"aiohttp_{n}_cpu_ms"] = round(cpu, 3)
    report.save()
    return 0


if __name__ == "__main__":
    run(main)
