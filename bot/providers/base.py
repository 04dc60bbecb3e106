"""The one async interface every video provider adapter implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from bot.models import ProviderStatus, VideoSpec


@runtime_checkable
class VideoProvider(Protocol):
    """A video model host.

    Adapters raise only `bot.errors.ProviderError` subclasses. `submit` raises
    `AmbiguousSubmit` when the job may exist at the provider anyway (a timeout after the
    body was sent, a 500/502/504): the caller then tries `find_existing` and never blindly
    submits again.
    """

    name: str
    shareable_urls: bool  # whether a result URL works for a person as a fallback link
    # whether it reports finished jobs to our callback route (then polling is the safety net)
    calls_back: bool

    async def submit(self, spec: VideoSpec) -> str:
        """Create the job; return the provider's job id."""
        ...

    async def poll(self, provider_job_id: str) -> ProviderStatus:
        """One status call. Transient trouble raises ProviderUnavailable / RateLimited."""
        ...

    async def cancel(self, provider_job_id: str) -> bool:
        """Best effort; True when the provider accepted the cancel."""
        ...

    async def download(self, provider_job_id: str, video_url: str | None, dest: Path) -> None:
        """Stream the finished video to `dest`.

        Raises ResultExpired when the asset is gone (403/404/410) and DeliveryError on other
        failures (the caller retries the download only, never the job).
        """
        ...

    async def find_existing(self, spec: VideoSpec, *, since_epoch_s: float) -> str | None:
        """Look for a job this spec already created (after an ambiguous submit). None = unknown."""
        ...

    async def check(self) -> str:
        """One cheap authenticated call for `sora-bot doctor`; raises ProviderError if refused."""
        ...

    async def aclose(self) -> None: ...
