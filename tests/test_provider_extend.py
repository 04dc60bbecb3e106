"""Native extension (a long video's later segments): the Veo and Gemini Omni adapters' extension
requests, the fakes' checks and results (real MP4s encoded here with PyAV), and google-genai
3.6.1's own converter and client against the same fakes, so what the fakes accept is checked
by something this project didn't write."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from bot.errors import InvalidProviderRequest
from bot.models import ProviderState, ReferenceImage, VideoSpec
from bot.providers.gemini import GeminiProvider, build_interaction_request
from bot.providers.veo import VeoProvider, build_predict_request
from tests.fakes.gemini import FakeGeminiServer
from tests.fakes.google_agent import FakeAgentPlatformServer, make_veo_provider, mp4_seconds
from tests.fakes.providers import poll_until_terminal

RUN_S = 0.05
RATE = 24
VEO_MODEL = "veo-3.1-generate-001"
OMNI_MODEL = "gemini-omni-1.2-flash"
PNG = ReferenceImage(
    data=b"\x89PNG\r\n\x1a\n" + b"\0" * 32, mime_type="image/png", width=1280, height=720
)


# --- real MP4s ------------------------------------------------------------------------------


def encode_mp4(seconds: float, *, luma: int = 90, size: tuple[int, int] = (64, 36)) -> bytes:
    """A small H.264 MP4 of `seconds` at 24 fps (its `mvhd` says its length)."""
    buf = io.BytesIO()
    width, height = size
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * RATE)):
            frame = av.VideoFrame(width, height, "yuv420p")
            for n, value in enumerate((luma, 128, 128)):
                frame.planes[n].update(bytes([value]) * frame.planes[n].buffer_size)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def decoded_seconds(data: bytes) -> float:
    """The length PyAV reads from the file's frames (not the fakes' own `mvhd` parser)."""
    with av.open(io.BytesIO(data)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return frames / RATE


def veo_result(server: FakeAgentPlatformServer):
    """`make_video` for the Veo fake: a clip of durationSeconds, or the input's length + 7 s."""

    def make(body: dict[str, Any]) -> bytes:
        source = server.input_video(body)
        if source is None:
            return encode_mp4(body.get("parameters", {}).get("durationSeconds", 8))
        seconds = mp4_seconds(source)
        assert seconds is not None
        return encode_mp4(seconds + 7)

    return make


def omni_result(server: FakeGeminiServer):
    """`make_video` for the Gemini fake: a clip of `duration`, or the input's + `duration`."""

    def make(body: dict[str, Any]) -> bytes:
        asked = int(body["response_format"]["duration"].removesuffix("s"))
        source = server.input_video(body)
        if source is None:
            return encode_mp4(asked)
        seconds = mp4_seconds(source)
        assert seconds is not None
        return encode_mp4(seconds + asked)

    return make


def write_mp4(path: Path, seconds: float) -> Path:
    path.write_bytes(encode_mp4(seconds))
    return path


# --- specs and fixtures ---------------------------------------------------------------------


def veo_spec(prompt: str, *, extend_video: Path | None = None, extend_from_job: str | None = None,
             duration_s: int = 8, **kw: Any) -> VideoSpec:
    return VideoSpec(
        model="veo-3.1", provider_model=kw.pop("provider_model", VEO_MODEL), prompt=prompt,
        duration_s=duration_s, resolution=kw.pop("resolution", "720p"),
        aspect_ratio=kw.pop("aspect_ratio", "16:9"), external_id="job-1",
        extend_video=extend_video, extend_from_job=extend_from_job, **kw,
    )


def omni_spec(prompt: str, *, extend_video: Path | None = None, extend_from_job: str | None = None,
              duration_s: int = 8, **kw: Any) -> VideoSpec:
    return VideoSpec(
        model="gemini-omni-flash", provider_model=OMNI_MODEL, prompt=prompt, duration_s=duration_s,
        resolution=kw.pop("resolution", "720p"), aspect_ratio=kw.pop("aspect_ratio", "16:9"),
        external_id="job-1", extend_video=extend_video, extend_from_job=extend_from_job, **kw,
    )


