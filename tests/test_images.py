"""Reference images: checking and sizing (bot.media.images), fetching from Slack, and the OpenAI route."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from dataclasses import replace
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image
from slack_sdk.web.async_client import AsyncWebClient

from bot.media import images
from bot.catalog import build_catalog
from bot.cli import jobs_json
from bot.errors import InvalidProviderRequest, InvalidRequest
from bot.fakes.fakeslack import FILE_DOWNLOAD, FakeSlack
from bot.lifecycle.flow import accept_request
from bot.media.images import fetch_slack_file, prepare_image, prepare_image_async, required_size
from bot.models import ReferenceImage
from bot.parsing import JobRequest
from bot.providers.gateway import GatewayProvider
from bot.providers.openai_videos import OpenAIVideosProvider
from tests.fakes.providers import (
    INPAINT_MISMATCH,
    FakeGatewayServer,
    FakeOpenAIServer,
    make_spec,
)

RED, BLUE, BLACK, WHITE = (255, 0, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255)

_openai = build_catalog(providers=["openai"])
SORA = _openai.get("sora-2")
SORA_PRO = _openai.get("sora-2-pro")
GATEWAY_SORA = build_catalog(providers=["gateway"], gateway_models=["sora-2"]).get("sora-2")
RUNWAY = build_catalog(providers=["runway"]).get("gen4.5")
SIMULATOR = build_catalog(providers=[]).get("simulator")
# a model that can't start from an image (nor extend a clip): fal's text-to-video Kling
TEXT_ONLY = build_catalog(providers=["fal"]).get("fal/fal-ai/kling-video/v3/standard/text-to-video")


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png(size: tuple[int, int], color=RED) -> bytes:
    return encode(Image.new("RGB", size, color))


def striped(size=(1000, 1000)) -> bytes:
    """Red, with the left quarter blue: shows both centring and that nothing was stretched."""
    img = Image.new("RGB", size, RED)
    img.paste(BLUE, (0, 0, size[0] // 4, size[1]))
    return encode(img)


def declared_png(width: int, height: int) -> bytes:
    """A small real PNG whose header claims another size (a decompression bomb's shape)."""
    data = bytearray(png((8, 8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def opened(ref: ReferenceImage) -> Image.Image:
    img = Image.open(io.BytesIO(ref.data))
    img.load()
    assert img.size == (ref.width, ref.height)
    assert Image.MIME[img.format] == ref.mime_type
    return img.convert("RGB")


def near(pixel, color, tol: int = 24) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, color))


# ---------------------------------------------------------------------- required_size


def test_required_size_by_route() -> None:
    assert required_size(SORA, "720p", "16:9") == (1280, 720)
    assert required_size(SORA, "720p", "9:16") == (720, 1280)
    assert required_size(SORA_PRO, "1024p", "16:9") == (1792, 1024)
    assert required_size(GATEWAY_SORA, "720p", "9:16") == (720, 1280)
    assert required_size(RUNWAY, "720p", "16:9") is None
    assert required_size(SIMULATOR, "720p", "1:1") is None
    # openai 3.57 types `size` as four values: no 1080p on the Sora shape
    assert ("1080p", "16:9") not in images.TARGET_SIZES
    with pytest.raises(InvalidRequest, match="can't start from an image at 720p 1:1"):
        required_size(SORA, "720p", "1:1")


# ---------------------------------------------------------------------- prepare_image


def test_square_image_is_padded_to_exactly_the_openai_size_without_stretching() -> None:
    ref = prepare_image(striped(), spec=SORA, resolution="720p", aspect="16:9")
    assert (ref.width, ref.height, ref.mime_type) == (1280, 720, "image/png")
    img = opened(ref)
    # 1000×1000 scales to 720×720, centred: black bars at x < 280 and x >= 1000
    for x in (0, 150, 279, 1000, 1100, 1279):
        for y in (0, 360, 719):
            assert img.getpixel((x, y)) == BLACK, (x, y)
    # the blue quarter is 180 px wide after scaling: square content, not stretched
    assert near(img.getpixel((290, 360)), BLUE) and near(img.getpixel((450, 360)), BLUE)
    assert near(img.getpixel((470, 360)), RED) and near(img.getpixel((990, 10)), RED)
    assert near(img.getpixel((640, 0)), RED) and near(img.getpixel((640, 719)), RED)


def test_portrait_target_pads_top_and_bottom() -> None:
    ref = prepare_image(png((1600, 900), WHITE), spec=SORA, resolution="720p", aspect="9:16")
    img = opened(ref)
    assert img.size == (720, 1280)
    # 1600×900 → 720×405, centred vertically: rows 437..841
    assert img.getpixel((360, 430)) == BLACK and img.getpixel((360, 850)) == BLACK
    assert near(img.getpixel((360, 440)), WHITE) and near(img.getpixel((0, 640)), WHITE)


def test_small_image_is_scaled_up_to_fit_and_exact_match_needs_no_bars() -> None:
    up = opened(prepare_image(png((320, 180), BLUE), spec=SORA, resolution="720p", aspect="16:9"))
    assert up.size == (1280, 720) and near(up.getpixel((0, 0)), BLUE)
    pro = prepare_image(png((1792, 1024)), spec=SORA_PRO, resolution="1024p", aspect="16:9")
    assert (pro.width, pro.height) == (1792, 1024)


def test_runway_keeps_its_size_within_the_caps() -> None:
    ref = prepare_image(png((800, 600)), spec=RUNWAY, resolution="720p", aspect="16:9")
    assert (ref.width, ref.height, ref.mime_type) == (800, 600, "image/png")
    wide = prepare_image(png((3000, 1000)), spec=RUNWAY, resolution="720p", aspect="16:9")
    assert (wide.width, wide.height) == (images.MAX_LONG_SIDE_PX, 640)


def test_an_image_too_big_as_png_is_sent_as_jpeg_under_the_byte_cap() -> None:
    noise = Image.frombytes("RGB", (1792, 1024), os.urandom(1792 * 1024 * 3))
    ref = prepare_image(encode(noise), spec=SORA_PRO, resolution="1024p", aspect="16:9")
    assert ref.mime_type == "image/jpeg" and (ref.width, ref.height) == (1792, 1024)
    assert len(ref.data) <= images.MAX_ENCODED_BYTES
    opened(ref)


def test_webp_and_jpeg_are_accepted() -> None:
    for fmt in ("WEBP", "JPEG"):
        data = encode(Image.new("RGB", (640, 360), RED), fmt)
        ref = prepare_image(data, spec=SORA, resolution="720p", aspect="16:9")
        assert (ref.width, ref.height) == (1280, 720)


def test_exif_rotated_jpeg_ends_upright() -> None:
    # stored 200×100, left half red; orientation 6 means "turn 90° clockwise to view"
    stored = Image.new("RGB", (200, 100), BLUE)
    stored.paste(RED, (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)

    ref = prepare_image(data, spec=RUNWAY, resolution="720p", aspect="16:9")
    img = opened(ref)
    assert img.size == (100, 200)
    assert near(img.getpixel((50, 20)), RED) and near(img.getpixel((50, 180)), BLUE)
    assert "exif" not in Image.open(io.BytesIO(ref.data)).info  # metadata (and GPS) dropped

    padded = opened(prepare_image(data, spec=SORA, resolution="720p", aspect="16:9"))
    assert padded.size == (1280, 720)  # upright 1:2 content is 360×720, centred
    assert near(padded.getpixel((640, 40)), RED) and near(padded.getpixel((640, 680)), BLUE)
    assert padded.getpixel((400, 360)) == BLACK and padded.getpixel((900, 360)) == BLACK


def test_transparency_becomes_black() -> None:
    img = Image.new("RGBA", (200, 200), (255, 255, 255, 0))
    img.paste((0, 255, 0, 255), (50, 50, 150, 150))
    out = opened(prepare_image(encode(img), spec=RUNWAY, resolution="720p", aspect="16:9"))
    assert out.getpixel((10, 10)) == BLACK and out.getpixel((100, 100)) == (0, 255, 0)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"just some notes\n" * 20, "isn't an image I can read; send a JPEG, PNG or WebP image"),
        (b"", "empty"),
        (encode(Image.new("P", (100, 100)), "GIF"), "That image is a GIF; I can use JPEG, PNG or WebP images"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "HEIC photo"),
        (png((10, 10)), "only 10×10 pixels; send one at least 64 pixels on each side"),
        (png((500, 40)), "only 500×40 pixels"),
        (declared_png(100_000, 100_000), "far too large to open; the limit is 50 megapixels"),
        (declared_png(8000, 8000), "8000×8000 pixels (64 megapixels); the limit is 50 megapixels"),
        (png((300, 300))[:120], "damaged"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "couldn't read that image"),
    ],
    ids=["text", "empty", "gif", "heic", "tiny", "thin", "bomb", "over-cap", "truncated", "corrupt"],
)
def test_refusals_are_plain_language(data: bytes, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare_image(data, spec=SORA, resolution="720p", aspect="16:9")
    message = info.value.user_message()
    assert words in message and "Nothing was charged" in message


async def test_prepare_image_async_runs_off_the_loop() -> None:
    ref = await prepare_image_async(striped(), spec=SORA, resolution="720p", aspect="16:9")
    assert (ref.width, ref.height) == (1280, 720)


# ---------------------------------------------------------------------- fetch_slack_file


def deps_for(fake: FakeSlack, *, token: str = "xoxb-test-token", transport=None) -> SimpleNamespace:
    http = httpx.AsyncClient(transport=transport) if transport else httpx.AsyncClient()
    return SimpleNamespace(
        slack=AsyncWebClient(token=token, base_url=fake.api_url),
        http=http,
        settings=SimpleNamespace(slack_api_url=fake.api_url),
    )


async def test_fetch_by_file_id_uses_files_info_and_the_bot_token(slack: FakeSlack) -> None:
    data = striped((300, 300))
    slack.add_file("F0IMG1", data, name="my cat.png", mimetype="image/png")
    deps = deps_for(slack)
    try:
        got, mime = await fetch_slack_file(deps, file_id="F0IMG1")
    finally:
        await deps.http.aclose()
    assert got == data and mime == "image/png"
    assert len(slack.calls_to("files.info")) == 1
    (download,) = slack.calls_to(FILE_DOWNLOAD)
    assert download.token == "xoxb-test-token" and "/download/" in download.params["path"]


async def test_fetch_by_url_and_the_fake_needs_the_token(slack: FakeSlack) -> None:
    data = encode(Image.new("RGB", (100, 100)), "JPEG")
    info = slack.add_file("F0IMG2", data, name="p.jpg", mimetype="image/jpeg")
    deps = deps_for(slack)
    try:
        got, mime = await fetch_slack_file(deps, url=info["url_private"])
        assert got == data and mime == "image/jpeg" and not slack.calls_to("files.info")
        # without a token Slack serves its sign-in page, status 200
        bare = await deps.http.get(info["url_private_download"])
        assert bare.status_code == 200 and bare.headers["content-type"].startswith("text/html")
    finally:
        await deps.http.aclose()
    info_api = (await AsyncWebClient(token="xoxb-x", base_url=slack.api_url).files_info(file="F0IMG2"))["file"]
    assert info_api["url_private_download"] == info["url_private_download"] and info_api["size"] == len(data)


async def test_a_sign_in_page_instead_of_the_file_is_refused(slack: FakeSlack) -> None:
    info = slack.add_file("F0IMG3", png((100, 100)), name="a.png", mimetype="image/png")
    deps = deps_for(slack, token="not-a-bot-token")
    try:
        with pytest.raises(InvalidRequest, match="files:read"):
            await fetch_slack_file(deps, url=info["url_private_download"])
    finally:
        await deps.http.aclose()


async def test_over_the_cap_is_refused_before_downloading(slack: FakeSlack) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(21 * images.MB)
    info = slack.add_file("F0BIG", big, name="huge.png", mimetype="image/png")
    deps = deps_for(slack)
    try:
        with pytest.raises(InvalidRequest, match=r"That image is 21 MB; the limit is 20 MB\."):
            await fetch_slack_file(deps, file_id="F0BIG")
        assert not slack.calls_to(FILE_DOWNLOAD)  # files.info's size was enough
        with pytest.raises(InvalidRequest, match=r"That image is 21 MB; the limit is 20 MB\."):
            await fetch_slack_file(deps, url=info["url_private_download"])  # Content-Length
    finally:
        await deps.http.aclose()


async def test_the_byte_cap_holds_without_a_content_length(slack: FakeSlack) -> None:
    url = slack.base_url + "/files-pri/T0001-F0X/download/x.png"

    async def endless():
        yield b"\x89PNG\r\n\x1a\n"
        while True:
            yield bytes(256 * 1024)

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=endless(), headers={"content-type": "image/png"})

    deps = deps_for(slack, transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(InvalidRequest, match=r"That image is over 2 MB; the limit is 2 MB\."):
            await fetch_slack_file(deps, url=url, max_bytes=2 * images.MB)
    finally:
        await deps.http.aclose()
    assert seen[0].headers["authorization"] == "Bearer xoxb-test-token"


async def test_the_token_goes_only_to_slack(slack: FakeSlack) -> None:
    seen: list[httpx.Request] = []
    deps = deps_for(slack, transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200)))
    try:
        for url in ("https://evil.example/files-pri/x/a.png", "http://files.slack.com/a.png",
                    "https://slack.com.evil.example/a.png"):
            with pytest.raises(InvalidRequest, match="isn't a Slack file"):
                await fetch_slack_file(deps, url=url)
    finally:
        await deps.http.aclose()
    assert seen == []


