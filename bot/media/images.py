"""Reference images for image-to-video: fetch a Slack file, check it, size it for the model.

Everything here runs before a job is stored, so every refusal is an InvalidRequest whose
message a Slack user can act on, and nothing has been charged when it is shown.

`prepare_image` is synchronous Pillow work (decode, resize, re-encode: up to a second for a
large photo). Async callers use `prepare_image_async`, which runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError
from slack_sdk.errors import SlackApiError

from bot.catalog import GATEWAY, OPENAI, OPENAI_SIZES, ModelSpec
from bot.errors import InvalidRequest
from bot.models import ReferenceImage

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)

MB = 1_000_000

# Download cap for a Slack file (the OpenAI data-URL limit is a 20 MB string).
MAX_DOWNLOAD_BYTES = 20 * MB
DOWNLOAD_TIMEOUT_S = 60.0
# Decoded-size cap: a 20 MB PNG can declare billions of pixels (a decompression bomb).
# 50 megapixels covers phone cameras; decoding one as RGBA takes about 200 MB.
MAX_SOURCE_PIXELS = 50_000_000
MIN_SIDE_PX = 64
# Routes that take any size: the long side is scaled down to this.
MAX_LONG_SIDE_PX = 1920
# After re-encoding. Runway takes a data URI of at most 5 MB (base64 adds a third), the
# smallest limit among the adapters, so one cap keeps every route's request under its limit.
MAX_ENCODED_BYTES = 3_700_000
_JPEG_QUALITIES = (92, 85, 75, 65)

ACCEPTED = "JPEG, PNG or WebP"
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def _parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


# The exact pixel size the Sora shape needs for each (resolution, aspect): the reference
# image must match `size` exactly or OpenAI answers 400 (reference §1.1).
TARGET_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    key: _parse_size(value) for key, value in OPENAI_SIZES.items()
}


def needs_exact_size(spec: ModelSpec) -> bool:
    """Sora models, direct (provider "openai") or through a gateway, take only exact sizes."""
    if spec.provider == OPENAI:
        return True
    return spec.provider == GATEWAY and spec.provider_model.lower().startswith("sora")


def required_size(spec: ModelSpec, resolution: str, aspect: str) -> tuple[int, int] | None:
    """(width, height) the image must have for this route; None = any size within the caps.

    InvalidRequest when the route needs an exact size but has none for this combination.
    """
    if not needs_exact_size(spec):
        return None
    size = TARGET_SIZES.get((resolution, aspect))
    if size is None:
        raise InvalidRequest(
            f"`{spec.id}` can't start from an image at {resolution} {aspect}. "
            "Try 720p at 16:9 or 9:16. Nothing was charged."
        )
    return size


# ---------------------------------------------------------------------- checking and sizing


def sniff_format(data: bytes) -> str:
    """'JPEG' | 'PNG' | 'WEBP' from the first bytes; InvalidRequest naming anything else."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    other = _other_kind(head)
    if other is not None:
        raise InvalidRequest(f"That image is a {other}; I can use {ACCEPTED} images. Nothing was charged.")
    raise InvalidRequest(
        f"That file isn't an image I can read; send a {ACCEPTED} image. Nothing was charged."
    )


def _other_kind(head: bytes) -> str | None:
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"):
        return "HEIC photo"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.lstrip().lower().startswith((b"<svg", b"<?xml")):
        return "SVG"
    return None