@pytest.fixture
async def veo_server() -> AsyncIterator[FakeAgentPlatformServer]:
    async with FakeAgentPlatformServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def veo(veo_server: FakeAgentPlatformServer) -> AsyncIterator[VeoProvider]:
    provider = make_veo_provider(veo_server)
    yield provider
    await provider.aclose()


@pytest.fixture
async def omni_server() -> AsyncIterator[FakeGeminiServer]:
    async with FakeGeminiServer(run_seconds=RUN_S) as srv:
        yield srv


@pytest.fixture
async def omni(omni_server: FakeGeminiServer) -> AsyncIterator[GeminiProvider]:
    provider = GeminiProvider(omni_server.api_key, base_url=omni_server.base_url)
    yield provider
    await provider.aclose()


async def make_segment(provider: Any, spec: VideoSpec, dest: Path) -> str:
    """Submit, poll to the end, download to `dest`; the provider job id."""
    job_id = await provider.submit(spec)
    seen = await poll_until_terminal(provider, job_id)
    assert seen[-1].state is ProviderState.SUCCEEDED, seen[-1]
    await provider.download(job_id, seen[-1].video_url, dest)
    return job_id


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


# --- Veo: the adapter's request --------------------------------------------------------------


async def test_a_veo_extension_sends_the_video_as_instances_video_without_a_duration(
    veo_server: FakeAgentPlatformServer, veo: VeoProvider, tmp_path: Path
) -> None:
    clip = write_mp4(tmp_path / "so-far.mp4", 8)
    request = veo_spec("the kite climbs higher", extend_video=clip,
                       extend_from_job="projects/p/locations/l/operations/1", duration_s=7,
                       resolution="1080p", audio=True)
    body = build_predict_request(request)
    assert body == {
        "instances": [{
            "prompt": "the kite climbs higher",
            "video": {"bytesBase64Encoded": b64(clip), "mimeType": "video/mp4"},
        }],
        "parameters": {"sampleCount": 1, "aspectRatio": "16:9", "resolution": "1080p", "generateAudio": True},
    }
    name = await veo.submit(request)
    assert veo_server.submits == [body]
    assert veo_server.jobs[name].extra["input_seconds"] == 8.0


async def test_a_veo_chain_of_extensions_delivers_the_whole_video_each_time(
    veo_server: FakeAgentPlatformServer, veo: VeoProvider, tmp_path: Path
) -> None:
    veo_server.make_video = veo_result(veo_server)
    first = tmp_path / "seg0.mp4"
    job = await make_segment(veo, veo_spec("a kite on a beach"), first)
    assert decoded_seconds(first.read_bytes()) == 8
    previous = first
    for n, total in ((1, 15), (2, 22)):
        out = tmp_path / f"seg{n}.mp4"
        job = await make_segment(
            veo, veo_spec("the kite climbs", extend_video=previous, extend_from_job=job, duration_s=7), out
        )
        assert decoded_seconds(out.read_bytes()) == total  # input + 7 s, as one file
        assert veo_server.submits[-1]["instances"][0]["video"]["bytesBase64Encoded"] == b64(previous)
        previous = out


