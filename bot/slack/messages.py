"""Message text and Block Kit builders. Pure functions: no I/O."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.slack import prompt_input
from bot.catalog import Catalog
from bot.clock import humanize_duration, local_hhmm
from bot.models import FailureKind, Job, JobStatus
from bot.money import format_usd
from bot.parsing import MAX_PROMPT_CHARS, OPTIONS_HELP
from bot.slack.slack_text import utf16_len

if TYPE_CHECKING:
    from bot.lifecycle.segments import Plan

# Slack's documented limits, measured as Slack may count them: in UTF-16 code units, after
# escaping (an emoji can count twice; "&" becomes five characters). Block Kit reference.
SECTION_TEXT_CHARS = 3000
# Echo at most this much of a prompt: msg_too_long has been seen near 4,000 characters of a
# message, and a request message carries more than its prompt.
PROMPT_ECHO_CHARS = 2500
_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
# mrkdwn's formatting marks, echoed as look-alikes so a prompt is shown as typed, never bold,
# italic, struck through or as code (mrkdwn has no backslash escape)
_FORMATTING = str.maketrans({"*": "\u2217", "_": "\u02cd", "~": "\u223c", "`": "\u02cb"})

Blocks = list[dict[str, Any]]


def _inert(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").translate(_FORMATTING)
    # A zero-width space after "@" keeps the word readable but never a broadcast.
    return _BROADCAST.sub(lambda m: "@\u200b" + m.group(1), text)


def _quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in _inert(text).splitlines() or [""])


def fit(text: str, limit: int, render: Callable[[str], str]) -> str:
    """`render(text)`, or the longest start of `text` whose rendering plus "…" is within
    `limit` UTF-16 units. Measured after rendering, so escapes and quote marks count."""
    out = render(text)
    if utf16_len(out) <= limit:
        return out
    # the rendered length grows with the prefix (a broadcast word losing its guard can make it
    # one shorter, so every candidate is measured, never assumed)
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if utf16_len(render(text[:mid].rstrip()) + "…") <= limit:
            lo = mid
        else:
            hi = mid - 1
    return render(text[:lo].rstrip()) + "…"


def escape_mrkdwn(text: str, limit: int = PROMPT_ECHO_CHARS) -> str:
    """Echo user text so it never pings or formats: `<!channel>`, `<@U…>`, `@here`, `*bold*`
    all stay inert. At most `limit` UTF-16 units once escaped."""
    return fit(text, limit, _inert)


def quote(text: str, limit: int = PROMPT_ECHO_CHARS) -> str:
    """`escape_mrkdwn` as a block quote ("> " on every line), the quote marks counted."""
    return fit(text, limit, _quoted)


def _title_safe(text: str) -> str:
    text = " ".join(text.split()).replace("<", "\u2039").replace(">", "\u203a")
    return _BROADCAST.sub(lambda m: "@\u200b" + m.group(1), text)


def file_title(job: Job, limit: int = 100) -> str:
    """An uploaded video's title: the model and the start of the prompt, on one line, with
    nothing Slack could read as a mention or a broadcast (`<!channel>`, `@here`)."""
    return fit(f"{job.model}: {job.prompt}", limit, _title_safe)


def prompt_section(head: str, prompt: str) -> dict[str, Any]:
    """A section with `head` over the quoted prompt, within Slack's 3,000 for a section."""
    room = min(PROMPT_ECHO_CHARS, SECTION_TEXT_CHARS - utf16_len(head) - 1)
    return {"type": "section", "text": {"type": "mrkdwn", "text": f"{head}\n{quote(prompt, room)}"}}


def stamp_block_ids(blocks: Blocks, prefix: str) -> Blocks:
    """Give every block an id that changes with the blocks' content.

    Slack clients keep a message's blocks by block_id; a chat.update that replaces blocks
    under the same ids may leave the old buttons showing.
    """
    digest = hashlib.sha1(json.dumps(blocks, sort_keys=True).encode()).hexdigest()[:10]
    return [{**block, "block_id": f"{prefix}{i}.{digest}"} for i, block in enumerate(blocks)]


def job_facts(job: Job) -> str:
    return (
        f"`{job.model}` · {job.duration_seconds} s · {job.resolution} · {job.aspect_ratio} · "
        f"{format_usd(job.estimate_micros)} · job `{job.id}`"
    )


