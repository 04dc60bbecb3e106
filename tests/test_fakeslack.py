"""The fake Slack Web API, driven by the real slack_sdk client the bot uses."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes.fakeslack import FakeSlack


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=fake.api_url)


async def test_binds_loopback_and_answers_auth_test(fake: FakeSlack, client: AsyncWebClient) -> None:
    assert fake.api_url.startswith("http://127.0.0.1:") and fake.api_url.endswith("/api/")
    resp = await client.auth_test()
    assert resp["user_id"] == "UBOT" and resp["bot_id"] == "BBOT" and resp["team_id"] == "T0001"
    assert fake.calls_to("auth.test")[0].token == "xoxb-test"


async def test_post_update_and_thread_rendering(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*a cat surfing*"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "sora-2 · 8s"}]},
    ]
    root = await client.chat_postMessage(channel="C1", text="Queued", blocks=blocks, unfurl_links=False)
    assert root["channel"] == "C1" and root["message"]["blocks"] == blocks
    reply = await client.chat_postMessage(channel="C1", thread_ts=root["ts"], text="Rendering 10%")
    await client.chat_update(channel="C1", ts=root["ts"], text="Done")

    assert float(reply["ts"]) > float(root["ts"])
    thread = fake.thread("C1", root["ts"])
    assert [m.text for m in thread] == ["Done", "Rendering 10%"]
    assert thread[0].edits == [("Queued", blocks)]
    # blocks omitted from chat.update are kept, as in Slack
    assert thread[0].blocks == blocks
    assert fake.calls_to("chat.postMessage")[0].params["unfurl_links"] in ("0", False, 0)

    assert fake.render_thread("C1", root["ts"]) == (
        "bot: Done (edited)\n"
        "    | *a cat surfing*\n"
        "    | sora-2 · 8s\n"
        "  ↳ bot: Rendering 10%"
    )
    assert [m.ts for m in fake.roots("C1")] == [root["ts"]]


async def test_permalinks_are_on_the_workspace_host_and_replies_open_their_thread(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    host = (await client.auth_test())["url"]
    root = await client.chat_postMessage(channel="C1", text="root")
    reply = await client.chat_postMessage(channel="C1", thread_ts=root["ts"], text="reply")
    root_link = (await client.chat_getPermalink(channel="C1", message_ts=root["ts"]))["permalink"]
    assert root_link == f"{host}archives/C1/p{root['ts'].replace('.', '')}"
    reply_link = (await client.chat_getPermalink(channel="C1", message_ts=reply["ts"]))["permalink"]
    assert reply_link == f"{host}archives/C1/p{reply['ts'].replace('.', '')}?thread_ts={root['ts']}&cid=C1"
    with pytest.raises(SlackApiError) as exc:
        await client.chat_getPermalink(channel="C1", message_ts="1.000001")
    assert exc.value.response["error"] == "message_not_found"


async def test_post_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C1", thread_ts="1.000001", text="x")
    assert exc.value.response["error"] == "thread_not_found"
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C1", text="x" * 40_001)
    assert exc.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C1", text="x", blocks=[{"type": "divider"}] * 51)
    assert exc.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as exc:
        await client.chat_update(channel="C1", ts="1.000001", text="x")
    assert exc.value.response["error"] == "message_not_found"
    assert [c.http_status for c in fake.calls] == [200, 200, 200, 200]
    assert fake.messages == []


async def test_ephemeral_is_kept_out_of_threads(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel="C1", text="root")
    resp = await client.chat_postEphemeral(channel="C1", user="U1", text="only you", thread_ts=root["ts"])
    assert resp["message_ts"]
    assert [m.text for m in fake.ephemerals] == ["only you"]
    assert fake.ephemerals[0].ephemeral_to == "U1"
    assert [m.text for m in fake.thread("C1", root["ts"])] == ["root"]
    assert "(only U1 in #C1) bot: only you" in fake.render_all()


async def test_join_private_channel_and_dm(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_channel("C1", name="general")
    fake.add_channel("G1", name="secret", private=True)

    joined = await client.conversations_join(channel="C1")
    assert joined["channel"]["id"] == "C1"
    with pytest.raises(SlackApiError) as exc:
        await client.conversations_join(channel="G1")
    assert exc.value.response["error"] == "method_not_supported_for_channel_type"
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="G1", text="hi")
    assert exc.value.response["error"] == "channel_not_found"

    dm = await client.conversations_open(users="U1")
    assert dm["channel"]["id"] == "DU1"
    await client.chat_postMessage(channel=dm["channel"]["id"], text="your video")
    assert [(m.channel, m.text) for m in fake.messages] == [("DU1", "your video")]


async def test_users_info(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_user("U1", name="ada", is_admin=True, tz="Europe/Paris")
    user = (await client.users_info(user="U1"))["user"]
    assert (user["id"], user["name"], user["is_admin"], user["is_owner"], user["tz"]) == (
        "U1",
        "ada",
        True,
        False,
        "Europe/Paris",
    )
    with pytest.raises(SlackApiError) as exc:
        await client.users_info(user="U404")
    assert exc.value.response["error"] == "user_not_found"


async def test_three_step_upload_into_thread(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_channel("C1", member=True)
    root = await client.chat_postMessage(channel="C1", text="a cat surfing")
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(3000)

    step1 = await client.files_getUploadURLExternal(filename="cat.mp4", length=len(video))
    assert step1["upload_url"].startswith(fake.base_url + "/upload/")
    async with aiohttp.ClientSession() as session:
        async with session.post(step1["upload_url"], data=video) as posted:
            assert posted.status == 200
            assert await posted.text() == f"OK - {len(video)}"
    done = await client.files_completeUploadExternal(
        files=[{"id": step1["file_id"], "title": "a cat surfing"}],
        channel_id="C1",
        thread_ts=root["ts"],
        initial_comment="Here it is",
    )

    assert done["files"][0]["id"] == step1["file_id"]
    reply = fake.thread("C1", root["ts"])[1]
    assert reply.text == "Here it is"
    assert reply.files[0]["sha256"] == hashlib.sha256(video).hexdigest()
    assert reply.files[0]["size"] == len(video)
    assert fake.uploads[step1["file_id"]].size == len(video)
    assert fake.render_thread("C1", root["ts"]).endswith("↳ bot: Here it is [video: cat.mp4, 3 KB]")


async def test_multipart_upload_via_httpx_and_files_upload_v2(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_channel("C1", member=True)
    step1 = await client.files_getUploadURLExternal(filename="a.mp4", length=5)
    async with httpx.AsyncClient() as http:
        posted = await http.post(step1["upload_url"], files={"file": ("a.mp4", b"hello", "video/mp4")})
    assert posted.status_code == 200
    assert fake.uploads[step1["file_id"]].sha256 == hashlib.sha256(b"hello").hexdigest()

    # slack_sdk's own helper drives the same three steps
    done = await client.files_upload_v2(channel="C1", filename="b.mp4", content=b"video!", title="b")
    assert done["file"]["name"] == "b.mp4"
    assert fake.messages[-1].files[0]["size"] == 6


async def test_share_requires_membership_and_upload(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_channel("C2", name="random")
    step1 = await client.files_getUploadURLExternal(filename="cat.mp4", length=3)
    with pytest.raises(SlackApiError) as exc:
        await client.files_completeUploadExternal(files=[{"id": step1["file_id"], "title": "t"}], channel_id="C2")
    assert exc.value.response["error"] == "not_in_channel"
    await client.conversations_join(channel="C2")
    with pytest.raises(SlackApiError) as exc:
        await client.files_completeUploadExternal(files=[{"id": step1["file_id"], "title": "t"}], channel_id="C2")
    assert exc.value.response["error"] == "file_not_found"


async def test_injected_429_is_retried(fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    # the handler sleeps Retry-After plus up to 1 s of jitter; no jitter keeps the test fast
    monkeypatch.setattr(random, "random", lambda: 0.0)
    client = AsyncWebClient(
        token="xoxb-test", base_url=fake.api_url, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)]
    )
    fake.fail_next("chat.postMessage", status=429, retry_after=0)

    resp = await client.chat_postMessage(channel="C1", text="hi")

    assert resp["ok"]
    assert [c.http_status for c in fake.calls_to("chat.postMessage")] == [429, 200]
    assert len(fake.messages) == 1


async def test_injected_429_without_retry_handler(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("chat.update", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as exc:
        await client.chat_update(channel="C1", ts="1.0", text="x")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == "7"


async def test_injected_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("chat.postMessage", error="channel_is_archived", times=2)
    fake.fail_next("users.info", status=503)
    for _ in range(2):
        with pytest.raises(SlackApiError) as exc:
            await client.chat_postMessage(channel="C1", text="hi")
        assert exc.value.response["error"] == "channel_is_archived"
    await client.chat_postMessage(channel="C1", text="hi")
    with pytest.raises(SlackApiError) as exc:
        await client.users_info(user="U1")
    assert exc.value.response.status_code == 503
    assert [c.http_status for c in fake.calls] == [200, 200, 200, 503]
    assert len(fake.messages) == 1


async def test_injected_upload_failure(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("upload", status=500)
    step1 = await client.files_getUploadURLExternal(filename="cat.mp4", length=3)
    async with aiohttp.ClientSession() as session:
        async with session.post(step1["upload_url"], data=b"abc") as posted:
            assert posted.status == 500
    assert fake.uploads == {}
    assert [c.http_status for c in fake.calls_to("upload")] == [500]


# slack_sdk's View wants 1 to 100 blocks; an empty view is refused as Slack's SDK would
_SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}


async def test_unknown_method_and_views_are_recorded(fake: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.api_call("reactions.add", params={"channel": "C1", "name": "tada"})
    assert resp["ok"]
    assert fake.calls_to("reactions.add")[0].params == {"channel": "C1", "name": "tada"}
    opened = await client.views_open(trigger_id="t1", view={"type": "modal", "title": {"type": "plain_text", "text": "x"},
                                                                "blocks": [_SECTION]})
    assert opened["view"]["id"].startswith("V")
    await client.views_publish(user_id="U1", view={"type": "home", "blocks": [_SECTION]})
    assert [v["method"] for v in fake.views] == ["views.open", "views.publish"]
    assert fake.views[1]["params"]["view"]["type"] == "home"


async def test_get_with_query_params_and_missing_token(fake: FakeSlack) -> None:
    fake.add_user("U1")
    client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url)
    resp = await client.api_call("users.info", http_verb="GET", params={"user": "U1"})
    assert resp["user"]["id"] == "U1"
    with pytest.raises(SlackApiError) as exc:
        await AsyncWebClient(base_url=fake.api_url).auth_test()
    assert exc.value.response["error"] == "not_authed"


async def test_response_url_recording(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"text": "Working on it", "response_type": "ephemeral"}) as posted:
            assert posted.status == 200 and await posted.text() == "ok"
        async with session.post(fake.base_url + "/respond/999", json={"text": "x"}) as posted:
            assert posted.status == 404
    assert fake.responses[url] == [{"text": "Working on it", "response_type": "ephemeral"}]
    assert "Working on it" in fake.render_all()


async def test_wait_for(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C1", text="hello")
    await fake.wait_for(lambda: fake.messages[0].text == "hello", timeout=0.5)
    with pytest.raises(AssertionError) as exc:
        await fake.wait_for(lambda: fake.messages[1].text == "never", timeout=0.1)
    message = str(exc.value)
    assert "not met within 0.1s" in message and "IndexError" in message and "bot: hello" in message


async def test_urlencoded_form_with_json_encoded_blocks(fake: FakeSlack) -> None:
    blocks = [{"type": "section", "text": {"type": "plain_text", "text": "hi"}}]
    form = {"channel": "C1", "text": "fallback", "blocks": json.dumps(blocks)}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer xoxb-test"}) as session:
        async with session.post(fake.api_url + "chat.postMessage", data=form) as posted:
            body = await posted.json()
    assert body["ok"] and fake.messages[0].blocks == blocks
    assert fake.calls[0].params["blocks"] == blocks
