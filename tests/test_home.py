"""The App Home tab through the real app: signed app_home_opened events, views.publish at the fake Slack.

`UPDATE_DOCS=1 pytest tests/test_home.py` (or `python -m tests.test_home`) rewrites
docs/app-home-*.json from the sample data below.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.surfaces import home
from bot.clock import iso
from bot.models import FailureKind, Job, JobStatus
from storage import admin as settings_store
from storage import jobs as jobstore
from storage.ledger import UsageRow
from tests.slack_requests import action_body, app_home_opened_body, post_signed

DOCS = Path(__file__).resolve().parents[1] / "docs"

# ---------------------------------------------------------------------- Block Kit checks

_ALLOWED_BLOCKS = {
    "header": {"type", "block_id", "text"},
    "section": {"type", "block_id", "text", "fields", "accessory"},
    "context": {"type", "block_id", "elements"},
    "divider": {"type", "block_id"},
    "actions": {"type", "block_id", "elements"},
}
_BUTTON_KEYS = {"type", "text", "action_id", "value", "style", "url", "confirm", "accessibility_label"}


def _check_text(obj: dict[str, Any], *, limit: int = 3000, plain: bool = False) -> None:
    assert obj["type"] in (("plain_text",) if plain else ("plain_text", "mrkdwn")), obj
    assert set(obj) <= ({"type", "text", "emoji"} if obj["type"] == "plain_text" else {"type", "text", "verbatim"}), obj
    assert isinstance(obj["text"], str) and 1 <= len(obj["text"]) <= limit, obj


def check_home_view(view: dict[str, Any]) -> None:
    """What Slack's views.publish demands of a Home view, for the block types this bot uses."""
    assert set(view) <= {"type", "blocks", "private_metadata", "callback_id", "external_id"}
    assert view["type"] == "home"
    blocks = view["blocks"]
    assert 1 <= len(blocks) <= 100
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(ids) == len(set(ids)) and all(len(i) <= 255 for i in ids)
    for block in blocks:
        kind = block["type"]
        assert kind in _ALLOWED_BLOCKS, kind
        assert set(block) <= _ALLOWED_BLOCKS[kind], block
        if kind == "header":
            _check_text(block["text"], limit=150, plain=True)
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                _check_text(block["text"])
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                _check_text(element)
        elif kind == "actions":
            assert 1 <= len(block["elements"]) <= 25
            for button in block["elements"]:
                assert button["type"] == "button" and set(button) <= _BUTTON_KEYS, button
                _check_text(button["text"], limit=75, plain=True)
                assert 1 <= len(button["action_id"]) <= 255
                assert len(button.get("value", "")) <= 2000
                assert button.get("style", "primary") in ("primary", "danger")


def _text(view: dict[str, Any]) -> str:
    """Everything a reader sees, one block a line."""
    lines = []
    for block in view["blocks"]:
        if "text" in block:
            lines.append(block["text"]["text"])
        for element in block.get("elements") or []:
            lines.append(element["text"] if element["type"] != "button" else f"[{element['text']['text']}]")
    return "\n".join(lines)


# ---------------------------------------------------------------------- driving the app


def _publishes(slack, user: str) -> list[dict[str, Any]]:
    return [v["params"]["view"] for v in slack.views
            if v["method"] == "views.publish" and v["params"].get("user_id") == user]


async def _open_home(bot, user: str = "U1") -> dict[str, Any]:
    before = len(_publishes(bot.slack, user))
    resp = await post_signed(bot.http, bot.url, app_home_opened_body(user))
    assert resp.status_code == 200
    await bot.slack.wait_for(lambda: len(_publishes(bot.slack, user)) > before, timeout=5)
    view = _publishes(bot.slack, user)[-1]
    check_home_view(view)
    return view


async def _run(bot, text: str, *, user: str = "U1") -> str:
    reply = (await bot.slash(text, user=user)).json()["text"]
    return reply.split("`")[1]


async def _jobs(bot) -> list[Job]:
    return await jobstore.list_jobs(bot.deps.db, limit=0)


