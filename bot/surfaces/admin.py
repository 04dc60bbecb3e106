"""`/sora-admin`: budgets, usage, refunds, pause/resume, each change written to the audit log."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta

from bot.slack import messages, slack_io
from bot.surfaces import report
from bot.clock import budget_day, iso
from bot.deps import Deps
from bot.errors import InvalidRequest, NotAllowed
from bot.models import JobStatus
from bot.money import format_usd, usd_to_micros
from bot.parsing import clean_text, model_list
from storage import admin as settings_store
from storage import jobs as jobstore
from storage import ledger

MAX_BUDGET_MICROS = usd_to_micros("100000")  # a typo guard: nobody means $1,000,000 a day

ADMIN_HELP = "\n".join([
    "*`/sora-admin` commands:*",
    "• `budget set @user 10` (or `reset`): that person's daily budget in dollars",
    "• `budget default 5`: the daily budget of everyone without their own",
    "• `budget workspace 200` or `off`: a cap for the whole workspace per day",
    "• `usage [YYYY-MM-DD|yesterday]`: spend per person, the workspace total, recent admin actions",
    "• `report [7d|30d|month]`: a chart of spend per day, model and person, sent to your DM",
    "• `refund <job> [reason]`: give back a finished video's charge",
    "• `pause [reason]` / `resume`: stop or restart new requests (running jobs continue)",
    "• `approval over 10` or `approval off`: requests costing more than that wait for an admin's Approve",
    "• `fallback veo-3.1-fast,gen4.5` or `fallback off`: when a provider fails a job, run it on the first of these",
    "• `admins`: who may use these commands",
])

_USER_ARG = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]+)$")


@dataclass(frozen=True, slots=True)
class AdminResult:
    text: str
    # work to run after `text` is answered (a report's chart); its result, if any, is a further
    # answer for the admin
    then: Callable[[], Awaitable[str | None]] | None = None


def parse_user(arg: str) -> str:
    """`<@U123|name>`, `<@U123>` or a raw `U123`; a plain `@name` can't be resolved safely."""
    m = _USER_ARG.match(arg.strip())
    if m:
        return m.group(1) or m.group(2)
    if arg.startswith("@"):
        raise InvalidRequest(
            f"I can't tell who `{messages.escape_mrkdwn(arg, 40)}` is. Pick the person from the "
            "mention menu (type @ and choose them) so Slack sends their id."
        )
    raise InvalidRequest(f"`{messages.escape_mrkdwn(arg, 40)}` isn't a person. Mention them, like `@alice`.")


def parse_amount(arg: str, *, allow_off: bool = False) -> int | None:
    word = arg.strip().lower()
    if allow_off and word in ("off", "none", "unlimited"):
        return None
    try:
        micros = usd_to_micros(word)
    except ValueError:
        raise InvalidRequest(f"`{messages.escape_mrkdwn(arg, 20)}` isn't an amount of dollars; use e.g. `10` or `7.50`.") from None
    if micros < 0:
        raise InvalidRequest("A budget can't be negative.")
    if micros > MAX_BUDGET_MICROS:
        raise InvalidRequest(f"{format_usd(micros)} a day looks like a typo; the most I accept is {format_usd(MAX_BUDGET_MICROS)}.")
    return micros


async def handle_admin(deps: Deps, text: str, *, actor: str) -> AdminResult:
    """Authorize, parse, act. Refusals and mistakes come back as text; nothing changes then."""
    if not await deps.authz.is_admin(actor):
        return AdminResult(
            "Sorry, `/sora-admin` is for workspace admins and owners and the people the bot's "
            "operator named. Nothing was changed. Ask an admin if you need a budget change."
        )
    words = clean_text(text).split()
    try:
        answer = await _dispatch(deps, words, actor)
        return answer if isinstance(answer, AdminResult) else AdminResult(answer)
    except (InvalidRequest, NotAllowed) as exc:
        return AdminResult(exc.user_message())