def prepare_image(data: bytes, *, spec: ModelSpec, resolution: str, aspect: str) -> ReferenceImage:
    """Check an uploaded image and turn it into what `spec` needs at this size.

    JPEG/PNG/WebP only; at most MAX_SOURCE_PIXELS; each side at least MIN_SIDE_PX. The EXIF
    orientation is applied and transparency flattened onto black. Exact-size routes get the
    image scaled to fit and padded with black bars to exactly `required_size` (never
    stretched); other routes get the long side capped at MAX_LONG_SIDE_PX. The result is
    PNG, or JPEG when PNG would exceed MAX_ENCODED_BYTES. Metadata (EXIF, GPS) is dropped.
    Synchronous and CPU-bound: from async code use `prepare_image_async`.
    """
    target = required_size(spec, resolution, aspect)
    if not data:
        raise InvalidRequest("That image is empty. Nothing was charged.")
    fmt = sniff_format(data)
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        raise InvalidRequest(_too_many_pixels_text(None)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        log.info("image refused: Pillow could not open a %s: %s", fmt, exc)
        raise InvalidRequest(
            f"I couldn't read that image; it may be damaged. Send a {ACCEPTED} image. Nothing was charged."
        ) from None
    with img:
        width, height = img.size
        if width * height > MAX_SOURCE_PIXELS:
            raise InvalidRequest(_too_many_pixels_text((width, height)))
        if min(width, height) < MIN_SIDE_PX:
            raise InvalidRequest(
                f"That image is only {width}×{height} pixels; send one at least "
                f"{MIN_SIDE_PX} pixels on each side. Nothing was charged."
            )
        if fmt == "JPEG":
            # decode a JPEG at a reduced scale when it is far bigger than needed (saves memory)
            bound = max(target) if target else MAX_LONG_SIDE_PX
            img.draft("RGB", (bound, bound))
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright)
        except Image.DecompressionBombError:
            raise InvalidRequest(_too_many_pixels_text((width, height))) from None
        except Exception as exc:  # Pillow raises many types on damaged data
            log.info("image refused: decoding a %s failed: %r", fmt, exc)
            raise InvalidRequest(
                "I couldn't read that whole image; it looks damaged or cut short. "
                "Try sending it again. Nothing was charged."
            ) from None
    out = _letterbox(rgb, target) if target else _cap_long_side(rgb, MAX_LONG_SIDE_PX)
    encoded, mime = _encode(out)
    return ReferenceImage(data=encoded, mime_type=mime, width=out.width, height=out.height)


async def prepare_image_async(
    data: bytes, *, spec: ModelSpec, resolution: str, aspect: str
) -> ReferenceImage:
    """`prepare_image` in a worker thread, so the event loop keeps serving Slack."""
    return await asyncio.to_thread(prepare_image, data, spec=spec, resolution=resolution, aspect=aspect)


