"""Spend reports: the storage query on both engines, `sora-bot report`, `/sora-admin report`
through the real app (the chart in the admin's DM), and the admins' seven days on the Home."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot import cli
from bot.surfaces import report, report_chart
from bot.clock import budget_day
from bot.surfaces.report import usd_exact
from storage import ledger, reports
from storage.db import Database, database_for
from tests.test_home import _open_home, _text

ADMIN = "UADMIN"
DM = f"D{ADMIN}"  # the fake Slack's conversations.open answers D<user>


def _today() -> date:
    return date.fromisoformat(budget_day(datetime.now(UTC), UTC))  # the bots here run in UTC


def _job_id(resp: httpx.Response) -> str:
    return resp.json()["text"].split("`")[1]


async def _scripted_run(bot) -> dict[str, str]:
    """Successes, failures of three kinds and a refund, by two people; the job ids by name."""
    ids = {
        "dog": _job_id(await bot.slash("-d 8 a dog", user="U1")),  # $0.80
        "cat": _job_id(await bot.slash("-d 4 a cat", user="U1")),  # $0.40, refunded below
        "bird": _job_id(await bot.slash("-d 12 a bird", user="U2")),  # $1.20
        "blocked": _job_id(await bot.slash("[blocked] a fight", user="U2")),
        "failed": _job_id(await bot.slash("-d 8 [fail] a storm", user="U2")),
        "held": _job_id(await bot.slash("-d 4 [blocked-output] a crowd", user="U1")),
    }
    await bot.runtime.poller.idle(15)
    assert "Refunded $0.40" in await bot.admin(f"refund {ids['cat']} came out sideways", user=ADMIN)
    return ids


async def _ledger_side(db: Database, first: str, last: str) -> dict[str, Any]:
    """The ledger's own numbers, in plain SQL that shares nothing with storage.reports."""
    async def one(sql: str) -> int:
        row = await db.fetchone(sql, (first, last))
        return int(row[0])

    per_user = await db.fetchall(
        "SELECT user_id, SUM(charged_micros) FROM ledger WHERE state = 'charged'"
        " AND budget_day BETWEEN ? AND ? GROUP BY user_id", (first, last))
    kinds = await db.fetchall(
        "SELECT failure_kind, COUNT(*) FROM jobs WHERE failure_kind IS NOT NULL"
        " AND budget_day BETWEEN ? AND ? GROUP BY failure_kind", (first, last))
    return {
        "net": await one("SELECT COALESCE(SUM(charged_micros), 0) FROM ledger WHERE state = 'charged'"
                         " AND budget_day BETWEEN ? AND ?"),
        "charge_events": await one("SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_events"
                                   " WHERE event = 'charge' AND budget_day BETWEEN ? AND ?"),
        "refund_events": await one("SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_events"
                                   " WHERE event = 'refund' AND budget_day BETWEEN ? AND ?"),
        "jobs": await one("SELECT COUNT(*) FROM jobs WHERE budget_day BETWEEN ? AND ?"),
        "per_user": {r[0]: int(r[1]) for r in per_user},
        "failures": {r[0]: int(r[1]) for r in kinds},
    }


def _micros(usd: str) -> int:
    assert re.fullmatch(r"-?\d+\.\d{6}", usd), usd  # exact to the micro-dollar, never a float's digits
    return int(Decimal(usd) * 1_000_000)


async def _run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], backend: str | None,
                   db_path: Path, *argv: str) -> tuple[int, str, str]:
    """`sora-bot <argv>` against the bot's database, in a thread (it runs its own event loop)."""
    if backend is not None:
        monkeypatch.setenv("SORA_DATABASE_URL", backend)
    monkeypatch.setenv("SORA_DB_PATH", str(db_path))
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _dm_uploads(slack) -> list[Any]:
    return [m for m in slack.messages if m.channel == DM and m.files]


def _captured_uploads(bot) -> list[bytes]:
    """Every body the bot POSTs to an upload URL, as sent (the fake Slack keeps only a digest)."""
    bodies: list[bytes] = []

    async def grab(request: httpx.Request) -> None:
        if "/upload/" in request.url.path:
            bodies.append(request.content)

    bot.deps.http.event_hooks["request"].append(grab)
    return bodies


