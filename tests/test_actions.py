"""The request message's buttons and the edit modal, through the real app with signed payloads."""

from __future__ import annotations

import pytest
import asyncio
import json

from bot.cli import jobs_json, usage_json
from bot.slack.messages import CANCEL_ACTION, EDIT_ACTION, EDIT_MODAL, RETRY_ACTION
from tests.slack_requests import action_body, post_signed, view_submission_body

# the storage a job's life touches, on both engines
pytestmark = pytest.mark.both_backends


async def _jobs(bot) -> list[dict]:
    return json.loads(await jobs_json(bot.deps.db, limit=0))


def _buttons(message) -> list[str]:
    return [el["action_id"] for b in message.blocks if b.get("type") == "actions" for el in b["elements"]]


async def _click(bot, action: str, job_id: str, *, user: str = "U1") -> str:
    url = bot.slack.new_response_url()
    resp = await post_signed(bot.http, bot.url, action_body(action, job_id, user=user, response_url=url))
    assert resp.status_code == 200
    await bot.slack.wait_for(lambda: bool(bot.slack.responses.get(url)), timeout=5)
    return bot.slack.responses[url][-1]["text"]


async def _open_edit(bot, job_id: str) -> dict:
    before = len(bot.slack.views)
    resp = await post_signed(bot.http, bot.url, action_body(EDIT_ACTION, job_id, response_url=bot.slack.new_response_url()))
    assert resp.status_code == 200
    await bot.slack.wait_for(lambda: len(bot.slack.views) > before, timeout=5)
    call = bot.slack.views[-1]
    assert call["method"] == "views.open" and call["params"]["trigger_id"]
    return call["params"]["view"]


async def _failed_job(bot, prompt: str = "[fail] a melting clock") -> dict:
    job_id = (await bot.slash(prompt)).json()["text"].split("`")[1]
    await bot.runtime.poller.idle(10)
    job = next(j for j in await _jobs(bot) if j["id"] == job_id)
    assert job["status"] == "failed"
    return job


async def test_a_running_job_shows_cancel_and_only_its_owner_or_an_admin_may_use_it(make_bot, slack) -> None:
    bot = await make_bot(sim_seconds=60, sora_admin_user_ids="UADMIN")
    job_id = (await bot.slash("a slow sunrise")).json()["text"].split("`")[1]
    await slack.wait_for(lambda: len(slack.roots("C1")) == 1)
    assert _buttons(slack.roots("C1")[0]) == [CANCEL_ACTION]
    refusal = await _click(bot, CANCEL_ACTION, job_id, user="U2")
    assert "Only <@U1> or an admin" in refusal
    assert (await _jobs(bot))[0]["status"] in ("queued", "submitted", "running")
    assert "Cancelled job" in await _click(bot, CANCEL_ACTION, job_id, user="UADMIN")
    await bot.runtime.poller.idle(5)
    assert (await _jobs(bot))[0]["status"] == "cancelled"
    root = slack.roots("C1")[0]
    assert _buttons(root) == [RETRY_ACTION, EDIT_ACTION]  # the status now offers a retry


async def test_try_again_runs_the_same_request_once_even_on_a_double_click(make_bot, slack) -> None:
    bot = await make_bot()
    old = await _failed_job(bot)
    assert _buttons(slack.roots("C1")[0]) == [RETRY_ACTION, EDIT_ACTION]
    first, second = await asyncio.gather(_click(bot, RETRY_ACTION, old["id"]), _click(bot, RETRY_ACTION, old["id"]))
    assert sorted([first.split()[0], second.split()[0]]) == ["Already", "Retrying"]
    await bot.runtime.poller.idle(10)
    jobs = await _jobs(bot)
    assert len(jobs) == 2 and len(bot.deps.providers["simulator"].submits) == 2
    new = next(j for j in jobs if j["id"] != old["id"])
    assert (new["prompt"], new["duration_seconds"], new["model"]) == (old["prompt"], old["duration_seconds"], old["model"])


