"""Typed values that travel between the layers: job states, failure kinds, requests, rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path


class JobStatus(StrEnum):
    QUEUED = "queued"  # reserved, not yet accepted by the provider
    SUBMITTED = "submitted"  # provider job id stored
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


UNFINISHED = (JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING)


class FailureKind(StrEnum):
    INVALID_REQUEST = "invalid_request"
    BLOCKED_INPUT = "blocked_input"
    BLOCKED_OUTPUT = "blocked_output"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    AUTH_FAILED = "auth_failed"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    GENERATION_FAILED = "generation_failed"
    STUCK = "stuck"
    RESULT_EXPIRED = "result_expired"
    DOWNLOAD_FAILED = "download_failed"
    CANCELLED = "cancelled"
    PROVIDER_RETIRED = "provider_retired"
    SLACK_REFUSED = "slack_refused"  # Slack refused every form of the request message


class ProviderState(StrEnum):
    """The normalised provider status of reference §2."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ReferenceImage:
    """An image to animate (image-to-video), already checked and sized for the model."""

    data: bytes
    mime_type: str  # "image/png", "image/jpeg", "image/webp"
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class VideoSpec:
    """What the provider is asked to make, after validation against the catalog."""

    model: str  # the bot's own model id, e.g. "sora-2"
    provider_model: str  # the provider's name for it
    prompt: str
    duration_s: int
    resolution: str  # "720p", "1024p", "1080p", "4k"
    aspect_ratio: str  # "16:9", "9:16", "1:1"
    external_id: str  # our job id: providers that accept one use it to dedupe
    image: ReferenceImage | None = None  # set for image-to-video
    audio: bool | None = None  # models that can add sound: None = the model's default
    # A long video's segment that natively extends the one before (catalog `extend_seconds`):
    # that segment's finished MP4, and the provider's id for the job that made it. The
    # provider's answer is the whole video so far, not only the new seconds.
    extend_video: Path | None = None
    extend_from_job: str | None = None
    # a long video's segment tried once more: a provider that wants a task id of its own for
    # each create (Kling's external_task_id) gets one per attempt
    attempt: int = 0

    @property
    def task_id(self) -> str:
        return self.external_id if not self.attempt else f"{self.external_id}-{self.attempt}"


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One poll's answer, normalised. `error` is set when state is FAILED."""

    state: ProviderState
    progress: int | None = None
    video_url: str | None = None
    error: "ProviderErrorInfo | None" = None
    retry_after_s: float | None = None
    cost_micros: int | None = None  # the provider's reported cost, when it gives one
    expires_at: datetime | None = None
    raw_status: str | None = None  # for logs only


@dataclass(frozen=True, slots=True)
class ProviderErrorInfo:
    kind: FailureKind
    detail: str  # provider's own words, for logs; never shown verbatim to users
    reason: str | None = None  # a short user-safe reason, e.g. "violence"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    user_id: str
    team_id: str | None
    channel_id: str
    thread_ts: str | None
    status_ts: str | None
    source: str
    model: str
    provider: str
    prompt: str
    duration_seconds: int
    resolution: str
    aspect_ratio: str
    status: JobStatus
    failure_kind: FailureKind | None
    failure_detail: str | None
    progress: int | None
    provider_job_id: str | None
    estimate_micros: int
    cost_micros: int
    video_url: str | None
    response_url: str | None
    created_at: datetime
    submit_started_at: datetime | None
    last_progress_at: datetime | None
    stall_notified: bool
    finished_at: datetime | None
    budget_day: str
    reference_image_path: str | None = None
    reference_image_mime: str | None = None
    compare_id: str | None = None  # set for each job of a `/sora compare`
    fallback_of: str | None = None  # the failed job this one replaces
    approval_key: str | None = None  # set when the request needed an admin's approval
    thread_permalink: str | None = None  # chat.getPermalink's answer for the thread, once a Home asked
    owner: str | None = None  # the replica watching it (storage.leases); None once nobody needs to
    # a long video's segment (bot.lifecycle.long_video): its place (0 = the opening clip), the job it
    # continues, how ("extend" | "last_frame"), and the failed attempts already retried
    segment_index: int | None = None
    after_job: str | None = None
    continuation: str | None = None
    attempts: int = 0

    @property
    def is_segment(self) -> bool:
        return self.segment_index is not None

    @property
    def started_at(self) -> datetime:
        """Where its timeout and poll pacing count from: the request, except for a long
        video's segment, which waits for the ones before it and counts from its own submit."""
        if self.segment_index is not None and self.submit_started_at is not None:
            return self.submit_started_at
        return self.created_at