async def _insert_jobs(bot, user: str, count: int, *, prefix: str = "old", cost_micros: int = 800_000,
                       threads: list[str] | None = None) -> None:
    """Charged, finished jobs written straight into the tables: a long history without running it.
    `threads`: each job's thread_ts (default: threads the fake Slack doesn't know)."""
    now = bot.deps.clock()
    day = now.date().isoformat()
    async with bot.deps.db.write_txn() as conn:
        for n in range(count):
            job_id, at = f"{prefix}{n:05d}", iso(now - timedelta(minutes=count - n))
            await conn.execute(
                """INSERT INTO jobs (id, user_id, channel_id, thread_ts, source, model, provider,
                       provider_model, prompt, duration_seconds, resolution, aspect_ratio, status,
                       provider_job_id, estimate_micros, cost_micros, budget_day, created_at, updated_at)
                   VALUES (?, ?, 'C1', ?, 'command', 'simulator', 'simulator', 'simulator', ?, 8,
                           '720p', '16:9', 'succeeded', ?, ?, ?, ?, ?, ?)""",
                (job_id, user, threads[n] if threads else f"1700000000.{n:06d}", "a very long prompt <!here> " * 200,
                 f"p-{job_id}", cost_micros, cost_micros, day, at, at),
            )
            await conn.execute(
                "INSERT INTO ledger (job_id, user_id, budget_day, reserved_micros, charged_micros, state,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'charged', ?, ?)",
                (job_id, user, day, cost_micros, cost_micros, at, at),
            )


# ---------------------------------------------------------------------- through the app


