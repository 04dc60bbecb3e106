"""Approval for expensive requests: approved, denied and expired, with the ledger exact."""

from __future__ import annotations

import pytest
import asyncio
import json
from dataclasses import replace

from bot.cli import jobs_json, usage_json
from bot.slack.messages import APPROVE_ACTION, DENY_ACTION
from storage import admin as settings_store
from tests.conftest import FAST
from tests.slack_requests import action_body, post_signed

# the storage a job's life touches, on both engines
pytestmark = pytest.mark.both_backends

ADMIN = "UADMIN"
DM = f"D{ADMIN}"  # the fake Slack's DM channel with the admin


async def _expensive(bot, slack) -> str:
    """A $2.00 request over the $1.00 threshold; returns its job id once the admin was asked."""
    reply = (await bot.slash("-m simulator -d 20 a long walk on the beach")).json()["text"]
    assert "$2.00 reserved" in reply and "needs an admin's approval" in reply
    job_id = reply.split("`")[1]
    await slack.wait_for(lambda: any(m.channel == DM for m in slack.messages), timeout=5)
    return job_id


async def _click(bot, slack, action: str, key: str, user: str = ADMIN) -> str:
    url = slack.new_response_url()
    await post_signed(bot.http, bot.url, action_body(action, key, user=user, channel=DM, response_url=url))
    await slack.wait_for(lambda: bool(slack.responses.get(url)), timeout=5)
    return slack.responses[url][-1]["text"]


async def _usage(bot) -> tuple[float, float]:
    rows = json.loads(await usage_json(bot.deps, None))
    row = next(r for r in rows if r["user_id"] == "U1")
    return row["spent_usd"], row["reserved_usd"]


async def _audit(bot) -> list[tuple[str, str, str | None]]:
    return [(e.actor, e.action, e.target) for e in reversed(await settings_store.recent_audit(bot.deps.db, 50))]


async def _job(bot, job_id: str) -> dict:
    return next(j for j in json.loads(await jobs_json(bot.deps.db)) if j["id"] == job_id)


async def test_approved_request_runs_once_and_is_charged(make_bot, slack) -> None:
    bot = await make_bot(sora_approval_over_usd="1.00", sora_admin_user_ids=ADMIN)
    job_id = await _expensive(bot, slack)

    dm = next(m for m in slack.messages if m.channel == DM)
    shown = json.dumps(dm.blocks, ensure_ascii=False)
    assert "<@U1> asks for a video costing *$2.00*, over the $1.00 approval limit" in shown
    assert "`simulator` · 20 s · 720p · $2.00" in shown and "a long walk on the beach" in shown
    root = slack.roots("C1")[0]
    assert "Waiting for an admin's approval" in json.dumps(root.blocks)
    await asyncio.sleep(0.3)  # several poll intervals: nothing may be sent while it waits
    job = await _job(bot, job_id)
    assert (job["status"], job["provider_job_id"]) == ("queued", None)
    assert await _usage(bot) == (0.0, 2.0)

    assert "Only admins" in await _click(bot, slack, APPROVE_ACTION, job_id, user="U2")
    assert (await _job(bot, job_id))["status"] == "queued"
    first, second = await asyncio.gather(_click(bot, slack, APPROVE_ACTION, job_id),
                                         _click(bot, slack, APPROVE_ACTION, job_id))  # a double click
    assert sorted(t.split()[0] for t in (first, second)) == ["Approved:", "This"]
    assert "already approved by <@UADMIN>" in (first + second)

    await slack.wait_for(lambda: any(m.files for m in slack.thread("C1", root.ts)), timeout=10)
    await bot.runtime.poller.idle(10)
    job = await _job(bot, job_id)
    assert (job["status"], job["cost_usd"], job["approval_key"]) == ("succeeded", 2.0, job_id)
    assert await _usage(bot) == (2.0, 0.0)
    assert any("<@UADMIN> approved this request" in m.text for m in slack.thread("C1", root.ts))
    assert "Approved by <@UADMIN>" in dm.text
    assert [a for a in await _audit(bot) if a[1].startswith("approval.")] == [(ADMIN, "approval.approve", job_id)]
    rows = await bot.deps.db.fetchall("SELECT event, amount_micros FROM ledger_events WHERE job_id = ? ORDER BY id", (job_id,))
    assert [tuple(r) for r in rows] == [("reserve", 2_000_000), ("charge", 2_000_000)]


async def test_denied_request_releases_the_reservation_and_says_why(make_bot, slack) -> None:
    bot = await make_bot(sora_approval_over_usd="1.00", sora_admin_user_ids=ADMIN)
    job_id = await _expensive(bot, slack)
    text = await _click(bot, slack, DENY_ACTION, job_id)
    assert text.startswith("Denied: <@U1>'s $2.00 reservation is released")
    root = slack.roots("C1")[0]
    await slack.wait_for(lambda: any("declined this request" in m.text for m in slack.thread("C1", root.ts)), timeout=5)
    note = next(m for m in slack.thread("C1", root.ts) if "declined" in m.text).text
    assert note.startswith("<@U1> <@UADMIN> declined this request") and "$2.00 reserved is back in your budget" in note
    assert "already denied" in await _click(bot, slack, APPROVE_ACTION, job_id)  # too late: nothing runs
    await bot.runtime.poller.idle(10)
    job = await _job(bot, job_id)
    assert (job["status"], job["failure_kind"], job["cost_usd"], job["provider_job_id"]) == ("cancelled", "cancelled", 0.0, None)
    assert await _usage(bot) == (0.0, 0.0)
    rows = await bot.deps.db.fetchall("SELECT event FROM ledger_events WHERE job_id = ? ORDER BY id", (job_id,))
    assert [r[0] for r in rows] == ["reserve", "release"]
    assert [a for a in await _audit(bot) if a[1].startswith("approval.")] == [(ADMIN, "approval.deny", job_id)]
    dm = next(m for m in slack.messages if m.channel == DM)
    assert "Denied by <@UADMIN>" in dm.text


