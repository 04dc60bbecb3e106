"""Running a failed request on another model: which one is nearest, and the click that does it.

Offered only when the failure was the provider's (retired, unavailable, out of credits), so
the same request elsewhere has a real chance. The choice is recomputed on the click; the
button's value is only the job id.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.catalog import SIMULATOR, Catalog, ModelSpec
from bot.models import FailureKind, Job, JobStatus

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


def fallback_for(catalog: Catalog, job: Job) -> FallbackChoice | None:
    """The nearest offered model on another provider: same length where allowed, closest price."""
    if job.status is not JobStatus.FAILED or job.failure_kind not in FALLBACK_KINDS:
        return None
    best: tuple[tuple[int, int, str], FallbackChoice] | None = None
    for spec in catalog:
        # another provider (this one is down); never play money for a real request
        if spec.provider == job.provider or (spec.id == SIMULATOR and job.model != SIMULATOR):
            continue
        resolution = job.resolution if job.resolution in spec.resolutions else spec.default_resolution
        allowed = spec.allowed_durations(resolution)
        duration = min(allowed, key=lambda d: (abs(d - job.duration_seconds), d))
        aspect = job.aspect_ratio if job.aspect_ratio in spec.aspect_ratios else spec.default_aspect
        choice = FallbackChoice(spec, duration, resolution, aspect)
        score = (abs(duration - job.duration_seconds), abs(choice.cost_micros - job.estimate_micros), spec.id)
        if best is None or score < best[0]:
            best = (score, choice)
    return best[1] if best else None
