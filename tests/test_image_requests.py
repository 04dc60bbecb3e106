"""Image-to-video from Slack: an image on a mention, and the modal's file input."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from bot.surfaces import request_modal as rm
from bot.cli import jobs_json
from bot.providers.gateway import GatewayProvider
from bot.providers.openai_videos import OpenAIVideosProvider
from tests.fakes.providers import FakeGatewayServer, FakeOpenAIServer
from tests.slack_requests import post_signed, view_submission_body


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def openai_bot(make_bot, slack):
    async with FakeOpenAIServer(run_seconds=0.3) as server, httpx.AsyncClient() as client:
        provider = OpenAIVideosProvider(server.base_url, server.api_key, client=client)
        bot = await make_bot(providers={"openai": provider}, include_simulator=True, sora_default_model="sora-2")
        yield bot, server


async def test_an_image_on_a_mention_reaches_the_provider_at_the_exact_size(openai_bot, slack) -> None:
    bot, server = openai_bot
    file = slack.add_file("F0IMG1", _png(1000, 1000), name="dog.png", mimetype="image/png")
    root = slack.add_message("C1", "<@UBOT> make this dog run -a 9:16", user="U1")
    event = {"type": "app_mention", "user": "U1", "text": root.text, "ts": root.ts, "channel": "C1",
             "event_ts": root.ts, "files": [file]}
    body = json.dumps({"token": "x", "team_id": "T0001", "api_app_id": "A1", "type": "event_callback",
                       "event_id": "EvImg1", "event_time": 1, "event": event})
    await post_signed(bot.http, bot.url, body)
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    assert server.submits[0]["size"] == "720x1280" and server.submits[0]["_image_size"] == (720, 1280)
    await bot.runtime.poller.idle(5)
    job = json.loads(await jobs_json(bot.deps.db))[0]
    assert job["status"] == "succeeded" and job["aspect_ratio"] == "9:16"


async def test_an_image_with_a_model_that_cannot_use_it_is_refused_before_any_charge(make_bot, slack) -> None:
    # next to OpenAI's Sora 2 (which takes images), a text-only model: Sora 2 Pro through a gateway
    async with FakeOpenAIServer(run_seconds=0.3) as server, FakeGatewayServer(run_seconds=0.3) as gateway, \
            httpx.AsyncClient() as client:
        bot = await make_bot(providers={"openai": OpenAIVideosProvider(server.base_url, server.api_key, client=client),
                                        "gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client)},
                             include_simulator=True, video_gateway_models="sora-2-pro", sora_default_model="sora-2")
        assert bot.deps.catalog.get("sora-2").image_to_video
        assert not bot.deps.catalog.get("sora-2-pro").image_to_video
        file = slack.add_file("F0IMG2", _png(800, 600), name="cat.png", mimetype="image/png")
        root = slack.add_message("C1", "<@UBOT> -m sora-2-pro animate the cat", user="U1")
        event = {"type": "app_mention", "user": "U1", "text": root.text, "ts": root.ts, "channel": "C1",
                 "event_ts": root.ts, "files": [file]}
        body = json.dumps({"token": "x", "team_id": "T0001", "api_app_id": "A1", "type": "event_callback",
                           "event_id": "EvImg2", "event_time": 1, "event": event})
        await post_signed(bot.http, bot.url, body)
        await slack.wait_for(lambda: bool(slack.ephemerals), timeout=5)
        answer = slack.ephemerals[-1].text
        assert "can't start from an image" in answer and "Nothing was charged" in answer
        assert json.loads(await jobs_json(bot.deps.db)) == []
        assert server.create_attempts == [] and gateway.create_attempts == []


async def test_the_modal_file_input_makes_an_image_job(openai_bot, slack) -> None:
    bot, server = openai_bot
    file = slack.add_file("F0IMG3", _png(1600, 900), name="street.png", mimetype="image/png")
    view = await rm.build_view(bot.deps, "U1", rm.defaults(bot.deps, "the street comes alive"), rm.Target())
    assert any(b.get("block_id") == "image" for b in view["blocks"])
    values: dict = {
        "prompt": {"value": {"type": "plain_text_input", "value": "the street comes alive"}},
        "channel": {"value": {"type": "conversations_select", "selected_conversation": "C1"}},
        "image": {"value": {"type": "file_input", "files": [file]}},
    }
    for block in view["blocks"]:
        element = block.get("element") or {}
        if element.get("type") == "static_select":
            values[block["block_id"]] = {element["action_id"]: {"selected_option": element["initial_option"]}}
    resp = await post_signed(bot.http, bot.url, view_submission_body(rm.MODAL, private_metadata="{}",
                                                                       values=values, view_id="VIMG"))
    assert resp.json()["response_action"] == "update"  # "Preparing your image…" while it works
    await slack.wait_for(lambda: any(m.files for m in slack.messages), timeout=10)
    assert server.submits[0]["_image_size"] == (1280, 720)
    updates = [v for v in slack.views if v["method"] == "views.update"]
    assert updates and "Got it" in updates[-1]["params"]["view"]["blocks"][0]["text"]["text"]