def status_line(
    job: Job, *, tz: ZoneInfo, give_up_at: datetime | None = None, awaiting_approval: bool = False
) -> str:
    """The live status shown on the request message."""
    if job.status is JobStatus.QUEUED and awaiting_approval:
        return (":lock: Waiting for an admin's approval: it costs more than this workspace lets a "
                "request spend without one. The money is reserved meanwhile; nothing is sent yet.")
    if job.status in (JobStatus.QUEUED, JobStatus.SUBMITTED):
        # one line for both: the message isn't edited when the provider accepts the job
        return ":hourglass_flowing_sand: Waiting for the provider…"
    if job.status is JobStatus.RUNNING:
        pct = f" ~{job.progress}%" if job.progress is not None else ""
        if job.stall_notified and give_up_at is not None:
            return (
                f":warning: Rendering{pct}, but it looks stuck. Still checking until "
                f"{local_hhmm(give_up_at, tz)} ({tz.key}); `/sora cancel {job.id}` stops it."
            )
        return f":clapper: Rendering{pct}…"
    if job.status is JobStatus.SUCCEEDED:
        return f":white_check_mark: Done: charged {format_usd(job.cost_micros)}. The video is in the thread."
    if job.status is JobStatus.CANCELLED:
        return ":no_entry_sign: Cancelled. Not charged."
    kind = job.failure_kind.value if job.failure_kind else "failed"
    return f":x: Failed (`{kind}`). Not charged. Details in the thread."


# appended to the answer to a request that now waits for an admin's approval
APPROVAL_PENDING_NOTE = " It needs an admin's approval first; I'll ask them."

# action ids of the request message's buttons (handlers/actions.py listens for them)
CANCEL_ACTION = "sora_cancel"
RETRY_ACTION = "sora_retry"
EDIT_ACTION = "sora_edit"
EDIT_MODAL = "sora_edit_modal"
FALLBACK_ACTION = "sora_fallback"
COMPARE_CANCEL_ACTION = "sora_compare_cancel"
APPROVE_ACTION = "sora_approve"
DENY_ACTION = "sora_deny"

# Failures where sending the same request again is pointless: only "edit" is offered.
_EDIT_ONLY = {FailureKind.BLOCKED_INPUT, FailureKind.BLOCKED_OUTPUT, FailureKind.INVALID_REQUEST,
              FailureKind.PROVIDER_RETIRED}


def _button(text: str, action_id: str, value: str, *, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": text},
                              "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    return button


def job_buttons(job: Job, *, fallback: tuple[str, int] | None = None) -> list[dict[str, Any]]:
    """Cancel while a job runs; retry choices once it failed or was cancelled.

    `fallback`: (model id, cost) of another model to run the same request on.
    """
    if not job.status.terminal:
        return [_button("Cancel", CANCEL_ACTION, job.id, style="danger")]
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        buttons = []
        if fallback is not None:
            buttons.append(_button(f"Run on {fallback[0]} ({format_usd(fallback[1])})"[:75], FALLBACK_ACTION,
                                   job.id, style="primary"))
        if job.failure_kind not in _EDIT_ONLY:
            buttons.append(_button("Try again", RETRY_ACTION, job.id, style=None if buttons else "primary"))
        return buttons + [_button("Edit prompt & retry", EDIT_ACTION, job.id)]
    return []


def request_message(
    job: Job, *, tz: ZoneInfo, give_up_at: datetime | None = None, fallback: tuple[str, int] | None = None,
    awaiting_approval: bool = False,
) -> tuple[str, Blocks]:
    """The visible request message the job's thread hangs off (also its live status)."""
    header = f"<@{job.user_id}> asked for a video:"
    text = f"{header} {escape_mrkdwn(job.prompt, 200)}"
    status = status_line(job, tz=tz, give_up_at=give_up_at, awaiting_approval=awaiting_approval)
    blocks: Blocks = [
        prompt_section(header, job.prompt),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": job_facts(job)}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": status}]},
    ]
    buttons = job_buttons(job, fallback=fallback)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return text, stamp_block_ids(blocks, f"job_{job.id}_")


