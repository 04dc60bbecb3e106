"""Everything a listener or background task needs, built once and passed around."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from bot.lifecycle.ack_first import AckFirst
from bot.authz import AdminCheck
from bot.catalog import Catalog
from bot.clock import Clock, utcnow
from bot.config import Settings
from bot.lifecycle.leases import Leases, new_replica_id
from bot.metrics import Metrics
from bot.providers.base import VideoProvider
from storage.admin import FALLBACK_MODELS, Budgets, effective_budgets
from storage.db import Conn, Database

if TYPE_CHECKING:
    from bot.lifecycle.poller import Poller


@dataclass(slots=True)
class Timing:
    """Every delay the job loop uses, in seconds; tests shrink them."""

    poll_interval_s: float = 5.0
    max_poll_interval_s: float = 30.0
    stall_timeout_s: float = 600.0
    job_timeout_s: float = 1800.0
    progress_edit_interval_s: float = 15.0
    submit_retry_window_s: float = 600.0
    # the least wait after a rate limit that names no Retry-After (bot.lifecycle.flow._backoff)
    rate_limit_floor_s: float = 1.0
    download_attempts: int = 5
    delivery_retry_max_s: float = 300.0
    approval_ttl_s: float = 24 * 3600.0  # an unanswered approval request expires after this
    # a video may reach the thread this late (or 10% of the job's age, if more): the
    # polling schedule's target (bot/lifecycle/schedule.py)
    lateness_floor_s: float = 2.0
    status_calls_per_s: float = 10.0  # per provider: many waiting jobs share it, never hammer one
    # a provider that calls back is polled this often after its first poll: the safety net for
    # a lost callback
    callback_safety_poll_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Timing":
        return cls(
            poll_interval_s=settings.sora_poll_interval,
            stall_timeout_s=settings.sora_stall_timeout,
            job_timeout_s=settings.sora_job_timeout,
            max_poll_interval_s=max(30.0, settings.sora_poll_interval),
            status_calls_per_s=settings.sora_status_calls_per_second,
        )


PROVIDER_LABELS = {
    "simulator": "The simulator", "gateway": "The video gateway", "openai": "OpenAI",
    "runway": "Runway", "veo": "Google Veo", "kling": "Kling", "seedance": "Seedance (BytePlus)",
    "fal": "fal.ai",
}


@dataclass(slots=True)
class Deps:
    settings: Settings
    db: Database
    catalog: Catalog
    providers: Mapping[str, VideoProvider]
    slack: AsyncWebClient
    http: httpx.AsyncClient  # Slack file uploads and response_url posts
    media_dir: Path
    timing: Timing
    authz: AdminCheck
    clock: Clock = utcnow
    poller: "Poller | None" = field(default=None)
    ack_first: AckFirst = field(default_factory=AckFirst)
    # which jobs this replica watches (on SQLite: all of them, and checks cost nothing)
    leases: Leases = field(default_factory=lambda: Leases(new_replica_id(), 30.0, shared=False, clock=utcnow))
    metrics: Metrics = field(default_factory=Metrics)

    def provider_label(self, provider: str) -> str:
        return PROVIDER_LABELS.get(provider, provider)

    async def budgets(self, conn: Conn | None = None) -> Budgets:
        """The limits in force: what admins set in Slack, else the environment's defaults.

        Pass the write transaction's connection to read them inside it.
        """
        if conn is not None:
            return await self._budgets_on(conn)
        async with self.db.reading() as reader:
            return await self._budgets_on(reader)

    async def fallback_order(self) -> list[str]:
        """Models to run a request on when its provider fails: an admin's list, else the environment's."""
        row = await self.db.fetchone("SELECT value FROM settings WHERE key = ?", (FALLBACK_MODELS,))
        if row is None:
            return self.settings.fallback_models
        return [m for m in (row[0] or "").split(",") if m]

    async def _budgets_on(self, conn: Conn) -> Budgets:
        return await effective_budgets(
            conn, env_default_micros=self.settings.daily_budget_micros,
            env_workspace_micros=self.settings.workspace_budget_micros,
            env_approval_micros=self.settings.approval_over_micros,
        )
