"""Every failure kind of the contract, from a provider's raw signal to what the user sees.

One row per kind: the fake gateway produces the signal; the thread shows the kind's
message, `jobs --json` shows the kind, and the reservation is refunded.
"""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest

from bot.cli import jobs_json, usage_json
from bot.models import FailureKind
from bot.providers.gateway import GatewayProvider
from tests.conftest import FAST
from tests.fakes.providers import FakeGatewayServer

# the storage a job's life touches, on both engines
pytestmark = pytest.mark.both_backends

TIMING = replace(FAST, submit_retry_window_s=1.2, download_attempts=3, stall_timeout_s=0.5, job_timeout_s=2.5)

TABLE = [
    # kind, prompt marker, words in the thread
    ("invalid_request", "[400]", "didn't accept this request"),
    ("blocked_input", "[blocked-input]", "safety filter rejected your prompt"),
    ("blocked_output", "[blocked-output]", "held back by the provider's safety filter"),
    ("rate_limited", "[429-always]", "stayed at its rate limit"),
    ("quota_exhausted", "[quota]", "credits are used up"),
    ("auth_failed", "[401]", "can't authenticate"),
    ("provider_unavailable", "[503-always]", "is having problems"),
    ("generation_failed", "[fail]", "failed to render"),
    ("stuck", "[stuck]", "Gave up waiting"),
    ("result_expired", "[expired]", "download link expired"),
    ("download_failed", "[download-502-always]", "couldn't download it"),
    ("cancelled", "[cancelled]", "Cancelled"),
    ("provider_retired", "[retired]", "no longer available"),
]


def test_the_table_covers_every_kind() -> None:
    # slack_refused is Slack's refusal, not a provider's: tests/test_slack_limits.py drives it
    assert {row[0] for row in TABLE} | {"slack_refused"} == {k.value for k in FailureKind}


@pytest.mark.parametrize(("kind", "marker", "words"), TABLE, ids=[row[0] for row in TABLE])
async def test_each_failure_kind_is_explained_and_refunded(make_bot, slack, kind, marker, words) -> None:
    slack.add_user("UADMIN", name="ada", is_admin=True)
    async with FakeGatewayServer(run_seconds=0.3) as server, httpx.AsyncClient() as client:
        provider = GatewayProvider(server.base_url, server.api_key, client=client)
        bot = await make_bot(providers={"gateway": provider}, include_simulator=False,
                             sora_default_model="sora-2", timing=TIMING)
        await bot.slash(f"{marker} a paper lantern")
        await bot.runtime.poller.idle(20)
    job = json.loads(await jobs_json(bot.deps.db))[0]
    assert job["failure_kind"] == kind and job["cost_usd"] == 0
    assert job["status"] == ("cancelled" if kind == "cancelled" else "failed")
    replies = [m for m in slack.thread("C1", job["thread_ts"])[1:]]
    assert len(replies) == 1, [m.text for m in replies]
    text = replies[0].text
    assert words in text and f"`{kind}`" in text and "not charged" in text
    # provider-internal words stay in the logs
    assert "invalid_api_key" not in text and "insufficient_quota" not in text
    usage = json.loads(await usage_json(bot.deps, None))[0]
    assert usage["spent_usd"] == 0 and usage["reserved_usd"] == 0
    dms = [m for m in slack.messages if m.channel == "DUADMIN"]
    if kind in ("quota_exhausted", "auth_failed"):
        assert len(dms) == 1 and kind in dms[0].text  # the admins hear about it, once
    else:
        assert dms == []


async def test_admins_hear_once_per_incident_and_again_after_recovery(make_bot, slack) -> None:
    slack.add_user("UADMIN", name="ada", is_admin=True)
    async with FakeGatewayServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        provider = GatewayProvider(server.base_url, server.api_key, client=client)
        bot = await make_bot(providers={"gateway": provider}, include_simulator=False,
                             sora_default_model="sora-2", timing=TIMING)
        for prompt in ("[quota] one", "[quota] two", "a success", "[quota] three"):
            await bot.slash(prompt)
            await bot.runtime.poller.idle(20)
    dms = [m for m in slack.messages if m.channel == "DUADMIN"]
    assert len(dms) == 2, [m.text for m in dms]  # the first burst, then the new incident