def plain_version(text: str, blocks: Blocks, limit: int = SECTION_TEXT_CHARS) -> str:
    """A message's words without Block Kit, for when Slack refuses its blocks: the
    notification text, then each short section and context line, as many as fit."""
    lines = [text]
    for block in blocks:
        if block.get("type") == "section":
            pieces = [str((block.get("text") or {}).get("text") or "")]
        elif block.get("type") == "context":
            pieces = [str(e.get("text") or "") for e in block.get("elements") or [] if isinstance(e, dict)]
        else:
            continue
        lines += [p for p in pieces if p and p not in text and utf16_len(p) <= 1000]
    kept: list[str] = []
    used = 0
    for line in lines:  # whole lines only: cutting one could split an escape like &amp;
        if used + utf16_len(line) + 1 > limit:
            break
        kept.append(line)
        used += utf16_len(line) + 1
    return "\n".join(kept)


def edit_modal(job: Job) -> dict[str, Any]:
    """The "Edit prompt & retry" modal, prefilled with the whole prompt; the job id rides in
    private_metadata."""
    return {
        "type": "modal",
        "callback_id": EDIT_MODAL,
        "private_metadata": job.id,
        "title": {"type": "plain_text", "text": "Edit and retry"},
        "submit": {"type": "plain_text", "text": "Generate"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            *prompt_input.blocks(job.prompt, label="Prompt"),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": job_facts(job).rsplit(" · job ", 1)[0]
                                                + " · same options as before"}]},
        ],
    }


def took_text(seconds: float) -> str:
    """A job's time to result, as people compare them: "48 s", "2 min 5 s"."""
    seconds = max(0, int(round(seconds)))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def job_took(job: Job) -> float | None:
    return (job.finished_at - job.created_at).total_seconds() if job.finished_at else None


def success_comment(job: Job) -> str:
    if job.compare_id and not job.is_segment:
        took = job_took(job)
        return (f"*`{job.model}`*: {job.duration_seconds} s, {job.resolution}, charged "
                f"{format_usd(job.cost_micros)}" + (f", ready in {took_text(took)}." if took is not None else "."))
    return (
        f"Here is your video, <@{job.user_id}>: `{job.model}`, {job.duration_seconds} s, "
        f"{job.resolution}. Charged {format_usd(job.cost_micros)}."
    )


# How long a provider keeps a finished video downloadable (reference/video-apis.md §3).
LINK_LIFETIME = {
    "openai": "within an hour", "seedance": "in about a day", "runway": "within 24–48 hours",
    "veo": "in 2 days", "fal": "in 7 days or more", "kling": "in 30 days",
}


def link_message(job: Job, url: str | None, *, expires: str | None, why: str) -> str:
    base = f"Your video is ready, <@{job.user_id}>, but I couldn't upload it here ({why})."
    if url and url.startswith(("http://", "https://")):
        when = f" The link expires {expires}." if expires else " Provider links expire, so save it soon."
        return f"{base} Download it here: <{url}|video for job {job.id}>.{when} Charged {format_usd(job.cost_micros)}."
    return f"{base} Charged {format_usd(job.cost_micros)}."


