"""Job rows and their guarded state changes, plus the delivery outbox."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from bot.clock import iso, parse_iso
from bot.errors import BudgetExceeded, Busy, InvalidRequest, RequestsPaused
from bot.models import UNFINISHED, FailureKind, Job, JobStatus
from bot.money import format_usd
from storage import admin, ledger
from storage.db import Conn, Database, Row

# No 0/o/1/l/i: people type these ids into `/sora cancel`.
_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_ID_LENGTH = 8
_ID_SPACE = len(_ID_ALPHABET) ** _ID_LENGTH


def new_job_id() -> str:
    # one draw from the OS for the whole id (a choice per letter cost eight)
    n = secrets.randbelow(_ID_SPACE)
    letters = []
    for _ in range(_ID_LENGTH):
        n, digit = divmod(n, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[digit])
    return "".join(letters)


@dataclass(frozen=True, slots=True)
class NewJob:
    user_id: str
    team_id: str | None
    channel_id: str
    source: str  # "command" | "mention"
    model: str
    provider: str
    provider_model: str
    prompt: str
    duration_seconds: int
    resolution: str
    aspect_ratio: str
    estimate_micros: int
    thread_ts: str | None = None
    response_url: str | None = None
    dedupe_key: str | None = None
    reference_image_path: str | None = None
    reference_image_mime: str | None = None
    fallback_of: str | None = None
    segment_index: int | None = None  # a long video's segment (its `after_job` is set on insert)
    continuation: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    user_limit_micros: int  # the default; an override in user_limits wins
    workspace_limit_micros: int | None
    max_unfinished_per_user: int
    approval_over_micros: int | None = None  # the environment's threshold; an admin's setting wins
    approval_ttl_s: float = 24 * 3600


@dataclass(frozen=True, slots=True)
class Lease:
    """A job's watcher and until when (ISO-8601 UTC) it holds it."""

    owner: str
    until: str


@dataclass(frozen=True, slots=True)
class Reserved:
    """What one accepted request stored: its jobs (several for a compare) and whether new."""

    jobs: list[Job]
    created: bool
    compare_id: str | None = None
    approval_key: str | None = None


class TooManyJobs(InvalidRequest):
    def __init__(self, running: int, limit: int) -> None:
        super().__init__(
            f"You already have {running} unfinished video job{'s' if running != 1 else ''} "
            f"(the limit is {limit}). Wait for one to finish, or cancel one with "
            "`/sora cancel <job>`."
        )


async def reserve_and_insert(
    db: Database, new: NewJob, *, limits: Limits, day: str, now: str, wait_s: float | None = None
) -> tuple[Job, bool]:
    """Check the caps and budget, then insert the job and its reservation: one transaction.

    Returns (job, created). A request whose dedupe key was seen already returns the
    existing job with created=False, so a retried Slack delivery never makes a second job.
    Raises BudgetExceeded / TooManyJobs with nothing written, and Busy when the writer was
    not free within `wait_s`.
    """
    got = await reserve_request(db, [new], limits=limits, day=day, now=now, wait_s=wait_s)
    return got.jobs[0], got.created


async def reserve_request(
    db: Database, news: list[NewJob], *, limits: Limits, day: str, now: str,
    wait_s: float | None = None, compare_prompt: str | None = None, lease: Lease | None = None,
    after_job: str | None = None,
) -> Reserved:
    """One request: a single job, or the jobs of a compare (`compare_prompt` set).

    The request is checked and reserved as a whole (one budget check for the total, one
    slot of the concurrency cap) and each job gets its own ledger row, so each model's part
    is charged or released on its own. Over the approval threshold, the jobs are stored
    waiting for an admin. The dedupe key is the first job's. `lease` makes the new jobs the
    calling replica's to watch (storage.leases).

    A long video's segments (NewJob.segment_index set) are one request too: a series, each
    segment continuing the one before it; `after_job` is the finished job the first one
    continues (a series that carries on a stopped one).
    """
    try:
        # the whole check-and-insert is one function in one transaction (see Database.run_write)
        return await db.run_write(
            _reserve_in, news, limits=limits, day=day, now=now, compare_prompt=compare_prompt, lease=lease,
            after_job=after_job, wait_s=wait_s,
        )
    except TimeoutError:
        raise Busy() from None