@pytest.mark.parametrize(
    ("data", "mimetype", "words"),
    [
        (b"meeting notes", "text/plain", "That file is a Plain Text, not an image"),
        (b"<html>hi</html>", "image/png", "wouldn't let me download"),
        (encode(Image.new("P", (80, 80)), "GIF"), "image/gif", "That image is a GIF"),
        (b"not really a png", "image/png", "isn't an image I can read"),
    ],
    ids=["text", "html", "gif", "lying-mimetype"],
)
async def test_non_images_are_refused(slack: FakeSlack, data: bytes, mimetype: str, words: str) -> None:
    slack.add_file("F0BAD", data, name="x", mimetype=mimetype)
    deps = deps_for(slack)
    try:
        with pytest.raises(InvalidRequest, match=words):
            await fetch_slack_file(deps, file_id="F0BAD")
    finally:
        await deps.http.aclose()


async def test_unknown_file_and_slack_errors(slack: FakeSlack) -> None:
    deps = deps_for(slack)
    try:
        with pytest.raises(InvalidRequest, match="share it in a channel I'm in"):
            await fetch_slack_file(deps, file_id="F0NOPE")
        slack.fail_next("files.info", error="missing_scope")
        with pytest.raises(InvalidRequest, match="files:read"):
            await fetch_slack_file(deps, file_id="F0NOPE")
        slack.add_file("F0OK", png((100, 100)), name="a.png", mimetype="image/png")
        slack.fail_next(FILE_DOWNLOAD, status=404, error="file_not_found")
        with pytest.raises(InvalidRequest, match="HTTP 404"):
            await fetch_slack_file(deps, file_id="F0OK")
    finally:
        await deps.http.aclose()


