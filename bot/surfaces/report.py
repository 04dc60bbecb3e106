"""Spend reports: the range words, the CSV/JSON/table/summary forms, and the DM with the chart.

The numbers come from `storage.reports` (see its docstring for what charged, refunded and net
mean). Dollars are written from micro-dollars with integer arithmetic only.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from datetime import date, timedelta
from typing import Any

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError

from bot.slack import slack_io
from bot.clock import budget_day
from bot.deps import Deps
from bot.errors import InvalidRequest
from bot.slack.messages import escape_mrkdwn
from bot.models import FailureKind
from bot.money import MICROS_PER_USD, format_usd
from storage import reports
from storage.reports import SpendReport, SpendRow

log = logging.getLogger(__name__)

RANGE_WORDS = ("7d", "30d", "month")
DEFAULT_RANGE = "7d"
FAILURE_KINDS = [k.value for k in FailureKind]  # the CSV's columns, in the contract's order
CSV_COLUMNS = ["user_id", "model", "provider", "charged_usd", "refunded_usd", "net_usd", "jobs", *FAILURE_KINDS]
SUMMARY_TOP_USERS = 5

# What Slack errors and transport failures look like on the way to the admin's DM
_SLACK_TROUBLE = (SlackApiError, aiohttp.ClientError, TimeoutError)


def usd_exact(micros: int) -> str:
    """'2.400000': every micro-dollar, from integers alone (no float ever holds the amount)."""
    sign = "-" if micros < 0 else ""
    whole, part = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{part:06d}"


def range_for(word: str, *, today: date) -> tuple[str, str]:
    """`7d` / `30d`: the last 7 / 30 budget days including today; `month`: this calendar month so far."""
    match word.lower():
        case "7d":
            return (today - timedelta(days=6)).isoformat(), today.isoformat()
        case "30d":
            return (today - timedelta(days=29)).isoformat(), today.isoformat()
        case "month":
            return today.replace(day=1).isoformat(), today.isoformat()
    allowed = ", ".join(f"`{w}`" for w in RANGE_WORDS)
    raise InvalidRequest(
        f"`{escape_mrkdwn(word, 20)}` isn't a report range; use {allowed} (e.g. `/sora-admin report 30d`)."
    )


def today_in(deps: Deps) -> date:
    return date.fromisoformat(budget_day(deps.clock(), deps.settings.tz))


# ---------------------------------------------------------------------- CSV, JSON, table


def _row_dict(r: SpendRow) -> dict[str, Any]:
    return {
        "user_id": r.user_id, "model": r.model, "provider": r.provider,
        "charged_usd": usd_exact(r.charged_micros), "refunded_usd": usd_exact(r.refunded_micros),
        "net_usd": usd_exact(r.net_micros), "jobs": r.jobs,
        **{kind: r.failures.get(kind, 0) for kind in FAILURE_KINDS},
    }


def to_csv(report: SpendReport) -> str:
    """One row per (user, model, provider); dollars as exact decimal strings; no total row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in report.rows:
        writer.writerow(_row_dict(r))
    return out.getvalue()


def _money(r: SpendRow) -> dict[str, Any]:
    return {
        "charged_usd": usd_exact(r.charged_micros), "refunded_usd": usd_exact(r.refunded_micros),
        "net_usd": usd_exact(r.net_micros), "charged_micros": r.charged_micros,
        "refunded_micros": r.refunded_micros, "net_micros": r.net_micros,
        "jobs": r.jobs, "failed": r.failed, "failures": {k: r.failures[k] for k in FAILURE_KINDS if r.failures.get(k)},
    }