def failure_message(
    job: Job,
    *,
    provider_label: str,
    reason: str | None = None,
    alternatives: list[str] | None = None,
    retired_note: str | None = None,
    minutes_waited: float | None = None,
    cancelled_by: str | None = None,
) -> str:
    """What happened, whether the user was charged, and what to do next."""
    kind = job.failure_kind or FailureKind.GENERATION_FAILED
    others = ", ".join(f"`{m}`" for m in (alternatives or []) if m != job.model)
    pick = f" Try another model: {others}." if others else " `/sora models` lists the others."
    why = f" (reason: {escape_mrkdwn(reason, 200)})" if reason else ""
    lines: dict[FailureKind, str] = {
        FailureKind.INVALID_REQUEST: (
            f"`{job.model}` didn't accept this request{why}. Check the length, resolution and "
            "aspect ratio against `/sora models`, then try again."
        ),
        FailureKind.BLOCKED_INPUT: (
            f"The safety filter rejected your prompt{why}. Avoid real people, faces, "
            "copyrighted characters or music, then try again with different wording."
        ),
        FailureKind.BLOCKED_OUTPUT: (
            "The finished video was held back by the provider's safety filter. "
            "Try rewording the prompt; sending it again unchanged will likely be blocked again."
        ),
        FailureKind.RATE_LIMITED: (
            f"{provider_label} stayed at its rate limit for too long, so I stopped trying. "
            "Try again in a few minutes." + pick
        ),
        FailureKind.QUOTA_EXHAUSTED: (
            f"The workspace's {provider_label} credits are used up. An admin needs to top up "
            "the account." + pick
        ),
        FailureKind.AUTH_FAILED: (
            f"The bot can't authenticate with {provider_label}. Ask an admin to check its API key."
        ),
        FailureKind.PROVIDER_UNAVAILABLE: (
            f"{provider_label} is having problems and I couldn't get this job through. "
            "Try again later." + pick
        ),
        FailureKind.GENERATION_FAILED: (
            "The provider failed to render this one. Trying again often works; a new attempt is "
            "only charged if it succeeds."
        ),
        FailureKind.STUCK: (
            "Gave up waiting"
            + (f" after {humanize_duration((minutes_waited or 0) * 60)}" if minutes_waited else "")
            + ": the provider never finished the video, and it may still bill the workspace "
            "for it. Try again, perhaps shorter or with another model."
        ),
        FailureKind.RESULT_EXPIRED: (
            "The video was finished, but its download link expired before I could save it. "
            "Please generate it again."
        ),
        FailureKind.DOWNLOAD_FAILED: (
            "The video was finished, but I couldn't download it from the provider after several "
            "tries. Please generate it again."
        ),
        FailureKind.CANCELLED: (
            f"Cancelled{f' by <@{cancelled_by}>' if cancelled_by else ''}."
        ),
        FailureKind.PROVIDER_RETIRED: (
            f"`{job.model}` is no longer available"
            # the catalog's words for this route, else the provider's short reason
            + (f": {retired_note}" if retired_note else f": {escape_mrkdwn(reason, 200).rstrip('.')}." if reason else ".")
            + pick
        ),
        FailureKind.SLACK_REFUSED: (
            f"Slack refused to show the request message for job `{job.id}`{why}, so I never sent it "
            "to the provider. Try again with a shorter or plainer prompt; if it keeps happening, "
            "tell an admin (the bot's log says what Slack objected to)."
        ),
    }
    body = lines[kind]
    return f"{body} You were not charged. _(failure: `{kind.value}`)_"


def help_text(catalog: Catalog) -> str:
    default = catalog.get(catalog.default_model)
    d = default.default_duration if default else 8
    return "\n".join(
        [
            "*Make a video:* `/sora a golden retriever running through autumn leaves`",
            f"*Options:* {OPTIONS_HELP}, e.g. `/sora -m {catalog.default_model} -d {d} -a 9:16 a paper boat in the rain`. "
            "`8` and `8s` both mean eight seconds.",
            "*Compare models:* `/sora compare [-m model1,model2,…] [-d 8] <prompt>` runs one prompt on two to "
            "four models side by side (default: every model here that makes that length, up to four).",
            "*Other commands:* `/sora models` (models, prices, limits) · `/sora budget` (what you have "
            "left today) · `/sora status [job]` · `/sora cancel <job>`",
            f"You can also mention me with a prompt; the video lands in that thread. Prompts are limited to {MAX_PROMPT_CHARS:,} characters.",
        ]
    )


# An answer longer than this is cut to whole lines: msg_too_long has been seen near 4,000.
ANSWER_CHARS = 3800


def models_text(catalog: Catalog) -> str:
    lines = ["*Models available here:*"]
    specs = list(catalog)
    used = utf16_len(lines[0])
    for n, spec in enumerate(specs):
        default = " _(default)_" if spec.id == catalog.default_model else ""
        line = (f"• `{spec.id}`{default}: {spec.label}. {spec.prices_text()}. Lengths {spec.durations_text()} "
                f"(default {spec.default_duration} s); aspect {', '.join(spec.aspect_ratios)}.")
        if used + utf16_len(line) + 120 > ANSWER_CHARS:
            lines.append(f"…and {len(specs) - n} more: the request form (`/sora` alone) lists every model.")
            break
        lines.append(line)
        used += utf16_len(line) + 1
    return "\n".join(lines)


def budget_text(
    *, limit: int, spent: int, reserved: int, reset_at: datetime, now: datetime, tz: ZoneInfo
) -> str:
    remaining = limit - spent - reserved
    return (
        f"*Your budget today:* {format_usd(limit)}\n"
        f"• spent: {format_usd(spent)}\n• reserved for running jobs: {format_usd(reserved)}\n"
        f"• remaining: {format_usd(max(remaining, 0))}\n"
        f"Resets at 00:00 {tz.key}, in {humanize_duration((reset_at - now).total_seconds())}."
    )