# Everything a reservation checks, in one statement (one round trip to a PostgreSQL server):
# a job with the request's dedupe key, the user's unfinished requests (a compare is one: its
# jobs take one slot of the cap together), their own limit, what they spent and hold reserved
# today, what the whole workspace used today, and the admin's settings for budgets (see
# admin.budgets_from).
_CHECK_SQL = (
    "SELECT (SELECT id FROM jobs WHERE dedupe_key = ?),"
    " (SELECT COUNT(DISTINCT COALESCE(compare_id, id)) FROM jobs WHERE user_id = ?"
    f" AND status IN ({','.join('?' for _ in UNFINISHED)})),"
    " (SELECT limit_micros FROM user_limits WHERE user_id = ?),"
    " (SELECT COALESCE(SUM(charged_micros), 0) FROM ledger"
    " WHERE user_id = ? AND budget_day = ? AND state = 'charged'),"
    " (SELECT COALESCE(SUM(reserved_micros), 0) FROM ledger"
    " WHERE user_id = ? AND budget_day = ? AND state = 'reserved'),"
    " (SELECT COALESCE(SUM(spent_micros + reserved_micros), 0) FROM ledger_day_totals WHERE budget_day = ?), "
    + ", ".join("(SELECT COALESCE(value, '') FROM settings WHERE key = ?)" for _ in admin.BUDGET_KEYS)
)


async def _reserve_in(
    conn: Conn, news: list[NewJob], *, limits: Limits, day: str, now: str,
    compare_prompt: str | None, lease: Lease | None = None, after_job: str | None = None,
) -> Reserved:
    first = news[0]
    series = first.segment_index is not None
    # Budget locks in their one order (storage.ledger): the user's requests take turns, so the
    # dedupe check, the cap and the budget below see every earlier reservation of theirs,
    # whichever replica made it (a no-op on SQLite, where BEGIN IMMEDIATE does it).
    await conn.lock(ledger.user_lock(first.user_id), shared=[ledger.BUDGETS_LOCK])
    user = first.user_id
    row = await conn.fetchone(
        _CHECK_SQL, (first.dedupe_key, user, *UNFINISHED, user, user, day, user, day, day, *admin.BUDGET_KEYS))
    if row[0] is not None:
        return await _reserved_before(conn, row[0])
    running = int(row[1])
    if running >= limits.max_unfinished_per_user:
        raise TooManyJobs(running, limits.max_unfinished_per_user)

    budgets = admin.budgets_from(
        dict(zip(admin.BUDGET_KEYS, row[6:], strict=True)), env_default_micros=limits.user_limit_micros,
        env_workspace_micros=limits.workspace_limit_micros,
        env_approval_micros=limits.approval_over_micros,
    )
    if budgets.paused:
        why = f" ({budgets.paused_reason})" if budgets.paused_reason else ""
        raise RequestsPaused(
            f"New video requests are paused by an admin{why}. Jobs already running "
            "will finish; please try again later."
        )
    total = sum(n.estimate_micros for n in news)
    what = "This video" if len(news) == 1 or series else f"These {len(news)} videos"
    limit = int(row[2]) if row[2] is not None else budgets.default_user_micros
    remaining = limit - int(row[3]) - int(row[4])
    if total > remaining:
        raise BudgetExceeded(
            f"{what} would cost {format_usd(total)}, but you have "
            f"{format_usd(max(remaining, 0))} left of your {format_usd(limit)} daily budget. "
            "`/sora budget` shows when it resets; a shorter video may fit.",
            remaining_micros=max(remaining, 0),
        )
    cap = budgets.workspace_micros
    if cap is not None and total > cap - int(row[5]):
        # spent already, as far as this look shows: refused before anything is written (exact on
        # SQLite's single writer; the locked look below decides when replicas race)
        raise _over_workspace_cap(what, total, cap - int(row[5]), cap)
    compare_id = None
    if compare_prompt is not None:
        compare_id = new_job_id()
        # a series owes no summary: its video is the summary
        _took(await conn.execute(
            "INSERT INTO compares (id, user_id, channel_id, thread_ts, prompt, created_at, kind, summary_state)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
            (compare_id, first.user_id, first.channel_id, first.thread_ts, compare_prompt, now,
             "series" if series else "compare", "done" if series else "owed"),
        ))
    job_ids: list[str] = []
    while len(job_ids) < len(news):
        job_id = new_job_id()
        if job_id not in job_ids:
            job_ids.append(job_id)
    approval_key = None
    if budgets.approval_over_micros is not None and total > budgets.approval_over_micros:
        approval_key = compare_id or job_ids[0]  # a compare is approved as a whole
        expires = datetime.fromisoformat(now) + timedelta(seconds=limits.approval_ttl_s)
        await conn.execute(
            "INSERT INTO approvals (key, user_id, amount_micros, threshold_micros, state, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (approval_key, first.user_id, total, budgets.approval_over_micros, now, iso(expires)),
        )
    jobs = []
    for i, new in enumerate(news):
        stored = new if i == 0 else _without_dedupe(new)
        job_id = job_ids[i]
        after = (job_ids[i - 1] if i else after_job) if series else None
        await _insert_job(conn, stored, job_id, day=day, now=now, compare_id=compare_id,
                          approval_key=approval_key, lease=lease, after_job=after)
        await ledger.add_reservation(
            conn, job_id=job_id, user_id=new.user_id, day=day, amount_micros=new.estimate_micros, at=now
        )
        # what the INSERT stored, without reading it back (this runs before every ack)
        jobs.append(_stored_job(stored, job_id, day=day, now=now, compare_id=compare_id,
                                approval_key=approval_key, owner=lease.owner if lease else None,
                                after_job=after))
    if cap is not None:
        # Last, so that capped reservations of the day take turns only for this check and the
        # COMMIT: the day's totals already count this request, and a refusal rolls it all back.
        await conn.lock(ledger.day_lock(day))
        ws = await ledger.workspace_totals(conn, day)
        if total > cap - (ws.used_micros - total):
            raise _over_workspace_cap(what, total, cap - (ws.used_micros - total), cap)
    return Reserved(jobs, True, compare_id, approval_key)


