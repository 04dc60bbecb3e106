"""Two hundred simultaneous /sora commands through the real app: nobody overspends."""

from __future__ import annotations

import pytest
import asyncio
import json

from bot.cli import jobs_json, usage_json
from bot.money import usd_to_micros
from storage import ledger
from tests.slack_requests import post_signed, slash_body

# the storage a job's life touches, on both engines
pytestmark = pytest.mark.both_backends

USERS = [f"U{i:02d}" for i in range(12)]


async def test_200_simultaneous_requests_never_overspend(make_bot, slack) -> None:
    # simulator jobs that never finish during the test: every accepted job stays reserved
    bot = await make_bot(
        sora_daily_budget_usd="2.00",
        sora_workspace_daily_budget_usd="9.00",
        sora_max_concurrent_per_user=3,
        sim_seconds=600,
    )
    durations = [4, 8, 5, 6]

    async def fire(i: int):
        user = USERS[i % len(USERS)]
        body = slash_body(f"-d {durations[i % 4]} request number {i}", user=user,
                          response_url=slack.new_response_url())
        resp = await post_signed(bot.http, bot.url, body)
        return user, i, resp

    results = await asyncio.gather(*(fire(i) for i in range(200)))

    accepted: dict[str, str] = {}
    for user, i, resp in results:
        assert resp.status_code == 200
        text = resp.json()["text"]
        if text.startswith("Got it"):
            accepted[f"request number {i}"] = user
        else:
            # every refusal names the limit that was hit, or says the bot was too busy to
            # store it within Slack's 3 s (nothing stored then either)
            assert ("your $2.00 daily budget" in text or "workspace has" in text
                    or "unfinished video jobs" in text or "Nothing was stored or charged" in text), text
    assert accepted, "some requests must fit"

    jobs = json.loads(await jobs_json(bot.deps.db, limit=0))
    assert {j["prompt"]: j["user_id"] for j in jobs} == accepted  # every accepted job is stored, no others

    day = jobs[0]["created_at"][:10]
    usage = json.loads(await usage_json(bot.deps, day))
    for row in usage:
        assert usd_to_micros(row["spent_usd"]) + usd_to_micros(row["reserved_usd"]) <= usd_to_micros(row["limit_usd"])
    async with bot.deps.db.reading() as reader:
        ws = await ledger.workspace_totals(reader, day)
    assert ws.used_micros <= usd_to_micros("9.00")
    per_user: dict[str, int] = {}
    for j in jobs:
        per_user[j["user_id"]] = per_user.get(j["user_id"], 0) + 1
    assert max(per_user.values()) <= 3

    # refused requests created no provider job; accepted ones were submitted once each
    await slack.wait_for(lambda: len(bot.deps.providers["simulator"].submits) == len(accepted), timeout=20)
    submitted = [s.external_id for s in bot.deps.providers["simulator"].submits]
    assert sorted(submitted) == sorted(j["id"] for j in jobs)
