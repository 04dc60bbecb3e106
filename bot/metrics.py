"""What an operator's Prometheus scrapes at /metrics: one `Metrics` per runtime.

Each runtime has a registry of its own (tests and the demo run several apps in one process;
the library's global registry would mix them). Labels stay few and bounded: provider, model,
call, Slack method, surface, outcome or failure kind; never a user, prompt or job id.

Money is kept as integer micro-dollars and shown in dollars only when scraped, so the
counters are exact (a float counter that adds 0.8 a thousand times is not).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bot.models import Job
from bot.errors import BudgetExceeded, Busy, NotAllowed, ProviderError, RequestsPaused, SoraError

# a `_created` timestamp beside every series doubles what each scrape reads, for nothing a
# dashboard here uses
disable_created_metrics()

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "refusal_reason", "result_of", "surface_of"]

# Seconds. Acks are due within Slack's 3 s; most take milliseconds.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# provider finished -> video in the thread: a download and an upload, seconds to minutes
LATENESS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STATUS_CALL_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)

MONEY = ("reserved", "charged", "released", "refunded")
_MONEY_HELP = {
    "reserved": "Dollars reserved against budgets when requests were accepted",
    "charged": "Dollars charged for finished videos",
    "released": "Dollars of reservations given back when jobs failed or were cancelled",
    "refunded": "Dollars of charges given back by an admin's refund",
}


def refusal_reason(exc: BaseException) -> str:
    """A refused request's reason, from the error that refused it (a bounded set)."""
    from storage.jobs import TooManyJobs  # storage imports bot.errors; keep the cycle out

    if isinstance(exc, BudgetExceeded):
        return "workspace_budget" if exc.scope == "workspace" else "user_budget"
    if isinstance(exc, TooManyJobs):
        return "too_many_jobs"
    if isinstance(exc, RequestsPaused):
        return "paused"
    if isinstance(exc, Busy):
        return "busy"
    if isinstance(exc, NotAllowed):
        return "not_allowed"
    if isinstance(exc, SoraError):
        return "invalid_request"
    return "error"


def result_of(exc: BaseException | None) -> str:
    """A call's result class: ok, or the failure kind of the error it raised."""
    if exc is None:
        return "ok"
    if isinstance(exc, ProviderError):
        return exc.kind.value
    if isinstance(exc, SoraError):
        return exc.kind.value
    return "error"


