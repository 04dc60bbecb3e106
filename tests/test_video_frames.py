"""bot.media.video_frames on real MP4 files encoded here with PyAV: the very last frame, as a PNG."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

av = pytest.importorskip("av")

from bot.media import video_frames  # noqa: E402
from bot.errors import DeliveryError  # noqa: E402
from bot.media.video_frames import last_frame_png, last_frame_png_async  # noqa: E402

RATE = 24
GREY = (90, 90, 90)
LAST = (220, 30, 40)  # only the last frame has it: anything else returned is the wrong frame
BEFORE_LAST = (30, 200, 60)


def shade(i: int) -> tuple[int, int, int]:
    return (40 + i % 150,) * 3


def encode_clip(path: Path, *, frames: int = 48, size: tuple[int, int] = (320, 180), codec: str = "libx264",
                gop: int | None = None, bframes: bool = True, faststart: bool = False) -> Path:
    """Grey frames getting lighter, then BEFORE_LAST, then LAST: the final frame is unmistakable."""
    width, height = size
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        opts = {}
        if gop is not None:
            opts["g"] = str(gop)
        if codec == "libx264":
            opts["bf"] = "3" if bframes else "0"  # B-frames: decode order differs from display order
        stream.options = opts
        for i in range(frames):
            colour = LAST if i == frames - 1 else BEFORE_LAST if i == frames - 2 else shade(i)
            frame = av.VideoFrame.from_image(Image.new("RGB", size, colour)).reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def centre(png: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return img.convert("RGB").getpixel((img.width // 2, img.height // 2))


def near(pixel: tuple[int, int, int], colour: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour))


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {},  # x264's defaults: one keyframe, B-frames
        {"gop": 12},  # many keyframes: decoding starts at the last one
        {"gop": 12, "bframes": False},
        {"codec": "mpeg4", "gop": 12},
        {"size": (640, 360), "faststart": True},
        {"frames": 1},
    ],
)
def test_the_png_is_the_last_frame_at_the_video_size(tmp_path: Path, kwargs: dict) -> None:
    clip = encode_clip(tmp_path / "clip.mp4", **kwargs)
    ref = last_frame_png(clip)
    size = kwargs.get("size", (320, 180))
    assert ref.mime_type == "image/png" and (ref.width, ref.height) == size
    with Image.open(io.BytesIO(ref.data)) as img:
        assert img.size == size
    assert near(centre(ref.data), LAST), centre(ref.data)


def test_a_long_clip_decodes_only_its_last_group_of_pictures(tmp_path: Path) -> None:
    clip = encode_clip(tmp_path / "long.mp4", frames=RATE * 20, gop=RATE)
    last, decoded = video_frames._last_frame_of(clip, seek=True)
    assert last is not None and decoded <= RATE
    whole, all_decoded = video_frames._last_frame_of(clip, seek=False)
    assert all_decoded == RATE * 20
    assert last.pts == whole.pts  # the same frame, for a 20th of the work
    assert near(last.to_image().getpixel((5, 5)), LAST)


def test_when_seeking_yields_nothing_the_whole_file_is_decoded(tmp_path: Path, monkeypatch) -> None:
    clip = encode_clip(tmp_path / "clip.mp4", gop=12)
    calls = []
    real = video_frames._last_frame_of

    def seek_finds_nothing(path: Path, *, seek: bool):
        calls.append(seek)
        return (None, 0) if seek else real(path, seek=False)

    monkeypatch.setattr(video_frames, "_last_frame_of", seek_finds_nothing)
    assert near(centre(last_frame_png(clip).data), LAST)
    assert calls == [True, False]


def test_a_file_that_does_not_say_where_it_ends_is_decoded_from_the_start(tmp_path: Path, monkeypatch) -> None:
    clip = encode_clip(tmp_path / "clip.mp4", gop=12)
    monkeypatch.setattr(video_frames, "_end_pts", lambda container, stream: None)
    assert near(centre(last_frame_png(clip).data), LAST)


def _cut_after_header(src: Path, dest: Path) -> Path:
    """A download cut off right after the header: a video track whose frames never arrived."""
    data = src.read_bytes()
    dest.write_bytes(data[: data.index(b"mdat") + 4])
    return dest


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for k in range(10):
            frame = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = 48000, k * 1024
            out.mux(a.encode(frame))
        out.mux(a.encode(None))
    return path


def test_a_file_without_a_video_frame_raises_delivery_error(tmp_path: Path) -> None:
    full = encode_clip(tmp_path / "full.mp4", faststart=True)
    cut = _cut_after_header(full, tmp_path / "cut.mp4")
    with av.open(str(cut)) as c:
        assert c.streams.video  # the header promises a video...
    with pytest.raises(DeliveryError, match="cut.mp4 has no video frame") as info:
        last_frame_png(cut)  # ...that has no frame
    assert info.value.detail.endswith("no decodable video frame")
    with pytest.raises(DeliveryError, match="sound.mp4 has no video"):
        last_frame_png(_audio_only(tmp_path / "sound.mp4"))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("garbage.mp4", b"not a video at all " * 200),
        ("empty.mp4", b""),
        ("half.mp4", None),  # the first half of a real clip: its header, then frames cut off
    ],
)
def test_an_unreadable_file_raises_delivery_error(tmp_path: Path, name: str, data: bytes | None) -> None:
    path = tmp_path / name
    if data is None:
        full = encode_clip(tmp_path / "full.mp4", frames=96, gop=12, faststart=True).read_bytes()
        data = full[: len(full) // 2]
    path.write_bytes(data)
    with pytest.raises(DeliveryError, match=name):
        last_frame_png(path)


def test_a_missing_file_raises_delivery_error(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="nowhere.mp4 is not a readable video"):
        last_frame_png(tmp_path / "nowhere.mp4")


async def test_the_async_form_gives_the_same_png(tmp_path: Path) -> None:
    clip = encode_clip(tmp_path / "clip.mp4", gop=12)
    ref = await last_frame_png_async(clip)
    assert ref == last_frame_png(clip)
    assert near(centre(ref.data), LAST)