def _over_workspace_cap(what: str, total: int, remaining: int, cap: int) -> BudgetExceeded:
    return BudgetExceeded(
        f"{what} would cost {format_usd(total)}, but the workspace has {format_usd(max(remaining, 0))} "
        f"left of its {format_usd(cap)} daily cap. Ask an admin, or try again after the budget day resets.",
        remaining_micros=max(remaining, 0),
        scope="workspace",
    )


def _without_dedupe(new: NewJob) -> NewJob:
    return replace(new, dedupe_key=None)


def _took(inserted: int) -> None:
    """A new id is random among 31^8 (8.5e11): one already taken is all but impossible, and
    then the request fails whole (nothing of it is stored) rather than overwrite anything."""
    if inserted != 1:
        raise RuntimeError("a new id was taken already; please try again")


async def _reserved_before(conn: Conn, job_id: str) -> Reserved:
    """What the first delivery of a request stored (a retry, perhaps at another replica)."""
    job = await load_job(conn, job_id)
    assert job is not None
    if job.compare_id is None:
        return Reserved([job], False, None, job.approval_key)
    rows = await conn.fetchall("SELECT * FROM jobs WHERE compare_id = ? ORDER BY rowid", (job.compare_id,))
    return Reserved([row_to_job(r) for r in rows], False, job.compare_id, job.approval_key)


async def _insert_job(
    conn: Conn, new: NewJob, job_id: str, *, day: str, now: str,
    compare_id: str | None = None, approval_key: str | None = None, lease: Lease | None = None,
    after_job: str | None = None,
) -> None:
    _took(await conn.execute(
        """INSERT INTO jobs (id, dedupe_key, user_id, team_id, channel_id, thread_ts, source,
               response_url, model, provider, provider_model, prompt, duration_seconds,
               resolution, aspect_ratio, status, estimate_micros, budget_day, created_at,
               updated_at, last_progress_at, reference_image_path, reference_image_mime,
               compare_id, fallback_of, approval_key, owner, lease_until, segment_index,
               after_job, continuation)
           VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'queued',?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
           ON CONFLICT (id) DO NOTHING""",
        (
            job_id, new.dedupe_key, new.user_id, new.team_id, new.channel_id, new.thread_ts,
            new.source, new.response_url, new.model, new.provider, new.provider_model,
            new.prompt, new.duration_seconds, new.resolution, new.aspect_ratio,
            new.estimate_micros, day, now, now, now, new.reference_image_path,
            new.reference_image_mime, compare_id, new.fallback_of, approval_key,
            lease.owner if lease else None, lease.until if lease else None, new.segment_index,
            after_job, new.continuation,
        ),
    ))


