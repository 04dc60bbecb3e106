"""Local fake Runway (ref. §1.3) server, scripted by prompt markers.

It reuses the lifecycle, counters and poll faults of `tests.fakes.providers` (so `[5xx-poll]`
and `[malformed]` work here too) and adds its own markers (Veo on Google's Agent Platform
has its own fake in `tests.fakes.google_agent`):

Runway (`FakeRunwayServer`, base URL = origin; the adapter adds `/v1/...`):
    [throttled]      THROTTLED for the first two polls, then the task runs
    [safety-input]   the task ends FAILED with SAFETY.INPUT.TEXT
    [safety-output]  the task ends FAILED with SAFETY.OUTPUT.VIDEO
    [internal]       the task ends FAILED with INTERNAL.BAD_OUTPUT.CODE01
    [429-submit]     the first create for this prompt → 429 (daily quota), no Retry-After
    [stale-url]      the first download of an output URL → 403; the task then hands out a
                     fresh URL that works (older URLs stay dead)
    [expired]        every download → 403
    [stuck]          RUNNING forever, progress creeping to 0.99
    [409-submit]     the first create for this prompt → 409 (a lock timeout; nothing made)
    [500-after-create] the first create for this prompt makes the task, then answers 500
                     with `x-should-retry: true` (what a proxy failing late looks like)
    [credits=N]      the finished task reports `cost.credits` N instead of the model's rate
  Requests without `X-Runway-Version: 2024-11-06` → 400. Each create body is checked
  against `RUNWAY_BODIES`, written from runwayml 5.24's param TypedDicts: unknown fields,
  a missing required field, a ratio or duration the model's type does not list, a
  promptText over its limit in UTF-16 code units (an emoji counts two) → 400. Tasks carry
  `estimatedCost` while waiting and `cost` when finished, as `TaskRetrieveResponse` has.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.fakes.providers import FakeJob, _FakeServer, video_bytes

RUNWAY_VERSION = "2024-11-06"
RUNWAY_RATIOS = ("1280:720", "720:1280")
_SEEDANCE2_RATIOS = (
    "992:432", "864:496", "752:560", "640:640", "560:752", "496:864", "1470:630", "1280:720",
    "1112:834", "960:960", "834:1112", "720:1280", "2206:946", "1920:1080", "1664:1248",
    "1440:1440", "1248:1664", "1080:1920", "3840:1646", "3840:2160", "3840:2880", "3840:3840",
    "2880:3840", "2160:3840",
)
_VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")
_GEN45_OPTIONAL = ("contentModeration", "outputFormat", "proresProfile", "seed")


@dataclass(frozen=True)
class RunwayBody:
    """One runwayml params TypedDict, as the fake enforces it (camelCase keys)."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    ratios: tuple[str, ...]
    durations: tuple[int, ...] | None  # None: any int (and "auto" where `auto` is True)
    prompt_limit: int | None  # UTF-16 code units; None = not stated by the SDK
    auto: bool = False
    credits_per_s: int = 12  # what the finished task reports as `cost.credits` per second


# (endpoint, model) → its body, from runwayml 5.24 `types/{text,image}_to_video_create_params.py`.
RUNWAY_BODIES: dict[tuple[str, str], RunwayBody] = {
    ("text", "gen4.5"): RunwayBody(
        ("duration", "promptText", "ratio"), _GEN45_OPTIONAL, RUNWAY_RATIOS, tuple(range(2, 11)), 1000
    ),
    ("image", "gen4.5"): RunwayBody(
        ("duration", "promptImage", "promptText", "ratio"), _GEN45_OPTIONAL,
        ("1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672"),
        tuple(range(2, 11)), 1000,
    ),
    ("text", "veo3.1"): RunwayBody(
        ("promptText", "ratio"), ("audio", "duration", "negativePrompt", "seed"), _VEO_RATIOS,
        (4, 6, 8), 1000, credits_per_s=40,
    ),
    ("image", "veo3.1"): RunwayBody(
        ("promptImage", "ratio"), ("audio", "duration", "negativePrompt", "promptText", "seed"),
        _VEO_RATIOS, (4, 6, 8), 1000, credits_per_s=40,
    ),
    ("text", "seedance2"): RunwayBody(
        ("promptText",),
        ("audio", "duration", "ratio", "referenceAudio", "references", "referenceVideos", "seed"),
        _SEEDANCE2_RATIOS, None, 3500, auto=True, credits_per_s=36,
    ),
    ("image", "seedance2"): RunwayBody(
        ("promptImage",), ("audio", "duration", "promptText", "ratio", "referenceAudio", "seed"),
        _SEEDANCE2_RATIOS, None, 3500, auto=True, credits_per_s=36,
    ),
    ("text", "gemini_omni_flash"): RunwayBody(
        ("promptText",), ("duration", "ratio"), RUNWAY_RATIOS, tuple(range(3, 11)), None,
        credits_per_s=15,
    ),
    ("image", "gemini_omni_flash"): RunwayBody(
        ("promptImage",), ("duration", "promptText", "ratio"), RUNWAY_RATIOS, tuple(range(3, 11)),
        None, credits_per_s=15,
    ),
}
RUNWAY_FAILURES = {
    "[safety-input]": ("SAFETY.INPUT.TEXT", "The prompt text did not pass content moderation."),
    "[safety-output]": ("SAFETY.OUTPUT.VIDEO", "The output did not pass content moderation."),
    "[internal]": ("INTERNAL.BAD_OUTPUT.CODE01", "The generation produced an unusable output."),
}
THROTTLED_POLLS = 2

