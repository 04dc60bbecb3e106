"""The built-in simulator: behaves like a real video provider, scripted by prompt markers.

Markers: `[blocked]` (refused at input), `[blocked-output]` (held back when done), `[fail]`
(render fails), `[flaky]` (the render fails the first time a job is submitted in this
process and succeeds when the same job is submitted again), `[stuck]` (climbs to 99% and
stays there), `[busy]` (the first submit is rate limited), `[retired]` (the model is gone),
`[expired]` (the download link is dead).
The job id encodes its start time, script and length, so a restarted bot picks a job up where
it was: the simulated render keeps going while the bot is down, as a real one would, and the
finished video can still be downloaded.

Downloads are real MP4 files (H.264, 160x90, FPS frames a second, no sound), a plain colour
taken from the job id, so a long video's segments can be joined and told apart. The simulator
accepts an image (image-to-video) and ignores it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from fractions import Fraction
from pathlib import Path

from bot.errors import (
    ContentBlocked,
    DeliveryError,
    InvalidProviderRequest,
    ProviderRetired,
    RateLimited,
    ResultExpired,
)
from bot.models import FailureKind, ProviderErrorInfo, ProviderState, ProviderStatus, VideoSpec

_FLAGS = {"[stuck]": "s", "[blocked-output]": "o", "[fail]": "f", "[expired]": "e"}
_FLAKY = "x"  # flag of a `[flaky]` job's first submit in this process: its render fails
QUEUED_SHARE = 0.15  # the first 15% of the run is spent "in the queue"

# The downloaded clip: small and few frames, so encoding one costs milliseconds (the test
# suite downloads hundreds), yet a real MP4 that PyAV can decode and bot.media.video_join can join.
FPS = 8
WIDTH, HEIGHT = 160, 90
OLD_ID_SECONDS = 8  # ids made before the length was part of them: the default clip length
# threads=1: the same id always gives the same bytes, and a tiny clip gains nothing from more.
_X264_OPTIONS = {"preset": "ultrafast", "threads": "1"}


def _colour(job_id: str) -> tuple[int, int, int]:
    """(Y, U, V) from the job id: one job's clip always looks the same, two jobs' differ."""
    digest = hashlib.sha256(job_id.encode()).digest()
    # inside video range (Y 16-235, U/V 16-240), so the colour survives the encoder as is
    return 16 + digest[0] % 220, 16 + digest[1] % 225, 16 + digest[2] % 225


def _pick_codec() -> str:
    from bot.media.video_join import video_encoder

    codec = video_encoder()
    if codec is None:
        raise DeliveryError("simulator: no video encoder", detail="simulator: FFmpeg has no H.264 or MPEG-4 encoder")
    return codec


def _write_clip(dest: Path, job_id: str, seconds: int) -> None:
    """Encode `seconds * FPS` plain frames into an MP4 at `dest`; blocking, run it in a thread.

    Writes beside `dest` and renames, so `dest` is either absent or a whole file.
    """
    import av

    y, u, v = _colour(job_id)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        codec = _pick_codec()
        # a plain frame: built once and encoded again and again with a new timestamp
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        for plane, value in zip(frame.planes, (y, u, v)):
            plane.update(bytes([value]) * plane.buffer_size)
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = out.add_stream(codec, rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            stream.codec_context.time_base = Fraction(1, FPS)
            if codec == "libx264":
                stream.options = dict(_X264_OPTIONS)
            for i in range(max(1, seconds * FPS)):
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        os.replace(tmp, dest)
    except av.FFmpegError as exc:
        tmp.unlink(missing_ok=True)
        raise DeliveryError("simulator: could not write the video",
                            detail=f"simulator: encoding failed: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SimulatorProvider:
    name = "simulator"
    shareable_urls = False  # simulator:// links open nowhere
    calls_back = False

    def __init__(self, *, run_seconds: float = 12.0) -> None:
        self.run_seconds = run_seconds
        self._rate_limited_once: set[str] = set()
        self._flaked_once: set[str] = set()  # external ids whose `[flaky]` render already failed
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
        codes = {code for marker, code in _FLAGS.items() if marker in prompt}
        if "[flaky]" in prompt and spec.external_id not in self._flaked_once:
            # decided now and written into the id, so poll stays stateless (and a restart
            # keeps the failure); the same job submitted again gets a clean id
            self._flaked_once.add(spec.external_id)
            codes.add(_FLAKY)
        flags = "".join(sorted(codes)) or "n"
        started_ms = int(self._now() * 1000)
        run_ms = int(self.run_seconds * 1000)
        seconds = max(1, int(spec.duration_s))
        self.submits.append(spec)
        return f"sim_{started_ms}_{run_ms}_{flags}_{seconds}_{secrets.token_hex(3)}"

    @staticmethod
    def _decode(job_id: str) -> tuple[float, float, str, int]:
        """(started, run seconds, flags, clip seconds) from an id, old 5-part ids included."""
        try:
            parts = job_id.split("_")
            if len(parts) == 6:
                _, started_ms, run_ms, flags, seconds, _ = parts
            else:  # sim_{started}_{run}_{flags}_{rand}: made before the length was in the id
                _, started_ms, run_ms, flags, _ = parts
                seconds = str(OLD_ID_SECONDS)
            if parts[0] != "sim" or int(seconds) < 1:
                raise ValueError(job_id)
            return int(started_ms) / 1000, int(run_ms) / 1000, flags, int(seconds)
        except ValueError as exc:
            raise InvalidProviderRequest("unknown simulator job", detail=job_id) from exc

    async def check(self) -> str:
        return "built in"

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        started, run_s, flags, _ = self._decode(provider_job_id)
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
        if _FLAKY in flags:
            err = ProviderErrorInfo(FailureKind.GENERATION_FAILED, "simulator: render failed (flaky)")
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
        _, _, flags, seconds = self._decode(provider_job_id)
        if "e" in flags:
            raise ResultExpired("link expired", detail="simulator: 404 on the asset")
        # encoding is CPU work (milliseconds, but many downloads may run at once): off the loop
        await asyncio.to_thread(_write_clip, dest, provider_job_id, seconds)

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        return None

    async def aclose(self) -> None:
        return None
