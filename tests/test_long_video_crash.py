"""kill -9 between a long video's segments and mid-segment, then restart: each segment made
once, one video joined and uploaded once, the ledger exact."""

from __future__ import annotations

import io
import re
import signal
import sys
from collections import Counter

import httpx
import pytest

av = pytest.importorskip("av")

from bot.fakes.fakeslack import FakeSlack  # noqa: E402
from bot.providers.simulator import FPS  # noqa: E402
from storage.sqlite import SQLiteDatabase  # noqa: E402
from tests.botproc import BotProcess, bot_env, free_port, wait_until  # noqa: E402
from tests.slack_requests import post_signed, slash_body  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


async def segment_rows(db_path) -> list[tuple]:
    db = await SQLiteDatabase(db_path).open()
    try:
        rows = await db.fetchall(
            "SELECT id, segment_index, status, provider_job_id, attempts FROM jobs ORDER BY segment_index")
        return [tuple(r) for r in rows]
    finally:
        await db.close()


async def test_kill_9_between_segments_and_mid_segment(tmp_path) -> None:
    async with FakeSlack() as slack:
        slack.keep_upload_bytes = True
        slack.add_channel("C1", name="general", member=True)
        port = free_port()
        db_path = tmp_path / "bot.db"
        env = bot_env(slack, db_path, port, SORA_SIMULATOR_SECONDS="1.5")
        bot = BotProcess(env, port, tmp_path / "bot.log")
        try:
            await bot.start()
            async with httpx.AsyncClient(timeout=10) as http:
                r = await post_signed(http, f"{bot.url}/slack/events",
                                      slash_body("-d 45 a train crosses a snowy valley",
                                                 response_url=slack.new_response_url()))
            assert "45 s as 3 segments" in r.json()["text"]

            async def segment_done(index: int) -> bool:
                rows = await segment_rows(db_path)
                return len(rows) == 3 and rows[index][2] == "succeeded"

            # 1: the first segment's clip is in and charged; the second not yet asked for
            await wait_until(lambda: segment_done(0), 30, "the first segment")
            assert await bot.signal(signal.SIGKILL) == -signal.SIGKILL
            await bot.start()

            # 2: the second segment is at the provider, rendering
            async def second_rendering() -> bool:
                rows = await segment_rows(db_path)
                return rows[1][2] in ("submitted", "running") and rows[1][3] is not None

            await wait_until(second_rendering, 30, "the second segment at the provider")
            before = (await segment_rows(db_path))[1][3]
            assert await bot.signal(signal.SIGKILL) == -signal.SIGKILL
            await bot.start()

            await wait_until(lambda: len(slack.uploads) == 1, 60, "the video")

            async def delivered() -> bool:
                db = await SQLiteDatabase(db_path).open()
                try:
                    row = await db.fetchone("SELECT COUNT(*) FROM deliveries WHERE state = 'done'")
                    return int(row[0]) == 1
                finally:
                    await db.close()

            await wait_until(delivered, 20, "the delivery recorded")
            rows = await segment_rows(db_path)
            assert [r[2] for r in rows] == ["succeeded"] * 3
            assert rows[1][3] == before, "the segment rendering at the kill was watched again, not made again"
            assert all(r[4] == 0 for r in rows), "no segment needed a retry"

            # each segment submitted once across the three runs (the state lines of every run)
            log = (tmp_path / "bot.log").read_text()
            submitted = Counter(re.findall(r"job (\w+) queued -> submitted", log))
            assert submitted == Counter({r[0]: 1 for r in rows}), submitted

            # one video, the whole length, in one message of the one thread
            data = next(iter(slack.uploads.values())).data
            with av.open(io.BytesIO(data)) as box:
                assert sum(1 for _ in box.decode(box.streams.video[0])) == 45 * FPS
            roots = slack.roots("C1")
            assert len(roots) == 1
            assert len([m for m in slack.thread("C1", roots[0].ts)[1:] if m.files]) == 1

            db = await SQLiteDatabase(db_path).open()
            try:
                ledger = await db.fetchall("SELECT state, reserved_micros, charged_micros FROM ledger")
                events = await db.fetchall("SELECT event, COUNT(*) FROM ledger_events GROUP BY event ORDER BY event")
            finally:
                await db.close()
            assert sorted(tuple(r) for r in ledger) == [("charged", 1_500_000, 1_500_000)] * 3
            assert [tuple(e) for e in events] == [("charge", 3), ("reserve", 3)]
            assert await bot.signal(signal.SIGTERM) == 0
        finally:
            if bot.proc is not None and bot.proc.returncode is None:
                bot.proc.kill()
                await bot.proc.wait()
