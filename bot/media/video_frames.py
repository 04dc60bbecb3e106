"""The last frame of a finished clip, as a PNG: where a long video's next segment starts.

Models without a native extension call continue a long video from the previous segment's
last frame (image-to-video), so that frame must be the very last one shown, not a frame near
the end. PyAV (FFmpeg) is imported inside the functions that use it, as in bot/media/video_join.py,
so importing this module at the bot's start-up costs nothing.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import DeliveryError
from bot.models import ReferenceImage

if TYPE_CHECKING:
    import av.container
    import av.video.frame
    import av.video.stream


def last_frame_png(path: Path) -> ReferenceImage:
    """The last decoded video frame of the MP4 at `path`, as PNG bytes; blocking (CPU and
    disk), so run it in a thread (last_frame_png_async).

    Seeks to the last keyframe and decodes from there to the end, so a long clip costs one
    group of pictures, not the whole file; when seeking yields no frame (no index, a stream
    that can't seek), decodes the whole file instead. Raises DeliveryError when the file
    can't be read or has no video frame.
    """
    import av

    path = Path(path)
    try:
        frame = _last_frame_of(path, seek=True)[0]
        if frame is None:
            # the seek may have landed nowhere useful; decoding from the start is slow, not wrong
            frame = _last_frame_of(path, seek=False)[0]
        if frame is None:
            raise DeliveryError(f"{path.name} has no video frame to continue from",
                                detail=f"last frame: {path}: no decodable video frame")
        # RGB: PNG keeps it exactly (no second lossy step before the model sees it)
        image = frame.to_image()
    except DeliveryError:
        raise
    except (av.FFmpegError, OSError) as exc:
        # a missing file (PyAV's FileNotFoundError is both), garbage (InvalidDataError), a
        # file cut off mid-frame
        raise DeliveryError(f"{path.name} is not a readable video",
                            detail=f"last frame: {path}: {exc}") from exc
    out = io.BytesIO()
    image.save(out, "PNG")
    return ReferenceImage(data=out.getvalue(), mime_type="image/png", width=image.width, height=image.height)


async def last_frame_png_async(path: Path) -> ReferenceImage:
    """last_frame_png in a worker thread, so the event loop keeps serving Slack meanwhile."""
    return await asyncio.to_thread(last_frame_png, Path(path))


def _last_frame_of(path: Path, *, seek: bool) -> tuple[av.video.frame.VideoFrame | None, int]:
    """(the last frame decoded, how many frames were decoded), from the last keyframe when
    `seek`, else from the start; (None, 0) when nothing decodes. The count is for tests."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DeliveryError(f"{path.name} has no video to continue from",
                                detail=f"last frame: {path}: no video stream")
        stream = container.streams.video[0]
        if seek:
            end = _end_pts(container, stream)
            if end is None:
                return None, 0
            try:
                # backward: the keyframe at or before the end, so decoding can start there
                container.seek(end, stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                return None, 0  # not seekable: the caller decodes from the start
        last: av.video.frame.VideoFrame | None = None
        count = 0
        # the decoder hands frames out in presentation order and is flushed at the end of
        # the file, so the last one out is the last one shown (B-frames included)
        for frame in container.decode(stream):
            last = frame  # only one frame is kept: memory stays flat on long files
            count += 1
        return last, count


def _end_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int | None:
    """Where the stream ends, in its own time base; None when the file doesn't say."""
    start = stream.start_time or 0
    if stream.duration:
        return start + stream.duration
    if container.duration:  # in microseconds (av.time_base)
        return start + int(container.duration / 1_000_000 / stream.time_base)
    return None
