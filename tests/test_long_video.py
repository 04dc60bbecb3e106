"""Long videos through the real app: planned, reserved as one request, run segment by segment
(each from the last frame of the one before), charged per segment, joined and uploaded once."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

av = pytest.importorskip("av")

from bot.cli import jobs_json  # noqa: E402
from bot.slack.messages import COMPARE_CANCEL_ACTION, SERIES_CONTINUE_ACTION  # noqa: E402
from bot.providers.simulator import FPS, SimulatorProvider  # noqa: E402
from tests import prom  # noqa: E402
from tests.botproc import wait_until  # noqa: E402
from tests.slack_requests import action_body, post_signed  # noqa: E402

pytestmark = pytest.mark.both_backends


def probe(data: bytes) -> tuple[int, float, tuple[int, int]]:
    """(frames, seconds, size) of an MP4, counted by decoding every frame."""
    with av.open(io.BytesIO(data)) as box:
        stream = box.streams.video[0]
        frames = sum(1 for _ in box.decode(stream))
        seconds = float(box.duration / av.time_base) if box.duration else 0.0
        return frames, seconds, (stream.codec_context.width, stream.codec_context.height)


async def ledger_of(bot: Any) -> dict[str, tuple[str, int, int]]:
    rows = await bot.deps.db.fetchall("SELECT job_id, state, reserved_micros, charged_micros FROM ledger")
    return {r[0]: (r[1], int(r[2]), int(r[3])) for r in rows}


async def segments_of(bot: Any) -> list[dict[str, Any]]:
    """`sora-bot jobs --json`, in playing order."""
    jobs = json.loads(await jobs_json(bot.deps.db, limit=0))
    return sorted(jobs, key=lambda j: (j["created_at"], j["segment_index"] or 0))


def uploads(slack: Any) -> list[Any]:
    return list(slack.uploads.values())


async def video_arrived(bot: Any, slack: Any) -> None:
    """The video's one upload is in, and every job task has ended."""
    await slack.wait_for(lambda: len(uploads(slack)) == 1, timeout=30)
    await bot.runtime.poller.idle(10)


async def test_three_segments_are_joined_and_uploaded_once(make_bot, slack) -> None:
    slack.keep_upload_bytes = True
    sim = SimulatorProvider(run_seconds=0.3)
    bot = await make_bot(providers={"simulator": sim})
    resp = await bot.slash("-d 45 a paper boat sails down a rainy street")
    reply = resp.json()["text"]
    # the plan, said before anything is charged
    assert "45 s as 3 segments on `simulator` (15 + 15 + 15 s), $4.50 in all" in reply, reply

    await video_arrived(bot, slack)
    assert len(uploads(slack)) == 1, "one file for the whole video"

    frames, seconds, size = probe(uploads(slack)[0].data)
    assert frames == 45 * FPS and size == (160, 90)
    assert abs(seconds - 45) < 0.5

    segs = await segments_of(bot)
    assert [s["segment_index"] for s in segs] == [0, 1, 2]
    assert [s["status"] for s in segs] == ["succeeded"] * 3
    assert segs[1]["after_job"] == segs[0]["id"] and segs[2]["after_job"] == segs[1]["id"]
    # each segment made once; the later two started from the frame before them
    assert [s.external_id for s in sim.submits] == [s["id"] for s in segs]
    assert sim.submits[0].image is None
    assert all(s.image is not None and s.image.mime_type == "image/png" for s in sim.submits[1:])

    # reserved as one request, charged per segment, exact
    ledger = await ledger_of(bot)
    assert {ledger[s["id"]] for s in segs} == {("charged", 1_500_000, 1_500_000)}
    events = await bot.deps.db.fetchall("SELECT job_id, event, amount_micros FROM ledger_events ORDER BY id")
    assert [(e[1], int(e[2])) for e in events] == [("reserve", 1_500_000)] * 3 + [("charge", 1_500_000)] * 3

    # one request message, its segments shown done; the video and its words in the thread
    root = slack.roots("C1")[0]
    thread = slack.thread("C1", root.ts)
    assert len(slack.roots("C1")) == 1
    finals = [m for m in thread[1:] if m.files]
    assert len(finals) == 1 and "45 s in 3 segments" in finals[0].text and "$4.50" in finals[0].text
    body = json.dumps(root.blocks)  # as last edited
    assert body.count("done, charged $1.50") == 3 and "Done: charged $4.50" in body
    # and as it went: each segment's state, edited into the one message
    edits = [json.dumps(c.params) for c in slack.calls_to("chat.update") if c.params.get("ts") == root.ts]
    assert any("waits for the one before" in e for e in edits)
    assert any(e.count("done, charged $1.50") == 1 and "waits for the one before" in e for e in edits)
    assert any(e.count("done, charged $1.50") == 2 for e in edits)