def _too_many_pixels_text(size: tuple[int, int] | None) -> str:
    limit = f"{MAX_SOURCE_PIXELS // 1_000_000} megapixels"
    if size is None:
        return f"That image is far too large to open; the limit is {limit}. Nothing was charged."
    w, h = size
    return (
        f"That image is {w}×{h} pixels ({w * h / 1_000_000:.0f} megapixels); the limit is {limit}. "
        "Send a smaller version. Nothing was charged."
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB; transparent areas become black, like the padding."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip everything to white
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def _letterbox(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to fit inside `size` keeping the aspect, then centre on black to exactly `size`."""
    target_w, target_h = size
    scale = min(target_w / img.width, target_h / img.height)
    new_w = max(1, min(target_w, round(img.width * scale)))
    new_h = max(1, min(target_h, round(img.height * scale)))
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if img.size == size:
        return img
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(img, ((target_w - new_w) // 2, (target_h - new_h) // 2))
    return canvas


def _cap_long_side(img: Image.Image, limit: int) -> Image.Image:
    long_side = max(img.size)
    if long_side <= limit:
        return img
    scale = limit / long_side
    new_size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new_size, Image.Resampling.LANCZOS)


def _encode(img: Image.Image) -> tuple[bytes, str]:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=6)
    if buf.tell() <= MAX_ENCODED_BYTES:
        return buf.getvalue(), "image/png"
    for quality in _JPEG_QUALITIES:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        if buf.tell() <= MAX_ENCODED_BYTES:
            return buf.getvalue(), "image/jpeg"
    raise InvalidRequest(
        "That image is too detailed to send even after compressing it; try a simpler or "
        "smaller one. Nothing was charged."
    )


# ---------------------------------------------------------------------- fetching from Slack


async def fetch_slack_file(
    deps: "Deps",
    *,
    file_id: str | None = None,
    url: str | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> tuple[bytes, str]:
    """Download a Slack file with the bot token: (bytes, mime type sniffed from the bytes).

    With `url` (a file's `url_private_download` or `url_private`) that URL is fetched;
    otherwise `file_id` is resolved with `files.info`. The bot token is sent only to Slack's
    own hosts (or the configured Slack API host, for the fake). At most `max_bytes` are read.
    Non-images (by the file's mimetype, or the bytes themselves) are refused. Every refusal
    is an InvalidRequest.
    """
    token = deps.slack.token
    if not token:
        raise InvalidRequest("I can't read Slack files without a bot token. Nothing was charged.")
    if not url:
        if not file_id:
            raise InvalidRequest("I didn't get an image to use. Nothing was charged.")
        info = await _files_info(deps, file_id)
        _check_declared(info, max_bytes)
        url = info.get("url_private_download") or info.get("url_private")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(
                "Slack didn't give me a way to download that file; try uploading it again. "
                "Nothing was charged."
            )
    _check_host(url, deps.settings.slack_api_url)
    data = await _download(deps.http, url, token, max_bytes)
    if not data:
        raise InvalidRequest("That file is empty. Nothing was charged.")
    if data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        # Slack answers a file URL it won't serve with its sign-in page, not an error status
        raise InvalidRequest(
            "Slack wouldn't let me download that file (the app may lack the `files:read` "
            "permission, or the file isn't shared where I can see it). Nothing was charged."
        )
    fmt = sniff_format(data)
    return data, _MIME[fmt]


async def _files_info(deps: "Deps", file_id: str) -> dict[str, Any]:
    try:
        response = await deps.slack.files_info(file=file_id)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or exc.response.status_code)
        log.info("files.info %s failed: %s", file_id, error)
        if error == "missing_scope":
            text = "I'm not allowed to read files here (the app needs the `files:read` permission)."
        elif error in ("file_not_found", "file_deleted"):
            text = "I can't see that file; share it in a channel I'm in, then try again."
        else:
            text = f"Slack wouldn't give me that file ({error})."
        raise InvalidRequest(f"{text} Nothing was charged.") from None
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
        log.info("files.info %s failed: %r", file_id, exc)
        raise InvalidRequest("I couldn't reach Slack to get that file; try again. Nothing was charged.") from None
    info = response.get("file")
    if not isinstance(info, dict):
        raise InvalidRequest("Slack sent no details for that file; try again. Nothing was charged.")
    return info


def _check_declared(info: dict[str, Any], max_bytes: int) -> None:
    """Refuse by what files.info says, before downloading anything."""
    mimetype = str(info.get("mimetype") or "")
    if mimetype and not mimetype.startswith("image/"):
        kind = info.get("pretty_type") or info.get("filetype") or mimetype
        raise InvalidRequest(
            f"That file is a {kind}, not an image; send a {ACCEPTED} image. Nothing was charged."
        )
    size = info.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size > max_bytes:
        raise InvalidRequest(_too_big_text(size, max_bytes))


def _too_big_text(size: int | None, max_bytes: int) -> str:
    limit = _mb(max_bytes)
    shown = f"{_mb(size)} MB" if size is not None else f"over {limit} MB"
    return f"That image is {shown}; the limit is {limit} MB. Nothing was charged."


def _mb(n: int) -> str:
    value = n / MB
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _check_host(url: str, slack_api_url: str) -> None:
    """The bot token goes only to Slack (https, *.slack.com) or the configured API host."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    api = urlsplit(slack_api_url or "")
    same_as_api = (
        bool(host)
        and host == (api.hostname or "").lower()
        and parts.port == api.port
        and parts.scheme == api.scheme
    )
    slack_host = parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))
    if not (slack_host or same_as_api):
        log.warning("refused to send the bot token to %s://%s", parts.scheme, host)
        raise InvalidRequest("That link isn't a Slack file I can download. Nothing was charged.")


async def _download(http: httpx.AsyncClient, url: str, token: str, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
            # httpx drops Authorization on a redirect to another host, so following is safe
            async with http.stream(
                "GET", url, headers={"Authorization": f"Bearer {token}"}, follow_redirects=True
            ) as response:
                if response.status_code in (401, 403, 404, 410):
                    raise InvalidRequest(
                        f"Slack wouldn't let me download that file (HTTP {response.status_code}); "
                        "share it in a channel I'm in and try again. Nothing was charged."
                    )
                if response.status_code >= 400:
                    raise InvalidRequest(
                        f"Slack couldn't send that file (HTTP {response.status_code}); try again. "
                        "Nothing was charged."
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise InvalidRequest(_too_big_text(int(declared), max_bytes))
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > max_bytes:
                        raise InvalidRequest(_too_big_text(None, max_bytes))
                    chunks.append(chunk)
    except TimeoutError:
        raise InvalidRequest("Slack took too long to send that file; try again. Nothing was charged.") from None
    except httpx.HTTPError as exc:
        log.info("downloading a Slack file failed: %r", exc)
        raise InvalidRequest("I couldn't download that file from Slack; try again. Nothing was charged.") from None
    return b"".join(chunks)


async def load_slack_image(
    deps: "Deps",
    *,
    spec: ModelSpec,
    resolution: str,
    aspect: str,
    file_id: str | None = None,
    url: str | None = None,
) -> ReferenceImage:
    """fetch_slack_file + prepare_image_async, refusing models that can't take an image first."""
    if not spec.image_to_video:
        raise InvalidRequest(f"`{spec.id}` can't start from an image. Nothing was charged.")
    required_size(spec, resolution, aspect)  # refuse an impossible size before downloading
    data, _ = await fetch_slack_file(deps, file_id=file_id, url=url)
    return await prepare_image_async(data, spec=spec, resolution=resolution, aspect=aspect)
