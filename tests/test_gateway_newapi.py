"""The gateway in new-api's task style (VIDEO_GATEWAY_STYLE=newapi) through the real app."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.cli import jobs_json
from bot.providers.gateway import GatewayProvider
from tests.fakes.providers import FakeGatewayServer


@pytest.fixture
async def world(make_bot, slack):
    async with FakeGatewayServer(run_seconds=0.3, api_style="newapi", status_style="raw") as server:
        async with httpx.AsyncClient() as client:
            provider = GatewayProvider(server.base_url, server.api_key, client=client, style="newapi")
            bot = await make_bot(providers={"gateway": provider}, include_simulator=False,
                                 sora_default_model="sora-2")
            yield server, bot


async def test_task_style_sends_pixel_sizes_and_reads_raw_statuses(world, slack) -> None:
    server, bot = world
    await bot.slash("-a 9:16 a lighthouse keeper's cat")
    await bot.runtime.poller.idle(15)
    job = json.loads(await jobs_json(bot.deps.db))[0]
    assert job["status"] == "succeeded"
    sent = server.submits[0]
    assert (sent["width"], sent["height"], sent["duration"]) == (720, 1280, 8) and "resolution" not in sent
    assert slack.thread("C1", job["thread_ts"])[-1].files


async def test_task_style_failures_keep_their_kind(world, slack) -> None:
    server, bot = world
    await bot.slash("[blocked-output] a brawl")
    await bot.runtime.poller.idle(15)
    assert json.loads(await jobs_json(bot.deps.db))[0]["failure_kind"] == "blocked_output"


def test_an_unknown_style_is_a_clear_configuration_error(monkeypatch, capsys) -> None:
    from bot import cli

    monkeypatch.setenv("VIDEO_GATEWAY_STYLE", "grpc")
    assert cli.main(["jobs", "--json"]) == 2
    assert "VIDEO_GATEWAY_STYLE" in capsys.readouterr().err
