"""Joins a long video's segments into one MP4: packet copy when they match, re-encode when not.

Everything streams, packet by packet or frame by frame, between files: a joined video is
never held in memory. PyAV (FFmpeg) is imported inside the functions that use it, so that
importing this module at the bot's start-up costs nothing: the idle RSS is measured, and av
with FFmpeg's libraries adds about 19 MB (bench/bench_join.py).

Audio policy: audio is copied (remux) when every part has matching audio. When only some
parts have audio (or the audio differs), the join re-encodes and fills the parts without
audio with silence, so sound never drifts from picture and no segment's sound is lost.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import av.container

# H.264 plays inline in Slack and everywhere else; mpeg4 only if an FFmpeg build lacks x264
_VIDEO_CODECS = ("libx264", "mpeg4")
# zerolatency: no B-frames, no lookahead, slice threads, so x264 holds one frame at a time.
# Every frame it queues costs RSS (a 720p frame with its half-pel planes is ~5 MB); with the
# default lookahead and B-frames a 720p join peaked at ~95 MB extra RSS, with these ~45 MB.
_X264_OPTIONS = {"preset": "veryfast", "tune": "zerolatency"}
# moov atom first: Slack's player can start before the whole file has arrived
_MP4_OPTIONS = {"movflags": "+faststart"}
_DEFAULT_RATE = Fraction(24)


class JoinError(Exception):
    """A part cannot be joined: unreadable, empty, or without a video stream."""


@dataclass(frozen=True)
class JoinResult:
    method: Literal["remux", "reencode"]
    frames: int
    duration_s: float
    bytes: int


@dataclass(frozen=True)
class _Part:
    path: Path
    video: tuple[Any, ...]  # what must match for a packet copy: codec, size, format, timing, extradata
    audio: tuple[Any, ...] | None
    width: int
    height: int
    rate: Fraction | None
    sample_rate: int | None
    layout: str | None


class _RemuxNotPossible(Exception):
    """Timestamps of matching parts would still collide; re-encoding fixes them."""


def join_segments(parts: Sequence[Path], dest: Path, *, force_reencode: bool = False) -> JoinResult:
    """Join `parts` in order into one MP4 at `dest`; blocking, so run it in a thread.

    Writes beside `dest` and renames on success: `dest` is either absent or complete.
    Raises JoinError (and leaves no file) when a part is unreadable or has no video, or
    the join fails on the way (a part cut off or removed after probing, a full disk).
    """
    import av

    if not parts:
        raise JoinError("no parts to join")
    probes = [_probe(Path(p)) for p in parts]
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        result: tuple[int, Fraction] | None = None
        method: Literal["remux", "reencode"] = "reencode"
        if not force_reencode and _can_remux(probes):
            try:
                result, method = _remux(probes, tmp), "remux"
            except _RemuxNotPossible:
                tmp.unlink(missing_ok=True)
        if result is None:
            result = _reencode(probes, tmp)
        frames, duration = result
        size = tmp.stat().st_size
        os.replace(tmp, dest)
    except (av.FFmpegError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        # a part that went bad after probing (cut off, removed) or a full disk
        raise JoinError(f"joining failed: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return JoinResult(method=method, frames=frames, duration_s=float(duration), bytes=size)


async def join_segments_async(parts: Sequence[Path], dest: Path, *, force_reencode: bool = False) -> JoinResult:
    """join_segments in a worker thread, so the event loop keeps serving Slack meanwhile."""
    return await asyncio.to_thread(join_segments, list(parts), dest, force_reencode=force_reencode)


def _probe(path: Path) -> _Part:
    import av

    try:
        with av.open(str(path)) as inp:
            if not inp.streams.video:
                raise JoinError(f"{path.name}: no video stream")
            v = inp.streams.video[0]
            # a readable header with no frames behind it (a cut-off download) must fail here,
            # before anything is written
            if next((p for p in inp.demux(v) if p.size), None) is None:
                raise JoinError(f"{path.name}: no video frames")
            vc = v.codec_context
            video = (vc.name, vc.width, vc.height, vc.format.name if vc.format else None,
                     v.time_base, v.average_rate, bytes(vc.extradata or b""))
            audio = None
            sample_rate = layout = None
            if inp.streams.audio:
                ac = inp.streams.audio[0].codec_context
                sample_rate, layout = ac.sample_rate, ac.layout.name
                audio = (ac.name, ac.sample_rate, ac.layout.name, ac.format.name if ac.format else None,
                         inp.streams.audio[0].time_base, bytes(ac.extradata or b""))
            return _Part(path, video, audio, vc.width, vc.height, v.average_rate, sample_rate, layout)
    except JoinError:
        raise
    except (av.FFmpegError, OSError) as exc:
        raise JoinError(f"{path.name}: not a readable video ({exc})") from exc


def _can_remux(parts: Sequence[_Part]) -> bool:
    first = parts[0]
    return all(p.video == first.video and p.audio == first.audio for p in parts)


def _remux(parts: Sequence[_Part], tmp: Path) -> tuple[int, Fraction]:
    """Copy packets, shifting each part by where the previous one ended; no decoding."""
    import av

    frames = 0
    offset = Fraction(0)  # seconds: where the current part starts in the output
    last_dts: dict[str, int] = {}
    with av.open(str(tmp), "w", format="mp4", options=_MP4_OPTIONS) as out:
        with av.open(str(parts[0].path)) as template:
            out_v = out.add_stream_from_template(template.streams.video[0])
            out_a = out.add_stream_from_template(template.streams.audio[0]) if parts[0].audio else None
        for part in parts:
            with av.open(str(part.path)) as inp:
                pairs = {inp.streams.video[0].index: (inp.streams.video[0], out_v, "v")}
                if out_a is not None:
                    pairs[inp.streams.audio[0].index] = (inp.streams.audio[0], out_a, "a")
                # the part's time 0 lands at `offset`; B-frame reordering keeps dts a little
                # before pts, as in the part itself
                shifts = {i: round(offset / src.time_base) for i, (src, _, _) in pairs.items()}
                end = offset
                # both streams in one pass, in file order: the muxer interleaves as it goes
                # instead of queueing one stream's packets while it waits for the other's
                for packet in inp.demux(*(src for src, _, _ in pairs.values())):
                    if packet.dts is None:
                        continue  # the demuxer's end-of-stream marker
                    src, dst, key = pairs[packet.stream.index]
                    tb, shift = src.time_base, shifts[packet.stream.index]
                    if offset and packet.pts is not None and packet.pts + (packet.duration or 0) <= 0:
                        # encoder priming before time 0 (AAC's first 1024 samples): the MP4 edit
                        # list hides it at the start of a file, but mid-stream it would be heard
                        # and would overlap the previous part's last packet
                        continue
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts += shift
                    if key in last_dts and packet.dts <= last_dts[key]:
                        raise _RemuxNotPossible(f"{part.path.name}: dts would go back")
                    last_dts[key] = packet.dts
                    stop = (packet.pts if packet.pts is not None else packet.dts) + (packet.duration or 0)
                    end = max(end, Fraction(stop) * tb)
                    packet.stream = dst
                    packet.time_base = tb
                    out.mux(packet)
                    frames += key == "v"
                # audio frames rarely end exactly with the picture: the next part starts after
                # both, so sound and picture stay in sync over many parts
                offset = end
    return frames, offset


def video_encoder() -> str | None:
    """The video encoder this FFmpeg build has: H.264 as the providers deliver, else MPEG-4
    (a build without x264); None when it has neither."""
    import av

    for name in _VIDEO_CODECS:
        try:
            av.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError):  # an unknown codec is a ValueError
            continue
    return None


def _pick_codec() -> str:
    codec = video_encoder()
    if codec is None:
        raise JoinError("this FFmpeg build has no H.264 or MPEG-4 encoder")
    return codec


def _reencode(parts: Sequence[_Part], tmp: Path) -> tuple[int, Fraction]:
    """Decode and encode frame by frame: H.264 yuv420p at the first part's size and rate."""
    import av

    first = parts[0]
    rate = first.rate or _DEFAULT_RATE
    tb = 1 / rate
    audio_rate = next((p.sample_rate for p in parts if p.sample_rate), None)
    audio_layout = next((p.layout for p in parts if p.layout), None) or "stereo"
    frames = 0
    offset = Fraction(0)
    last_pts = -1
    with av.open(str(tmp), "w", format="mp4", options=_MP4_OPTIONS) as out:
        codec = _pick_codec()
        out_v = out.add_stream(codec, rate=rate)
        out_v.width, out_v.height, out_v.pix_fmt = first.width, first.height, "yuv420p"
        out_v.codec_context.time_base = tb
        if codec == "libx264":
            out_v.options = dict(_X264_OPTIONS)
        audio = _AudioTrack(out, audio_rate, audio_layout) if audio_rate else None
        for part in parts:
            if audio is not None:
                audio.pad_to(offset)
            end = offset
            with av.open(str(part.path)) as inp:
                src = inp.streams.video[0]
                streams = [src] + ([inp.streams.audio[0]] if audio is not None and part.audio else [])
                start = Fraction(src.start_time or 0) * src.time_base
                step = 1 / (src.average_rate or rate)
                for packet in inp.demux(*streams):
                    for frame in packet.decode():
                        if isinstance(frame, av.AudioFrame):
                            audio.write(frame)  # type: ignore[union-attr]
                            continue
                        t = offset + Fraction(frame.pts or 0) * src.time_base - start
                        pts = round(t / tb)
                        if pts <= last_pts:
                            continue  # a faster part: drop the frame that lands on the same tick
                        out_frame = frame.reformat(first.width, first.height, "yuv420p")
                        out_frame.pts, out_frame.time_base = pts, tb
                        last_pts = pts
                        out.mux(out_v.encode(out_frame))
                        frames += 1
                        end = max(end, t + step)
            if audio is not None:
                end = max(end, audio.end)
            offset = end
        out.mux(out_v.encode(None))
        if audio is not None:
            audio.pad_to(offset)
            audio.close()
    return frames, offset


