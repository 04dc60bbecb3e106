"""Log lines on stderr: the human text format or one JSON object a line (SORA_LOG_FORMAT), and
the job fields that every line logged from inside a job's task carries."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from bot.models import FailureKind, Job, JobStatus

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOB_FIELDS = ("job_id", "user_id", "provider", "model")
# what a JSON line may carry beyond time, level, logger and message: a fixed list rather than
# every `extra`, so the shape stays predictable and nothing passed along by chance is printed
FIELDS = (*JOB_FIELDS, "state_from", "state_to", "failure_kind")

# a tuple in JOB_FIELDS' order, not a dict: each of 10,000 waiting job tasks keeps one
_job: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("sora_log_job", default=None)


def job_fields(job: Job) -> dict[str, str]:
    """The fields that name a job on a log line."""
    return {"job_id": job.id, "user_id": job.user_id, "provider": job.provider, "model": job.model}


def job_context(job: Job | None = None, *, job_id: str | None = None) -> None:
    """From here on, every line the current task logs names this job (or just its id).

    asyncio gives each task its own copy of the context, so this is set where a job's task
    starts and again once its row is read, and ends with the task: no log call changes.
    """
    # interned: the job's row is read again as it goes, and the tuple would otherwise keep the
    # first read's strings alive beside the current ones; few users, providers and models repeat
    fields = (job.id, job.user_id, job.provider, job.model) if job is not None else (job_id,) if job_id else None
    _job.set(tuple(map(sys.intern, fields)) if fields else None)


def state_change(
    logger: logging.Logger, job: Job, state_from: JobStatus | None, state_to: JobStatus, *,
    detail: str | None = None, kind: FailureKind | None = None,
) -> None:
    """One INFO line for a stored state change: "job ab12 submitted -> running".

    `state_from` is None for a job just stored ("new" in the text, no field). The fields come
    from `job` itself, so a change made outside the job's task (a cancel click) names it too.
    """
    text = f"job {job.id} {state_from or 'new'} -> {state_to}" + (f": {detail}" if detail else "")
    extra: dict[str, str] = {**job_fields(job), "state_to": str(state_to)}
    if state_from is not None:
        extra["state_from"] = str(state_from)
    if kind is not None:
        extra["failure_kind"] = str(kind)
    logger.info(text, extra=extra)


class JobContextFilter(logging.Filter):
    """Stamps each record with the current job's fields; explicit `extra` values win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in zip(JOB_FIELDS, _job.get() or ()):
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601 UTC), level, logger, message, the FIELDS the
    record has, and `exc` with the traceback; newlines stay inside the JSON strings."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for SORA_LOG_FORMAT `fmt` (text or json)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing lines in format `fmt` to `stream` (stderr), job fields added."""
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(formatter(fmt))
    out.addFilter(JobContextFilter())
    return out


def configure(*, level: str, fmt: str = "text") -> None:
    """Send log lines to stderr at `level` in format `fmt`.

    Like logging.basicConfig, it leaves a root logger that already has handlers alone (the
    test runner's capture), so calling it in-process changes nothing there.
    """
    logging.basicConfig(level=level, handlers=[handler(fmt)])
