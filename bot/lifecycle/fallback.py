"""Running a failed request on another model: which one is nearest, and the click that does it.

Offered only when the failure was the provider's (retired, unavailable, out of credits), so
the same request elsewhere has a real chance. The choice is recomputed on the click; the
button's value is only the job id.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.catalog import SIMULATOR, Catalog, ModelSpec
from bot.models import FailureKind, Job, JobStatus
from bot.parsing import JobRequest, request_on

FALLBACK_KINDS = frozenset({FailureKind.PROVIDER_RETIRED, FailureKind.PROVIDER_UNAVAILABLE,
                            FailureKind.QUOTA_EXHAUSTED})


@dataclass(frozen=True, slots=True)
class FallbackChoice:
    spec: ModelSpec
    duration_s: int
    resolution: str
    aspect: str

    @property
    def cost_micros(self) -> int:
        return self.spec.cost_micros(self.resolution, self.duration_s)

    def request(self, catalog: Catalog, prompt: str) -> JobRequest:
        """The failed job's prompt as a checked request on this model."""
        return request_on(catalog, self.spec, prompt, duration=self.duration_s, exact=True,
                          resolution=self.resolution, aspect=self.aspect)


def choice_on(spec: ModelSpec, job: Job) -> FallbackChoice:
    """The job's request as `spec` can make it: same resolution, length and aspect where allowed."""
    return FallbackChoice(spec, *spec.nearest(job.duration_seconds, job.resolution, job.aspect_ratio))


def _can_fall_back(job: Job) -> bool:
    # a compare's models stand side by side; one failing is a result, not something to replace
    return job.status is JobStatus.FAILED and job.failure_kind in FALLBACK_KINDS and job.compare_id is None


def fallback_for(catalog: Catalog, job: Job) -> FallbackChoice | None:
    """The nearest offered model on another provider: same length where allowed, closest price."""
    if not _can_fall_back(job):
        return None
    best: tuple[tuple[int, int, str], FallbackChoice] | None = None
    for spec in catalog:
        # another provider (this one is down); never play money for a real request
        if spec.provider == job.provider or (spec.id == SIMULATOR and job.model != SIMULATOR):
            continue
        choice = choice_on(spec, job)
        score = (abs(choice.duration_s - job.duration_seconds), abs(choice.cost_micros - job.estimate_micros), spec.id)
        if best is None or score < best[0]:
            best = (score, choice)
    return best[1] if best else None


def automatic_choice(catalog: Catalog, job: Job, order: list[str], tried: set[str]) -> FallbackChoice | None:
    """The first model of the admin's ordered list that could run this failed job.

    Skips models already tried for this request; for an outage or used-up credits also
    every model of the same provider (a retired model says nothing about its siblings).
    """
    if not _can_fall_back(job):
        return None
    for model in order:
        spec = catalog.get(model)
        if spec is None or spec.id in tried or spec.id == job.model:
            continue
        if job.failure_kind is not FailureKind.PROVIDER_RETIRED and spec.provider == job.provider:
            continue
        return choice_on(spec, job)
    return None