def _pixels(png: bytes, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> int:
    """How many pixels of exactly `colour` lie inside `box` (left, top, right, bottom)."""
    image = Image.open(io.BytesIO(png)).convert("RGB").crop(box)
    counts = {c: n for n, c in image.getcolors(image.width * image.height) or []}
    return counts.get(colour, 0)


# ---------------------------------------------------------------------- storage, both engines


async def _job_with_money(conn, job_id: str, *, user: str, model: str, provider: str, day: str,
                          reserve: int, then: str, charge: int = 0, failure: str | None = None) -> None:
    """A job row and its ledger row, moved through the ledger's own functions (so its events
    are written as in production): `then` is reserved | charged | refunded | released."""
    at = f"{day}T12:00:00.000000Z"
    status = {"reserved": "running", "charged": "succeeded", "refunded": "succeeded"}.get(then, "failed")
    await conn.execute(
        """INSERT INTO jobs (id, user_id, channel_id, source, model, provider, provider_model, prompt,
               duration_seconds, resolution, aspect_ratio, status, failure_kind, provider_job_id,
               estimate_micros, budget_day, created_at, updated_at)
           VALUES (?, ?, 'C1', 'command', ?, ?, ?, 'p', 8, '720p', '16:9', ?, ?, 'pj', ?, ?, ?, ?)""",
        (job_id, user, model, provider, model, status, failure, reserve, day, at, at),
    )
    await ledger.add_reservation(conn, job_id=job_id, user_id=user, day=day, amount_micros=reserve, at=at)
    if then in ("charged", "refunded"):
        assert await ledger.charge(conn, job_id, charge, at)
    if then == "refunded":
        assert await ledger.refund(conn, job_id, at) == charge
    if then == "released":
        assert await ledger.release(conn, job_id, at)


@pytest.mark.both_backends
async def test_the_report_query_sums_the_ledger_by_user_model_provider_and_day(backend, tmp_path) -> None:
    db = await database_for(backend, tmp_path / "r.db").open()
    try:
        async with db.write_txn() as conn:
            add = _job_with_money
            await add(conn, "a1", user="U1", model="sora-2", provider="openai", day="2026-11-02",
                      reserve=800_000, then="charged", charge=800_000)
            await add(conn, "a2", user="U1", model="sora-2", provider="openai", day="2026-11-03",
                      reserve=800_000, then="refunded", charge=799_999)
            await add(conn, "a3", user="U1", model="sora-2", provider="gateway", day="2026-11-03",
                      reserve=1_000_001, then="charged", charge=1_000_001)
            await add(conn, "b1", user="U2", model="veo-3.1", provider="veo", day="2026-11-03",
                      reserve=3_200_000, then="released", failure="blocked_input")
            await add(conn, "b2", user="U2", model="veo-3.1", provider="veo", day="2026-11-03",
                      reserve=3_200_000, then="released", failure="blocked_input")
            await add(conn, "b3", user="U2", model="veo-3.1", provider="veo", day="2026-11-04",
                      reserve=3_200_000, then="released", failure="stuck")
            await add(conn, "b4", user="U2", model="veo-3.1", provider="veo", day="2026-11-04",
                      reserve=3_200_000, then="charged", charge=3_200_000)
            await add(conn, "c1", user="U3", model="sora-2", provider="openai", day="2026-11-04",
                      reserve=400_000, then="reserved")  # still running: no money yet
            # outside the range on either side
            await add(conn, "x1", user="U1", model="sora-2", provider="openai", day="2026-11-01",
                      reserve=500_000, then="charged", charge=500_000)
            await add(conn, "x2", user="U1", model="sora-2", provider="openai", day="2026-11-06",
                      reserve=500_000, then="charged", charge=500_000)
        got = await db.run_read(reports.spend_report, "2026-11-02", "2026-11-05")
        week = await db.run_read(reports.net_by_day, "2026-11-02", "2026-11-05")
    finally:
        await db.close()

    rows = {(r.user_id, r.model, r.provider): r for r in got.rows}
    assert list(rows) == [("U1", "sora-2", "gateway"), ("U1", "sora-2", "openai"), ("U2", "veo-3.1", "veo"),
                          ("U3", "sora-2", "openai")]
    openai = rows["U1", "sora-2", "openai"]
    assert (openai.charged_micros, openai.refunded_micros, openai.net_micros, openai.jobs) == (1_599_999, 799_999, 800_000, 2)
    veo = rows["U2", "veo-3.1", "veo"]
    assert (veo.charged_micros, veo.net_micros, veo.jobs, dict(veo.failures)) == (
        3_200_000, 3_200_000, 4, {"blocked_input": 2, "stuck": 1})
    running = rows["U3", "sora-2", "openai"]
    assert (running.charged_micros, running.jobs, running.failed) == (0, 1, 0)
    total = got.total()
    assert (total.charged_micros, total.refunded_micros, total.net_micros) == (5_800_000, 799_999, 5_000_001)
    assert got.daily == {"2026-11-02": {"sora-2": 800_000}, "2026-11-03": {"sora-2": 1_000_001},
                         "2026-11-04": {"veo-3.1": 3_200_000}, "2026-11-05": {}}
    assert week == {"2026-11-02": 800_000, "2026-11-03": 1_000_001, "2026-11-04": 3_200_000, "2026-11-05": 0}
    assert [(r.user_id, r.net_micros) for r in got.top_users()] == [("U2", 3_200_000), ("U1", 1_800_001)]
    assert [r.provider for r in got.by("provider")] == ["veo", "gateway", "openai"]


# ---------------------------------------------------------------------- sora-bot report


@pytest.mark.both_backends
async def test_report_csv_totals_equal_the_ledger_to_the_micro_dollar(
    make_bot, slack, backend, tmp_path, monkeypatch, capsys
) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    ids = await _scripted_run(bot)
    first, last = (_today() - timedelta(days=1)).isoformat(), (_today() + timedelta(days=1)).isoformat()
    truth = await _ledger_side(bot.deps.db, first, last)

    code, out, err = await _run_cli(monkeypatch, capsys, backend, tmp_path / "bot.db",
                                    "report", "--from", first, "--to", last, "--csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == report.CSV_COLUMNS
    charged = sum(_micros(r["charged_usd"]) for r in rows)
    refunded = sum(_micros(r["refunded_usd"]) for r in rows)
    net = sum(_micros(r["net_usd"]) for r in rows)
    assert all(_micros(r["net_usd"]) == _micros(r["charged_usd"]) - _micros(r["refunded_usd"]) for r in rows)
    # the ledger's rows, its events, and what the run cost by the price list all agree
    assert net == truth["net"] == truth["charge_events"] - truth["refund_events"] == 2_000_000
    assert charged == truth["charge_events"] == 2_400_000
    assert refunded == truth["refund_events"] == 400_000
    per_user: dict[str, int] = {}
    for r in rows:
        per_user[r["user_id"]] = per_user.get(r["user_id"], 0) + _micros(r["net_usd"])
    assert per_user == truth["per_user"] == {"U1": 800_000, "U2": 1_200_000}
    assert sum(int(r["jobs"]) for r in rows) == truth["jobs"] == len(ids)
    failures = {k: sum(int(r[k]) for r in rows) for k in report.FAILURE_KINDS}
    assert {k: n for k, n in failures.items() if n} == truth["failures"] == {
        "blocked_input": 1, "generation_failed": 1, "blocked_output": 1}

    code, out, err = await _run_cli(monkeypatch, capsys, backend, tmp_path / "bot.db",
                                    "report", "--from", first, "--to", last, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["totals"]["net_micros"] == truth["net"] and data["totals"]["net_usd"] == "2.000000"
    assert data["rows"] == [{**r, **{k: int(r[k]) for k in ("jobs", *report.FAILURE_KINDS)}} for r in rows]
    assert [u["user_id"] for u in data["top_users"]] == ["U2", "U1"]

    code, out, err = await _run_cli(monkeypatch, capsys, backend, tmp_path / "bot.db",
                                    "report", "--from", first, "--to", last)
    assert code == 0, err
    assert re.search(r"total .* \$2\.40 .* \$0\.40 .* \$2\.00 .* 6 .* 3 ", out), out
    assert re.search(r"generation_failed +│ 1 ", out), out


@pytest.mark.parametrize("argv, says", [
    (["--from", "2026-13-01", "--to", "2026-12-31"], "--from: expected YYYY-MM-DD, got '2026-13-01'"),
    (["--from", "2026-12-01", "--to", "yesterday"], "--to: expected YYYY-MM-DD, got 'yesterday'"),
    (["--from", "2026-12-02", "--to", "2026-12-01"], "--from 2026-12-02 is after --to 2026-12-01"),
])
async def test_report_refuses_bad_dates_with_one_line(argv, says, tmp_path, monkeypatch, capsys) -> None:
    code, out, err = await _run_cli(monkeypatch, capsys, None, tmp_path / "bot.db", "report", *argv)
    assert (code, out, err) == (2, "", says + "\n")
    assert not (tmp_path / "bot.db").exists()  # refused before touching anything


def test_dollars_are_written_exactly_from_micros() -> None:
    assert [usd_exact(m) for m in (0, 1, 2_400_000, 123_456_789, -400_000, 10**15 + 7)] == [
        "0.000000", "0.000001", "2.400000", "123.456789", "-0.400000", "1000000000.000007"]


# ---------------------------------------------------------------------- /sora-admin report


async def test_report_7d_puts_one_chart_in_the_admins_dm(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    await _scripted_run(bot)
    await bot.admin("budget workspace 3", user=ADMIN)  # the chart's budget line
    sent = _captured_uploads(bot)
    held = slack.hold_next("files.getUploadURLExternal")

    answer = await bot.admin("report 7d", user=ADMIN)
    first = (_today() - timedelta(days=6)).isoformat()
    assert answer == f"Building your report for {first} to {_today()}; it will be in our DM in a moment."
    # answered while the chart was still on its way
    await asyncio.wait_for(held.reached.wait(), 5)
    assert _dm_uploads(slack) == []
    held.release()
    await slack.wait_for(lambda: bool(_dm_uploads(slack)), timeout=10)
    await bot.runtime.listeners.drain(5)

    [message] = _dm_uploads(slack)
    [file] = message.files
    assert file["name"] == f"sora-spend-{first}-to-{_today()}.png"
    assert [c.params["channel_id"] for c in slack.calls_to("files.completeUploadExternal")].count(DM) == 1
    assert "Net spend *$2.00* (charged $2.40, refunded $0.40) · 6 jobs · 3 failed" in message.text
    assert "Top users: <@U2> $1.20 · <@U1> $0.80" in message.text
    assert "workspace cap $3.00 a day" in message.text
    [png] = sent
    assert hashlib.sha256(png).hexdigest() == file["sha256"]  # what we look at is what Slack got
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (report_chart.WIDTH, report_chart.HEIGHT)) == ("PNG", (1200, 700))

    spend, _ = await report.build(bot.deps, first_day=first, last_day=_today().isoformat())
    colour = report_chart.model_colours(spend)["simulator"]
    left, top, right, bottom = report_chart.PLOT
    slot = (right - left) // 7
    today_bar = _pixels(png, colour, (left + 6 * slot, top, right, bottom))
    earlier_bars = _pixels(png, colour, (left, top, left + 6 * slot, bottom))
    # $2.00 on an axis to $3 (the cap sets it): two thirds of the plot's height, 70% of a day's width
    bar = (slot * 7 // 10) * ((bottom - top) * 2 // 3)
    assert abs(today_bar - bar) < 0.05 * bar, (today_bar, bar)
    assert earlier_bars == 0
    assert _pixels(png, report_chart.CAP_LINE, report_chart.PLOT) > 500  # the cap's dashed line


async def test_a_report_without_spend_draws_no_bars(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    sent = _captured_uploads(bot)
    assert "Building your report" in await bot.admin("report month", user=ADMIN)
    await slack.wait_for(lambda: bool(_dm_uploads(slack)), timeout=10)
    [png] = sent
    assert "Net spend *$0.00*" in _dm_uploads(slack)[0].text
    bars = sum(_pixels(png, colour, report_chart.PLOT) for colour in report_chart.PALETTE)
    assert bars == 0
    assert _pixels(png, report_chart.CAP_LINE, report_chart.PLOT) == 0  # no cap, no line


async def test_when_the_chart_cannot_be_uploaded_the_summary_still_arrives(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    slack.fail_next("files.completeUploadExternal", error="invalid_channel")
    assert "Building your report" in await bot.admin("report 30d", user=ADMIN)
    await slack.wait_for(lambda: any(m.channel == DM for m in slack.messages), timeout=10)
    await bot.runtime.listeners.drain(5)
    [message] = [m for m in slack.messages if m.channel == DM]
    assert not message.files
    assert "*Spend report*" in message.text
    assert "The chart could not be uploaded (invalid_channel)" in message.text


async def test_when_no_dm_can_be_opened_the_admin_gets_the_summary_ephemerally(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    slack.fail_next("conversations.open", error="cannot_dm_bot")
    url = slack.new_response_url()
    await bot.slash("report", command="/sora-admin", user=ADMIN, response_url=url)
    await slack.wait_for(lambda: len(slack.responses.get(url, [])) == 2, timeout=10)
    building, note = (r["text"] for r in slack.responses[url])
    assert "Building your report" in building
    assert "couldn't open a DM with you (cannot_dm_bot)" in note and "*Spend report*" in note
    assert slack.calls_to("files.getUploadURLExternal") == []


async def test_shutdown_waits_for_a_report_being_built(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    held = slack.hold_next("files.getUploadURLExternal")
    assert "Building your report" in await bot.admin("report", user=ADMIN)
    await asyncio.wait_for(held.reached.wait(), 5)
    closing = asyncio.ensure_future(bot.runtime.close())
    await asyncio.sleep(0.2)  # close() is waiting on the listener, not done without it
    assert not closing.done()
    held.release()
    await asyncio.wait_for(closing, 10)
    assert len(_dm_uploads(slack)) == 1


async def test_non_admins_are_refused_and_nothing_is_uploaded(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    answer = await bot.admin("report 7d", user="U2")
    assert "Sorry" in answer and "Nothing was changed" in answer
    await bot.runtime.listeners.drain(5)  # whatever the listener would still do is done
    assert slack.calls_to("conversations.open") == []
    assert slack.calls_to("files.getUploadURLExternal") == [] and _dm_uploads(slack) == []


@pytest.mark.parametrize("words, says", [
    ("report yesterday", "`yesterday` isn't a report range; use `7d`, `30d`, `month`"),
    ("report 7 days", "Use `/sora-admin report`, `report 30d` or `report month`."),
])
async def test_bad_range_words_name_the_allowed_ones(make_bot, slack, words, says) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    assert says in await bot.admin(words, user=ADMIN)
    await bot.runtime.listeners.drain(5)
    assert slack.calls_to("files.getUploadURLExternal") == []


def test_range_words_cover_the_last_days_or_the_month_so_far() -> None:
    today = date(2026, 3, 1)
    assert report.range_for("7d", today=today) == ("2026-02-23", "2026-03-01")
    assert report.range_for("30D", today=today) == ("2026-01-31", "2026-03-01")
    assert report.range_for("month", today=today) == ("2026-03-01", "2026-03-01")


async def test_month_means_the_month_in_the_bots_timezone(make_bot, slack) -> None:
    # 23:30 UTC on Nov 30 is already Dec 1 in Tokyo
    clock = lambda: datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # noqa: E731
    bot = await make_bot(sora_admin_user_ids=ADMIN, sora_timezone="Asia/Tokyo", clock=clock)
    assert "for 2026-12-01 to 2026-12-01" in await bot.admin("report month", user=ADMIN)


# ---------------------------------------------------------------------- the admin's Home


async def test_an_admins_home_shows_the_last_seven_days(make_bot, slack) -> None:
    bot = await make_bot(sora_admin_user_ids=ADMIN)
    await _scripted_run(bot)
    text = _text(await _open_home(bot, ADMIN))
    days = [(_today() - timedelta(days=n)).isoformat()[5:] for n in range(6, -1, -1)]
    assert "*Last 7 days:* $2.00 net of refunds" in text
    assert " · ".join(f"`{d}` {'$2.00' if d == days[-1] else '$0.00'}" for d in days) in text
    assert "Last 7 days" not in _text(await _open_home(bot, "U1"))