def _stored_job(
    new: NewJob, job_id: str, *, day: str, now: str, compare_id: str | None, approval_key: str | None,
    owner: str | None = None, after_job: str | None = None,
) -> Job:
    """The row `_insert_job` stored, as `row_to_job` would read it (a test holds them equal)."""
    at = parse_iso(now)
    assert at is not None
    return Job(
        id=job_id, user_id=new.user_id, team_id=new.team_id, channel_id=new.channel_id,
        thread_ts=new.thread_ts, status_ts=None, source=new.source, model=new.model,
        provider=new.provider, prompt=new.prompt, duration_seconds=new.duration_seconds,
        resolution=new.resolution, aspect_ratio=new.aspect_ratio, status=JobStatus.QUEUED,
        failure_kind=None, failure_detail=None, progress=None, provider_job_id=None,
        estimate_micros=new.estimate_micros, cost_micros=0, video_url=None,
        response_url=new.response_url, created_at=at,
        submit_started_at=None, last_progress_at=at, stall_notified=False,
        finished_at=None, budget_day=day, reference_image_path=new.reference_image_path,
        reference_image_mime=new.reference_image_mime, compare_id=compare_id,
        fallback_of=new.fallback_of, approval_key=approval_key, owner=owner,
        segment_index=new.segment_index, after_job=after_job, continuation=new.continuation,
    )


def row_to_job(row: Row) -> Job:
    return Job(
        id=row["id"],
        user_id=row["user_id"],
        team_id=row["team_id"],
        channel_id=row["channel_id"],
        thread_ts=row["thread_ts"],
        status_ts=row["status_ts"],
        source=row["source"],
        model=row["model"],
        provider=row["provider"],
        prompt=row["prompt"],
        duration_seconds=int(row["duration_seconds"]),
        resolution=row["resolution"],
        aspect_ratio=row["aspect_ratio"],
        status=JobStatus(row["status"]),
        failure_kind=FailureKind(row["failure_kind"]) if row["failure_kind"] else None,
        failure_detail=row["failure_detail"],
        progress=row["progress"],
        provider_job_id=row["provider_job_id"],
        estimate_micros=int(row["estimate_micros"]),
        cost_micros=int(row["cost_micros"]),
        video_url=row["video_url"],
        response_url=row["response_url"],
        created_at=parse_iso(row["created_at"]),  # type: ignore[arg-type]
        submit_started_at=parse_iso(row["submit_started_at"]),
        last_progress_at=parse_iso(row["last_progress_at"]),
        stall_notified=bool(row["stall_notified"]),
        finished_at=parse_iso(row["finished_at"]),
        budget_day=row["budget_day"],
        reference_image_path=row["reference_image_path"],
        reference_image_mime=row["reference_image_mime"],
        compare_id=row["compare_id"],
        fallback_of=row["fallback_of"],
        approval_key=row["approval_key"],
        thread_permalink=row["thread_permalink"],
        owner=row["owner"],
        segment_index=row["segment_index"],
        after_job=row["after_job"],
        continuation=row["continuation"],
        attempts=int(row["attempts"]),
    )


async def load_job(conn: Conn, job_id: str) -> Job | None:
    row = await conn.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return row_to_job(row) if row else None


async def get_job(db: Database, job_id: str) -> Job | None:
    row = await db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return row_to_job(row) if row else None


async def must_get_job(db: Database, job_id: str) -> Job:
    """A job that exists (rows are never deleted): its current row."""
    job = await get_job(db, job_id)
    assert job is not None, f"job {job_id} vanished"
    return job


async def find_by_dedupe(db: Database, key: str) -> Job | None:
    row = await db.fetchone("SELECT * FROM jobs WHERE dedupe_key = ?", (key,))
    return row_to_job(row) if row else None


async def fallback_chain_models(db: Database, job: Job) -> set[str]:
    """The models this request already ran on: the job and the jobs it replaced."""
    models = {job.model}
    parent, hops = job.fallback_of, 0
    while parent and hops < 20:
        row = await db.fetchone("SELECT model, fallback_of FROM jobs WHERE id = ?", (parent,))
        if row is None:
            break
        models.add(row[0])
        parent, hops = row[1], hops + 1
    return models