async def test_load_slack_image_fetches_and_sizes(make_bot, slack: FakeSlack) -> None:
    bot = await make_bot()
    slack.add_file("F0L", striped((400, 400)), name="a.png", mimetype="image/png")
    ref = await images.load_slack_image(bot.deps, spec=RUNWAY, resolution="720p", aspect="16:9", file_id="F0L")
    assert (ref.width, ref.height) == (400, 400)
    assert not TEXT_ONLY.image_to_video
    with pytest.raises(InvalidRequest, match="can't start from an image"):
        await images.load_slack_image(bot.deps, spec=TEXT_ONLY, resolution="720p", aspect="16:9", file_id="F0L")


# ---------------------------------------------------------------------- the fakes and the adapter


async def test_openai_fake_refuses_an_image_of_the_wrong_size() -> None:
    async with FakeOpenAIServer() as server:
        provider = OpenAIVideosProvider(server.base_url, server.api_key)
        try:
            wrong = ReferenceImage(png((1000, 1000)), "image/png", 1000, 1000)
            with pytest.raises(InvalidProviderRequest) as info:
                await provider.submit(replace(make_spec("a kite"), image=wrong))
            assert INPAINT_MISMATCH in info.value.detail
            assert server.submits == [] and server.create_attempts[-1]["refused"] == "input_reference"

            right = prepare_image(striped(), spec=SORA, resolution="720p", aspect="16:9")
            await provider.submit(replace(make_spec("a kite"), image=right))
            sent = server.submits[-1]
            assert sent["_image_size"] == (1280, 720)
            assert sent["input_reference"]["image_url"].startswith("data:image/png;base64,")
            await provider.submit(make_spec("no image"))
            assert "input_reference" not in server.submits[-1]
        finally:
            await provider.aclose()