async def test_a_veo_extension_of_a_gcs_result_sends_its_location_not_its_bytes(
    veo_server: FakeAgentPlatformServer, veo: VeoProvider, tmp_path: Path
) -> None:
    veo_server.make_video = veo_result(veo_server)
    first = tmp_path / "seg0.mp4"
    job = await make_segment(veo, veo_spec("[gcs] a kite on a beach"), first)
    out = tmp_path / "seg1.mp4"
    await make_segment(veo, veo_spec("the kite climbs", extend_video=first, extend_from_job=job,
                                     duration_s=7), out)
    sent = veo_server.submits[-1]["instances"][0]["video"]
    assert sent == {"gcsUri": veo_server.gcs_uri(veo_server.jobs[job]), "mimeType": "video/mp4"}
    assert decoded_seconds(out.read_bytes()) == 15

    # a fresh adapter (after a restart) has not seen that location: it sends the bytes
    again = make_veo_provider(veo_server)
    try:
        await again.submit(veo_spec("the kite climbs", extend_video=first, extend_from_job=job, duration_s=7))
    finally:
        await again.aclose()
    assert veo_server.submits[-1]["instances"][0]["video"] == {
        "bytesBase64Encoded": b64(first), "mimeType": "video/mp4"
    }


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"duration_s": 8}, "7 seconds"),
        ({"image": PNG}, "image"),
        ({"extend_video": None}, "missing"),  # only the job id, and no gcsUri seen for it
        ({"extend_video": Path("/nonexistent/seg0.mp4")}, "could not be read"),
        ({"resolution": "4k", "provider_model": "veo-3.1-lite-generate-001"}, "4k"),
        ({"aspect_ratio": "1:1"}, "16:9"),
    ],
)
async def test_a_veo_extension_it_cannot_make_is_refused_before_sending(
    veo_server: FakeAgentPlatformServer, veo: VeoProvider, tmp_path: Path,
    change: dict[str, Any], words: str,
) -> None:
    options: dict[str, Any] = {"extend_video": write_mp4(tmp_path / "in.mp4", 8),
                               "extend_from_job": "projects/p/x/operations/1", "duration_s": 7}
    options.update(change)
    with pytest.raises(InvalidProviderRequest) as caught:
        await veo.submit(veo_spec("more", **options))
    assert words in caught.value.message
    assert veo_server.create_attempts == []


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 17, 18, 1000])
def test_the_video_is_encoded_piece_by_piece_exactly_as_in_one_go(tmp_path: Path, size: int) -> None:
    from bot.providers.http import file_base64

    path = tmp_path / "v.mp4"
    data = bytes(range(256)) * 4
    path.write_bytes(data[:size])
    if size == 0:
        with pytest.raises(InvalidProviderRequest, match="empty"):
            file_base64(path, chunk=6)
    else:
        assert file_base64(path, chunk=6) == base64.b64encode(data[:size]).decode()


# --- Veo: what the fake refuses, as the service would ------------------------------------------


def _veo_body(video: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    return {"instances": [{"prompt": "more", "video": video}],
            "parameters": {"sampleCount": 1, **parameters}}


async def _post_veo(server: FakeAgentPlatformServer, body: dict[str, Any], model: str = VEO_MODEL) -> httpx.Response:
    token = server.issue_token()
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{server.base_url}/{server.model_path(model)}:predictLongRunning", json=body,
            headers={"Authorization": f"Bearer {token}"},
        )


def _inline(data: bytes, mime: str = "video/mp4") -> dict[str, Any]:
    return {"bytesBase64Encoded": base64.b64encode(data).decode(), "mimeType": mime}


VEO_REFUSED = {
    "a QuickTime video": (lambda: _veo_body(_inline(encode_mp4(8), "video/quicktime")), "video/mp4"),
    "no mimeType": (lambda: _veo_body({"bytesBase64Encoded": base64.b64encode(encode_mp4(8)).decode()}), "video/mp4"),
    "bytes not base64": (lambda: _veo_body({"bytesBase64Encoded": "not base64!", "mimeType": "video/mp4"}), "base64"),
    "an unknown field": (lambda: _veo_body({**_inline(encode_mp4(8)), "fps": 24}), "unknown"),
    "an image beside it": (
        lambda: {"instances": [{"prompt": "x", "video": _inline(encode_mp4(8)),
                                "image": {"bytesBase64Encoded": base64.b64encode(PNG.data).decode(),
                                          "mimeType": "image/png"}}]},
        "not both",
    ),
    "durationSeconds 8": (lambda: _veo_body(_inline(encode_mp4(8)), durationSeconds=8), "durationSeconds"),
    "an input of 31 s": (lambda: _veo_body(_inline(encode_mp4(31))), "31.0 s"),
    "an unknown gcsUri": (lambda: _veo_body({"gcsUri": "gs://fake-veo-output/veo/none/sample_0.mp4",
                                            "mimeType": "video/mp4"}), "not found"),
}


@pytest.mark.parametrize("name", list(VEO_REFUSED))
async def test_the_veo_fake_refuses_an_extension_the_service_would(
    veo_server: FakeAgentPlatformServer, name: str
) -> None:
    make_body, words = VEO_REFUSED[name]
    good = await _post_veo(veo_server, _veo_body(_inline(encode_mp4(8)), durationSeconds=7))
    assert good.status_code == 200, good.text  # 7 is the one length it takes
    bad = await _post_veo(veo_server, make_body())
    assert bad.status_code == 400, bad.text
    assert words in bad.json()["error"]["message"]
    assert len(veo_server.submits) == 1


