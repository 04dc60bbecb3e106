"""Fakes for the benchmarks, on 127.0.0.1: a seed-shape video gateway and a timed fake Slack.

BenchGateway speaks the gateway's seed shape (POST/GET {base}/videos/generations[/id]) like
tests/fakes/providers.py, but is built to be counted and loaded:

    [run=S]     the job finishes S seconds after its create (default: `run_seconds`)
    [stuck]     the job never finishes (answers "processing")
    [size=N]    the video is N bytes, streamed in 1 MiB chunks (default 4096)

Ids it never issued (jobs seeded straight into the bot's database) answer "processing"
when `unknown_running` is set, so a benchmark can hold any number of jobs mid-render.
Progress stays constant for such jobs unless `rising_progress` is set.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.fakes.fakeslack import FakeSlack

_RUN = re.compile(r"\[run=([0-9.]+)\]")
_SIZE = re.compile(r"\[size=([0-9]+)\]")
_CHUNK = 1 << 20
_BLOCK = bytes(range(256)) * (_CHUNK // 256)


@dataclass
class GJob:
    id: str
    prompt: str
    created: float
    run_s: float
    size: int
    stuck: bool
    polls: int = 0
    poll_times: list[float] = field(default_factory=list)

    @property
    def finishes_at(self) -> float:
        return float("inf") if self.stuck else self.created + self.run_s


class BenchGateway:
    def __init__(self, *, run_seconds: float = 2.0, unknown_running: bool = False,
                 rising_progress: bool = False, keep_poll_times: bool = False) -> None:
        self.run_seconds = run_seconds
        self.unknown_running = unknown_running
        self.rising_progress = rising_progress
        self.keep_poll_times = keep_poll_times
        self.jobs: dict[str, GJob] = {}
        self.submits = 0
        self.polls = 0
        self.unknown_polls: Counter[str] = Counter()
        self.first_poll_after: dict[str, float] = {}  # set by mark(): first poll of each id after it
        self._mark: float | None = None
        self.downloads = 0
        self.bytes_served = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.peers: set[tuple[str, int]] = set()
        self.peak_peers_open = 0
        self._open_peers: set[tuple[str, int]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._count])
        base = "/v1/videos/generations"
        app.router.add_post(base, self._create)
        app.router.add_get(base + "/{id}", self._poll)
        app.router.add_post(base + "/{id}/cancel", self._cancel)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def mark(self) -> None:
        """Start recording the first poll of every job id from now on (restart benchmark)."""
        self._mark = time.time()
        self.first_poll_after = {}

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.add(peer)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sora-2"}]})

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = str(body.get("prompt", ""))
        run = _RUN.search(prompt)
        size = _SIZE.search(prompt)
        job = GJob(
            id=f"task_{uuid.uuid4().hex[:16]}", prompt=prompt, created=time.time(),
            run_s=float(run.group(1)) if run else self.run_seconds,
            size=int(size.group(1)) if size else 4096, stuck="[stuck]" in prompt,
        )
        self.jobs[job.id] = job
        self.submits += 1
        return web.json_response({"code": "success", "message": "", "data": {"id": job.id, "status": "queued"}})

    def _answer(self, job_id: str, status: str, progress: int, url: str = "") -> web.Response:
        return web.json_response({"code": "success", "message": "", "data": {
            "id": job_id, "task_id": job_id, "status": status, "progress": f"{progress}%",
            "url": url, "error": None, "format": "mp4"}})

    async def _poll(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        now = time.time()
        self.polls += 1
        if self._mark is not None and job_id not in self.first_poll_after:
            self.first_poll_after[job_id] = now
        job = self.jobs.get(job_id)
        if job is None:
            if not self.unknown_running:
                return web.json_response({"code": "error", "message": "task_not_exist", "data": None}, status=404)
            self.unknown_polls[job_id] += 1
            progress = min(99, 50 + self.unknown_polls[job_id]) if self.rising_progress else 50
            return self._answer(job_id, "processing", progress)
        job.polls += 1
        if self.keep_poll_times:
            job.poll_times.append(now)
        if job.polls == 1 and now < job.finishes_at:
            return self._answer(job.id, "queued", 0)
        if now < job.finishes_at:
            share = (now - job.created) / job.run_s if not job.stuck else 0.5
            progress = max(1, min(99, int(share * 100)))
            if job.stuck and self.rising_progress:
                progress = min(99, 50 + job.polls)
            return self._answer(job.id, "processing", progress)
        host = request.host
        return self._answer(job.id, "succeeded", 100, url=f"http://{host}/files/{job.id}.mp4")

    async def _cancel(self, request: web.Request) -> web.Response:
        return web.json_response({"code": "success", "data": {"id": request.match_info["id"]}})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["name"].removesuffix(".mp4")
        job = self.jobs.get(job_id)
        if job is None:
            return web.json_response({"error": "not found"}, status=404)
        self.downloads += 1
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        resp.content_length = job.size
        await resp.prepare(request)
        left = job.size
        while left > 0:
            chunk = _BLOCK[: min(left, _CHUNK)]
            await resp.write(chunk)
            left -= len(chunk)
            self.bytes_served += len(chunk)
        await resp.write_eof()
        return resp

    def stats(self, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "submits": self.submits, "polls": self.polls, "downloads": self.downloads,
            "bytes_served": self.bytes_served, "peak_in_flight": self.peak_in_flight,
            "connections_seen": len(self.peers), "unknown_ids_polled": len(self.unknown_polls),
            "first_polls_after_mark": len(self.first_poll_after),
        }
        if self._mark is not None and self.first_poll_after:
            out["last_first_poll_s"] = max(self.first_poll_after.values()) - self._mark
        if detail:
            out["jobs"] = {
                j.id: {"prompt": j.prompt, "created": j.created, "run_s": j.run_s, "finishes_at": j.finishes_at
                       if not j.stuck else None, "polls": j.polls, "poll_times": j.poll_times}
                for j in self.jobs.values()
            }
        return out


class TimedSlack(FakeSlack):
    """FakeSlack that also stamps when each call arrived, counts TCP connections, and notes
    the wall-clock time each job's video was shared into its thread."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.connections: set[tuple[str, int]] = set()
        self.method_counts: Counter[str] = Counter()
        self.video_shared_at: dict[str, float] = {}  # job id -> time.time()
        self.upload_sizes: dict[str, int] = {}  # job id -> bytes received
        self._seen_messages = 0
        self.keep_records = True

    async def start(self) -> None:
        await super().start()

    async def _handle_api(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.connections.add(peer)
        method = request.match_info["method"]
        self.method_counts[method] += 1
        response = await super()._handle_api(request)
        if method == "files.completeUploadExternal":
            now = time.time()
            for message in self.messages[self._seen_messages:]:
                for f in message.files or []:
                    name = str(f.get("name", ""))
                    if name.startswith("sora-") and name.endswith(".mp4"):
                        job_id = name[5:-4]
                        self.video_shared_at.setdefault(job_id, now)
                        self.upload_sizes[job_id] = int(f.get("size", 0))
            self._seen_messages = len(self.messages)
        if not self.keep_records:
            # thousands of jobs: keep the counters, drop the call log the tests use
            self.calls.clear()
        return response

    async def _handle_upload(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.connections.add(peer)
        self.method_counts["upload"] += 1
        return await super()._handle_upload(request)

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        # every bench user exists (thousands of them; none is an admin)
        user_id = str(params.get("user") or "")
        if user_id.startswith("U") and user_id not in self._users and user_id != self.bot_user_id:
            self.add_user(user_id)
        return super()._users_info(params)

    def stats(self, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "methods": dict(self.method_counts),
            "connections_seen": len(self.connections),
            "messages": len(self.messages),
            "videos_shared": len(self.video_shared_at),
            "upload_sizes": self.upload_sizes if detail else {},
        }
        if detail:
            out["video_shared_at"] = self.video_shared_at
        return out