def to_json(report: SpendReport) -> str:
    """The CSV's rows (`rows`), plus roll-ups, the days and the top users. Dollars are exact
    strings beside integer micro-dollars, so no reader has to trust a float."""
    total = report.total()
    data = {
        "from": report.first_day,
        "to": report.last_day,
        "totals": _money(total),
        "rows": [_row_dict(r) for r in report.rows],
        "by_user": [{"user_id": r.user_id, **_money(r)} for r in report.by("user_id")],
        "by_model": [{"model": r.model, **_money(r)} for r in report.by("model")],
        "by_provider": [{"provider": r.provider, **_money(r)} for r in report.by("provider")],
        "daily": [
            {"day": day, "net_usd": usd_exact(sum(models.values())), "net_micros": sum(models.values()),
             "models": {m: {"net_usd": usd_exact(v), "net_micros": v} for m, v in sorted(models.items())}}
            for day, models in report.daily.items()
        ],
        "top_users": [{"user_id": r.user_id, "net_usd": usd_exact(r.net_micros), "net_micros": r.net_micros}
                      for r in report.top_users()],
    }
    return json.dumps(data, indent=2)


def print_table(report: SpendReport, *, tz_name: str) -> None:
    """The readable form: a row per (user, model, provider) and the total, then spend per
    model, provider and day, and the failures by kind."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    total = report.total()
    console.print(f"Spend for budget days {report.first_day} to {report.last_day} (days start at 00:00 {tz_name})")
    detail = Table("user", "model", "provider", "charged", "refunded", "net", "jobs", "failed", show_footer=True)
    for r in report.rows:
        detail.add_row(r.user_id, r.model, r.provider, format_usd(r.charged_micros), format_usd(r.refunded_micros),
                       format_usd(r.net_micros), str(r.jobs), str(r.failed))
    footer = ["total", "", "", format_usd(total.charged_micros), format_usd(total.refunded_micros),
              format_usd(total.net_micros), str(total.jobs), str(total.failed)]
    for column, value in zip(detail.columns, footer, strict=True):
        column.footer = value
    console.print(detail)
    for key in ("model", "provider"):
        table = Table(key, "net", "jobs", "failed")
        for r in report.by(key):
            table.add_row(getattr(r, key), format_usd(r.net_micros), str(r.jobs), str(r.failed))
        console.print(table)
    days = Table("day", "net", "by model")
    for day, models in report.daily.items():
        days.add_row(day, format_usd(sum(models.values())), ", ".join(f"{m} {format_usd(v)}" for m, v in sorted(models.items())))
    console.print(days)
    if total.failed:
        kinds = Table("failure kind", "jobs")
        for kind in FAILURE_KINDS:
            if total.failures.get(kind):
                kinds.add_row(kind, str(total.failures[kind]))
        console.print(kinds)


# ---------------------------------------------------------------------- the summary


def summary_lines(report: SpendReport, *, cap_micros: int | None, tz_name: str, slack: bool) -> list[str]:
    """A few lines on the range; `slack` adds mrkdwn and mentions, else plain words for the chart."""
    total = report.total()
    day_totals = report.day_totals()
    b = (lambda s: f"*{s}*") if slack else (lambda s: s)
    who = (lambda u: f"<@{u}>") if slack else (lambda u: u)
    code = (lambda s: f"`{escape_mrkdwn(s, 60)}`") if slack else (lambda s: s)
    lines = [
        f"{b('Spend report')} {report.first_day} to {report.last_day} "
        f"({len(day_totals)} budget day{'s' if len(day_totals) != 1 else ''}, {tz_name})",
        f"Net spend {b(format_usd(total.net_micros))} (charged {format_usd(total.charged_micros)}, "
        f"refunded {format_usd(total.refunded_micros)}) · {total.jobs} job{'s' if total.jobs != 1 else ''}"
        f" · {total.failed} failed",
    ]
    if total.net_micros > 0:
        busiest = max(day_totals, key=lambda d: (day_totals[d], d))
        lines.append(f"Busiest day {busiest} ({format_usd(day_totals[busiest])})"
                     + (f" · workspace cap {format_usd(cap_micros)} a day" if cap_micros is not None else ""))
    elif cap_micros is not None:
        lines.append(f"Workspace cap {format_usd(cap_micros)} a day")
    models = [r for r in report.by("model") if r.net_micros]
    if models:
        lines.append("By model: " + " · ".join(f"{code(r.model)} {format_usd(r.net_micros)}" for r in models[:6]))
    top = report.top_users(SUMMARY_TOP_USERS)
    if top:
        lines.append("Top users: " + " · ".join(f"{who(r.user_id)} {format_usd(r.net_micros)}" for r in top))
    if total.failed:
        lines.append("Failures: " + ", ".join(f"{k} {total.failures[k]}" for k in FAILURE_KINDS if total.failures.get(k)))
    return lines


# ---------------------------------------------------------------------- into the admin's DM


async def build(deps: Deps, *, first_day: str, last_day: str) -> tuple[SpendReport, int | None]:
    """The report and the workspace's daily cap now (the chart's budget line; None: no cap)."""
    report = await deps.db.run_read(reports.spend_report, first_day, last_day)
    budgets = await deps.budgets()
    return report, budgets.workspace_micros


async def deliver(deps: Deps, admin_id: str, *, first_day: str, last_day: str) -> str | None:
    """Build the report and put it in the admin's DM: the chart with the summary as its comment;
    when the chart can't go up, the summary alone, saying so.

    Returns None once the DM has it, else a note (with the summary) for the admin's ephemeral
    answer, so the request never ends in silence. Runs after the command's ack.
    """
    report, cap = await build(deps, first_day=first_day, last_day=last_day)
    tz_name = deps.settings.tz.key
    text = "\n".join(summary_lines(report, cap_micros=cap, tz_name=tz_name, slack=True))
    try:
        channel = await slack_io.open_dm(deps, admin_id)
    except _SLACK_TROUBLE as exc:
        log.warning("spend report: no DM with %s: %s", admin_id, _reason(exc))
        return f"I couldn't open a DM with you ({_reason(exc)}), so here is the report as text:\n{text}"
    reason = await _send_chart(deps, channel, report, cap, tz_name=tz_name, comment=text)
    if reason is None:
        return None
    log.warning("spend report: no chart for %s: %s", admin_id, reason)
    try:
        await deps.slack.chat_postMessage(channel=channel, text=f"{text}\n_The chart could not be uploaded ({reason})._")
        return None
    except _SLACK_TROUBLE as exc:
        log.warning("spend report: DM to %s failed: %s", admin_id, _reason(exc))
        return f"I couldn't send the report to our DM ({_reason(exc)}), so here it is:\n{text}"


async def _send_chart(deps: Deps, channel: str, report: SpendReport, cap: int | None, *, tz_name: str,
                      comment: str) -> str | None:
    """Draw the chart and upload it with `comment`; None when done, else why not."""
    from bot.surfaces import report_chart  # Pillow only loads for a report

    try:
        # Pillow's drawing holds the CPU for a while: off the event loop
        png = await asyncio.to_thread(
            report_chart.render_chart, report, cap_micros=cap, tz_name=tz_name,
            lines=summary_lines(report, cap_micros=cap, tz_name=tz_name, slack=False)[1:],  # [0]: the title's words
        )
    except (OSError, ValueError) as exc:  # Pillow's errors: the summary still goes out
        log.error("spend report: the chart could not be drawn", exc_info=exc)
        return "it could not be drawn"
    try:
        await upload_png(deps, channel, png, filename=f"sora-spend-{report.first_day}-to-{report.last_day}.png",
                         title=f"Video spend {report.first_day} to {report.last_day}", comment=comment)
    except (*_SLACK_TROUBLE, httpx.HTTPError) as exc:
        return _reason(exc)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return slack_io.slack_error(exc)
    return type(exc).__name__


async def upload_png(deps: Deps, channel: str, png: bytes, *, filename: str, title: str, comment: str) -> None:
    """Slack's v2 upload of bytes in memory, shared into `channel` with `comment`."""
    file_id = await slack_io.send_file(deps, filename=filename, size=len(png), content=png,
                                       content_type="application/octet-stream")
    await deps.slack.files_completeUploadExternal(
        files=[{"id": file_id, "title": title}], channel_id=channel, initial_comment=comment,
    )