async def test_others_cannot_retry_or_edit_someone_elses_job(make_bot, slack) -> None:
    bot = await make_bot()
    old = await _failed_job(bot)
    assert "Only <@U1> can" in await _click(bot, RETRY_ACTION, old["id"], user="U2")
    assert "Only <@U1> can" in await _click(bot, EDIT_ACTION, old["id"], user="U2")
    assert len(await _jobs(bot)) == 1 and not any(v["method"] == "views.open" for v in slack.views)


async def test_a_retry_is_refused_when_the_budget_no_longer_covers_it(make_bot, slack) -> None:
    bot = await make_bot(sora_daily_budget_usd="1.00", sim_seconds=60)
    old = await _failed_job(bot, "[blocked] -d 8 a riot")
    await bot.slash("-d 8 something else that takes the budget")
    view = await _open_edit(bot, old["id"])  # opening the form involves no money yet
    assert view["private_metadata"] == old["id"]
    values = {"prompt": {"value": {"type": "plain_text_input", "value": "a peaceful march"}}}
    resp = await post_signed(bot.http, bot.url, view_submission_body(EDIT_MODAL, private_metadata=old["id"], values=values))
    body = resp.json()
    assert body["response_action"] == "errors" and "left of your $1.00" in body["errors"]["prompt"]
    assert len(await _jobs(bot)) == 2


async def test_a_blocked_prompt_offers_only_editing_and_the_edit_makes_a_new_job(make_bot, slack) -> None:
    bot = await make_bot()
    old = await _failed_job(bot, "[blocked] -d 6 a brawl")
    assert _buttons(slack.roots("C1")[0]) == [EDIT_ACTION]
    view = await _open_edit(bot, old["id"])
    assert view["blocks"][0]["element"]["initial_value"] == "[blocked] a brawl"
    values = {"prompt": {"value": {"type": "plain_text_input", "value": "two friends dancing"}}}
    resp = await post_signed(bot.http, bot.url, view_submission_body(EDIT_MODAL, private_metadata=old["id"],
                                                                       values=values, view_id="V777"))
    assert resp.status_code == 200 and not resp.content  # an empty ack closes the modal
    again = await post_signed(bot.http, bot.url, view_submission_body(EDIT_MODAL, private_metadata=old["id"],
                                                                        values=values, view_id="V777"))
    assert again.status_code == 200
    await bot.runtime.poller.idle(10)
    jobs = await _jobs(bot)
    assert len(jobs) == 2
    new = next(j for j in jobs if j["id"] != old["id"])
    assert new["prompt"] == "two friends dancing" and new["duration_seconds"] == 6 and new["status"] == "succeeded"


async def test_forged_or_broken_modal_submissions_change_nothing(make_bot, slack) -> None:
    bot = await make_bot()
    old = await _failed_job(bot)
    good = {"prompt": {"value": {"type": "plain_text_input", "value": "a calm sea"}}}
    cases = [
        (view_submission_body(EDIT_MODAL, private_metadata=old["id"], values=good, user="U2"), "Only <@U1>"),
        (view_submission_body(EDIT_MODAL, private_metadata="nosuchjob", values=good), "doesn't exist"),
        (view_submission_body(EDIT_MODAL, private_metadata="", values=good), "missing"),
        (view_submission_body(EDIT_MODAL, private_metadata=old["id"], values={}), "missing"),
        (view_submission_body(EDIT_MODAL, private_metadata=old["id"],
                              values={"prompt": {"value": {"type": "plain_text_input", "value": "   "}}}), "what to make"),
    ]
    for body, words in cases:
        resp = await post_signed(bot.http, bot.url, body)
        answer = resp.json()
        assert answer["response_action"] == "errors" and words in answer["errors"]["prompt"], answer
    assert len(await _jobs(bot)) == 1
    usage = json.loads(await usage_json(bot.deps, None))
    assert usage[0]["reserved_usd"] == 0