async def test_gateway_fake_records_an_image() -> None:
    async with FakeGatewayServer() as server, httpx.AsyncClient() as http:
        uri = "data:image/png;base64," + base64.b64encode(png((300, 200))).decode()
        headers = {"Authorization": f"Bearer {server.api_key}"}
        body = {"model": "sora-2", "prompt": "p", "duration": 8, "image": uri}
        ok = await http.post(f"{server.base_url}/videos/generations", json=body, headers=headers)
        assert ok.status_code == 200 and server.submits[-1]["_image_size"] == (300, 200)
        assert server.submits[-1]["image"] == uri
        bad = await http.post(f"{server.base_url}/videos/generations", json={**body, "image": "data:image/png;base64,AAAA"},
                              headers=headers)
        assert bad.status_code == 400 and len(server.submits) == 1


# ---------------------------------------------------------------------- through the real app


def _request(catalog, model: str, **kw) -> JobRequest:
    values = {"prompt": "the photo comes alive", "model": model, "duration_s": 8,
              "resolution": "720p", "aspect_ratio": "16:9", **kw}
    return JobRequest.model_validate(values, context={"catalog": catalog})


async def test_an_image_job_reaches_openai_at_exactly_the_required_size(make_bot, slack: FakeSlack) -> None:
    async with FakeOpenAIServer(run_seconds=0.3) as server:
        provider = OpenAIVideosProvider(server.base_url, server.api_key)
        bot = await make_bot(providers={"openai": provider}, include_simulator=False,
                             sora_default_model="sora-2")
        catalog = bot.deps.catalog
        # The catalog does not mark Sora as image-capable; the OpenAI contract allows it (§1.1).
        if not catalog.get("sora-2").image_to_video:
            catalog.models["sora-2"] = replace(catalog.get("sora-2"), image_to_video=True)
        spec = catalog.get("sora-2")

        slack.add_file("F0CAT", striped(), name="cat.png", mimetype="image/png")
        data, _ = await fetch_slack_file(bot.deps, file_id="F0CAT")
        prepared = await prepare_image_async(data, spec=spec, resolution="720p", aspect="16:9")
        job, created = await accept_request(
            bot.deps, _request(catalog, "sora-2"), user_id="U1", team_id="T0001",
            channel_id="C1", source="command", image=prepared,
        )
        assert created
        await bot.runtime.poller.idle(20)
        await provider.aclose()

    (row,) = json.loads(await jobs_json(bot.deps.db))
    assert row["id"] == job.id and row["status"] == "succeeded", row
    (sent,) = server.submits
    assert sent["size"] == "1280x720" and sent["_image_size"] == (1280, 720)
    b64 = sent["input_reference"]["image_url"].split(",", 1)[1]
    assert base64.b64decode(b64) == prepared.data


async def test_a_model_without_image_support_refuses_before_any_reservation(make_bot) -> None:
    # Sora 2 through a gateway can't start from an image (the simulator can)
    async with FakeGatewayServer(run_seconds=0.3) as server, httpx.AsyncClient() as client:
        bot = await make_bot(providers={"gateway": GatewayProvider(server.base_url, server.api_key, client=client)},
                             include_simulator=False, video_gateway_models="sora-2", sora_default_model="sora-2")
        catalog = bot.deps.catalog
        assert not catalog.get("sora-2").image_to_video
        prepared = prepare_image(striped(), spec=RUNWAY, resolution="720p", aspect="16:9")
        with pytest.raises(InvalidRequest, match="can't start from an image") as info:
            await accept_request(bot.deps, _request(catalog, "sora-2"), user_id="U1", team_id="T0001",
                                 channel_id="C1", source="command", image=prepared)
        assert "Nothing was charged" in info.value.user_message()
        assert json.loads(await jobs_json(bot.deps.db)) == []
        assert (await bot.deps.db.fetchall("SELECT COUNT(*) FROM ledger"))[0][0] == 0
        stored = bot.deps.media_dir / "images"
        assert not stored.exists() or not any(stored.iterdir())
        assert server.create_attempts == []
