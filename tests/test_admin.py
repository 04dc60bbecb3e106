"""`/sora-admin` through the real app: who may use it, what each command changes, the audit."""

from __future__ import annotations

import pytest
import json

from bot.cli import jobs_json, usage_json

# the storage a job's life touches, on both engines
pytestmark = pytest.mark.both_backends


async def _usage(bot) -> dict[str, dict]:
    return {u["user_id"]: u for u in json.loads(await usage_json(bot.deps, None))}


async def _audit_count(bot) -> int:
    row = await bot.deps.db.fetchone("SELECT COUNT(*) FROM audit_log")
    return int(row[0])


async def test_everyone_else_gets_a_polite_refusal_and_nothing_changes(make_bot, slack) -> None:
    bot = await make_bot()
    text = await bot.admin("budget default 100", user="U2")
    assert "Sorry" in text and "Nothing was changed" in text
    assert await _audit_count(bot) == 0
    assert "$5.00" in (await bot.slash("budget", user="U2")).json()["text"]


async def test_a_slack_error_while_checking_denies(make_bot, slack) -> None:
    slack.add_user("U7", name="owner", is_owner=True)
    bot = await make_bot()
    slack.fail_next("users.info", error="ratelimited")
    assert "Sorry" in await bot.admin("pause", user="U7")
    # once Slack answers, the owner is let in (failures are not cached)
    assert "paused" in await bot.admin("pause", user="U7")


async def test_workspace_admins_owners_and_named_ids_are_admins(make_bot, slack) -> None:
    slack.add_user("UADM", name="ada", is_admin=True)
    slack.add_user("UOWN", name="otto", is_owner=True)
    bot = await make_bot(sora_admin_user_ids="UNAMED")
    for user in ("UADM", "UOWN", "UNAMED"):
        assert "Workspace admins" in await bot.admin("admins", user=user)
    assert "<@UNAMED>" in await bot.admin("admins", user="UNAMED")


async def test_budget_set_accepts_every_form_of_user_argument(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN")
    for arg, amount in (("<@U1|alice>", "7"), ("<@U1>", "8.50"), ("U1", "$9")):
        text = await bot.admin(f"budget set {arg} {amount}", user="UADMIN")
        assert "<@U1>'s daily budget is now" in text
    assert (await _usage(bot))["U1"]["limit_usd"] == 9.0
    assert "mention menu" in await bot.admin("budget set @alice 3", user="UADMIN")
    assert "isn't an amount" in await bot.admin("budget set <@U1> lots", user="UADMIN")
    assert "negative" in await bot.admin("budget set <@U1> -2", user="UADMIN")
    assert (await _usage(bot))["U1"]["limit_usd"] == 9.0
    assert "default daily budget again" in await bot.admin("budget set <@U1> reset", user="UADMIN")
    assert "U1" not in await _usage(bot)
    assert await _audit_count(bot) == 4


async def test_an_override_beats_the_default_and_both_persist(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN", sora_daily_budget_usd="1.00")
    assert "$0.40 left" not in (await bot.slash("-d 8 a dog")).json()["text"]  # $0.80 fits $1
    refused = (await bot.slash("-d 8 another dog")).json()["text"]
    assert "$0.20 left of your $1.00" in refused
    await bot.admin("budget default 2", user="UADMIN")
    assert "Got it" in (await bot.slash("-d 8 another dog")).json()["text"]
    await bot.admin("budget set <@U2> 0.50", user="UADMIN")
    assert "$0.50 left of your $0.50" in (await bot.slash("-d 8 a cat", user="U2")).json()["text"]
    usage = await _usage(bot)
    assert usage["U1"]["limit_usd"] == 2.0 and usage["U2"]["limit_usd"] == 0.5


async def test_the_workspace_cap_refuses_and_says_it_is_the_workspace(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN", sim_seconds=30)
    assert "$1.00 a day" in await bot.admin("budget workspace 1", user="UADMIN")
    assert "Got it" in (await bot.slash("-d 8 a dog")).json()["text"]
    text = (await bot.slash("-d 4 a cat", user="U2")).json()["text"]
    assert "workspace has $0.20 left of its $1.00 daily cap" in text
    assert "off" in await bot.admin("budget workspace off", user="UADMIN")
    assert "Got it" in (await bot.slash("-d 4 a cat", user="U2")).json()["text"]


async def test_pause_refuses_new_requests_while_running_jobs_finish(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN", sim_seconds=0.5)
    assert "Got it" in (await bot.slash("a running job")).json()["text"]
    await bot.admin("pause provider invoice overdue", user="UADMIN")
    refused = (await bot.slash("a new job")).json()["text"]
    assert "paused by an admin (provider invoice overdue)" in refused
    await bot.runtime.poller.idle(10)
    jobs = json.loads(await jobs_json(bot.deps.db))
    assert [j["status"] for j in jobs] == ["succeeded"]
    assert "paused" in (await bot.slash("budget")).json()["text"]
    assert "open again" in await bot.admin("resume", user="UADMIN")
    assert "Got it" in (await bot.slash("a new job")).json()["text"]


async def test_refund_gives_the_money_back_once_and_explains_it(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN")
    job_id = (await bot.slash("-d 8 an unusable video")).json()["text"].split("`")[1]
    await bot.runtime.poller.idle(10)
    assert (await _usage(bot))["U1"]["spent_usd"] == 0.8
    text = await bot.admin(f"refund {job_id} it came out sideways", user="UADMIN")
    assert "Refunded $0.80" in text
    usage = (await _usage(bot))["U1"]
    assert usage["spent_usd"] == 0 and usage["remaining_usd"] == 5.0
    job = json.loads(await jobs_json(bot.deps.db))[0]
    assert job["cost_usd"] == 0 and job["status"] == "succeeded"
    thread = slack.thread("C1", job["thread_ts"])
    assert "refunded the $0.80" in thread[-1].text and "sideways" in thread[-1].text
    assert "refunded already" in await bot.admin(f"refund {job_id}", user="UADMIN")
    report = await bot.admin("usage", user="UADMIN")
    assert f"refunded job `{job_id}` ($0.80): it came out sideways" in report
    assert "no job" in await bot.admin("refund nosuchjob", user="UADMIN")


async def test_refund_refuses_jobs_that_were_never_charged(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN")
    job_id = (await bot.slash("[blocked] a fight")).json()["text"].split("`")[1]
    await bot.runtime.poller.idle(10)
    assert "never charged" in await bot.admin(f"refund {job_id}", user="UADMIN")
    assert await _audit_count(bot) == 0


async def test_usage_report_shows_people_the_workspace_and_the_audit(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UADMIN", sim_seconds=30)
    await bot.slash("-d 8 a slow dog")
    await bot.admin("budget set <@U2> 3", user="UADMIN")
    report = await bot.admin("usage", user="UADMIN")
    assert "<@U1>: spent $0.00 · reserved $0.80 · limit $5.00 · 1 job" in report
    assert "<@U2>: spent $0.00 · reserved $0.00 · limit $3.00 · 0 jobs" in report
    assert "*Workspace:* spent $0.00 · reserved $0.80 (no workspace cap)" in report
    assert "set <@U2>'s budget default → $3.00" in report
    assert "isn't a date" in await bot.admin("usage 24/11/2026", user="UADMIN")
    old_day = await bot.admin("usage 2020-01-01", user="UADMIN")
    assert "<@U1>" not in old_day and "limit $3.00 · 0 jobs" in old_day  # overrides always listed
