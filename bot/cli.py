"""`sora-bot run | demo | doctor | jobs | usage | report`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from datetime import date
from typing import Any

from bot import logs
from bot.catalog import CatalogError
from bot.clock import budget_day, iso, utcnow
from bot.config import ConfigError, Settings, load_settings
from bot.deps import Deps
from bot.money import format_usd, micros_to_usd
from storage import admin as admin_store
from storage import jobs as jobstore
from storage import ledger
from storage.db import Database, SchemaTooNew

log = logging.getLogger("bot")

HTTP_DRAIN_S = 5.0


def _job_dict(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "user_id": job.user_id,
        "channel_id": job.channel_id,
        "thread_ts": job.thread_ts,
        "model": job.model,
        "provider": job.provider,
        "prompt": job.prompt,
        "duration_seconds": job.duration_seconds,
        "resolution": job.resolution,
        "aspect_ratio": job.aspect_ratio,
        "status": job.status.value,
        "failure_kind": job.failure_kind.value if job.failure_kind else None,
        "progress": job.progress,
        "provider_job_id": job.provider_job_id,
        "cost_usd": micros_to_usd(job.cost_micros),
        "reserved_usd": micros_to_usd(job.estimate_micros) if not job.status.terminal else 0.0,
        "video_url": job.video_url,
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at) if job.finished_at else None,
        # the replica watching it (PostgreSQL with several replicas); null once nobody needs to
        "owner": job.owner,
        # beyond the contract's fields: a compare's jobs share compare_id; a fallback names the job it replaced
        "compare_id": job.compare_id,
        "fallback_of": job.fallback_of,
        "approval_key": job.approval_key,
        # a long video's segment: its place (0 = first), the job it continues, tries retried
        "segment_index": job.segment_index,
        "after_job": job.after_job,
        "attempts": job.attempts,
    }


async def jobs_json(db: Database, *, user: str | None = None, status: str | None = None, limit: int = 200) -> str:
    rows = await jobstore.list_jobs(db, user_id=user, status=status, limit=limit)
    return json.dumps([_job_dict(j) for j in rows], indent=2)


async def _usage_rows(db: Database, settings: Settings, day: str | None) -> list[dict[str, Any]]:
    day = day or budget_day(utcnow(), settings.tz)
    async with db.reading() as reader:
        budgets = await admin_store.effective_budgets(
            reader, env_default_micros=settings.daily_budget_micros,
            env_workspace_micros=settings.workspace_budget_micros,
        )
    rows = await ledger.usage_for_day(db, day, budgets.default_user_micros)
    return [
        {
            "user_id": r.user_id,
            "date": r.date,
            "limit_usd": micros_to_usd(r.limit_micros),
            "spent_usd": micros_to_usd(r.spent_micros),
            "reserved_usd": micros_to_usd(r.reserved_micros),
            "remaining_usd": micros_to_usd(r.remaining_micros),
        }
        for r in rows
    ]


async def usage_json(deps: Deps, day: str | None) -> str:
    return json.dumps(await _usage_rows(deps.db, deps.settings, day), indent=2)


# --- commands ---------------------------------------------------------------------------


async def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    db = await settings.database().open()
    try:
        if args.json:
            print(await jobs_json(db, user=args.user, status=args.status, limit=args.limit))
            return 0
        rows = await jobstore.list_jobs(db, user_id=args.user, status=args.status, limit=args.limit)
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "user", "model", "status", "kind", "progress", "cost", "created", "prompt")
        for j in rows:
            table.add_row(
                j.id, j.user_id, j.model, j.status.value, j.failure_kind.value if j.failure_kind else "",
                f"{j.progress}%" if j.progress is not None else "", format_usd(j.cost_micros),
                iso(j.created_at)[:19], j.prompt[:40],
            )
        Console().print(table)
        return 0
    finally:
        await db.close()


async def cmd_usage(settings: Settings, args: argparse.Namespace) -> int:
    if args.date:
        try:
            date.fromisoformat(args.date)
        except ValueError:
            print(f"--date: expected YYYY-MM-DD, got {args.date!r}", file=sys.stderr)
            return 2
    db = await settings.database().open()
    try:
        rows = await _usage_rows(db, settings, args.date)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        from rich.console import Console
        from rich.table import Table

        table = Table("user", "date", "limit", "spent", "reserved", "remaining")
        for r in rows:
            table.add_row(r["user_id"], r["date"], *(f"${r[k]:.2f}" for k in ("limit_usd", "spent_usd", "reserved_usd", "remaining_usd")))
        Console().print(table)
        return 0
    finally:
        await db.close()


async def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from bot.surfaces import report
    from storage import reports

    days: list[str] = []
    for flag, value in (("--from", args.from_day), ("--to", args.to_day)):
        try:
            days.append(date.fromisoformat(value).isoformat())
        except ValueError:
            print(f"{flag}: expected YYYY-MM-DD, got {value!r}", file=sys.stderr)
            return 2
    first, last = days
    if first > last:
        print(f"--from {first} is after --to {last}", file=sys.stderr)
        return 2
    db = await settings.database().open()
    try:
        spend = await db.run_read(reports.spend_report, first, last)
    finally:
        await db.close()
    if args.csv:
        sys.stdout.write(report.to_csv(spend))
    elif args.json:
        print(report.to_json(spend))
    else:
        report.print_table(spend, tz_name=settings.tz.key)
    return 0


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.app import create_runtime, make_ops_app, make_web_app
    from bot.process import freeze_startup_heap, prefer_short_turns

    if settings.slack_bot_token is None:
        print("SLACK_BOT_TOKEN: required for `sora-bot run`", file=sys.stderr)
        return 2
    socket_mode = settings.slack_app_token is not None
    if not socket_mode and settings.slack_signing_secret is None:
        print("SLACK_SIGNING_SECRET: required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)", file=sys.stderr)
        return 2
    prefer_short_turns()
    try:
        runtime = await create_runtime(settings)
    except CatalogError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except SchemaTooNew as exc:
        print(str(exc), file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    resumed = await runtime.start()
    freeze_startup_heap()
    runner: web.AppRunner | None = None
    handler: Any = None
    try:
        if socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            assert settings.slack_app_token is not None
            app_token = settings.slack_app_token.get_secret_value()
            # slack_sdk's connect() retries a refused token forever: check it once first
            problem = await _check_app_token(runtime.deps.slack, app_token)
            if problem:
                print(f"SLACK_APP_TOKEN: {problem}", file=sys.stderr)
                return 2
            handler = AsyncSocketModeHandler(runtime.app, app_token)
            assert runtime.readiness is not None
            runtime.readiness.connected = handler.client.is_connected
            if "port" in settings.model_fields_set:
                # no Slack traffic over HTTP here: only the probes and /metrics, when PORT asks
                runner = web.AppRunner(make_ops_app(runtime), handle_signals=False, shutdown_timeout=1.0)
                await runner.setup()
                await web.TCPSite(runner, settings.host, settings.port).start()
                log.info("health, readiness and metrics on http://%s:%d", settings.host, settings.port)
            connect = asyncio.ensure_future(handler.connect_async())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({connect, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not connect.done():  # SIGTERM while still connecting
                connect.cancel()
                await asyncio.gather(connect, return_exceptions=True)
                return 0
            stopping.cancel()
            connect.result()
            log.info("connected in Socket Mode; %d job(s) resumed", resumed)
        else:
            # on stop, requests already in flight get this long to be answered (an ack is
            # due within Slack's 3 s); the work listeners do after their ack is waited for
            # in runtime.close()
            runner = web.AppRunner(make_web_app(runtime), handle_signals=False, shutdown_timeout=HTTP_DRAIN_S)
            await runner.setup()
            await web.TCPSite(runner, settings.host, settings.port).start()
            log.info("listening on http://%s:%d/slack/events; %d job(s) resumed", settings.host, settings.port, resumed)
        print("sora-bot is running", flush=True)
        await stop.wait()
        log.info("stopping: unfinished jobs stay in the database and resume on the next start")
    finally:
        # stop taking Slack requests first; then runtime.close() lets listeners still at
        # work finish before it closes the job tasks, clients and database they use
        if handler is not None:
            await handler.close_async()
        if runner is not None:
            await runner.cleanup()
        await runtime.close()
    return 0


async def _check_app_token(slack: Any, app_token: str) -> str | None:
    """None when apps.connections.open accepts the token; else a one-line reason."""
    from slack_sdk.errors import SlackApiError

    try:
        await slack.apps_connections_open(app_token=app_token)
        return None
    except SlackApiError as exc:
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        return f"Slack refused the app-level token ({error or exc.response.status_code}); it needs connections:write"
    except Exception as exc:  # unreachable API: report instead of retrying forever
        return f"cannot reach {slack.base_url} ({type(exc).__name__})"


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Bring the database's schema up to date once, before replicas of a new version start."""
    db = settings.database()
    try:
        await db.open()  # migrates; on PostgreSQL one replica or command at a time
    except SchemaTooNew as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        print(f"{db.describe()}: schema {await db.schema_version()}")
    finally:
        await db.close()
    return 0