async def _dispatch(deps: Deps, words: list[str], actor: str) -> str | AdminResult:
    head = [w.lower() for w in words[:2]]
    match head:
        case [] | ["help"] | ["help", _]:
            return ADMIN_HELP
        case ["budget", "set"]:
            if len(words) != 4:
                raise InvalidRequest("Use `/sora-admin budget set @user 10` (or `reset` to drop their own budget).")
            user = parse_user(words[2])
            amount = None if words[3].lower() in ("reset", "default") else parse_amount(words[3])
            return await set_user_budget(deps, actor, user, amount)
        case ["budget", "default"]:
            if len(words) != 3:
                raise InvalidRequest("Use `/sora-admin budget default 5`.")
            amount = parse_amount(words[2])
            assert amount is not None
            return await set_default_budget(deps, actor, amount)
        case ["budget", "workspace"]:
            if len(words) != 3:
                raise InvalidRequest("Use `/sora-admin budget workspace 200` or `off`.")
            return await set_workspace_budget(deps, actor, parse_amount(words[2], allow_off=True))
        case ["usage"] | ["usage", _]:
            if len(words) > 2:
                raise InvalidRequest("Use `/sora-admin usage` or `/sora-admin usage 2026-11-24`.")
            return await usage_report(deps, words[1] if len(words) == 2 else None)
        case ["report"] | ["report", _]:
            if len(words) > 2:
                raise InvalidRequest("Use `/sora-admin report`, `report 30d` or `report month`.")
            first, last = report.range_for(words[1] if len(words) == 2 else report.DEFAULT_RANGE,
                                           today=report.today_in(deps))
            return AdminResult(
                f"Building your report for {first} to {last}; it will be in our DM in a moment.",
                then=lambda: report.deliver(deps, actor, first_day=first, last_day=last),
            )
        case ["refund", _]:
            reason = " ".join(words[2:]) or None
            return await refund_job(deps, actor, words[1], reason)
        case ["pause"] | ["pause", _]:
            return await pause(deps, actor, " ".join(words[1:]) or None)
        case ["resume"]:
            return await resume(deps, actor)
        case ["admins"]:
            return admins_text(deps)
        case ["approval"]:
            budgets = await deps.budgets()
            return approval_text(budgets.approval_over_micros)
        case ["approval", "over"] | ["approval", "off"]:
            if head[1] == "off" and len(words) == 2:
                return await set_approval(deps, actor, None)
            if len(words) != 3:
                raise InvalidRequest("Use `/sora-admin approval over 10` or `/sora-admin approval off`.")
            return await set_approval(deps, actor, parse_amount(words[2], allow_off=True))
        case ["fallback"]:
            order = await deps.fallback_order()
            return fallback_text(order)
        case ["fallback", _]:
            if len(words) != 2:
                raise InvalidRequest("Use `/sora-admin fallback model1,model2` (no spaces) or `/sora-admin fallback off`.")
            return await set_fallback(deps, actor, words[1])
    raise InvalidRequest(f"I don't know that admin command.\n{ADMIN_HELP}")


def _money_or_off(micros: int | None) -> str:
    return "off" if micros is None else format_usd(micros)


async def set_user_budget(deps: Deps, actor: str, user: str, amount: int | None) -> str:
    now = iso(deps.clock())
    async with deps.db.write_txn() as conn:
        old = await ledger.set_user_limit(conn, user, amount, at=now, by=actor)
        await settings_store.audit(
            conn, at=now, actor=actor, action="budget.user", target=user,
            old=None if old is None else str(old), new=None if amount is None else str(amount),
        )
    if amount is None:
        return f"<@{user}> now has the default daily budget again (was {_money_or_off(old)} of their own)."
    was = f"their own {format_usd(old)}" if old is not None else "the default"
    return f"<@{user}>'s daily budget is now {format_usd(amount)} (was {was})."


async def set_default_budget(deps: Deps, actor: str, amount: int) -> str:
    now = iso(deps.clock())
    async with deps.db.write_txn() as conn:
        before = await deps.budgets(conn)
        await settings_store.put_setting(conn, settings_store.DEFAULT_BUDGET, str(amount), at=now, by=actor)
        await settings_store.audit(conn, at=now, actor=actor, action="budget.default",
                                   old=str(before.default_user_micros), new=str(amount))
    return (f"The default daily budget is now {format_usd(amount)} (was "
            f"{format_usd(before.default_user_micros)}). People with their own budget keep it.")


async def set_workspace_budget(deps: Deps, actor: str, amount: int | None) -> str:
    now = iso(deps.clock())
    async with deps.db.write_txn() as conn:
        before = await deps.budgets(conn)
        await settings_store.put_setting(
            conn, settings_store.WORKSPACE_BUDGET, None if amount is None else str(amount), at=now, by=actor
        )
        await settings_store.audit(
            conn, at=now, actor=actor, action="budget.workspace",
            old=None if before.workspace_micros is None else str(before.workspace_micros),
            new=None if amount is None else str(amount),
        )
    if amount is None:
        return f"The workspace cap is off (was {_money_or_off(before.workspace_micros)})."
    return f"The workspace may spend {format_usd(amount)} a day (was {_money_or_off(before.workspace_micros)})."