async def test_a_segment_failing_twice_releases_the_rest_and_delivers_what_was_made(make_bot, slack) -> None:
    slack.keep_upload_bytes = True
    sim = SimulatorProvider(run_seconds=0.3)
    bot = await make_bot(providers={"simulator": sim})
    await bot.slash("-d 45 a boat leaves the harbour || the boat meets a storm [fail] || the boat comes home")
    await video_arrived(bot, slack)

    segs = await segments_of(bot)
    assert [s["status"] for s in segs] == ["succeeded", "failed", "cancelled"]
    assert segs[1]["attempts"] == 1, "segment 2 was tried once more"
    assert [s.external_id for s in sim.submits] == [segs[0]["id"], segs[1]["id"], segs[1]["id"]]
    assert [s.attempt for s in sim.submits] == [0, 0, 1]
    ledger = await ledger_of(bot)
    assert ledger[segs[0]["id"]] == ("charged", 1_500_000, 1_500_000)
    assert ledger[segs[1]["id"]][0] == "released" and ledger[segs[2]["id"]][0] == "released"
    spent = sum(v[2] for v in ledger.values() if v[0] == "charged")
    assert spent == 1_500_000

    # what was made: segment 1 alone, with why the rest wasn't, in one message
    frames, _, _ = probe(uploads(slack)[0].data)
    assert frames == 15 * FPS
    root = slack.roots("C1")[0]
    finals = [m for m in slack.thread("C1", root.ts)[1:] if m.files or "Segment" in m.text]
    assert len(finals) == 1 and finals[0].files
    assert "Segment 2" in finals[0].text and "what was finished" in finals[0].text
    assert "nothing for them was charged" in finals[0].text
    body = json.dumps(root.blocks)
    assert SERIES_CONTINUE_ACTION in body and "Continue (30 s more)" in body
    assert "after a retry" in body
    # /metrics: one retry; one segment charged, two released, exact
    samples = prom.parse((await prom.scrape(bot)).text)
    assert prom.value(samples, "sora_segment_retries_total", provider="simulator") == 1
    assert prom.value(samples, "sora_charged_usd_total", provider="simulator") == float(prom.usd(1_500_000))
    assert prom.value(samples, "sora_released_usd_total", provider="simulator") == float(prom.usd(3_000_000))


async def test_a_flaky_segment_is_retried_and_the_video_completes(make_bot, slack) -> None:
    slack.keep_upload_bytes = True
    sim = SimulatorProvider(run_seconds=0.3)
    bot = await make_bot(providers={"simulator": sim})
    await bot.slash("-d 30 a kite rises || the kite loops [flaky]")
    await video_arrived(bot, slack)
    segs = await segments_of(bot)
    assert [s["status"] for s in segs] == ["succeeded", "succeeded"] and segs[1]["attempts"] == 1
    assert len(sim.submits) == 3
    assert probe(uploads(slack)[0].data)[0] == 30 * FPS
    ledger = await ledger_of(bot)
    assert sorted(v for v in ledger.values()) == [("charged", 1_500_000, 1_500_000)] * 2