async def test_a_user_sees_budget_reset_time_and_recent_jobs_with_thread_links(make_bot, slack) -> None:
    bot = await make_bot()
    done = await _run(bot, "a paper boat <!channel> & <@U2> in the rain")
    failed = await _run(bot, "-d 4 [fail] a melting clock")
    await bot.runtime.poller.idle(15)
    view = await _open_home(bot)
    text = _text(view)
    assert "▓▓▓▓▓▓▓▓░░ $4.20 left of $5.00 today" in text  # the failed job cost nothing
    assert "spent $0.80 · reserved for running jobs $0.00" in text
    assert "resets at 00:00 UTC, in " in text
    buttons = [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == [home.OPEN_REQUEST_ACTION]
    assert buttons[0]["text"]["text"] == "Generate a video"
    rows = {b["text"]["text"]: b for b in view["blocks"] if b["type"] == "section" and "`simulator`" in b["text"]["text"]}
    assert len(rows) == 2
    jobs = {j.id: j for j in await _jobs(bot)}
    ok = next(t for t in rows if ":white_check_mark:" in t)
    assert "*done*" in ok and "8 s" in ok and "*$0.80*" in ok
    # chat.getPermalink's answer, on the workspace's own host
    link = f"https://fake-workspace.slack.com/archives/C1/p{jobs[done].thread_ts.replace('.', '')}"
    assert f"<{link}|open thread>" in ok
    # the prompt is echoed, never as a ping
    # Slack's markup became what a person reads (<@U2> is bob), and the broadcast stays inert
    assert "@\u200bchannel &amp; @bob" in ok and "<!channel>" not in text and "<@U2>" not in text
    bad = next(t for t in rows if ":x:" in t)
    assert "failed (`generation_failed`)" in bad and "not charged" in bad and "4 s" in bad
    assert f"job `{failed}`" in text and f"job `{done}`" in text
    assert "Workspace today" not in text and "Top spenders" not in text


def _permalink_calls(slack, thread_ts: str) -> int:
    return sum(1 for c in slack.calls_to("chat.getPermalink") if c.params.get("message_ts") == thread_ts)


async def test_a_thread_link_is_looked_up_once_and_kept_on_the_job(make_bot, slack) -> None:
    bot = await make_bot()
    job_id = await _run(bot, "a paper boat in the rain")
    await bot.runtime.poller.idle(15)  # the video's arrival published the Home once already
    (job,) = await _jobs(bot)
    link = f"https://fake-workspace.slack.com/archives/C1/p{job.thread_ts.replace('.', '')}"
    assert _permalink_calls(slack, job.thread_ts) == 1
    for _ in range(2):
        assert f"<{link}|open thread>" in _text(await _open_home(bot))
    assert _permalink_calls(slack, job.thread_ts) == 1
    with sqlite3.connect(bot.deps.settings.sora_db_path) as conn:
        assert conn.execute("SELECT thread_permalink FROM jobs WHERE id = ?", (job_id,)).fetchone()[0] == link


async def test_a_failed_thread_link_lookup_shows_no_link_and_is_tried_again(make_bot, slack, monkeypatch) -> None:
    monkeypatch.setattr(home, "THREAD_LINK_TIMEOUT_S", 0.3)
    bot = await make_bot()
    refused, slow = slack.add_message("C1", "a root", user="U1"), slack.add_message("C1", "another", user="U1")
    await _insert_jobs(bot, "U1", 2, threads=[refused.ts, slow.ts])
    stop_refusing = slack.refuse("chat.getPermalink", "internal_error", when=lambda p: p.get("message_ts") == refused.ts)
    held = slack.hold_next("chat.getPermalink")  # the other lookup: Slack doesn't answer in time
    started = time.monotonic()
    text = _text(await _open_home(bot))
    assert time.monotonic() - started < 2.0
    assert "open thread" not in text and "archives" not in text
    assert text.count("*done*") == 2  # the jobs themselves are shown
    stop_refusing()
    held.release()
    text = _text(await _open_home(bot))
    for message in (refused, slow):
        assert f"<https://fake-workspace.slack.com/archives/C1/p{message.ts.replace('.', '')}|open thread>" in text
        assert _permalink_calls(slack, message.ts) == 2


async def test_a_job_answered_in_a_reply_links_into_its_thread(make_bot, slack) -> None:
    bot = await make_bot()
    root = slack.add_message("C1", "a root", user="U1")
    reply = slack.add_message("C1", "<@UBOT> a heron", user="U1", thread_ts=root.ts)
    await _insert_jobs(bot, "U1", 1, threads=[reply.ts])
    text = _text(await _open_home(bot))
    link = f"https://fake-workspace.slack.com/archives/C1/p{reply.ts.replace('.', '')}?thread_ts={root.ts}&amp;cid=C1"
    assert f"<{link}|open thread>" in text


async def test_the_generate_button_opens_the_request_modal(make_bot, slack) -> None:
    bot = await make_bot()
    button = next(e for b in (await _open_home(bot))["blocks"] if b["type"] == "actions" for e in b["elements"])
    resp = await post_signed(bot.http, bot.url, action_body(button["action_id"], button["value"]))
    assert resp.status_code == 200
    await slack.wait_for(lambda: any(v["method"] == "views.open" for v in slack.views), timeout=5)
    opened = next(v for v in slack.views if v["method"] == "views.open")["params"]["view"]
    assert opened["type"] == "modal"


async def test_a_running_job_shows_its_reservation(make_bot, slack) -> None:
    bot = await make_bot(sim_seconds=60)
    await _run(bot, "-d 10 a slow sunrise")
    text = _text(await _open_home(bot))
    assert "$1.00 reserved" in text and "reserved for running jobs $1.00" in text
    assert "$4.00 left of $5.00 today" in text
    assert "rendering" in text or "queued" in text


async def test_a_user_without_jobs_sees_an_empty_state(make_bot, slack) -> None:
    bot = await make_bot()
    view = await _open_home(bot, "U2")
    text = _text(view)
    assert "You have no video jobs yet" in text
    assert "▓▓▓▓▓▓▓▓▓▓ $5.00 left of $5.00 today" in text


async def test_an_admin_also_sees_the_workspace_top_spenders_pause_and_providers(make_bot, slack) -> None:
    slack.add_user("UADM", name="ada", is_admin=True)
    bot = await make_bot()
    await _run(bot, "-d 8 a dog", user="U1")
    await _run(bot, "-d 12 a cat", user="U2")
    await bot.runtime.poller.idle(15)
    assert "paused" in await bot.admin("pause budget <!here> review", user="UADM")
    async with bot.deps.db.write_txn() as conn:
        await settings_store.put_setting(conn, "incident.simulator.quota_exhausted", "abcd2345", at=iso(bot.deps.clock()), by="bot")

    text = _text(await _open_home(bot, "UADM"))
    assert "Workspace today (admins only)" in text
    assert "spent *$2.00* · reserved $0.00 · no cap" in text
    assert "1. <@U2> $1.20 spent · $0.00 reserved · 1 job · limit $5.00\n2. <@U1> $0.80 spent" in text
    assert "*Paused*: budget &lt;!here&gt; review" in text and "<!here>" not in text
    assert "credits used up (`quota_exhausted`, since job `abcd2345`)" in text
    # everyone sees that requests are paused; only admins see the rest
    user_text = _text(await _open_home(bot, "U1"))
    assert "paused by an admin right now" in user_text and "Workspace today" not in user_text


async def test_named_admins_see_the_workspace_cap_and_healthy_providers(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="UNAMED", sora_workspace_daily_budget_usd="10")
    await _run(bot, "-d 8 a dog")
    await bot.runtime.poller.idle(15)
    text = _text(await _open_home(bot, "UNAMED"))
    assert "▓▓▓▓▓▓▓▓▓░ $9.20 left of the $10.00 cap" in text
    assert "The simulator (`simulator`): ok" in text
    assert ":large_green_circle: Accepting new requests." in text
    assert "Nobody has spent" not in text and "<@U1> $0.80 spent" in text


async def test_the_messages_tab_publishes_nothing(make_bot, slack) -> None:
    bot = await make_bot()
    resp = await post_signed(bot.http, bot.url, app_home_opened_body("U1", tab="messages"))
    assert resp.status_code == 200
    await _open_home(bot, "U2")  # processed after the messages-tab event
    assert _publishes(slack, "U1") == []


async def test_sixty_jobs_stay_within_slack_limits(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids="U1")
    await _insert_jobs(bot, "U1", 60)
    for n in range(30):  # many spenders: only five are listed
        await _insert_jobs(bot, f"U9{n:03d}", 1, prefix=f"s{n:02d}", cost_micros=100_000 * (n + 1))
    view = await _open_home(bot, "U1")
    assert len(view["blocks"]) <= 100
    shown = [b for b in view["blocks"] if b["type"] == "context" and "job `old" in b["elements"][0]["text"]]
    assert len(shown) == home.HOME_JOBS
    assert "job `old00059`" in shown[0]["elements"][0]["text"]  # newest first
    top = next(b["text"]["text"] for b in view["blocks"] if b["type"] == "section" and b["text"]["text"].startswith("*Top spenders*"))
    assert top.count("<@") == home.TOP_SPENDERS and top.startswith("*Top spenders*\n1. <@U1> $48.00 spent")
    assert "&lt;!here&gt;" in _text(view)


async def test_the_home_refreshes_after_the_video_lands(make_bot, slack) -> None:
    bot = await make_bot()
    job_id = await _run(bot, "a fox in a library")
    await bot.runtime.poller.idle(15)
    published = _publishes(slack, "U1")
    assert len(published) == 1
    check_home_view(published[0])
    text = _text(published[0])
    assert f"job `{job_id}`" in text and ":white_check_mark: *done*" in text and "$4.20 left" in text
    # the publish came after the video was posted in the thread
    methods = [c.method for c in slack.calls]
    assert methods.index("views.publish") > methods.index("files.completeUploadExternal")


async def test_job_driven_refreshes_are_throttled_per_person(make_bot, slack) -> None:
    bot = await make_bot()
    await home.refresh_after_job(bot.deps, "U1")
    await home.refresh_after_job(bot.deps, "U1")
    await home.refresh_after_job(bot.deps, "U2")
    assert len(_publishes(slack, "U1")) == 1 and len(_publishes(slack, "U2")) == 1
    # opening the tab is never throttled
    await _open_home(bot, "U1")
    assert len(_publishes(slack, "U1")) == 2


async def test_a_failing_home_never_breaks_delivery(make_bot, slack, monkeypatch) -> None:
    bot = await make_bot()
    slack.fail_next("views.publish", error="invalid_blocks")
    await home.refresh_after_job(bot.deps, "U2")  # a Slack refusal is logged, not raised

    async def broken(deps, user_id):  # noqa: ANN001
        raise RuntimeError("database gone")

    monkeypatch.setattr(home, "publish_home", broken)
    await _run(bot, "a kite on a beach")
    await bot.runtime.poller.idle(15)
    (job,) = await _jobs(bot)
    assert job.status is JobStatus.SUCCEEDED
    replies = slack.thread("C1", job.thread_ts)[1:]
    assert len(replies) == 1 and replies[0].files
    row = await bot.deps.db.fetchone("SELECT state FROM deliveries WHERE job_id = ?", (job.id,))
    assert row is not None and row[0] == "done"


# ---------------------------------------------------------------------- the pure builder


def test_the_budget_bar_is_full_or_empty_only_at_the_ends() -> None:
    assert home.budget_bar(5_000_000, 5_000_000) == "▓" * 10
    assert home.budget_bar(4_990_000, 5_000_000) == "▓" * 9 + "░"
    assert home.budget_bar(3_200_000, 5_000_000) == "▓▓▓▓▓▓░░░░"
    assert home.budget_bar(10_000, 5_000_000) == "▓" + "░" * 9
    assert home.budget_bar(0, 5_000_000) == "░" * 10
    assert home.budget_bar(0, 0) == "░" * 10


def test_a_huge_hostile_prompt_stays_short_escaped_and_valid() -> None:
    job = _job("zzzz2222", status=JobStatus.RUNNING, prompt="<!channel> *bold* @here\n" * 500, progress=40)
    view = home.home_view(budget=_budget(), jobs=[job] * 12)
    check_home_view(view)
    text = _text(view)
    assert "<!channel>" not in text and "@here" not in text and "@\u200bhere" in text
    assert ":clapper: *rendering ~40%*" in text and text.count("job `zzzz2222`") == home.HOME_JOBS


# ---------------------------------------------------------------------- sample views for docs/

_NOW = datetime(2026, 11, 25, 16, 48, tzinfo=UTC)
_TZ = ZoneInfo("Europe/Berlin")


def _budget() -> home.BudgetState:
    return home.BudgetState(5_000_000, 1_000_000, 800_000, _NOW, datetime(2026, 11, 25, 23, 0, tzinfo=UTC), _TZ)


def _job(job_id: str, *, status: JobStatus, minutes_ago: int = 5, **over: Any) -> Job:
    values: dict[str, Any] = dict(
        id=job_id, user_id="U0ALICE", team_id="T0001", channel_id="C0GENERAL",
        thread_ts=f"{_NOW.timestamp() - 60 * minutes_ago - 30:.6f}", status_ts=None,
        source="command", model="sora-2", provider="openai", prompt="a paper boat in the rain",
        duration_seconds=8, resolution="720p", aspect_ratio="16:9", status=status, failure_kind=None,
        failure_detail=None, progress=None, provider_job_id="video_123", estimate_micros=800_000,
        cost_micros=800_000 if status is JobStatus.SUCCEEDED else 0, video_url=None, response_url=None,
        created_at=_NOW - timedelta(minutes=minutes_ago), submit_started_at=None, last_progress_at=None,
        stall_notified=False, finished_at=None, budget_day="2026-11-25",
    )
    values.update(over)
    if values["thread_ts"]:  # as chat.getPermalink answers
        values["thread_permalink"] = f"https://acme.slack.com/archives/C0GENERAL/p{values['thread_ts'].replace('.', '')}"
    return Job(**values)


def _sample_jobs() -> list[Job]:
    return [
        _job("k7m2q9xp", status=JobStatus.RUNNING, minutes_ago=2, progress=35, cost_micros=0,
             prompt="A golden retriever running through autumn leaves, slow motion"),
        _job("h3n8r4tw", status=JobStatus.SUCCEEDED, minutes_ago=25, prompt="A paper boat drifting down a rainy street"),
        _job("b6v2c8dz", status=JobStatus.FAILED, minutes_ago=40, failure_kind=FailureKind.BLOCKED_INPUT,
             model="veo-3.1-fast", provider="veo", duration_seconds=6, prompt="Two <@U0BOB> lookalikes arguing"),
        _job("f9j4s7yu", status=JobStatus.SUCCEEDED, minutes_ago=95, model="simulator", provider="simulator",
             duration_seconds=4, cost_micros=200_000, thread_ts=None, prompt="A teapot orbiting the moon"),
    ]


def sample_views() -> dict[str, dict[str, Any]]:
    """The documented examples: Alice's Home, and the same Home as an admin sees it."""
    workspace = home.WorkspaceState(
        spent_micros=7_400_000, reserved_micros=1_600_000, cap_micros=50_000_000,
        top=[UsageRow("U0ALICE", "2026-11-25", 5_000_000, 1_000_000, 800_000, 3),
             UsageRow("U0BOB", "2026-11-25", 10_000_000, 4_800_000, 0, 5),
             UsageRow("U0CAROL", "2026-11-25", 5_000_000, 1_600_000, 800_000, 2),
             UsageRow("U0DAN", "2026-11-25", 20_000_000, 0, 0, 0)],
        providers=[home.ProviderHealth("openai", "OpenAI"),
                   home.ProviderHealth("veo", "Google Veo", ((FailureKind.QUOTA_EXHAUSTED, "q2w3e4r5"),))],
        week=[("2026-11-19", 12_400_000), ("2026-11-20", 8_000_000), ("2026-11-21", 0), ("2026-11-22", 2_400_000),
              ("2026-11-23", 15_200_000), ("2026-11-24", 9_600_000), ("2026-11-25", 7_400_000)],
    )
    return {
        "user": home.home_view(budget=_budget(), jobs=_sample_jobs()),
        "admin": home.home_view(budget=_budget(), jobs=_sample_jobs(), workspace=workspace),
    }


def _rendered(view: dict[str, Any]) -> str:
    return json.dumps(view, indent=2, ensure_ascii=False) + "\n"


def write_docs() -> None:
    DOCS.mkdir(exist_ok=True)
    for name, view in sample_views().items():
        (DOCS / f"app-home-{name}.json").write_text(_rendered(view), encoding="utf-8")


def test_the_docs_examples_are_what_the_builder_makes() -> None:
    if os.environ.get("UPDATE_DOCS"):
        write_docs()
    for name, view in sample_views().items():
        check_home_view(view)
        path = DOCS / f"app-home-{name}.json"
        assert path.read_text(encoding="utf-8") == _rendered(view), (
            f"{path.name} is stale: rerun with UPDATE_DOCS=1"
        )
        assert json.loads(path.read_text(encoding="utf-8")) == view


def test_the_sample_views_read_well() -> None:
    views = sample_views()
    user, admin = _text(views["user"]), _text(views["admin"])
    assert "▓▓▓▓▓▓░░░░ $3.20 left of $5.00 today" in user
    assert "resets at 00:00 Europe/Berlin, in 6 h 12 min" in user
    assert "Workspace today" not in user and "Workspace today (admins only)" in admin
    assert "<@U0BOB> $4.80 spent" in admin and "<@U0DAN>" not in admin
    assert "Google Veo (`veo`): :rotating_light: credits used up" in admin


if __name__ == "__main__":
    write_docs()
    print(f"wrote {len(sample_views())} views to {DOCS}", file=sys.stderr)


@pytest.mark.both_backends
async def test_publishes_of_one_persons_home_take_turns(make_bot, slack) -> None:
    """Each publish reads what it shows after the one before it is in Slack, so an older read
    is never published over a newer one; other people's Homes don't wait."""
    bot = await make_bot()
    held = slack.hold_next("views.publish")
    first = asyncio.create_task(home.publish_home(bot.deps, "U1"))
    await asyncio.wait_for(held.reached.wait(), 5)
    second = asyncio.create_task(home.publish_home(bot.deps, "U1"))
    await asyncio.wait_for(home.publish_home(bot.deps, "U2"), 5)
    await asyncio.sleep(0.3)
    assert not second.done()
    assert [c.params.get("user_id") for c in slack.calls_to("views.publish")].count("U1") == 1
    held.release()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [c.params.get("user_id") for c in slack.calls_to("views.publish")].count("U1") == 2