class _AudioTrack:
    """AAC output fed through a FIFO, so frames always have the encoder's size and parts
    without sound become silence of their picture's length."""

    def __init__(self, out: av.container.OutputContainer, rate: int, layout: str) -> None:
        import av

        self.out, self.rate, self.layout = out, rate, layout
        self.stream = out.add_stream("aac", rate=rate)
        self.stream.layout = layout
        self.fifo = av.AudioFifo()
        self.written = 0  # samples into the FIFO: where the next part's sound would start
        self.encoded = 0
        self._resampler: Any = None

    @property
    def end(self) -> Fraction:
        return Fraction(self.written, self.rate)

    def pad_to(self, t: Fraction) -> None:
        """Fill with silence up to time `t`; also starts a fresh resampler for the next part."""
        import av

        self._flush_resampler()
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        missing = round(t * self.rate) - self.written
        while missing > 0:
            # a second at a time: a long silent part never becomes one big buffer
            samples = min(missing, self.rate)
            silence = av.AudioFrame(format="fltp", layout=self.layout, samples=samples)
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            silence.sample_rate = self.rate
            self._push([silence])
            missing -= samples

    def write(self, frame: Any) -> None:
        self._push(self._resampler.resample(frame))

    def close(self) -> None:
        self._flush_resampler()
        self._drain(final=True)
        self.out.mux(self.stream.encode(None))

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            self._push(self._resampler.resample(None))
            self._resampler = None

    def _push(self, frames: list[Any]) -> None:
        for frame in frames:
            frame.pts = None  # the FIFO checks continuity; our own counter sets the output pts
            self.fifo.write(frame)
            self.written += frame.samples
        self._drain(final=False)

    def _drain(self, *, final: bool) -> None:
        size = self.stream.codec_context.frame_size or 1024
        while self.fifo.samples >= size or (final and self.fifo.samples):
            frame = self.fifo.read(min(size, self.fifo.samples))
            frame.pts, frame.time_base = self.encoded, Fraction(1, self.rate)
            self.encoded += frame.samples
            self.out.mux(self.stream.encode(frame))
