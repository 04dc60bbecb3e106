"""Joining segments: 10 segments of 8 s at 720p 24 fps (with AAC sound) into one MP4, and its RSS.

Setup (not timed): the segments are encoded once with PyAV into a temp dir, a moving ramp
with noise in every row (about 2 Mbit/s, like a provider's 720p). For the re-encode run,
every other segment is encoded at 960x540, so the parts differ and `join_segments` must
decode and encode all 1,920 frames at the first part's 720p.

Each join runs in a fresh process (`--child`) that imports av, reads VmRSS, then joins while a
thread samples VmRSS every 20 ms; VmHWM (the kernel's peak) is read after. Extra RSS is the
peak over the RSS just before the join (av and FFmpeg already loaded: their cost is shown
apart). No warm-up join: the first join in a process is the one the bot pays for.

Target: <= 50 MB extra RSS on both paths (remux and re-encode).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, Report, child_env, hwm_mb, rss_mb, run, workdir

SEGMENTS, SECONDS, RATE = 10, 8, 24
SIZE, OTHER_SIZE = (1280, 720), (960, 540)
TARGET_MB = 50


def encode_segment(path: Path, n: int, size: tuple[int, int]) -> None:
    import av

    width, height = size
    ramp = bytes(range(256)) * (width // 256 + 4)
    tone = struct.pack("1024f", *(0.2 * math.sin(2 * math.pi * 440 * s / 48000) for s in range(1024)))
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=RATE)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"preset": "veryfast"}
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i in range(SECONDS * RATE):
            frame = av.VideoFrame(width, height, "yuv420p")
            # a moving ramp with 32 noisy bytes per row: about 2 Mbit/s, like a provider's 720p
            rows = (ramp[(r + 3 * i + 40 * n) % 256:][32:width] for r in range(height))
            frame.planes[0].update(b"".join(os.urandom(32) + row for row in rows))
            for k, value in ((1, 96 + 8 * n), (2, 160 - 4 * n)):
                frame.planes[k].update(bytes([value]) * frame.planes[k].buffer_size)
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        for k in range(SECONDS * 48000 // 1024):
            af = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in af.planes:
                plane.update(tone)
            af.sample_rate, af.pts = 48000, k * 1024
            out.mux(a.encode(af))
        out.mux(a.encode(None))


def child(parts_dir: Path, dest: Path) -> None:
    """One join in this fresh process, printing its figures as JSON."""
    before_av = rss_mb()
    importlib.import_module("av")  # loaded before the baseline: its libraries are a fixed cost

    from bot.media.video_join import join_segments

    parts = sorted(parts_dir.glob("seg*.mp4"))
    base = rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result = join_segments(parts, dest)
    took = time.perf_counter() - t0
    done.set()
    sampler.join()
    print(json.dumps({
        "method": result.method, "frames": result.frames, "duration_s": result.duration_s,
        "bytes": result.bytes, "seconds": took, "av_import_mb": base - before_av,
        "base_mb": base, "peak_sampled_mb": peak[0], "hwm_mb": hwm_mb(),
    }))


def join_in_child(parts_dir: Path, dest: Path) -> dict[str, float | str]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(parts_dir), str(dest)],
        env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"join child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def main() -> int:
    report = Report("join", "Joining segments: 10 x 8 s at 720p 24 fps into one MP4")
    report.header()
    tmp = workdir("join")
    t0 = time.monotonic()
    for case in ("remux", "reencode"):
        (tmp / case).mkdir()
    for n in range(SEGMENTS):
        encode_segment(tmp / "remux" / f"seg{n:02d}.mp4", n, SIZE)
        other = tmp / "reencode" / f"seg{n:02d}.mp4"
        if n % 2:
            encode_segment(other, n, OTHER_SIZE)
        else:
            other.symlink_to(tmp / "remux" / f"seg{n:02d}.mp4")
    report.note(f"setup: {2 * SEGMENTS - SEGMENTS // 2} segments encoded in {time.monotonic() - t0:.0f} s (not timed)")
    total_in = sum(p.stat().st_size for p in (tmp / "remux").glob("seg*.mp4"))
    report.figure("input: 10 segments at 720p (remux case)", round(total_in / 2**20, 1), "MiB")
    for case in ("remux", "reencode"):
        fig = join_in_child(tmp / case, tmp / f"{case}.mp4")
        extra = max(fig["peak_sampled_mb"], fig["hwm_mb"]) - fig["base_mb"]  # type: ignore[operator]
        report.figure(f"{case}: method chosen", fig["method"])
        report.figure(f"{case}: time", round(fig["seconds"], 2), "s")  # type: ignore[arg-type]
        report.figure(f"{case}: frames / duration", f"{fig['frames']} / {fig['duration_s']:.2f} s")
        report.figure(f"{case}: output", round(fig["bytes"] / 2**20, 1), "MiB")  # type: ignore[operator]
        report.figure(f"{case}: RSS before join (av loaded; av import cost)",
                      f"{fig['base_mb']:.1f} ({fig['av_import_mb']:.1f})", "MiB")
        report.figure(f"{case}: RSS peak sampled / VmHWM", f"{fig['peak_sampled_mb']:.1f} / {fig['hwm_mb']:.1f}", "MiB")
        report.check(f"{case}: peak extra RSS", round(extra, 1), "<=", TARGET_MB, "MiB")
        report.check(f"{case}: every frame joined", fig["frames"], "==", SEGMENTS * SECONDS * RATE, "frames")
        report.check(f"{case}: path taken is {case}", float(fig["method"] == case), "==", 1.0)
    report.save()
    os.chdir(REPO)
    shutil.rmtree(tmp, ignore_errors=True)  # about 100 MB of segments and joins
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        run(main)
