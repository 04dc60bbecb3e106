"""The built-in simulator: behaves like a real video provider, scripted by prompt markers.

Markers: `[blocked]` (refused at input), `[blocked-output]` (held back when done), `[fail]`
(render fails), `[stuck]` (climbs to 99% and stays there), `[busy]` (the first submit is
rate limited), `[retired]` (the model is gone), `[expired]` (the download link is dead).
The job id encodes its start time and script, so a restarted bot picks a job up where it
was: the simulated render keeps going while the bot is down, as a real one would.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

from bot.errors import (
    ContentBlocked,
    InvalidProviderRequest,
    ProviderRetired,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec

_FLAGS = {"[stuck]": "s", "[blocked-output]": "o", "[fail]": "f", "[expired]": "e"}
QUEUED_SHARE = 0.15  # the first 15% of the run is spent "in the queue"


def _fake_mp4(seed: str, size: int = 48_000) -> bytes:
    """Deterministic bytes that start like an MP4 file (an ftyp box), for uploads."""
    head = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    block = hashlib.sha256(seed.encode()).digest()
    body = (block * (size // len(block) + 1))[: size - len(head)]
    return head + body


class SimulatorProvider:
    name = "simulator"
    shareable_urls = False  # simulator:// links open nowhere
    calls_back = False

    def __init__(self, *, run_seconds: float = 12.0) -> None:
        self.run_seconds = run_seconds
        self._rate_limited_once: set[str] = set()
        self._cancelled: set[str] = set()
        self.submits: list[VideoSpec] = []

    @staticmethod
    def _now() -> float:
        return time.time()

    async def submit(self, spec: VideoSpec) -> str:
        prompt = spec.prompt.lower()
        if "[blocked]" in prompt or "[blocked-input]" in prompt:
            raise ContentBlocked(
                "blocked at input",
                stage="input",
                detail="simulator: input moderation",
                reason="it describes violence",
            )
        if "[retired]" in prompt:
            raise ProviderRetired("model retired", detail="simulator: model not found")
        if "[busy]" in prompt and spec.external_id not in self._rate_limited_once:
            self._rate_limited_once.add(spec.external_id)
            raise RateLimited("busy", detail="simulator: 429", retry_after_s=1.0)
        flags = "".join(sorted(code for marker, code in _FLAGS.items() if marker in prompt)) or "n"
        started_ms = int(self._now() * 1000)
        run_ms = int(self.run_seconds * 1000)
        self.submits.append(spec)
        return f"sim_{started_ms}_{run_ms}_{flags}_{secrets.token_hex(3)}"

    @staticmethod
    def _decode(job_id: str) -> tuple[float, float, str]:
        try:
            _, started_ms, run_ms, flags, _ = job_id.split("_")
            return int(started_ms) / 1000, int(run_ms) / 1000, flags
        except ValueError as exc:
            raise InvalidProviderRequest("unknown simulator job", detail=job_id) from exc

    async def check(self) -> str:
        return "built in"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        started, run_s, flags = self._decode(provider_job_id)
        if provider_job_id in self._cancelled:
            return ProviderStatus(ProviderState.CANCELLED, raw_status="cancelled")
        elapsed = self._now() - started
        if elapsed < run_s * QUEUED_SHARE:
            return ProviderStatus(ProviderState.QUEUED, progress=0, raw_status="queued")
        if "s" in flags:
            progress = min(99, int(100 * elapsed / run_s))
            return ProviderStatus(ProviderState.RUNNING, progress=progress, raw_status="in_progress")
        if elapsed < run_s:
            progress = max(1, min(99, int(100 * elapsed / run_s)))
            return ProviderStatus(ProviderState.RUNNING, progress=progress, raw_status="in_progress")
        if "o" in flags:
            err = ProviderErrorInfo(FailureKind.BLOCKED_OUTPUT, "simulator: moderation_blocked")
            return ProviderStatus(ProviderState.FAILED, progress=100, error=err, raw_status="failed")
        if "f" in flags:
            err = ProviderErrorInfo(FailureKind.GENERATION_FAILED, "simulator: render failed")
            return ProviderStatus(ProviderState.FAILED, error=err, raw_status="failed")
        return ProviderStatus(
            ProviderState.SUCCEEDED,
            progress=100,
            video_url=f"simulator://video/{provider_job_id}.mp4",
            raw_status="completed",
        )

    async def cancel(self, provider_job_id: str) -> bool:
        self._cancelled.add(provider_job_id)
        return True

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        _, _, flags = self._decode(provider_job_id)
        if "e" in flags:
            raise ResultExpired("link expired", detail="simulator: 404 on the asset")
        dest.write_bytes(_fake_mp4(provider_job_id))

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        return None

    async def aclose(self) -> None:
        return None