async def test_cancel_then_continue_makes_the_whole_video(make_bot, slack) -> None:
    slack.keep_upload_bytes = True
    sim = SimulatorProvider(run_seconds=1.5)
    bot = await make_bot(providers={"simulator": sim})
    reply = (await bot.slash("-d 45 a lighthouse at dusk")).json()["text"]
    series_id = reply.split("Video `")[1].split("`")[0]

    async def first_done() -> bool:
        return (await segments_of(bot))[0]["status"] == "succeeded"

    await wait_until(first_done, 20, "the first segment")
    url = slack.new_response_url()
    await post_signed(bot.http, bot.url, action_body(COMPARE_CANCEL_ACTION, series_id, response_url=url))
    await slack.wait_for(lambda: bool(slack.responses.get(url)), timeout=5)
    assert "Cancelled video" in slack.responses[url][-1]["text"]
    await slack.wait_for(lambda: len(uploads(slack)) == 1, timeout=20)  # what was made so far
    await bot.runtime.poller.idle(10)
    made = [s for s in await segments_of(bot) if s["status"] == "succeeded"]

    url = slack.new_response_url()
    await post_signed(bot.http, bot.url, action_body(SERIES_CONTINUE_ACTION, series_id, response_url=url))
    await slack.wait_for(lambda: bool(slack.responses.get(url)), timeout=5)
    assert "Continuing from segment" in slack.responses[url][-1]["text"], slack.responses[url]
    # a second click is the same request
    url2 = slack.new_response_url()
    await post_signed(bot.http, bot.url, action_body(SERIES_CONTINUE_ACTION, series_id, response_url=url2))
    await slack.wait_for(lambda: bool(slack.responses.get(url2)), timeout=5)
    assert "Already on it" in slack.responses[url2][-1]["text"]

    await slack.wait_for(lambda: len(uploads(slack)) == 2, timeout=30)
    await bot.runtime.poller.idle(10)
    # the whole video: the segments made before the cancel and the rest, joined
    assert probe(uploads(slack)[1].data)[0] == 45 * FPS
    segs = await segments_of(bot)
    charged = [s for s in segs if s["status"] == "succeeded"]
    assert sum(s["duration_seconds"] for s in charged) == 45
    assert len(charged) == 3 and len(made) >= 1
    ledger = await ledger_of(bot)
    assert sum(v[2] for v in ledger.values() if v[0] == "charged") == 4_500_000
    assert not [v for v in ledger.values() if v[0] == "reserved"]


async def test_a_later_segment_times_out_from_its_own_submit_not_the_request(make_bot, slack) -> None:
    from dataclasses import replace

    from tests.conftest import FAST

    # each clip takes 0.8 s; the whole video well over the 1.5 s a job may take
    bot = await make_bot(timing=replace(FAST, job_timeout_s=1.5), sim_seconds=0.8)
    await bot.slash("-d 45 a slow sunrise")
    await video_arrived(bot, slack)
    assert [s["status"] for s in await segments_of(bot)] == ["succeeded"] * 3


async def test_a_plan_over_the_approval_threshold_is_approved_or_denied_as_one(make_bot, slack) -> None:
    from bot.slack.messages import DENY_ACTION

    admin = "UADMIN"
    bot = await make_bot(sora_approval_over_usd="1.00", sora_admin_user_ids=admin)
    reply = (await bot.slash("-d 45 a city at night")).json()["text"]
    assert "$4.50 in all" in reply and "approval" in reply
    series_id = reply.split("Video `")[1].split("`")[0]
    await slack.wait_for(lambda: any(m.channel == f"D{admin}" for m in slack.messages), timeout=5)
    dms = [m for m in slack.messages if m.channel == f"D{admin}"]
    assert len(dms) == 1 and "$4.50" in dms[0].text, [m.text for m in dms]

    url = slack.new_response_url()
    await post_signed(bot.http, bot.url, action_body(DENY_ACTION, series_id, user=admin, channel=f"D{admin}",
                                                     response_url=url))
    await slack.wait_for(lambda: bool(slack.responses.get(url)), timeout=5)
    assert "$4.50" in slack.responses[url][-1]["text"]
    await bot.runtime.poller.idle(10)
    segs = await segments_of(bot)
    assert [s["status"] for s in segs] == ["cancelled"] * 3 and all(s["provider_job_id"] is None for s in segs)
    ledger = await ledger_of(bot)
    assert {v[0] for v in ledger.values()} == {"released"}
    root = slack.roots("C1")[0]
    said = [m.text for m in slack.thread("C1", root.ts)[1:]]
    assert len(said) == 1 and "declined" in said[0] and "$4.50 reserved is back" in said[0], said
    assert not uploads(slack)