class _Derived:
    """Money counters and gauges read from the runtime at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        for what in MONEY:
            family = CounterMetricFamily(f"sora_{what}_usd", _MONEY_HELP[what], labels=["provider"])
            for provider, micros in sorted(m.money[what].items()):
                # micros / 10**6 is the float nearest the exact decimal, so "2.4" prints as 2.4
                family.add_metric([provider], micros / 1_000_000)
            yield family
        inflight = GaugeMetricFamily(
            "sora_jobs_in_flight", "Unfinished jobs this replica is watching (sum over replicas: all of them)")
        inflight.add_metric([], m.in_flight())
        yield inflight
        held = GaugeMetricFamily("sora_leases_held", "Jobs whose lease this replica holds (PostgreSQL fleets)")
        held.add_metric([], m.leases_held())
        yield held


class Metrics:
    """Counters and histograms the code updates, plus values read when scraped."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.requests_accepted = Counter(
            "sora_requests_accepted", "Video requests accepted (a job row and its reservation stored)",
            ["source"], registry=r)
        self.requests_refused = Counter(
            "sora_requests_refused", "Video requests refused before anything was stored, by reason",
            ["reason"], registry=r)
        self.jobs_finished = Counter(
            "sora_jobs_finished", "Jobs that ended, by provider, model and outcome (succeeded or the failure kind)",
            ["provider", "model", "outcome"], registry=r)
        self.provider_calls = Counter(
            "sora_provider_calls", "Calls to video providers, by call (create, status, download) and result",
            ["provider", "call", "result"], registry=r)
        self.provider_call_seconds = Histogram(
            "sora_provider_call_seconds", "How long provider calls took", ["provider", "call"],
            buckets=CALL_BUCKETS, registry=r)
        self.status_calls_per_job = Histogram(
            "sora_status_calls_per_job", "Status calls one finished job needed (watched by one replica)",
            ["provider"], buckets=STATUS_CALL_BUCKETS, registry=r)
        self.slack_calls = Counter(
            "sora_slack_calls", "Slack Web API calls, by method and result (ok, rate_limited, or Slack's error)",
            ["method", "result"], registry=r)
        self.slack_rate_limited = Counter(
            "sora_slack_rate_limited", "HTTP 429 answers from the Slack Web API (each retried attempt counts)",
            ["method"], registry=r)
        self.slack_call_seconds = Histogram(
            "sora_slack_call_seconds", "How long Slack Web API calls took, retries included", ["method"],
            buckets=CALL_BUCKETS, registry=r)
        self.ack_seconds = Histogram(
            "sora_ack_seconds", "From a Slack request's arrival to its answer, by surface", ["surface"],
            buckets=ACK_BUCKETS, registry=r)
        self.delivery_lateness_seconds = Histogram(
            "sora_delivery_lateness_seconds", "From the provider's finished video to the video in its thread",
            buckets=LATENESS_BUCKETS, registry=r)
        self.callbacks = Counter(
            "sora_callbacks", "Provider callbacks, by provider and result (accepted, duplicate, ignored, refused)",
            ["provider", "result"], registry=r)
        self.takeovers = Counter(
            "sora_takeovers", "Jobs this replica took over after another replica's lease ran out", registry=r)
        self.segment_retries = Counter(
            "sora_segment_retries", "Long-video segments that failed and were tried once more, by provider",
            ["provider"], registry=r)
        self.money: dict[str, defaultdict[str, int]] = {what: defaultdict(int) for what in MONEY}
        self.in_flight: Callable[[], int] = lambda: 0
        self.leases_held: Callable[[], int] = lambda: 0
        r.register(_Derived(self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def refused(self, exc: BaseException) -> None:
        """Count a refused request once, where it is first caught: a budget refusal raised in
        the reservation passes through the surface that called it on its way to the user."""
        if getattr(exc, "_sora_counted", False):
            return
        exc._sora_counted = True  # type: ignore[attr-defined]
        self.requests_refused.labels(refusal_reason(exc)).inc()

    def job_ended(self, job: Job, outcome: str, *, charged_micros: int | None = None) -> None:
        """A job's end, once its commit is in: charged when it succeeded, else its reservation
        went back (released). `outcome`: "succeeded" or the failure kind."""
        if charged_micros is not None:
            self.money_moved("charged", job.provider, charged_micros)
        else:
            self.money_moved("released", job.provider, job.estimate_micros)
        self.jobs_finished.labels(job.provider, job.model, outcome).inc()

    def money_moved(self, what: str, provider: str, micros: int) -> None:
        self.money[what][provider] += micros

    @contextmanager
    def provider_call(self, provider: str, call: str) -> Iterator[None]:
        """Count and time one create, status or download call by what it ended with (a
        cancelled call, a stopping bot's, is not counted)."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self._provider_call(provider, call, started, exc)
            raise
        self._provider_call(provider, call, started, None)

    def _provider_call(self, provider: str, call: str, started: float, exc: Exception | None) -> None:
        self.provider_calls.labels(provider, call, result_of(exc)).inc()
        self.provider_call_seconds.labels(provider, call).observe(time.perf_counter() - started)

    def callback(self, provider: str, status: int, note: str) -> None:
        if status >= 400:
            result = "refused"
        elif note in ("ok", "noted"):
            result = "accepted"
        elif note == "duplicate":
            result = "duplicate"
        else:
            result = "ignored"
        self.callbacks.labels(provider, result).inc()


def surface_of(body: Any) -> str:
    """command, event or interaction: which Slack surface a request came from."""
    if not isinstance(body, dict):
        return "other"
    if "command" in body:
        return "command"
    if body.get("type") in ("event_callback", "url_verification"):
        return "event"
    return "interaction"