def job_status_text(job: Job, *, tz: ZoneInfo) -> str:
    state = job.status.value + (f" (`{job.failure_kind.value}`)" if job.failure_kind else "")
    progress = f", ~{job.progress}%" if job.progress is not None and not job.status.terminal else ""
    cost = format_usd(job.cost_micros) if job.status is JobStatus.SUCCEEDED else f"reserved {format_usd(job.estimate_micros)}" if not job.status.terminal else "not charged"
    return (
        f"Job `{job.id}`: *{state}*{progress} · `{job.model}` {job.duration_seconds} s "
        f"{job.resolution} · {cost} · {escape_mrkdwn(job.prompt, 80)}"
    )


def reason_of(job: Job) -> str | None:
    if job.failure_detail and "\nreason: " in job.failure_detail:
        return job.failure_detail.rsplit("\nreason: ", 1)[1]
    return None


# --- /sora compare ---------------------------------------------------------------------------


def _compare_state(job: Job, *, awaiting_approval: bool) -> str:
    took = job_took(job)
    match job.status:
        case JobStatus.QUEUED:
            return ":lock: waiting for approval" if awaiting_approval else ":hourglass_flowing_sand: waiting for the provider"
        case JobStatus.SUBMITTED:
            return ":hourglass_flowing_sand: queued at the provider"
        case JobStatus.RUNNING:
            return ":clapper: rendering" + (f" ~{job.progress}%" if job.progress is not None else "")
        case JobStatus.SUCCEEDED:
            return f":white_check_mark: done in {took_text(took or 0)}, charged {format_usd(job.cost_micros)}"
        case JobStatus.CANCELLED:
            return ":no_entry_sign: cancelled, not charged"
    kind = job.failure_kind.value if job.failure_kind else "failed"
    return f":x: failed (`{kind}`), not charged"


def compare_message(
    compare_id: str, jobs: list[Job], *, awaiting_approval: bool = False
) -> tuple[str, Blocks]:
    """One request message for the whole set: each model's price and live state, the total."""
    first = jobs[0]
    header = f"<@{first.user_id}> is comparing {len(jobs)} models on one prompt:"
    lines = [
        f"• `{j.model}` · {j.duration_seconds} s · {j.resolution} · {j.aspect_ratio} · "
        f"{format_usd(j.estimate_micros)}: {_compare_state(j, awaiting_approval=awaiting_approval)}"
        for j in jobs
    ]
    total = sum(j.estimate_micros for j in jobs)
    done = all(j.status.terminal for j in jobs)
    charged = sum(j.cost_micros for j in jobs)
    if done:
        foot = f"All done: charged {format_usd(charged)} of the {format_usd(total)} reserved. Results and a summary are in the thread."
    elif awaiting_approval:
        foot = (f"Total {format_usd(total)}, reserved. Waiting for an admin's approval: it costs more than "
                "this workspace lets a request spend without one.")
    else:
        foot = f"Total {format_usd(total)}, reserved; each model is charged only if its video arrives. Results land in the thread."
    blocks: Blocks = [
        prompt_section(header, first.prompt),
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{foot} · compare `{compare_id}`"}]},
    ]
    if not done:
        blocks.append({"type": "actions",
                       "elements": [_button("Cancel all", COMPARE_CANCEL_ACTION, compare_id, style="danger")]})
    text = f"{header} {escape_mrkdwn(first.prompt, 200)}"
    return text, stamp_block_ids(blocks, f"compare_{compare_id}_")


def compare_summary(jobs: list[Job]) -> str:
    """The side-by-side reply once every model has answered: model, time, cost, outcome."""
    lines = ["*Side by side* (model · time to result · cost · outcome):"]
    for j in jobs:
        took = job_took(j)
        if j.status is JobStatus.SUCCEEDED:
            outcome = ":white_check_mark: video above"
        elif j.status is JobStatus.CANCELLED:
            outcome = ":no_entry_sign: cancelled"
        else:
            outcome = f":x: `{j.failure_kind.value if j.failure_kind else 'failed'}`"
        lines.append(f"• `{j.model}` · {took_text(took) if took is not None else '–'} · "
                     f"{format_usd(j.cost_micros)} · {outcome}")
    charged = sum(j.cost_micros for j in jobs)
    reserved = sum(j.estimate_micros for j in jobs)
    back = reserved - charged
    lines.append(f"Charged {format_usd(charged)} in all" + (
        f"; the other {format_usd(back)} of the {format_usd(reserved)} reserved is back in <@{jobs[0].user_id}>'s budget."
        if back > 0 else "."))
    return "\n".join(lines)