async def test_unanswered_request_expires_and_releases(make_bot, slack) -> None:
    bot = await make_bot(sora_approval_over_usd="1.00", sora_admin_user_ids=ADMIN,
                         timing=replace(FAST, approval_ttl_s=0.6))
    job_id = await _expensive(bot, slack)
    assert await _usage(bot) == (0.0, 2.0)
    root = slack.roots("C1")[0]
    await slack.wait_for(lambda: any("expired" in m.text for m in slack.thread("C1", root.ts)), timeout=10)
    await bot.runtime.poller.idle(10)
    note = next(m for m in slack.thread("C1", root.ts) if "expired" in m.text).text
    assert "Nobody approved this request within 24 hours" in note
    job = await _job(bot, job_id)
    assert (job["status"], job["failure_kind"], job["cost_usd"]) == ("cancelled", "cancelled", 0.0)
    assert await _usage(bot) == (0.0, 0.0)
    assert [a for a in await _audit(bot) if a[1].startswith("approval.")] == [("bot", "approval.expire", job_id)]
    dm = next(m for m in slack.messages if m.channel == DM)
    assert "Expired without an answer" in dm.text
    assert "already expired" in await _click(bot, slack, APPROVE_ACTION, job_id)


async def test_threshold_is_set_from_slack_and_cheaper_requests_never_wait(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    reply = (await bot.slash("-m simulator -d 20 no approval configured")).json()["text"]
    assert "approval" not in reply
    assert "Requests costing more than $3.00 wait" in await bot.admin("approval over 3", user=ADMIN)
    assert "approval" not in (await bot.slash("-m simulator -d 20 two dollars is under three")).json()["text"]
    assert "Approval is off" in await bot.admin("approval off", user=ADMIN)
    assert "Sorry" in await bot.admin("approval over 1", user="U2")
    await bot.runtime.poller.idle(10)
    assert not any(m.channel == DM for m in slack.messages)
    actions = [a[1] for a in await _audit(bot)]
    assert actions == ["approval.threshold", "approval.threshold"]


async def test_a_compare_over_the_threshold_is_approved_as_one_request(make_bot, slack) -> None:
    from bot.providers.simulator import SimulatorProvider
    import httpx
    from bot.providers.gateway import GatewayProvider
    from tests.fakes.providers import FakeGatewayServer

    async with FakeGatewayServer(run_seconds=0.2) as gateway, httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(gateway.base_url, gateway.api_key, client=client),
                       "simulator": SimulatorProvider(run_seconds=0.2)},
            sora_default_model="sora-2", sora_approval_over_usd="1.00", sora_admin_user_ids=ADMIN)
        reply = (await bot.slash("compare -m sora-2,simulator -d 8 twins")).json()["text"]
        compare_id = reply.split("compare `")[1].split("`")[0]
        assert "needs an admin's approval" in reply
        await slack.wait_for(lambda: any(m.channel == DM for m in slack.messages), timeout=5)
        assert len([m for m in slack.messages if m.channel == DM]) == 1  # one DM for the set
        assert gateway.create_attempts == []
        assert (await _click(bot, slack, APPROVE_ACTION, compare_id)).startswith("Approved: <@U1>'s $1.60 request")
        root = slack.roots("C1")[0]
        await slack.wait_for(lambda: any(m.text.startswith("*Side by side*") for m in slack.thread("C1", root.ts)), timeout=10)
        assert await _usage(bot) == (1.6, 0.0) and len(gateway.submits) == 1


async def test_a_waiting_request_survives_a_restart_and_its_owner_can_withdraw_it(make_bot, slack) -> None:
    bot = await make_bot(sora_approval_over_usd="1.00", sora_admin_user_ids=ADMIN)
    job_id = await _expensive(bot, slack)
    expires = (await bot.deps.db.fetchone("SELECT expires_at FROM approvals WHERE key = ?", (job_id,)))[0]
    await bot.runtime.close()  # a stop while it waits

    again = await make_bot(sora_approval_over_usd="1.00", sora_admin_user_ids=ADMIN)  # the same database
    await slack.wait_for(lambda: len(slack.calls_to("conversations.open")) >= 2, timeout=5)
    assert len([m for m in slack.messages if m.channel == DM]) == 1  # the admin is not asked twice
    assert (await again.deps.db.fetchone("SELECT expires_at FROM approvals WHERE key = ?", (job_id,)))[0] == expires
    assert (await _job(again, job_id))["status"] == "queued"

    url = slack.new_response_url()
    await post_signed(again.http, again.url, action_body("sora_cancel", job_id, response_url=url))
    await slack.wait_for(lambda: bool(slack.responses.get(url)), timeout=5)
    assert "Cancelled job" in slack.responses[url][-1]["text"]
    dm = next(m for m in slack.messages if m.channel == DM)
    await slack.wait_for(lambda: "Cancelled by <@U1> before anyone decided" in dm.text, timeout=5)
    assert "already withdrawn by <@U1>" in await _click(again, slack, APPROVE_ACTION, job_id)
    await again.runtime.poller.idle(10)
    assert await _usage(again) == (0.0, 0.0)
    assert (await _job(again, job_id))["provider_job_id"] is None
    assert [a for a in await _audit(again) if a[1].startswith("approval.")] == [("U1", "approval.withdraw", job_id)]