async def jobs_for_approval(db: Database, key: str) -> list[Job]:
    rows = await db.fetchall("SELECT * FROM jobs WHERE approval_key = ? ORDER BY rowid", (key,))
    return [row_to_job(r) for r in rows]


async def list_jobs(
    db: Database, *, user_id: str | None = None, status: str | None = None, limit: int = 200
) -> list[Job]:
    clauses, params = [], []  # type: ignore[var-annotated]
    if user_id:
        clauses.append("user_id = ?")
        params.append(user_id)
    if status:
        clauses.append("status = ?")
        params.append(status)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC"
    if limit > 0:
        sql += f" LIMIT {int(limit)}"
    return [row_to_job(r) for r in await db.fetchall(sql, params)]


async def jobs_to_resume(db: Database) -> list[Job]:
    """Every unfinished job and every job whose final message is still owed: one query.

    A restart hands each row to its task, so 10,000 jobs are not read one by one.
    """
    placeholders = ",".join("?" for _ in UNFINISHED)
    rows = await db.fetchall(
        f"""SELECT * FROM jobs WHERE status IN ({placeholders})
               OR id IN (SELECT job_id FROM deliveries WHERE state = 'pending')
            ORDER BY created_at""",
        UNFINISHED,
    )
    return [row_to_job(r) for r in rows]


async def update_job(
    conn: Conn,
    job_id: str,
    *,
    expect: Iterable[JobStatus],
    set_: dict[str, Any],
    now: str,
    fence: str | None = None,
) -> bool:
    """UPDATE … WHERE id=? AND status IN (expected). True only if this call moved the row.

    `fence`: the replica id the job's watcher acts as; the row moves only while that replica
    still owns the job, so one that lost it (frozen past its lease) changes nothing.
    """
    expected = [s.value for s in expect]
    fields = dict(set_)
    fields["updated_at"] = now
    assignments = ", ".join(f"{k} = ?" for k in fields)
    values = [v.value if isinstance(v, (JobStatus, FailureKind)) else v for v in fields.values()]
    placeholders = ",".join("?" for _ in expected)
    owned = "" if fence is None else " AND owner = ?"
    moved = await conn.execute(
        f"UPDATE jobs SET {assignments} WHERE id = ? AND status IN ({placeholders}){owned}",
        (*values, job_id, *expected, *(() if fence is None else (fence,))),
    )
    return moved == 1


async def update(db: Database, job_id: str, *, expect: Iterable[JobStatus], now: str,
                 fence: str | None = None, **set_: Any) -> bool:
    return await db.run_write(update_job, job_id, expect=list(expect), set_=set_, now=now, fence=fence)


async def _update_and_get(
    conn: Conn, job_id: str, *, expect: list[JobStatus], set_: dict[str, Any], now: str, fence: str | None
) -> tuple[bool, Job | None]:
    moved = await update_job(conn, job_id, expect=expect, set_=set_, now=now, fence=fence)
    return moved, await load_job(conn, job_id)


async def update_and_get(
    db: Database, job_id: str, *, expect: Iterable[JobStatus], now: str, fence: str | None = None, **set_: Any
) -> tuple[bool, Job | None]:
    """`update`, plus the row as it stands after it (moved or not), from the same transaction:
    no second trip, and no reader snapshot to be older than the write."""
    return await db.run_write(_update_and_get, job_id, expect=list(expect), set_=set_, now=now, fence=fence)


# --- delivery outbox -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    job_id: str
    kind: str
    state: str
    file_path: str | None
    message_ts: str | None
    method: str | None
    attempts: int
    upload_file_id: str | None = None


async def add_delivery(
    conn: Conn, job_id: str, kind: str, *, now: str, file_path: str | None = None
) -> None:
    await conn.execute(
        "INSERT INTO deliveries (job_id, kind, state, file_path, created_at, updated_at)"
        " VALUES (?, ?, 'pending', ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
        (job_id, kind, file_path, now, now),
    )


