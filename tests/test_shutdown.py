"""Shutdown while listeners are still at work after their ack."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import httpx
import pytest
from PIL import Image

from bot.providers.openai_videos import OpenAIVideosProvider
from storage import jobs as jobstore
from storage.sqlite import SQLiteDatabase
from tests.fakes.providers import FakeOpenAIServer
from tests.slack_requests import post_signed


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (800, 800), (20, 120, 40)).save(out, "PNG")
    return out.getvalue()


async def test_closing_while_a_listener_works_after_its_ack_waits_for_it_and_loses_nothing(
    make_bot, slack, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """An image mention is acked at once; the listener then fetches the image from Slack and
    stores the job. Closing the runtime meanwhile must let it finish, not close the database
    under it."""
    caplog.set_level(logging.WARNING)
    async with FakeOpenAIServer(run_seconds=30) as server, httpx.AsyncClient() as client:
        provider = OpenAIVideosProvider(server.base_url, server.api_key, client=client)
        bot = await make_bot(providers={"openai": provider}, sora_default_model="sora-2")
        file = slack.add_file("F0SHUT1", _png(), name="leaf.png", mimetype="image/png")
        root = slack.add_message("C1", "<@UBOT> make this leaf fall", user="U1")
        event = {"type": "app_mention", "user": "U1", "text": root.text, "ts": root.ts, "channel": "C1",
                 "event_ts": root.ts, "files": [file]}
        body = json.dumps({"token": "x", "team_id": "T0001", "api_app_id": "A1", "type": "event_callback",
                           "event_id": "EvShut1", "event_time": 1, "event": event})
        hold = slack.hold_next("files.info")
        resp = await post_signed(bot.http, bot.url, body)
        assert resp.status_code == 200  # acked while the listener is still working
        await asyncio.wait_for(hold.reached.wait(), 5)

        closing = asyncio.create_task(bot.runtime.close())
        await asyncio.sleep(0.2)  # give close() the chance to go wrong if it doesn't wait
        assert not closing.done()
        hold.release()
        await asyncio.wait_for(closing, 10)

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    db = await SQLiteDatabase(tmp_path / "bot.db").open()
    try:
        jobs = await jobstore.list_jobs(db)
    finally:
        await db.close()
    assert len(jobs) == 1 and jobs[0].status.value == "queued"  # stored; it resumes on the next start