def _runway_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _decodes(data: Any) -> bool:
    if not isinstance(data, str) or not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


class FakeRunwayServer(_FakeServer):
    """Runway's task API: create, `GET/DELETE /v1/tasks/{id}`, and signed output URLs."""

    def __init__(self, *, run_seconds: float = 0.5) -> None:
        super().__init__(run_seconds=run_seconds)

    @property
    def base_url(self) -> str:
        return self.origin

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/organization", self._organization)
        app.router.add_post("/v1/text_to_video", self._create)
        app.router.add_post("/v1/image_to_video", self._create)
        app.router.add_get("/v1/tasks/{id}", self._task)
        app.router.add_delete("/v1/tasks/{id}", self._delete)
        app.router.add_get("/outputs/{id}/{version}.mp4", self._output)

    def output_url(self, job: FakeJob) -> str:
        return f"{self.origin}/outputs/{job.id}/v{job.extra['url_version']}.mp4"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            sent = request.headers.get("Authorization", "")
            refusal: web.Response | None = None
            if sent != f"Bearer {self.api_key}":
                shown = sent.removeprefix("Bearer ") or "(none)"
                refusal = _runway_error(401, f"Invalid API secret: {shown}")
            elif request.headers.get("X-Runway-Version") != RUNWAY_VERSION:
                refusal = _runway_error(
                    400, f"The X-Runway-Version header must be set to {RUNWAY_VERSION}."
                )
            if refusal is not None:
                if request.method == "POST":
                    self.create_attempts.append({"refused": "headers", "path": request.path})
                return refusal
        return await handler(request)

    async def _create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body is None:
            self.create_attempts.append({"path": request.path})
            return _runway_error(400, "The request body must be a JSON object.")
        self.create_attempts.append({**body, "path": request.path})
        prompt = body.get("promptText", "")
        prompt = prompt if isinstance(prompt, str) else ""
        self._creates_per_prompt[prompt] += 1
        first = self._creates_per_prompt[prompt] == 1
        if "[429-submit]" in prompt and first:
            return _runway_error(429, "You have exceeded your daily generation limit.")
        if "[409-submit]" in prompt and first:
            return _runway_error(409, "Could not acquire a lock; try again.")
        problem = self._invalid(body, image=request.path == "/v1/image_to_video")
        if problem is not None:
            self.create_attempts[-1]["refused"] = problem
            return _runway_error(
                400, "Validation of body failed", issues=[{"message": problem}]
            )
        job = FakeJob(
            id=str(uuid.uuid4()),
            prompt=prompt,
            model=str(body["model"]),
            body=body,
            created_at=time.time(),
            extra={"path": request.path, "url_version": 1},
        )
        self.jobs[job.id] = job
        self.submits.append(body)
        if "[500-after-create]" in prompt and first:
            # The task exists and will bill; the answer that would have said so is lost.
            return web.json_response(
                {"error": "Internal server error"}, status=500, headers={"x-should-retry": "true"}
            )
        return web.json_response({"id": job.id})

    @staticmethod
    def _invalid(body: dict[str, Any], *, image: bool) -> str | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return "model is required"
        rules = RUNWAY_BODIES.get(("image" if image else "text", model))
        if rules is None:
            return f"model {model!r} is not available on this endpoint"
        unknown = sorted(set(body) - {"model", *rules.required, *rules.optional})
        if unknown:
            return f"unrecognized keys: {', '.join(unknown)}"
        missing = [key for key in rules.required if key not in body]
        if missing:
            return f"{missing[0]} is required"
        prompt = body.get("promptText")
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt:
                return "promptText must be a non-empty string"
            units = len(prompt.encode("utf-16-le")) // 2
            if rules.prompt_limit is not None and units > rules.prompt_limit:
                return f"promptText must be at most {rules.prompt_limit} characters"
        if "ratio" in body and body["ratio"] not in rules.ratios:
            return f"ratio must be one of {', '.join(rules.ratios)}"
        if "duration" in body:
            duration = body["duration"]
            if rules.auto and duration == "auto":
                pass
            elif isinstance(duration, bool) or not isinstance(duration, int):
                return "duration must be an integer"
            elif rules.durations is not None and duration not in rules.durations:
                return f"duration must be one of {', '.join(map(str, rules.durations))}"
        if "audio" in body and not isinstance(body["audio"], bool):
            return "audio must be a boolean"
        if image:
            uri = body.get("promptImage")
            if not isinstance(uri, str) or not uri.startswith("data:image/"):
                return "promptImage must be an image data URI or an HTTPS URL"
            header, _, data = uri.partition(",")
            if not header.endswith(";base64") or not _decodes(data):
                return "promptImage data URI is not valid base64"
        return None

    @staticmethod
    def credits(job: FakeJob) -> int:
        """What the finished task reports as `cost.credits`: `[credits=N]`, else rate × length."""
        match = re.search(r"\[credits=(\d+)\]", job.prompt)
        if match:
            return int(match.group(1))
        kind = "image" if job.extra["path"] == "/v1/image_to_video" else "text"
        rules = RUNWAY_BODIES[(kind, job.model)]
        duration = job.body.get("duration", 5)
        return rules.credits_per_s * (duration if isinstance(duration, int) else 10)

    def _stage(self, job: FakeJob) -> str:
        if job.cancelled:
            return "CANCELLED"
        if job.has("[throttled]") and job.served_polls <= THROTTLED_POLLS:
            return "THROTTLED"
        if job.served_polls <= 1:
            return "PENDING"
        elapsed = time.time() - job.created_at
        share = 1.0 if self.run_seconds <= 0 else elapsed / self.run_seconds
        if job.has("[stuck]") or share < 1.0:
            job.progress = max(job.progress, min(99, max(1, int(share * 100))))
            return "RUNNING"
        if any(job.has(marker) for marker in RUNWAY_FAILURES):
            return "FAILED"
        return "SUCCEEDED"

    def _finished_ok(self, job: FakeJob) -> bool:
        return (
            not job.cancelled
            and not job.has("[stuck]")
            and not any(job.has(marker) for marker in RUNWAY_FAILURES)
            and time.time() - job.created_at >= self.run_seconds
        )

    async def _task(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        fault = self._poll_fault(job_id)
        if fault is not None:
            return fault
        job = self.jobs.get(job_id)
        if job is None:
            return _runway_error(404, "Task not found.")
        stage = self._stage(job)
        created = datetime.fromtimestamp(job.created_at, tz=UTC).isoformat()
        task: dict[str, Any] = {"id": job.id, "createdAt": created, "status": stage}
        if stage in ("PENDING", "THROTTLED", "RUNNING"):
            task["estimatedCost"] = {"credits": float(self.credits(job))}
        else:
            # this fake refunds failed and cancelled tasks in full, which FailedCost reports as 0
            task["cost"] = {"credits": self.credits(job) if stage == "SUCCEEDED" else 0}
        if stage == "RUNNING":
            task["progress"] = job.progress / 100
        elif stage == "SUCCEEDED":
            task["output"] = [self.output_url(job)]
        elif stage == "FAILED":
            marker = next(m for m in RUNWAY_FAILURES if job.has(m))
            task["failureCode"], task["failure"] = RUNWAY_FAILURES[marker]
        return web.json_response(task)

    async def _delete(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None:
            return _runway_error(404, "Task not found.")
        self.cancels.append(job_id)
        if self._stage(job) in ("SUCCEEDED", "FAILED", "CANCELLED"):
            # Runway's DELETE removes a finished task instead of cancelling it.
            del self.jobs[job_id]
        else:
            job.cancelled = True
        return web.Response(status=204)

    async def _organization(self, request: web.Request) -> web.Response:
        return web.json_response({"creditBalance": 1234, "tier": {"maxMonthlyCreditSpend": 100000}})

    async def _output(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        self.downloads[job_id] += 1
        self.download_auth.append(request.headers.get("Authorization"))
        job = self.jobs.get(job_id)
        if job is None or not self._finished_ok(job):
            return web.Response(status=404, text="NoSuchKey")
        if job.has("[expired]"):
            return web.Response(status=403, text="AccessDenied: Request has expired")
        if job.has("[download-502]") and self.downloads[job_id] == 1:
            return web.Response(status=502, text="Bad Gateway")
        current = f"v{job.extra['url_version']}"
        if job.has("[stale-url]"):
            if not job.extra.get("went_stale"):
                # The link handed out so far expires now; the next task GET signs a new one.
                job.extra["went_stale"] = True
                job.extra["url_version"] += 1
                return web.Response(status=403, text="AccessDenied: Request has expired")
            if request.match_info["version"] != current:
                return web.Response(status=403, text="AccessDenied: Request has expired")
        return web.Response(body=video_bytes(job_id), content_type="video/mp4")

