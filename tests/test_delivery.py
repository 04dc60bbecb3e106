"""Where the final message goes when Slack says no: link fallback, joining, DMs."""

from __future__ import annotations

import json

import httpx

from bot.cli import jobs_json
from bot.providers.gateway import GatewayProvider
from tests.fakes.providers import FakeGatewayServer


async def _jobs(bot) -> list[dict]:
    return json.loads(await jobs_json(bot.deps.db))


async def test_a_refused_upload_falls_back_to_one_link_message(make_bot, slack) -> None:
    async with FakeGatewayServer(run_seconds=0.3) as gateway:
        async with httpx.AsyncClient() as client:
            provider = GatewayProvider(gateway.base_url, gateway.api_key, client=client)
            bot = await make_bot(providers={"gateway": provider}, include_simulator=False, sora_default_model="sora-2")
            slack.fail_next("files.completeUploadExternal", error="file_upload_size_restricted", times=5)
            await bot.slash("a hot air balloon")
            await bot.runtime.poller.idle(15)
    job = (await _jobs(bot))[0]
    assert job["status"] == "succeeded" and job["cost_usd"] == 0.8
    replies = slack.thread("C1", job["thread_ts"])[1:]
    assert len(replies) == 1
    assert "couldn't upload" in replies[0].text and "file_upload_size_restricted" in replies[0].text
    assert job["video_url"] in replies[0].text and "Provider links expire" in replies[0].text


async def test_a_public_channel_the_bot_is_not_in_is_joined_for_the_upload(make_bot, slack) -> None:
    slack.add_channel("C2", name="random", member=False)
    bot = await make_bot()
    await bot.slash("a rowing boat", channel="C2")
    await bot.runtime.poller.idle(15)
    job = (await _jobs(bot))[0]
    assert job["status"] == "succeeded" and job["channel_id"] == "C2"
    assert slack.calls_to("conversations.join")
    replies = slack.thread("C2", job["thread_ts"])[1:]
    assert len(replies) == 1 and replies[0].files


async def test_a_private_channel_gets_a_note_and_the_thread_moves_to_a_dm(make_bot, slack) -> None:
    slack.add_channel("G1", name="secret", private=True, member=False)
    bot = await make_bot()
    response_url = slack.new_response_url()
    await bot.slash("a fox in a library", channel="G1", response_url=response_url)
    await bot.runtime.poller.idle(15)
    job = (await _jobs(bot))[0]
    assert job["status"] == "succeeded" and job["channel_id"].startswith("D")
    notes = slack.responses[response_url]
    assert len(notes) == 1 and "/invite" in notes[0]["text"]
    thread = slack.thread(job["channel_id"], job["thread_ts"])
    assert "a fox in a library" in json.dumps(thread[0].blocks)
    assert len(thread) == 2 and thread[1].files