def _encode(seconds: float, rate: int = 24, size: tuple[int, int] = (64, 36)) -> bytes:
    """A plain H.264 MP4 of `seconds` (what the Veo fake answers with, made here with PyAV)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(round(seconds * rate)):
            frame = av.VideoFrame(size[0], size[1], "yuv420p")
            for n, value in enumerate((90, 128, 128)):
                frame.planes[n].update(bytes([value]) * frame.planes[n].buffer_size)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


async def test_veo_extends_natively_and_its_last_answer_is_the_whole_video(make_bot, slack) -> None:
    import httpx

    from tests.fakes.google_agent import FakeAgentPlatformServer, make_veo_provider, mp4_seconds

    slack.keep_upload_bytes = True
    async with FakeAgentPlatformServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        def answer(body: dict[str, Any]) -> bytes:
            source = server.input_video(body)  # an extension answers with its input + 7 s
            seconds = mp4_seconds(source) if source is not None else body["parameters"]["durationSeconds"]
            return _encode(seconds + (7 if source is not None else 0))

        server.make_video = answer
        bot = await make_bot(providers={"veo": make_veo_provider(server, client)}, include_simulator=False,
                             sora_default_model="veo-3.1", sora_daily_budget_usd="20")
        reply = (await bot.slash("-d 22 a glacier calving into the sea || the wave reaches a boat")).json()["text"]
        assert "22 s as 3 segments on `veo-3.1` (8 + 7 + 7 s), $8.80 in all" in reply, reply
        await video_arrived(bot, slack)

        segs = await segments_of(bot)
        assert [s["status"] for s in segs] == ["succeeded"] * 3
        bodies = [s for s in server.submits]
        assert len(bodies) == 3
        # the first is a clip of its own; each later one sends the video before it to extend
        assert server.input_video(bodies[0]) is None and bodies[0]["parameters"]["durationSeconds"] == 8
        assert [mp4_seconds(server.input_video(b)) for b in bodies[1:]] == [8, 15]
        assert [b["instances"][0]["prompt"] for b in bodies] == [
            "a glacier calving into the sea", "the wave reaches a boat", "the wave reaches a boat"]
        # the whole video is the last answer, uploaded as it came: 22 s at 24 fps
        with av.open(io.BytesIO(uploads(slack)[0].data)) as box:
            assert sum(1 for _ in box.decode(box.streams.video[0])) == 22 * 24
        ledger = await ledger_of(bot)
        assert sorted(v[2] for v in ledger.values()) == [2_800_000, 2_800_000, 3_200_000]
        assert {v[0] for v in ledger.values()} == {"charged"}


async def test_a_stuck_segment_is_not_tried_again(make_bot, slack) -> None:
    from dataclasses import replace

    from tests.conftest import FAST

    # the provider may still finish and bill a stuck render: a second one could be billed too
    sim = SimulatorProvider(run_seconds=0.3)
    bot = await make_bot(providers={"simulator": sim}, timing=replace(FAST, job_timeout_s=1.5))
    await bot.slash("-d 45 dawn || noon [stuck] || dusk")
    await video_arrived(bot, slack)
    segs = await segments_of(bot)
    assert [(s["status"], s["failure_kind"], s["attempts"]) for s in segs] == [
        ("succeeded", None, 0), ("failed", "stuck", 0), ("cancelled", "cancelled", 0)]
    assert len(sim.submits) == 2


async def test_a_segment_whose_create_may_have_been_taken_is_not_sent_again(make_bot, slack) -> None:
    from bot.errors import AmbiguousSubmit

    class Unsure(SimulatorProvider):
        """The create of `[unsure]` times out after the body was sent, and no lookup can tell."""

        async def submit(self, spec):  # type: ignore[no-untyped-def]
            if "[unsure]" in spec.prompt:
                self.submits.append(spec)
                raise AmbiguousSubmit("timed out", detail="simulator: read timeout after sending")
            return await super().submit(spec)

    sim = Unsure(run_seconds=0.3)
    bot = await make_bot(providers={"simulator": sim})
    await bot.slash("-d 30 dawn || dusk [unsure]")
    await video_arrived(bot, slack)
    segs = await segments_of(bot)
    assert [(s["status"], s["failure_kind"], s["attempts"]) for s in segs] == [
        ("succeeded", None, 0), ("failed", "provider_unavailable", 0)]
    assert len(sim.submits) == 2, "one create for each segment: the unsure one isn't sent again"


async def test_a_segment_whose_start_cant_be_had_fails_once_with_the_rest_released(make_bot, slack) -> None:
    class Garbled(SimulatorProvider):
        """The first clip arrives, but isn't a video anyone can take a frame from."""

        downloads = 0

        async def download(self, provider_job_id, video_url, dest):  # type: ignore[no-untyped-def]
            self.downloads += 1
            if self.downloads == 1:
                dest.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 4000)
                return
            await super().download(provider_job_id, video_url, dest)

    sim = Garbled(run_seconds=0.3)
    bot = await make_bot(providers={"simulator": sim})
    await bot.slash("-d 45 a kite over the dunes")
    root_seen = lambda: slack.roots("C1") and len(slack.thread("C1", slack.roots("C1")[0].ts)) > 1  # noqa: E731
    await slack.wait_for(root_seen, timeout=30)
    await bot.runtime.poller.idle(10)
    segs = await segments_of(bot)
    assert [(s["status"], s["failure_kind"], s["attempts"]) for s in segs] == [
        ("succeeded", None, 0), ("failed", "download_failed", 0), ("cancelled", "cancelled", 0)]
    assert len(sim.submits) == 1, "nothing was sent for a segment with nothing to start from"
    ledger = await ledger_of(bot)
    assert sorted(v[0] for v in ledger.values()) == ["charged", "released", "released"]
    said = slack.thread("C1", slack.roots("C1")[0].ts)[1:]
    assert len(said) == 1 and "Segment 2" in said[0].text