def _parse_day(deps: Deps, arg: str | None) -> str:
    today = date.fromisoformat(budget_day(deps.clock(), deps.settings.tz))
    if arg is None or arg.lower() == "today":
        return today.isoformat()
    if arg.lower() == "yesterday":
        return (today - timedelta(days=1)).isoformat()
    try:
        return date.fromisoformat(arg).isoformat()
    except ValueError:
        raise InvalidRequest(f"`{messages.escape_mrkdwn(arg, 20)}` isn't a date; use YYYY-MM-DD, `today` or `yesterday`.") from None


async def usage_report(deps: Deps, day_arg: str | None) -> str:
    day = _parse_day(deps, day_arg)
    budgets = await deps.budgets()
    rows = await ledger.usage_for_day(deps.db, day, budgets.default_user_micros)
    async with deps.db.reading() as reader:
        ws = await ledger.workspace_totals(reader, day)
    cap = f" of {format_usd(budgets.workspace_micros)}" if budgets.workspace_micros is not None else " (no workspace cap)"
    lines = [f"*Usage on {day}* (budget days start at 00:00 {deps.settings.tz.key})"]
    if not rows:
        lines.append("No spending that day.")
    for r in sorted(rows, key=lambda r: -(r.spent_micros + r.reserved_micros))[:40]:
        lines.append(
            f"• <@{r.user_id}>: spent {format_usd(r.spent_micros)} · reserved {format_usd(r.reserved_micros)}"
            f" · limit {format_usd(r.limit_micros)} · {r.jobs} job{'s' if r.jobs != 1 else ''}"
        )
    lines.append(f"*Workspace:* spent {format_usd(ws.spent_micros)} · reserved {format_usd(ws.reserved_micros)}{cap}")
    if budgets.paused:
        lines.append(f":double_vertical_bar: New requests are paused{': ' + budgets.paused_reason if budgets.paused_reason else ''}.")
    entries = await settings_store.recent_audit(deps.db, 8)
    if entries:
        lines.append("*Recent admin actions:*")
        for e in entries:
            who = "the bot" if e.actor == "bot" else f"<@{e.actor}>"
            lines.append(f"• {e.at[:16].replace('T', ' ')} UTC {who} {_describe(e)}")
    return "\n".join(lines)


def _describe(e: settings_store.AuditEntry) -> str:
    def money(v: str | None) -> str:
        return "off" if v is None else format_usd(int(v))

    match e.action:
        case "budget.user":
            return f"set <@{e.target}>'s budget {money(e.old_value) if e.old_value else 'default'} → {money(e.new_value) if e.new_value else 'default'}"
        case "budget.default":
            return f"set the default budget {money(e.old_value)} → {money(e.new_value)}"
        case "budget.workspace":
            return f"set the workspace cap {money(e.old_value)} → {money(e.new_value)}"
        case "refund":
            return f"refunded job `{e.target}` ({money(e.old_value)})" + (f": {messages.escape_mrkdwn(e.note, 100)}" if e.note else "")
        case "pause":
            return "paused requests" + (f": {messages.escape_mrkdwn(e.note, 100)}" if e.note else "")
        case "resume":
            return "resumed requests"
        case "approval.threshold":
            return f"set the approval threshold {money(e.old_value)} → {money(e.new_value)}"
        case "approval.approve" | "approval.deny" | "approval.expire" | "approval.withdraw":
            verb = {"approval.approve": "approved", "approval.deny": "denied", "approval.expire": "let expire",
                    "approval.withdraw": "withdrew"}[e.action]
            return f"{verb} request `{e.target}` ({money(e.new_value)})"
        case "fallback.models":
            return f"set automatic fallback to {e.new_value or 'off'} (was {e.old_value or 'off'})"
    return e.action


def approval_text(threshold: int | None) -> str:
    if threshold is None:
        return "Approval is off: every request within the budgets runs at once. `/sora-admin approval over 10` turns it on."
    return (f"Requests costing more than {format_usd(threshold)} wait for an admin's approval "
            "(admins get a DM with Approve / Deny; unanswered requests expire after 24 hours).")


async def set_approval(deps: Deps, actor: str, amount: int | None) -> str:
    now = iso(deps.clock())
    async with deps.db.write_txn() as conn:
        before = await deps.budgets(conn)
        await settings_store.put_setting(
            conn, settings_store.APPROVAL_OVER, None if amount is None else str(amount), at=now, by=actor)
        await settings_store.audit(
            conn, at=now, actor=actor, action="approval.threshold",
            old=None if before.approval_over_micros is None else str(before.approval_over_micros),
            new=None if amount is None else str(amount),
        )
    return approval_text(amount) + f" (was {_money_or_off(before.approval_over_micros)}.) Requests already waiting still need a decision."