async def get_delivery(db: Database, job_id: str) -> Delivery | None:
    row = await db.fetchone("SELECT * FROM deliveries WHERE job_id = ?", (job_id,))
    if row is None:
        return None
    return Delivery(
        row["job_id"], row["kind"], row["state"], row["file_path"], row["message_ts"],
        row["method"], int(row["attempts"]), row["upload_file_id"],
    )


async def note_upload_file(db: Database, job_id: str, file_id: str, now: str) -> None:
    await db.execute(
        "UPDATE deliveries SET upload_file_id = ?, updated_at = ? WHERE job_id = ? AND state = 'pending'",
        (file_id, now, job_id),
    )


async def mark_delivered(db: Database, job_id: str, *, message_ts: str | None, method: str, now: str) -> bool:
    """pending -> done, recording the final message's ts. False if it was done already."""
    moved = await db.execute(
        "UPDATE deliveries SET state='done', message_ts=?, method=?, updated_at=?"
        " WHERE job_id=? AND state='pending'",
        (message_ts, method, now, job_id),
    )
    return moved == 1


async def note_delivery_attempt(db: Database, job_id: str, error: str, now: str) -> None:
    await db.execute(
        "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, updated_at = ? WHERE job_id = ?",
        (error[:500], now, job_id),
    )


async def find_job(db: Database, ref: str) -> Job | None:
    """A job by its id, tolerant of backticks and case, as people paste them."""
    cleaned = ref.strip().strip("`").strip().lower()
    if not cleaned:
        return None
    return await get_job(db, cleaned)


async def latest_job_in_thread(db: Database, channel_id: str, thread_ts: str) -> Job | None:
    """The newest job whose result lives in this thread (for "again, but at night")."""
    row = await db.fetchone(
        "SELECT * FROM jobs WHERE channel_id = ? AND thread_ts = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
        (channel_id, thread_ts),
    )
    return row_to_job(row) if row else None


async def note_thread_permalink(db: Database, job: Job, permalink: str) -> bool:
    """Keep Slack's permalink of the job's thread. Only while the thread is still where it was
    looked up: a thread that moved meanwhile keeps no link (the next lookup finds the new one)."""
    changed = await db.execute(
        "UPDATE jobs SET thread_permalink = ? WHERE id = ? AND channel_id = ?"
        " AND thread_ts IS NOT DISTINCT FROM ?",
        (permalink, job.id, job.channel_id, job.thread_ts),
    )
    return changed == 1


# --- provider callbacks -------------------------------------------------------------------


async def find_by_provider_job(db: Database, provider: str, provider_job_id: str) -> Job | None:
    """The unfinished job of `provider` with this provider job id, or one ending in it.

    Adapters may wrap the provider's id (Kling stores "t2v:<task id>", fal "<model
    path>|<request id>") while a callback names the bare id, so a ":<id>" or "|<id>"
    suffix matches too.
    """
    if not provider_job_id:
        return None
    placeholders = ",".join("?" for _ in UNFINISHED)
    row = await db.fetchone(
        f"""SELECT * FROM jobs WHERE provider = ? AND status IN ({placeholders})
              AND (provider_job_id = ?
                   OR substr(provider_job_id, length(provider_job_id) - ? + 1) IN (?, ?))
            ORDER BY created_at DESC LIMIT 1""",
        (provider, *UNFINISHED, provider_job_id, len(provider_job_id) + 1,
         f":{provider_job_id}", f"|{provider_job_id}"),
    )
    return row_to_job(row) if row else None


async def note_callback_delivery(
    db: Database, provider: str, delivery_id: str, *, now: str, forget_before: str
) -> bool:
    """Record a callback delivery; False when it was recorded already (a retry or a replay).

    Records older than `forget_before` are dropped in the same transaction.
    """
    return await db.run_write(_note_callback_delivery, provider, delivery_id, now=now, forget_before=forget_before)


async def _note_callback_delivery(
    conn: Conn, provider: str, delivery_id: str, *, now: str, forget_before: str
) -> bool:
    await conn.execute("DELETE FROM webhook_deliveries WHERE received_at < ?", (forget_before,))
    added = await conn.execute(
        "INSERT INTO webhook_deliveries (provider, delivery_id, received_at) VALUES (?, ?, ?)"
        " ON CONFLICT (provider, delivery_id) DO NOTHING",
        (provider, delivery_id, now),
    )
    return added == 1