async def test_again_in_a_long_videos_thread_asks_for_the_whole_length(make_bot, slack) -> None:
    from tests.slack_requests import mention_body

    bot = await make_bot(sim_seconds=0.2, sora_daily_budget_usd="4", sora_admin_user_ids="UADMIN")
    # a second long video is over the budget: refused as one video, for its whole price
    root = slack.add_message("C1", "<@UBOT> -d 30 a city street", user="U1")
    await post_signed(bot.http, bot.url, mention_body(root.text, ts=root.ts, event_id="EvL1"))
    await slack.wait_for(lambda: sum(1 for m in slack.messages if m.files) == 1, timeout=20)
    follow = slack.add_message("C1", "<@UBOT> again but at night", user="U1", thread_ts=root.ts)
    await post_signed(bot.http, bot.url, mention_body(follow.text, ts=follow.ts, thread_ts=root.ts, event_id="EvL2"))
    await slack.wait_for(lambda: bool(slack.ephemerals), timeout=10)
    assert "This video would cost $3.00, but you have $1.00 left" in slack.ephemerals[-1].text
    await bot.admin("budget set <@U1> 10", user="UADMIN")
    follow = slack.add_message("C1", "<@UBOT> again but at night", user="U1", thread_ts=root.ts)
    await post_signed(bot.http, bot.url, mention_body(follow.text, ts=follow.ts, thread_ts=root.ts, event_id="EvL3"))
    await slack.wait_for(lambda: sum(1 for m in slack.messages if m.files) == 2, timeout=20)
    await bot.runtime.poller.idle(10)
    again = [s for s in await segments_of(bot) if s["prompt"] == "again but at night"]
    assert [s["duration_seconds"] for s in again] == [15, 15] and len({s["compare_id"] for s in again}) == 1


async def test_home_and_status_show_a_long_video_as_one_row(make_bot, slack) -> None:
    from bot.surfaces import home

    bot = await make_bot(sim_seconds=0.2, sora_daily_budget_usd="10")
    await bot.slash("-d 45 a tram through the old town")
    await bot.slash("-d 8 a single clip")
    await slack.wait_for(lambda: sum(1 for m in slack.messages if m.files) == 2, timeout=30)
    await bot.runtime.poller.idle(10)
    view = await home.home_for(bot.deps, "U1")
    rows = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section" and "`simulator`" in b["text"]["text"]]
    assert len(rows) == 2
    video = next(r for r in rows if "tram" in r)
    assert "45 s" in video and "*$4.50*" in video and ":white_check_mark:" in video
    first = (await segments_of(bot))[0]
    status = (await bot.slash("status")).json()["text"]
    assert status.count("simulator") == 2 and "45 s" in status and first["id"] in status