# --- approval for expensive requests -----------------------------------------------------------


def approval_request_message(
    key: str, jobs: list[Job], *, amount_micros: int, threshold_micros: int, expires_at: datetime, tz: ZoneInfo,
) -> tuple[str, Blocks]:
    """The admin's DM: who, what and how much, with Approve and Deny."""
    first = jobs[0]
    what = "\n".join(f"• `{j.model}` · {j.duration_seconds} s · {j.resolution} · {format_usd(j.estimate_micros)}"
                     for j in jobs)
    where = f"<#{first.channel_id}>" if first.channel_id.startswith(("C", "G")) else "a direct message"
    head = (f"<@{first.user_id}> asks for {'a video' if len(jobs) == 1 else f'{len(jobs)} videos (a compare)'} "
            f"costing *{format_usd(amount_micros)}*, over the {format_usd(threshold_micros)} approval limit, in {where}:")
    text = f"Approval needed: <@{first.user_id}> asks for {format_usd(amount_micros)} of video."
    blocks: Blocks = [
        prompt_section(head, first.prompt),
        {"type": "section", "text": {"type": "mrkdwn", "text": what}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
            f"The money is reserved from their budget meanwhile. Without an answer the request expires at "
            f"{local_hhmm(expires_at, tz)} {tz.key} on {expires_at.astimezone(tz):%Y-%m-%d} and the reservation is released."}]},
        {"type": "actions", "elements": [
            _button("Approve", APPROVE_ACTION, key, style="primary"),
            _button("Deny", DENY_ACTION, key, style="danger"),
        ]},
    ]
    return text, stamp_block_ids(blocks, f"approval_{key}_")