async def test_the_veo_fake_still_refuses_a_1080p_clip_that_is_not_8_seconds(
    veo_server: FakeAgentPlatformServer,
) -> None:
    """The extension's exemption from the 8-second rule is for extensions only."""
    bad = await _post_veo(veo_server, {"instances": [{"prompt": "x"}],
                                       "parameters": {"durationSeconds": 6, "resolution": "1080p"}})
    assert bad.status_code == 400 and "8 second" in bad.text
    ok = await _post_veo(veo_server, _veo_body(_inline(encode_mp4(8)), resolution="1080p"))
    assert ok.status_code == 200, ok.text


# --- Veo: google-genai 3.6.1 checks the shape and drives the fake -----------------------------


def veo_sdk_body(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """What google-genai's own converter sends for the same extension, its types strict."""
    pytest.importorskip("google.genai.types")
    from tests.test_provider_veo import sdk_body

    return sdk_body(model, body)


@pytest.mark.parametrize("gcs", [False, True], ids=["bytes", "gcsUri"])
def test_the_veo_extension_body_is_what_google_genai_would_send(tmp_path: Path, gcs: bool) -> None:
    clip = write_mp4(tmp_path / "in.mp4", 8)
    request = veo_spec("the kite climbs", extend_video=clip, extend_from_job="op", duration_s=7, audio=False)
    body = build_predict_request(request, video_gcs_uri="gs://b/veo/1/sample_0.mp4" if gcs else None)
    assert veo_sdk_body(VEO_MODEL, body) == body


async def test_google_genai_extends_a_video_on_the_veo_fake(veo_server: FakeAgentPlatformServer) -> None:
    genai_types = pytest.importorskip("google.genai.types")
    from tests.test_provider_veo import _sdk_until_done, sdk_client

    veo_server.make_video = veo_result(veo_server)
    client = sdk_client(veo_server)
    first = await _sdk_until_done(client, await client.aio.models.generate_videos(
        model=VEO_MODEL, source=genai_types.GenerateVideosSource(prompt="a kite on a beach"),
        config=genai_types.GenerateVideosConfig(duration_seconds=8, output_gcs_uri="gs://fake-veo-output/veo/"),
    ))
    first_video = first.response.generated_videos[0].video
    assert first_video.uri is not None

    # extend by location (the SDK's Video(uri=…)), then that result by its bytes
    by_uri = await _sdk_until_done(client, await client.aio.models.generate_videos(
        model=VEO_MODEL,
        source=genai_types.GenerateVideosSource(
            prompt="the kite climbs", video=genai_types.Video(uri=first_video.uri, mime_type="video/mp4")),
    ))
    fifteen = by_uri.response.generated_videos[0].video.video_bytes
    assert decoded_seconds(fifteen) == 15
    by_bytes = await _sdk_until_done(client, await client.aio.models.generate_videos(
        model=VEO_MODEL,
        source=genai_types.GenerateVideosSource(
            prompt="and dips", video=genai_types.Video(video_bytes=fifteen, mime_type="video/mp4")),
        config=genai_types.GenerateVideosConfig(aspect_ratio="16:9", resolution="720p"),
    ))
    assert decoded_seconds(by_bytes.response.generated_videos[0].video.video_bytes) == 22
    sent = veo_server.submits[-1]
    assert sent["instances"][0]["video"] == {
        "bytesBase64Encoded": base64.b64encode(fifteen).decode(), "mimeType": "video/mp4"
    }
    assert "durationSeconds" not in sent["parameters"]


# --- Gemini Omni: the adapter's request --------------------------------------------------------


async def test_an_omni_extension_sends_the_video_as_an_input_block_with_task_extend(
    omni_server: FakeGeminiServer, omni: GeminiProvider, tmp_path: Path
) -> None:
    clip = write_mp4(tmp_path / "so-far.mp4", 8)
    request = omni_spec("the kite climbs higher", extend_video=clip, extend_from_job="v1_prev", duration_s=6)
    body = build_interaction_request(request)
    assert body == {
        "model": OMNI_MODEL,
        "input": [{"type": "user_input", "content": [
            {"type": "text", "text": "the kite climbs higher"},
            {"type": "video", "data": b64(clip), "mime_type": "video/mp4"},
        ]}],
        "background": True,
        "store": True,
        "response_format": {"type": "video", "aspect_ratio": "16:9", "resolution": "720p",
                            "duration": "6s", "delivery": "uri"},
        "generation_config": {"video_config": {"task": "extend"}},
    }
    from tests.test_provider_gemini import _sdk_refusals

    assert _sdk_refusals(body) == []
    job_id = await omni.submit(request)
    assert omni_server.submits == [body]
    extra = omni_server.jobs[job_id].extra
    assert (extra["input_seconds"], extra["added_seconds"]) == (8.0, 6)


async def test_an_omni_chain_of_extensions_delivers_the_whole_video_each_time(
    omni_server: FakeGeminiServer, omni: GeminiProvider, tmp_path: Path
) -> None:
    omni_server.make_video = omni_result(omni_server)
    first = tmp_path / "seg0.mp4"
    job = await make_segment(omni, omni_spec("a kite on a beach"), first)
    assert decoded_seconds(first.read_bytes()) == 8
    previous = first
    for n, (added, total) in enumerate(((10, 18), (3, 21)), start=1):
        out = tmp_path / f"seg{n}.mp4"
        job = await make_segment(
            omni, omni_spec("the kite climbs", extend_video=previous, extend_from_job=job, duration_s=added), out
        )
        assert decoded_seconds(out.read_bytes()) == total
        assert "previous_interaction_id" not in omni_server.submits[-1]
        previous = out


async def test_without_the_file_an_omni_extension_names_the_previous_interaction(
    omni_server: FakeGeminiServer, omni: GeminiProvider, tmp_path: Path
) -> None:
    omni_server.make_video = omni_result(omni_server)
    job = await make_segment(omni, omni_spec("a kite on a beach"), tmp_path / "seg0.mp4")
    out = tmp_path / "seg1.mp4"
    await make_segment(omni, omni_spec("the kite climbs", extend_from_job=job, duration_s=7), out)
    sent = omni_server.submits[-1]
    assert (sent["previous_interaction_id"], sent["input"]) == (job, "the kite climbs")
    assert sent["generation_config"] == {"video_config": {"task": "extend"}}
    from tests.test_provider_gemini import _sdk_refusals

    assert _sdk_refusals(sent) == []
    assert decoded_seconds(out.read_bytes()) == 15


@pytest.mark.parametrize(
    ("change", "words"),
    [({"duration_s": 11}, "3 to 10"), ({"duration_s": 2}, "3 to 10"), ({"image": PNG}, "image"),
     ({"extend_video": Path("/nonexistent/seg0.mp4")}, "could not be read"),
     ({"resolution": "480p"}, "480p")],
)
async def test_an_omni_extension_it_cannot_make_is_refused_before_sending(
    omni_server: FakeGeminiServer, omni: GeminiProvider, tmp_path: Path, change: dict[str, Any], words: str
) -> None:
    options: dict[str, Any] = {"extend_video": write_mp4(tmp_path / "in.mp4", 8), "extend_from_job": "v1_x",
                               "duration_s": 7}
    options.update(change)
    with pytest.raises(InvalidProviderRequest) as caught:
        await omni.submit(omni_spec("more", **options))
    assert words in caught.value.message
    assert omni_server.create_attempts == []


# --- Gemini Omni: what the fake refuses --------------------------------------------------------


def _omni_body(*blocks: dict[str, Any], duration: str = "7s", **top: Any) -> dict[str, Any]:
    return {"model": OMNI_MODEL,
            "input": [{"type": "user_input", "content": [{"type": "text", "text": "more"}, *blocks]}],
            "background": True, "store": True,
            "response_format": {"type": "video", "duration": duration, "delivery": "uri"},
            "generation_config": {"video_config": {"task": "extend"}}, **top}


def _video_block(data: bytes, mime: str = "video/mp4") -> dict[str, Any]:
    return {"type": "video", "data": base64.b64encode(data).decode(), "mime_type": mime}


OMNI_REFUSED = {
    "no video and no previous interaction": (lambda: _omni_body(), "needs a video"),
    "an unknown previous interaction": (lambda: _omni_body(previous_interaction_id="v1_nope"), "no such"),
    "a Matroska video": (lambda: _omni_body(_video_block(encode_mp4(8), "video/x-matroska")), "mime_type"),
    "video data not base64": (lambda: _omni_body({"type": "video", "data": "no!", "mime_type": "video/mp4"}), "base64"),
    "two videos": (lambda: _omni_body(_video_block(encode_mp4(4)), _video_block(encode_mp4(4))), "one video"),
    "an image instead": (
        lambda: _omni_body({"type": "image", "data": base64.b64encode(PNG.data).decode(), "mime_type": "image/png"}),
        "not an image",
    ),
    "11 s added": (lambda: _omni_body(_video_block(encode_mp4(8)), duration="11s"), "3s to 10s"),
    "past 30 s in all": (lambda: _omni_body(_video_block(encode_mp4(24)), duration="7s"), "31.0 s"),
}


@pytest.mark.parametrize("name", list(OMNI_REFUSED))
async def test_the_omni_fake_refuses_an_extension_the_service_would(
    omni_server: FakeGeminiServer, name: str
) -> None:
    make_body, words = OMNI_REFUSED[name]
    async with httpx.AsyncClient() as client:
        headers = {"x-goog-api-key": omni_server.api_key}
        good = await client.post(f"{omni_server.base_url}/interactions",
                                 json=_omni_body(_video_block(encode_mp4(20)), duration="10s"), headers=headers)
        bad = await client.post(f"{omni_server.base_url}/interactions", json=make_body(), headers=headers)
    assert good.status_code == 200, good.text
    assert bad.status_code == 400, bad.text
    assert words in bad.json()["error"]["message"]
    assert len(omni_server.submits) == 1


# --- Gemini Omni: google-genai 3.6.1 sends the extension and reads the result -----------------


async def test_google_genai_sends_the_same_omni_extension_body_and_reads_the_result(
    omni_server: FakeGeminiServer, tmp_path: Path
) -> None:
    genai = pytest.importorskip("google.genai")
    gtypes = pytest.importorskip("google.genai.types")

    omni_server.make_video = omni_result(omni_server)
    clip = write_mp4(tmp_path / "so-far.mp4", 8)
    ours = build_interaction_request(omni_spec("the kite climbs", extend_video=clip, duration_s=5))
    client = genai.Client(api_key=omni_server.api_key, http_options=gtypes.HttpOptions(base_url=omni_server.origin))
    # the SDK's documented call: a list of content blocks, which it wraps in one user_input step
    created = await client.aio.interactions.create(
        model=OMNI_MODEL,
        input=[{"type": "text", "text": "the kite climbs"},
               {"type": "video", "data": b64(clip), "mime_type": "video/mp4"}],
        background=True,
        store=True,
        response_format={"type": "video", "aspect_ratio": "16:9", "resolution": "720p", "duration": "5s",
                         "delivery": "uri"},
        generation_config={"video_config": {"task": "extend"}},
    )
    assert omni_server.submits == [ours]  # byte for byte what the adapter sends
    async with asyncio.timeout(5):
        while (got := await client.aio.interactions.get(created.id)).status != "completed":
            await asyncio.sleep(0.02)
    video = got.output_video
    assert video is not None and video.uri is not None and video.data is None
    file_name = "files/" + video.uri.split("files/", 1)[1].split(":", 1)[0]
    assert decoded_seconds(await client.aio.files.download(file=file_name)) == 13

    # and by reference: previous_interaction_id, as the adapter sends it without the file
    chained = await client.aio.interactions.create(
        model=OMNI_MODEL, input="and dips", previous_interaction_id=created.id, background=True, store=True,
        response_format={"type": "video", "aspect_ratio": "16:9", "resolution": "720p", "duration": "4s",
                         "delivery": "uri"},
        generation_config={"video_config": {"task": "extend"}},
    )
    assert omni_server.submits[-1] == build_interaction_request(
        omni_spec("and dips", extend_from_job=created.id, duration_s=4)
    )
    assert omni_server.jobs[chained.id].extra["input_seconds"] == 13.0
