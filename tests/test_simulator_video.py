"""The simulator's downloads are real MP4 clips: decodable, the asked length, one colour per job,
joinable into a long video; `[flaky]` fails a job's first render only; old job ids still work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

av = pytest.importorskip("av")

from bot.errors import InvalidProviderRequest, ResultExpired  # noqa: E402
from bot.models import FailureKind, ProviderState, ReferenceImage  # noqa: E402
from bot.providers.simulator import FPS, SimulatorProvider  # noqa: E402
from bot.media.video_frames import last_frame_png  # noqa: E402
from bot.media.video_join import join_segments  # noqa: E402
from tests.fakes.providers import make_spec  # noqa: E402


def frames_of(path: Path) -> list[tuple[int, int, int, int, int]]:
    """(width, height, Y, U, V) at the centre of every frame, decoding the whole file."""
    out = []
    with av.open(str(path)) as c:
        assert not c.streams.audio
        for f in c.decode(video=0):
            y, u, v = (bytes(p)[(p.height // 2) * p.line_size + p.width // 2] for p in f.planes[:3])
            out.append((f.width, f.height, y, u, v))
    return out


async def _done(sim: SimulatorProvider, prompt: str, *, seconds: int = 8, external_id: str = "job-1") -> str:
    """Submit and return the job id once the (instant) render has finished successfully."""
    job_id = await sim.submit(make_spec(prompt, model="simulator", duration_s=seconds, external_id=external_id))
    status = await sim.poll(job_id)
    assert status.state is ProviderState.SUCCEEDED, status
    return job_id


@pytest.mark.parametrize("seconds", [4, 8, 20])
async def test_a_download_is_an_h264_clip_of_exactly_the_asked_length(tmp_path: Path, seconds: int) -> None:
    sim = SimulatorProvider(run_seconds=0)
    job_id = await _done(sim, "a fox", seconds=seconds)
    dest = tmp_path / "clip.mp4.part"  # the caller downloads to a .part path and renames
    await sim.download(job_id, (await sim.poll(job_id)).video_url, dest)
    with av.open(str(dest)) as c:
        (stream,) = c.streams.video
        assert stream.codec_context.name == "h264" and stream.codec_context.format.name == "yuv420p"
        assert stream.average_rate == FPS
        assert abs(c.duration / 1_000_000 - seconds) < 1 / FPS
    frames = frames_of(dest)
    assert len(frames) == seconds * FPS
    assert {f[:2] for f in frames} == {(160, 90)}
    assert len({f[2:] for f in frames}) == 1  # one plain colour throughout
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4.part"]  # no temporary file left


async def test_two_jobs_differ_and_one_job_always_gives_the_same_bytes(tmp_path: Path) -> None:
    sim = SimulatorProvider(run_seconds=0)
    a, b = await _done(sim, "a fox", external_id="j1"), await _done(sim, "a fox", external_id="j2")
    await sim.download(a, None, tmp_path / "a.mp4")
    await sim.download(b, None, tmp_path / "b.mp4")
    assert frames_of(tmp_path / "a.mp4")[0][2:] != frames_of(tmp_path / "b.mp4")[0][2:]
    # after a restart, the job id alone gives the same video again
    await SimulatorProvider(run_seconds=0).download(a, None, tmp_path / "a-again.mp4")
    assert (tmp_path / "a-again.mp4").read_bytes() == (tmp_path / "a.mp4").read_bytes()


async def test_the_clip_length_is_in_the_job_id_and_old_ids_download_8_seconds(tmp_path: Path) -> None:
    sim = SimulatorProvider(run_seconds=0)
    job_id = await _done(sim, "a fox", seconds=12)
    assert job_id.split("_")[4] == "12"
    # an id from before the length was part of it: sim_{started}_{run}_{flags}_{rand}
    old = "sim_1700000000000_0_n_a1b2c3"
    assert (await sim.poll(old)).state is ProviderState.SUCCEEDED
    await sim.download(old, None, tmp_path / "old.mp4")
    assert len(frames_of(tmp_path / "old.mp4")) == 8 * FPS
    with pytest.raises(ResultExpired):
        await sim.download("sim_1700000000000_0_e_a1b2c3", None, tmp_path / "gone.mp4")
    assert not (tmp_path / "gone.mp4").exists()


@pytest.mark.parametrize("bad", ["sim_1_2_n", "sim_1_2_n_x_8_abc", "sim_1_2_n_0_abc", "sim_1_2_n_eight_abc",
                                 "other_1_2_n_8_abc"])
async def test_a_job_id_it_did_not_make_is_refused(tmp_path: Path, bad: str) -> None:
    sim = SimulatorProvider(run_seconds=0)
    with pytest.raises(InvalidProviderRequest):
        await sim.poll(bad)
    with pytest.raises(InvalidProviderRequest):
        await sim.download(bad, None, tmp_path / "x.mp4")


async def test_flaky_fails_the_first_render_of_a_job_and_not_the_next(tmp_path: Path) -> None:
    sim = SimulatorProvider(run_seconds=0)
    spec = make_spec("a fox [flaky]", model="simulator", external_id="job-7")
    first = await sim.submit(spec)
    status = await sim.poll(first)
    assert status.state is ProviderState.FAILED
    assert status.error is not None and status.error.kind is FailureKind.GENERATION_FAILED
    assert status.error.detail == "simulator: render failed (flaky)"
    # the job submitted again renders
    second = await sim.submit(spec)
    assert (await sim.poll(second)).state is ProviderState.SUCCEEDED
    await sim.download(second, None, tmp_path / "ok.mp4")
    assert len(frames_of(tmp_path / "ok.mp4")) == 8 * FPS
    # the decision lives in the id: the failed job stays failed after a restart
    assert (await SimulatorProvider(run_seconds=0).poll(first)).state is ProviderState.FAILED
    # another job fails its own first render; a prompt without the marker never fails
    other = await sim.submit(replace(spec, external_id="job-8"))
    assert (await sim.poll(other)).state is ProviderState.FAILED
    assert (await sim.poll(await sim.submit(replace(spec, prompt="a fox", external_id="job-9")))).state \
        is ProviderState.SUCCEEDED


async def test_an_image_is_accepted_and_the_spec_recorded() -> None:
    sim = SimulatorProvider(run_seconds=0)
    image = ReferenceImage(b"\x89PNG\r\n\x1a\n", "image/png", 160, 90)
    spec = replace(make_spec("it goes on", model="simulator"), image=image)
    job_id = await sim.submit(spec)
    assert (await sim.poll(job_id)).state is ProviderState.SUCCEEDED
    assert sim.submits == [spec] and sim.submits[0].image is image


async def test_two_jobs_clips_join_into_one_long_video(tmp_path: Path) -> None:
    sim = SimulatorProvider(run_seconds=0)
    a = await _done(sim, "part one", seconds=8, external_id="s1")
    b = await _done(sim, "part two", seconds=4, external_id="s2")
    await sim.download(a, None, tmp_path / "a.mp4")
    await sim.download(b, None, tmp_path / "b.mp4")
    result = join_segments([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "long.mp4")
    assert result.method == "remux"  # same codec, size and timing: packets are copied
    assert result.frames == (8 + 4) * FPS and abs(result.duration_s - 12) < 1e-6
    joined = frames_of(tmp_path / "long.mp4")
    assert len(joined) == 12 * FPS
    assert joined[: 8 * FPS] == frames_of(tmp_path / "a.mp4") and joined[8 * FPS:] == frames_of(tmp_path / "b.mp4")
    # the next segment would start from the joined video's last frame: the second clip's colour
    last = last_frame_png(tmp_path / "long.mp4")
    assert (last.width, last.height) == (160, 90)
    assert last == last_frame_png(tmp_path / "b.mp4")