async def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from bot.doctor import run_checks

    return await run_checks(settings)


def configure_logging(settings: Settings) -> None:
    """Log lines to stderr at SORA_LOG_LEVEL, as text or JSON lines (SORA_LOG_FORMAT)."""
    logs.configure(level=settings.sora_log_level, fmt=settings.sora_log_format)
    # httpx logs every request at INFO: thousands of lines a minute with many jobs, and it
    # measurably costs CPU per status call; keep it for DEBUG runs
    if settings.sora_log_level != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sora-bot", description="Generate AI videos from Slack.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    sub.add_parser("demo", help="run the real app against an embedded fake Slack and the simulator")
    sub.add_parser("doctor", help="check config, database, Slack token and providers")
    sub.add_parser("migrate", help="bring the database schema up to date (once for all replicas)")
    j = sub.add_parser("jobs", help="list jobs, newest first")
    j.add_argument("--json", action="store_true")
    j.add_argument("--user")
    j.add_argument("--status", choices=["queued", "submitted", "running", "succeeded", "failed", "cancelled"])
    j.add_argument("--limit", type=int, default=200, help="0 = all")
    u = sub.add_parser("usage", help="per-user spend for the budget day")
    u.add_argument("--json", action="store_true")
    u.add_argument("--date", help="YYYY-MM-DD (default: today in SORA_TIMEZONE)")
    r = sub.add_parser("report", help="spend, jobs and failures per user, model and provider over budget days")
    r.add_argument("--from", dest="from_day", required=True, metavar="YYYY-MM-DD", help="first budget day")
    r.add_argument("--to", dest="to_day", required=True, metavar="YYYY-MM-DD", help="last budget day (included)")
    form = r.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="one row per (user, model, provider); exact dollars")
    form.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from bot.demo import main as demo_main

        return demo_main()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if args.command == "jobs" and args.limit < 0:
        print("--limit: must be 0 (all) or more", file=sys.stderr)
        return 2
    handlers = {"run": cmd_run, "doctor": cmd_doctor, "migrate": cmd_migrate, "jobs": cmd_jobs, "usage": cmd_usage,
                "report": cmd_report}
    try:
        return asyncio.run(handlers[args.command](settings, args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
