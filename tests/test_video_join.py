"""bot.media.video_join on real MP4 files encoded here with PyAV: remux, re-encode, timestamps, memory."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest

av = pytest.importorskip("av")

from bot.media.video_join import JoinError, join_segments, join_segments_async  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RATE = 24
FRAMES = 24  # 1 s per part
LUMAS = (40, 120, 200)  # one brightness per part: tells the parts apart in the output


def chroma(i: int) -> int:
    """Frame counter drawn as colour: the U plane of frame i within its part."""
    return 64 + 4 * i


def encode_clip(path: Path, *, luma: int, size: tuple[int, int] = (320, 180), codec: str = "libx264",
                frames: int = FRAMES, audio: bool = False) -> Path:
    width, height = size
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=RATE)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000) if audio else None
        if a is not None:
            a.layout = "stereo"
        for i in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for n, value in enumerate((luma, chroma(i), 128)):
                frame.planes[n].update(bytes([value]) * frame.planes[n].buffer_size)
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            for k in range(48000 * frames // RATE // 1024):
                tone = struct.pack("1024f", *(0.2 * math.sin(2 * math.pi * 440 * (k * 1024 + s) / 48000)
                                              for s in range(1024)))
                af = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
                for plane in af.planes:
                    plane.update(tone)
                af.sample_rate, af.pts = 48000, k * 1024
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    made = {f"plain{n}": encode_clip(d / f"plain{n}.mp4", luma=luma) for n, luma in enumerate(LUMAS)}
    made.update({f"sound{n}": encode_clip(d / f"sound{n}.mp4", luma=luma, audio=True) for n, luma in enumerate(LUMAS)})
    made["big"] = encode_clip(d / "big.mp4", luma=LUMAS[1], size=(640, 360))
    made["mpeg4"] = encode_clip(d / "mpeg4.mp4", luma=LUMAS[2], codec="mpeg4")
    return made


def pixel(plane: object, width: int, height: int) -> int:
    data = bytes(plane)  # type: ignore[call-overload]
    return data[(height // 2) * plane.line_size + width // 2]  # type: ignore[attr-defined]


def decoded(path: Path) -> list[tuple[int, int, int, int]]:
    """(width, height, Y, U) of every frame, decoding the whole file (errors raise)."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append((f.width, f.height, pixel(f.planes[0], f.width, f.height),
                        pixel(f.planes[1], f.width // 2, f.height // 2)))
    return out


def packets(path: Path, kind: str) -> list[tuple[int, int, int, Fraction]]:
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        if not streams:
            return []
        return [(p.pts, p.dts, p.duration, p.time_base) for p in c.demux(streams[0]) if p.dts is not None]


def span_s(path: Path, kind: str) -> float:
    pk = packets(path, kind)
    return float(max((p + d) * tb for p, _, d, tb in pk) - min(p * tb for p, _, _, tb in pk))


def assert_frames_in_order(frames: list[tuple[int, int, int, int]], parts: int) -> None:
    assert len(frames) == parts * FRAMES
    for k, (_, _, y, u) in enumerate(frames):
        part, i = divmod(k, FRAMES)
        assert abs(y - LUMAS[part]) <= 3, f"frame {k}: brightness {y}, part {part} has {LUMAS[part]}"
        assert abs(u - chroma(i)) <= 3, f"frame {k}: colour {u} is not frame {i} of its part"


def test_matching_parts_are_remuxed_end_to_end_in_order(clips: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "joined.mp4"
    result = join_segments([clips["plain0"], clips["plain1"], clips["plain2"]], dest)
    assert result.method == "remux"
    assert result.frames == 3 * FRAMES
    assert abs(result.duration_s - 3.0) < 1 / RATE
    assert abs(span_s(dest, "video") - 3.0) < 1 / RATE
    assert result.bytes == dest.stat().st_size
    frames = decoded(dest)
    assert {(w, h) for w, h, _, _ in frames} == {(320, 180)}
    assert_frames_in_order(frames, 3)


def test_matching_parts_with_sound_keep_sound_in_sync(clips: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "joined.mp4"
    result = join_segments([clips["sound0"], clips["sound1"], clips["sound2"]], dest)
    assert result.method == "remux"
    assert_frames_in_order(decoded(dest), 3)
    # AAC ends on a 1024-sample frame, not on the picture: a few ms per part at most
    assert abs(span_s(dest, "audio") - span_s(dest, "video")) < 0.1


@pytest.mark.parametrize("odd_one", ["big", "mpeg4"])
def test_parts_that_differ_are_reencoded_at_the_first_parts_size(
        clips: dict[str, Path], tmp_path: Path, odd_one: str) -> None:
    dest = tmp_path / "joined.mp4"
    # the odd part stands in the middle; its brightness is the middle part's
    middle = clips[odd_one] if odd_one == "big" else encode_clip(tmp_path / "m.mp4", luma=LUMAS[1], codec="mpeg4")
    result = join_segments([clips["plain0"], middle, clips["plain2"]], dest)
    assert result.method == "reencode"
    assert result.frames == 3 * FRAMES
    assert abs(result.duration_s - 3.0) < 1 / RATE
    frames = decoded(dest)
    assert {(w, h) for w, h, _, _ in frames} == {(320, 180)}
    assert_frames_in_order(frames, 3)
    with av.open(str(dest)) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_a_part_without_sound_becomes_silence_not_drift(clips: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "joined.mp4"
    result = join_segments([clips["sound0"], clips["plain1"], clips["sound2"]], dest)
    assert result.method == "reencode"
    assert_frames_in_order(decoded(dest), 3)
    assert abs(span_s(dest, "audio") - span_s(dest, "video")) < 0.1


@pytest.mark.parametrize("force_reencode", [False, True], ids=["remux", "reencode"])
def test_timestamps_run_forward_without_gaps_at_the_joins(
        clips: dict[str, Path], tmp_path: Path, force_reencode: bool) -> None:
    dest = tmp_path / "joined.mp4"
    result = join_segments([clips["sound0"], clips["sound1"], clips["sound2"]], dest, force_reencode=force_reencode)
    assert result.method == ("reencode" if force_reencode else "remux")
    for kind in ("video", "audio"):
        pk = packets(dest, kind)
        assert pk, kind
        dts = [d for _, d, _, _ in pk]
        assert all(b > a for a, b in zip(dts, dts[1:])), f"{kind} dts not strictly increasing"
        assert all(d <= p for p, d, _, _ in pk), f"{kind} dts after pts"
        # only the start may lie before 0, as in any MP4 (the edit list hides it): H.264's
        # B-frame reorder delay in dts, AAC's 1024 priming samples
        starts = sorted(min(p, d) * tb for p, d, _, tb in pk)
        assert starts[0] > -Fraction(3, RATE)
        assert starts[2] >= 0
    # presentation is continuous: consecutive video frames are one frame apart, joins included
    with av.open(str(dest)) as c:
        times = sorted(float(f.time) for f in c.decode(video=0))
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 1.5 / RATE and min(gaps) > 0.5 / RATE


def header_only(tmp_path: Path) -> bytes:
    """An MP4 cut off right after its header: a video stream of 24 frames, none of them there
    (a download that stopped early, with the moov atom first)."""
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "+faststart"}) as out:
        v = out.add_stream("libx264", rate=RATE)
        v.width, v.height, v.pix_fmt = 320, 180, "yuv420p"
        for i in range(FRAMES):
            frame = av.VideoFrame(320, 180, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([100]) * plane.buffer_size)
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
    data = whole.read_bytes()
    return data[: data.index(b"mdat") + 4]


@pytest.mark.parametrize("content", ["empty", "garbage", "missing", "header only"])
def test_an_unreadable_part_raises_and_leaves_no_file(clips: dict[str, Path], tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.mp4"
    if content != "missing":
        bad.write_bytes({"empty": b"", "garbage": b"\x00garbage, not a video" * 100}.get(content)
                        or header_only(tmp_path))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(JoinError, match="bad.mp4"):
        join_segments([clips["plain0"], bad, clips["plain2"]], out_dir / "joined.mp4")
    assert list(out_dir.iterdir()) == []


def test_a_failure_while_writing_leaves_no_file(
        clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.media.video_join as video_join

    last = tmp_path / "last.mp4"
    last.write_bytes(clips["plain2"].read_bytes())
    real_probe = video_join._probe

    def probe_then_lose_the_last_part(path: Path) -> object:
        probed = real_probe(path)
        if path == last:
            last.unlink()  # gone between the check and the join: the first parts are written by then
        return probed

    monkeypatch.setattr(video_join, "_probe", probe_then_lose_the_last_part)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(JoinError, match="joining failed"):
        join_segments([clips["plain0"], clips["plain1"], last], out_dir / "joined.mp4")
    assert list(out_dir.iterdir()) == []


async def test_the_async_wrapper_joins_in_a_thread(clips: dict[str, Path], tmp_path: Path) -> None:
    result = await join_segments_async([clips["plain0"], clips["plain1"]], tmp_path / "joined.mp4")
    assert (result.method, result.frames) == ("remux", 2 * FRAMES)


def test_importing_the_module_does_not_load_ffmpeg() -> None:
    code = "import sys, bot.media.video_join; assert 'av' not in sys.modules, 'av imported at start-up'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


_MEMORY_PROBE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bot.media.video_join import join_segments

    def hwm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    part, out = Path(sys.argv[1]), Path(sys.argv[2])
    join_segments([part] * 2, out / "warm.mp4", force_reencode=True)  # first use: codecs, pools
    before = hwm_kb()
    result = join_segments([part] * int(sys.argv[3]), out / "long.mp4", force_reencode=True)
    print(result.frames, hwm_kb() - before)
""")


def test_memory_does_not_grow_with_the_number_of_frames(tmp_path: Path) -> None:
    """The re-encode path, the one that decodes: 40 parts of 640x360 frames go through, and
    the peak RSS grows by far less than holding their decoded frames would take."""
    part = encode_clip(tmp_path / "p.mp4", luma=LUMAS[0], size=(640, 360), frames=12)
    parts = 40
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(part), str(tmp_path), str(parts)],
                          cwd=REPO, check=True, capture_output=True, text=True)
    frames, grew_kb = map(int, proc.stdout.split())
    assert frames == parts * 12
    decoded_mb = frames * 640 * 360 * 1.5 / 2**20  # yuv420p
    assert decoded_mb > 60
    assert grew_kb / 1024 < 10, f"peak RSS grew {grew_kb / 1024:.1f} MiB over {frames} frames ({decoded_mb:.0f} MiB decoded)"