def fallback_text(order: list[str]) -> str:
    if not order:
        return ("Automatic fallback is off: a job its provider fails offers a button to run it elsewhere. "
                "`/sora-admin fallback veo-3.1-fast,gen4.5` turns it on.")
    return ("When a provider fails a job (model retired, provider down, credits used up), I run it on the "
            f"first model that can of: {', '.join(f'`{m}`' for m in order)}, once, under the same budget rules.")


async def set_fallback(deps: Deps, actor: str, arg: str) -> str:
    if arg.lower() in ("off", "none"):
        order: list[str] = []
    else:
        order = [m.strip().lower() for m in arg.split(",") if m.strip()]
        unknown = [m for m in order if deps.catalog.get(m) is None]
        if unknown or not order:
            raise InvalidRequest(
                f"I don't offer {', '.join(f'`{messages.escape_mrkdwn(m, 40)}`' for m in unknown) or 'those'}. "
                f"Models here: {model_list(deps.catalog)}."
            )
    now = iso(deps.clock())
    before = await deps.fallback_order()
    async with deps.db.write_txn() as conn:
        await settings_store.put_setting(conn, settings_store.FALLBACK_MODELS, ",".join(order), at=now, by=actor)
        await settings_store.audit(conn, at=now, actor=actor, action="fallback.models",
                                   old=",".join(before) or None, new=",".join(order) or None)
    return fallback_text(order)


async def refund_job(deps: Deps, actor: str, job_ref: str, reason: str | None) -> str:
    job = await jobstore.find_job(deps.db, job_ref)
    if job is None:
        raise InvalidRequest(f"There's no job `{messages.escape_mrkdwn(job_ref, 20)}`.")
    if job.status is not JobStatus.SUCCEEDED:
        raise InvalidRequest(f"Job `{job.id}` is {job.status.value}: only a finished, charged video can be refunded (failed jobs are never charged).")
    now = iso(deps.clock())
    async with deps.db.write_txn() as conn:
        amount = await ledger.refund(conn, job.id, now)
        if amount is not None:
            await jobstore.update_job(conn, job.id, expect=[JobStatus.SUCCEEDED], now=now, set_={"cost_micros": 0})
            await settings_store.audit(conn, at=now, actor=actor, action="refund", target=job.id,
                                       old=str(amount), new="0", note=reason)
    if amount is None:
        raise InvalidRequest(f"Job `{job.id}` was refunded already.")
    deps.metrics.money_moved("refunded", job.provider, amount)
    note = f" Reason: {messages.escape_mrkdwn(reason, 300)}" if reason else ""
    if job.thread_ts:
        try:
            await slack_io.post_in_thread(
                deps, job, f"<@{actor}> refunded the {format_usd(amount)} for this video to <@{job.user_id}>'s budget.{note}"
            )
        except Exception:  # the refund stands even if Slack can't show it; usage shows it too
            pass
    return f"Refunded {format_usd(amount)} for job `{job.id}` to <@{job.user_id}>'s budget of {job.budget_day}."


async def pause(deps: Deps, actor: str, reason: str | None) -> str:
    now = iso(deps.clock())
    async with deps.db.write_txn() as conn:
        await settings_store.put_setting(conn, settings_store.PAUSED_REASON, reason or "", at=now, by=actor)
        await settings_store.audit(conn, at=now, actor=actor, action="pause", note=reason)
    return "New video requests are paused" + (f" ({messages.escape_mrkdwn(reason, 200)})" if reason else "") + \
        ". Running jobs continue. `/sora-admin resume` lifts it."


async def resume(deps: Deps, actor: str) -> str:
    now = iso(deps.clock())
    async with deps.db.write_txn() as conn:
        was = await settings_store.get_setting(conn, settings_store.PAUSED_REASON)
        await settings_store.delete_setting(conn, settings_store.PAUSED_REASON)
        await settings_store.audit(conn, at=now, actor=actor, action="resume")
    return "Requests are open again." if was is not None else "Requests weren't paused; nothing changed."


def admins_text(deps: Deps) -> str:
    named = sorted(deps.settings.admin_user_ids)
    who = ", ".join(f"<@{u}>" for u in named) if named else "nobody extra"
    return (f"Workspace admins and owners may use `/sora-admin`, and so may the people named in "
            f"SORA_ADMIN_USER_IDS: {who}.")
