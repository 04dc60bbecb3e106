"""Configuration errors, and the CLI's JSON outputs as the contract names them."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot import cli
from bot.money import format_usd, usd_to_micros
from storage import jobs as jobstore
from storage.sqlite import SQLiteDatabase
from storage.jobs import Limits, NewJob

JOB_FIELDS = {"id", "user_id", "channel_id", "thread_ts", "model", "provider", "prompt",
              "duration_seconds", "resolution", "status", "failure_kind", "progress",
              "provider_job_id", "cost_usd", "video_url", "created_at", "finished_at"}
USAGE_FIELDS = {"user_id", "date", "limit_usd", "spent_usd", "reserved_usd", "remaining_usd"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SORA_DAILY_BUDGET_USD", "-3"),
        ("SORA_DAILY_BUDGET_USD", "lots"),
        ("SORA_DAILY_BUDGET_USD", "off"),
        ("SORA_DAILY_BUDGET_USD", ""),
        ("SORA_TIMEZONE", "Mars/Olympus"),
        ("SORA_MAX_CONCURRENT_PER_USER", "0"),
        ("SORA_POLL_INTERVAL", "soon"),
        ("PORT", "99999"),
        ("SLACK_API_URL", "ftp://example"),
        ("SORA_DATABASE_URL", "mysql://bot:s3cret-pw@db.internal/sora"),
        ("SORA_LEASE_SECONDS", "1"),
    ],
)
def test_a_bad_value_stops_start_up_with_one_line_naming_it(monkeypatch, capsys, name, value) -> None:
    monkeypatch.setenv(name, value)
    assert cli.main(["jobs", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err
    assert "s3cret-pw" not in err  # a database URL's password is never echoed


def test_an_unknown_default_model_stops_doctor(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("SORA_DEFAULT_MODEL", "sora-9")
    monkeypatch.setenv("SORA_DB_PATH", str(tmp_path / "d.db"))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] config: SORA_DEFAULT_MODEL" in out and "[FAIL] slack: SLACK_BOT_TOKEN" in out


def test_a_dotenv_file_is_read(monkeypatch, tmp_path, capsys) -> None:
    (tmp_path / ".env").write_text("SORA_TIMEZONE=Nowhere/Land\n")
    assert cli.main(["usage", "--json"]) == 2
    assert "SORA_TIMEZONE" in capsys.readouterr().err


async def _seed(path) -> None:
    db = await SQLiteDatabase(path).open()
    limits = Limits(5_000_000, None, 10)
    for user, prompt in (("U1", "a dog"), ("U2", "a cat"), ("U1", "a cow")):
        await jobstore.reserve_and_insert(
            db,
            NewJob(user_id=user, team_id="T", channel_id="C1", source="command", model="simulator",
                   provider="simulator", provider_model="simulator", prompt=prompt,
                   duration_seconds=8, resolution="720p", aspect_ratio="16:9", estimate_micros=800_000),
            limits=limits, day="2026-11-25", now="2026-11-25T10:00:00.000000Z",
        )
    await db.close()


def test_jobs_and_usage_json_have_the_contract_fields(monkeypatch, tmp_path, capsys) -> None:
    import asyncio

    path = tmp_path / "cli.db"
    asyncio.run(_seed(path))
    monkeypatch.setenv("SORA_DB_PATH", str(path))
    assert cli.main(["jobs", "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert len(jobs) == 3 and all(JOB_FIELDS <= set(j) for j in jobs)
    assert jobs[0]["status"] == "queued" and jobs[0]["cost_usd"] == 0
    assert cli.main(["jobs", "--json", "--user", "U1", "--limit", "1"]) == 0
    assert [j["user_id"] for j in json.loads(capsys.readouterr().out)] == ["U1"]
    assert cli.main(["jobs", "--json", "--status", "succeeded"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["usage", "--json", "--date", "2026-11-25"]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert all(set(u) == USAGE_FIELDS for u in usage)
    u1 = next(u for u in usage if u["user_id"] == "U1")
    assert u1["reserved_usd"] == 1.6 and u1["remaining_usd"] == 3.4 and u1["limit_usd"] == 5.0
    assert cli.main(["usage", "--date", "25/11/2026"]) == 2


def test_money_is_exact_in_micro_dollars() -> None:
    assert usd_to_micros("0.10") * 3 == usd_to_micros("0.30")
    assert usd_to_micros(0.157) == 157_000
    assert format_usd(800_000) == "$0.80" and format_usd(157_000) == "$0.157"


@pytest.mark.both_backends
async def test_migrate_brings_the_schema_up_and_run_refuses_a_newer_one(monkeypatch, capsys, tmp_path, backend) -> None:
    from storage.db import SCHEMA_VERSION, database_for

    monkeypatch.setenv("SORA_DB_PATH", str(tmp_path / "m.db"))
    if backend is not None:
        monkeypatch.setenv("SORA_DATABASE_URL", backend)
    assert await asyncio.to_thread(cli.main, ["migrate"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"schema {SCHEMA_VERSION}")
    assert ":sora_test@" not in out  # the URL's password is never printed

    db = await database_for(backend, tmp_path / "m.db").open()
    if db.engine == "sqlite":
        await db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    else:
        await db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    await db.close()
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    for command in (["run"], ["migrate"]):
        assert await asyncio.to_thread(cli.main, command) == 2
        err = capsys.readouterr().err.strip()
        assert "newer than this code" in err and "\n" not in err, err