def approval_decided_message(
    jobs: list[Job], *, state: str, by: str | None, amount_micros: int
) -> tuple[str, Blocks]:
    """The admin DM once decided: the buttons give way to who decided what."""
    first = jobs[0] if jobs else None
    who = f"<@{first.user_id}>'s" if first else "A"
    verdict = {
        "approved": f":white_check_mark: Approved by <@{by}>",
        "denied": f":no_entry: Denied by <@{by}>; the reservation was released",
        "expired": ":hourglass: Expired without an answer; the reservation was released",
        "withdrawn": f":leftwards_arrow_with_hook: Cancelled by <@{by}> before anyone decided; nothing to do",
    }[state]
    text = f"{verdict}: {who} request for {format_usd(amount_micros)}."
    section = prompt_section(text, first.prompt) if first else {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    return text, stamp_block_ids([section], "approval_decided_")


def approval_outcome_text(job: Job, *, state: str, by: str | None) -> str:
    """The requester's thread message for a request that was denied or expired."""
    if state == "denied":
        lead = f"<@{by}> declined this request" if by else "An admin declined this request"
    else:
        lead = "Nobody approved this request within 24 hours, so it expired"
    return (f"<@{job.user_id}> {lead}; nothing was sent to the provider and the "
            f"{format_usd(job.estimate_micros)} reserved is back in your budget. Ask an admin, or try a "
            "shorter or cheaper video. _(failure: `cancelled`)_")


# --- long videos (bot.lifecycle.long_video) --------------------------------------------------------------

SERIES_CANCEL_ACTION = COMPARE_CANCEL_ACTION  # "Cancel" stops the whole video: compare.cancel_all
SERIES_CONTINUE_ACTION = "sora_series_continue"


def _segment_state(job: Job, *, awaiting_approval: bool) -> str:
    match job.status:
        case JobStatus.QUEUED if awaiting_approval:
            return ":lock: waiting for approval"
        case JobStatus.QUEUED if job.attempts:
            return ":repeat: failed once; trying again"
        case JobStatus.QUEUED if job.after_job is not None:
            return ":hourglass_flowing_sand: waits for the one before"
        case JobStatus.SUCCEEDED:
            return f":white_check_mark: done, charged {format_usd(job.cost_micros)}"
        case JobStatus.CANCELLED:
            return ":no_entry_sign: not made, not charged"
        case JobStatus.FAILED:
            kind = job.failure_kind.value if job.failure_kind else "failed"
            return f":x: failed (`{kind}`{', after a retry' if job.attempts else ''}), not charged"
    return _compare_state(job, awaiting_approval=False)


def series_message(
    series_id: str, jobs: list[Job], *, awaiting_approval: bool = False
) -> tuple[str, Blocks]:
    """One request message for a long video: the plan, each segment's state, the money."""
    first = jobs[0]
    prompts = [j.prompt for j in jobs]
    seconds = sum(j.duration_seconds for j in jobs)
    lengths = " + ".join(str(j.duration_seconds) for j in jobs)
    total = sum(j.estimate_micros for j in jobs)
    how = "each continuing the one before"
    if first.after_job is not None:
        how = f"carrying on from segment {first.segment_index or 0}"
    header = (f"<@{first.user_id}> asked for {seconds} s of video as {len(jobs)} segments on `{first.model}` "
              f"({lengths} s), {how}:")
    lines = [
        f"• Segment {(j.segment_index or 0) + 1} · {j.duration_seconds} s · {format_usd(j.estimate_micros)}: "
        f"{_segment_state(j, awaiting_approval=awaiting_approval)}"
        for j in jobs
    ]
    done = all(j.status.terminal for j in jobs)
    made = [j for j in jobs if j.status is JobStatus.SUCCEEDED]
    charged = sum(j.cost_micros for j in jobs)
    stopped = done and len(made) < len(jobs)
    if done and not stopped:
        foot = f"Done: charged {format_usd(charged)} of the {format_usd(total)} reserved. The video is in the thread."
    elif stopped:
        foot = (f"Stopped: charged {format_usd(charged)} for {len(made)} finished segment"
                f"{'s' if len(made) != 1 else ''}; the rest of the {format_usd(total)} reserved is released.")
    elif awaiting_approval:
        foot = (f"Total {format_usd(total)}, reserved. Waiting for an admin's approval: it costs more than "
                "this workspace lets a request spend without one.")
    else:
        foot = (f"Total {format_usd(total)}, reserved; each segment is charged only when its clip arrives. "
                "The whole video lands in the thread as one file.")
    blocks: Blocks = [
        # the request's words: each segment's own part, a part that carries on said once
        prompt_section(header, " || ".join(p for i, p in enumerate(prompts) if i == 0 or p != prompts[i - 1])),
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{foot} · video `{series_id}`"}]},
    ]
    if not done:
        blocks.append({"type": "actions",
                       "elements": [_button("Cancel", SERIES_CANCEL_ACTION, series_id, style="danger")]})
    elif stopped and made:
        rest = [j for j in jobs if j.status is not JobStatus.SUCCEEDED]
        blocks.append({"type": "actions", "elements": [_button(
            f"Continue ({sum(j.duration_seconds for j in rest)} s more)", SERIES_CONTINUE_ACTION, series_id,
            style="primary")]})
    text = f"{header} {escape_mrkdwn(first.prompt, 200)}"
    return text, stamp_block_ids(blocks, f"series_{series_id}_")


def long_video_comment(job: Job, segments: list[Job]) -> str:
    """The whole long video's upload: its length, its segments, what they cost."""
    seconds = sum(j.duration_seconds for j in segments)
    charged = sum(j.cost_micros for j in segments)
    return (f"Here is your video, <@{job.user_id}>: `{job.model}`, {seconds} s in {len(segments)} segments "
            f"joined into one, {job.resolution}. Charged {format_usd(charged)} in all.")


def partial_video_note(segments: list[Job], missing: list[Job]) -> str:
    """Under a long video's failure: what was finished (above), and how to get the rest."""
    seconds = sum(j.duration_seconds for j in segments)
    rest = sum(j.duration_seconds for j in missing)
    return (f"\n:film_frames: Here is what was finished: {len(segments)} segment{'s' if len(segments) != 1 else ''}, "
            f"{seconds} s, charged {format_usd(sum(j.cost_micros for j in segments))}. The other {rest} s weren't made "
            "and nothing for them was charged. *Continue* on the request message makes the rest from here "
            "(reserved anew).")


def long_video_accepted(plan: "Plan", series_id: str) -> str:
    """The reply to a long video's request: the plan, before anything is charged."""
    return (f"Got it: {plan.text()}. Video `{series_id}`: that much is reserved, and each segment is "
            "charged only when its clip arrives. The whole video lands in the thread as one file.")
