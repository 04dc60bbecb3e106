"""Log lines: SORA_LOG_FORMAT=json from a real `sora-bot run`, the job fields a job's task
carries, state-change lines, and no secret in either format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from bot import cli, logs
from bot.lifecycle import flow
from bot.fakes.fakeslack import FakeSlack
from bot.models import FailureKind, JobStatus
from tests.botproc import bot_env, free_port, read_jobs, wait_until
from tests.slack_requests import SIGNING_SECRET, post_signed, slash_body

REQUIRED = {"time", "level", "logger", "message"}
BOT_TOKEN = "xoxb-logs-test-0123456789"
# today's text lines: "2026-05-20 10:00:00,123 INFO bot.lifecycle.flow: job ab12 submitted -> running"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def _job(job_id: str, user_id: str = "U1") -> Any:
    return SimpleNamespace(id=job_id, user_id=user_id, provider="simulator", model="simulator")


def _capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through the handler `logs.configure` uses, into a string."""
    out = io.StringIO()
    logger = logging.getLogger(f"tests.logs.{fmt}.{id(out)}")
    logger.handlers[:] = [logs.handler(fmt, out)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_an_exception_becomes_an_exc_field_on_one_line_with_the_job_fields() -> None:
    logger, out = _capture("json")

    async def task() -> None:
        logs.job_context(_job("jobexc1"))
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("job %s: step failed", "jobexc1")

    await asyncio.create_task(task())
    assert len(out.getvalue().splitlines()) == 1  # the traceback's newlines stay inside the JSON
    [line] = _lines(out)
    assert REQUIRED <= set(line) and line["level"] == "ERROR" and line["message"] == "job jobexc1: step failed"
    assert line["exc"].startswith("Traceback") and "ValueError: boom\nsecond line" in line["exc"]
    assert (line["job_id"], line["user_id"], line["provider"], line["model"]) == ("jobexc1", "U1", "simulator", "simulator")
    assert line["time"].endswith("Z") and datetime.fromisoformat(line["time"]).utcoffset() == UTC.utcoffset(None)


async def test_each_task_carries_its_own_job_and_explicit_extra_wins() -> None:
    logger, out = _capture("json")

    async def task(job_id: str) -> None:
        logs.job_context(_job(job_id, user_id=f"U{job_id}"))
        await asyncio.sleep(0)  # the other task runs in between: its context must not leak here
        logger.info("polling")
        logger.info("about another", extra={"job_id": "other"})

    await asyncio.gather(asyncio.create_task(task("a1")), asyncio.create_task(task("b2")))
    logger.info("outside any job")
    lines = _lines(out)
    polling = {(l["job_id"], l["user_id"]) for l in lines if l["message"] == "polling"}
    assert polling == {("a1", "Ua1"), ("b2", "Ub2")}
    assert {l["job_id"] for l in lines if l["message"] == "about another"} == {"other"}
    assert "job_id" not in next(l for l in lines if l["message"] == "outside any job")


async def test_a_job_task_that_crashes_before_reading_its_row_logs_its_id_and_traceback(
        make_bot, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(logs.JobContextFilter())  # as the handler `logs.configure` builds
    bot = await make_bot()

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(flow, "run_job", crash)
    bot.runtime.poller.watch("jobcrash1")
    await wait_until(lambda: any("step failed" in r.getMessage() for r in caplog.records), 5, "the crash's line")
    record = next(r for r in caplog.records if "step failed" in r.getMessage())
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "ERROR" and line["job_id"] == "jobcrash1"
    assert "RuntimeError: the database went away" in line["exc"]


def test_a_state_change_line_names_both_states_and_the_job() -> None:
    logger, out = _capture("json")
    logs.state_change(logger, _job("st1"), JobStatus.RUNNING, JobStatus.FAILED,
                      detail="generation_failed (render failed)", kind=FailureKind.GENERATION_FAILED)
    logs.state_change(logger, _job("st2"), None, JobStatus.QUEUED)
    failed, new = _lines(out)
    assert failed["message"] == "job st1 running -> failed: generation_failed (render failed)"
    assert (failed["state_from"], failed["state_to"], failed["failure_kind"]) == ("running", "failed", "generation_failed")
    assert new["message"] == "job st2 new -> queued" and new["state_to"] == "queued" and "state_from" not in new
    assert all(line["level"] == "INFO" and line["user_id"] == "U1" for line in (failed, new))


def test_a_bad_log_format_stops_start_up_with_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SORA_LOG_FORMAT", "xml")
    assert cli.main(["jobs", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SORA_LOG_FORMAT" in err and "text or json" in err


# --- a real `sora-bot run` ----------------------------------------------------------------


async def _start(env: dict[str, str], port: int, folder: Path) -> asyncio.subprocess.Process:
    """`sora-bot run` with stderr (the log) apart from stdout (its one "running" line)."""
    with (folder / "stdout.log").open("ab") as out, (folder / "stderr.log").open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise AssertionError(f"bot exited early:\n{(folder / 'stderr.log').read_text()}")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError(f"bot never became healthy:\n{(folder / 'stderr.log').read_text()}")


async def _run_two_jobs(tmp_path: Path, fmt: str) -> tuple[str, list[dict]]:
    """One job that succeeds and one that fails at the provider; the bot's stderr and jobs."""
    async with FakeSlack() as slack:
        slack.add_channel("C1", name="general", member=True)
        # a status edit that fails is logged by a call that names no job: the job's task context
        # must add its fields
        slack.fail_next("chat.update", error="message_not_found", times=2)
        port = free_port()
        db_path = tmp_path / "bot.db"
        env = bot_env(slack, db_path, port, SLACK_BOT_TOKEN=BOT_TOKEN, SORA_LOG_FORMAT=fmt,
                      SORA_LOG_LEVEL="DEBUG", SORA_SIMULATOR_SECONDS="1")
        proc = await _start(env, port, tmp_path)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                for prompt in ("a calm lake at dawn", "[fail] a storm over the sea"):
                    body = slash_body(prompt, response_url=slack.new_response_url())
                    assert (await post_signed(http, f"http://127.0.0.1:{port}/slack/events", body)).status_code == 200

            async def both_delivered() -> bool:
                jobs = await read_jobs(db_path)
                return len(jobs) == 2 and all(j["status"] in ("succeeded", "failed") for j in jobs) and all(
                    len(slack.thread("C1", j["thread_ts"])) == 2 for j in jobs)
            await wait_until(both_delivered, 20, "one job to succeed, one to fail, both delivered")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        jobs = await read_jobs(db_path)
    everything = (tmp_path / "stderr.log").read_text() + (tmp_path / "stdout.log").read_text()
    assert BOT_TOKEN not in everything and SIGNING_SECRET not in everything
    assert "Traceback" not in everything
    return (tmp_path / "stderr.log").read_text(), jobs


async def test_json_logs_of_a_real_bot_are_one_object_a_line_with_job_fields(tmp_path) -> None:
    stderr, jobs = await _run_two_jobs(tmp_path, "json")
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line, or this raises
    assert lines and all(REQUIRED <= set(line) for line in lines)
    assert all(datetime.fromisoformat(line["time"]).utcoffset() == UTC.utcoffset(None) for line in lines)

    by_status = {j["status"]: j for j in jobs}
    assert set(by_status) == {"succeeded", "failed"}
    for line in lines:
        if "job_id" in line:  # a job's line names all of it
            job = next(j for j in jobs if j["id"] == line["job_id"])
            assert (line["user_id"], line["provider"], line["model"]) == (job["user_id"], job["provider"], job["model"])

    def changes(job: dict) -> list[tuple[str | None, str]]:
        return [(l.get("state_from"), l["state_to"]) for l in lines if l.get("job_id") == job["id"] and "state_to" in l]

    assert changes(by_status["succeeded"]) == [(None, "queued"), ("queued", "submitted"), ("submitted", "running"),
                                               ("running", "succeeded")]
    assert changes(by_status["failed"])[-1] == ("running", "failed")
    failed_line = next(l for l in lines if l.get("state_to") == "failed")
    assert failed_line["failure_kind"] == by_status["failed"]["failure_kind"] == "generation_failed"
    assert failed_line["message"].startswith(f"job {by_status['failed']['id']} running -> failed: generation_failed")
    # a line logged without any job fields of its own got them from its task's context
    edits = [l for l in lines if "status edit failed" in l["message"]]
    assert edits and all(l.get("job_id") in {j["id"] for j in jobs} for l in edits)


async def test_text_logs_of_a_real_bot_keep_the_human_format_and_show_state_changes(tmp_path) -> None:
    stderr, jobs = await _run_two_jobs(tmp_path, "text")
    assert all(TEXT_LINE.match(line) for line in stderr.splitlines()), stderr
    for job in jobs:
        assert f"job {job['id']} running -> {job['status']}" in stderr
