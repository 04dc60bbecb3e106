"""Builds the Bolt app and its runtime: database, providers, catalog, Slack client, poller."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from pydantic import SecretStr
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.listener.async_listener_start_handler import AsyncListenerStartHandler
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.lifecycle import ack_runner
from bot.surfaces import callbacks
from bot.authz import AdminCheck
from bot.catalog import FAL, GATEWAY, GEMINI, KLING, OPENAI, RUNWAY, SEEDANCE, SIMULATOR, VEO, XAI, CatalogError, build_catalog
from bot.clock import Clock, utcnow
from bot.config import Settings
from bot.deps import Deps, Timing
from bot.lifecycle.leases import Leases, new_replica_id
from bot.metrics import CONTENT_TYPE_LATEST, Metrics, surface_of
from bot.lifecycle.poller import Poller
from bot.providers.base import VideoProvider
from bot.providers.fal import FalProvider
from bot.providers.gateway import GatewayProvider
from bot.providers.gemini import GeminiProvider
from bot.providers.google_auth import GoogleTokenSource
from bot.providers.kling import KlingProvider
from bot.providers.openai_videos import OpenAIVideosProvider
from bot.providers.runway import RunwayProvider
from bot.providers.seedance import SeedanceProvider
from bot.providers.simulator import SimulatorProvider
from bot.providers.veo import VeoProvider
from bot.providers.xai import XaiProvider
from bot.readiness import Readiness
from bot.slack.slack_io import SLACK_TIMEOUT_S, make_slack_client
from handlers import actions as action_handlers
from handlers import admin as admin_handlers
from handlers import commands as command_handlers
from handlers import home as home_handlers
from handlers import modals as modal_handlers
from storage import compares

log = logging.getLogger(__name__)

# /healthz reports the unfinished jobs when the database answers this fast, and null otherwise
HEALTH_DB_TIMEOUT_S = 2.0

# On shutdown, how long listeners still working after their ack may take to finish before
# they are cancelled (SIGTERM's grace period is often 10 s in all).
LISTENER_DRAIN_S = 5.0


def build_providers(settings: Settings) -> dict[str, VideoProvider]:
    """One adapter per configured provider, each with its own HTTP client and limits."""
    providers: dict[str, VideoProvider] = {SIMULATOR: SimulatorProvider(run_seconds=settings.sora_simulator_seconds)}

    def secret(value: SecretStr | None) -> str:
        assert value is not None
        return value.get_secret_value()

    configured = set(settings.configured_providers)
    if GATEWAY in configured:
        assert settings.video_gateway_base_url is not None
        providers[GATEWAY] = GatewayProvider(
            settings.video_gateway_base_url, secret(settings.video_gateway_api_key), style=settings.video_gateway_style
        )
    if OPENAI in configured:
        providers[OPENAI] = OpenAIVideosProvider(
            settings.openai_base_url, secret(settings.openai_api_key),
            calls_back=callbacks.openai_webhooks_on(settings),
        )
    if RUNWAY in configured:
        providers[RUNWAY] = RunwayProvider(secret(settings.runwayml_api_secret), base_url=settings.runway_base_url)
    if KLING in configured:
        providers[KLING] = KlingProvider(
            secret(settings.kling_access_key), secret(settings.kling_secret_key), base_url=settings.kling_base_url,
            callback_url_for=callbacks.url_builder(settings, KLING),
        )
    if SEEDANCE in configured:
        providers[SEEDANCE] = SeedanceProvider(
            secret(settings.ark_api_key), base_url=settings.ark_base_url,
            callback_url_for=callbacks.url_builder(settings, SEEDANCE),
        )
    if FAL in configured:
        providers[FAL] = FalProvider(
            secret(settings.fal_key), queue_url=settings.fal_queue_url,
            callback_url_for=callbacks.url_builder(settings, FAL),
            jwks_url=settings.fal_jwks_url,
        )
    if VEO in configured:
        assert settings.google_cloud_project is not None
        providers[VEO] = VeoProvider(
            project=settings.google_cloud_project, location=settings.google_cloud_location,
            # no file: application default credentials
            token=GoogleTokenSource(settings.google_application_credentials),
            base_url=settings.agent_platform_base_url,
        )
    if GEMINI in configured:
        providers[GEMINI] = GeminiProvider(secret(settings.gemini_api_key), base_url=settings.gemini_base_url)
    if XAI in configured:
        providers[XAI] = XaiProvider(secret(settings.xai_api_key), base_url=settings.xai_base_url)
    return providers


class ListenerTasks(AsyncListenerStartHandler):
    """The listeners still running. With process_before_response=False Bolt runs each one in
    a task of its own that outlives the HTTP request (it acks, then goes on working), so
    stopping the server does not wait for them; shutdown waits here before closing the
    database and clients they use."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, request: AsyncBoltRequest, response: BoltResponse | None) -> None:
        # Bolt calls this first thing inside the listener's own task
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the running listeners, then cancel what is left."""
        pending = {t for t in self.tasks if t is not asyncio.current_task()}
        if not pending:
            return
        log.info("waiting for %d listener(s) still at work", len(pending))
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        if late:
            log.warning("%d listener(s) still at work after %.0f s; cancelling them", len(late), timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


class _InjectDeps(AsyncMiddleware):
    """Puts `deps` in every request's context. A middleware class: Bolt calls it directly,
    where a decorated function has its arguments worked out by inspection on every request."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]  # noqa: A002
    ) -> BoltResponse | None:
        req.context["deps"] = self.deps
        return await next()


class _TimedApp(AsyncApp):
    """Times each request from its arrival to its answer, the ack, by surface. Bolt answers
    once the listener has acked (process_before_response=False), in HTTP and Socket Mode
    alike, and both come through `async_dispatch`."""

    metrics: Metrics

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        started = time.perf_counter()
        try:
            return await super().async_dispatch(req)
        finally:
            self.metrics.ack_seconds.labels(surface_of(req.body)).observe(time.perf_counter() - started)


def build_app(deps: Deps, *, signing_secret: str | None, listeners: ListenerTasks | None = None) -> AsyncApp:
    app = _TimedApp(
        client=deps.slack,
        signing_secret=signing_secret,
        # Socket Mode payloads are unsigned (the WebSocket is authenticated instead)
        request_verification_enabled=signing_secret is not None,
        process_before_response=False,
    )
    app.metrics = deps.metrics
    ack_runner.install(app)
    if listeners is not None:
        # AsyncApp takes no start handler; its listener runner (a public property) holds it
        app.listener_runner.listener_start_handler = listeners

    app.use(_InjectDeps(deps))

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        kind = body.get("type") or body.get("command") or "request"
        log.error("unhandled error in a %s listener: %r", kind, error, exc_info=error)

    command_handlers.register(app)
    admin_handlers.register(app)
    action_handlers.register(app)
    home_handlers.register(app)
    modal_handlers.register(app)
    return app


@dataclass(slots=True)
class Runtime:
    """What `sora-bot run`, the demo and the tests share."""

    deps: Deps
    app: AsyncApp
    poller: Poller
    listeners: ListenerTasks = field(default_factory=ListenerTasks)
    # the Slack client's connections, when this runtime made the client
    slack_session: aiohttp.ClientSession | None = None
    readiness: Readiness | None = None
    _closed: bool = False

    async def start(self) -> int:
        resumed = await self.poller.resume()
        # a compare whose last model answered just before a stop still owes its summary
        owed = compares.ready_summaries if self.deps.leases.shared else compares.owed_summaries
        for job_id in await owed(self.deps.db):
            self.poller.watch(job_id)
        return resumed

    async def close(self) -> None:
        """Shut down in order; the caller has already stopped taking Slack requests.

        Listeners still at work finish first (they use everything below), then the job
        tasks stop, then the clients, then the database. Closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        await self.listeners.drain(LISTENER_DRAIN_S)
        await self.poller.close()
        for provider in self.deps.providers.values():
            await provider.aclose()
        await self.deps.http.aclose()
        if self.slack_session is not None:
            await self.slack_session.close()
        await self.deps.db.close()


async def create_runtime(
    settings: Settings,
    *,
    providers: Mapping[str, VideoProvider] | None = None,
    slack: AsyncWebClient | None = None,
    timing: Timing | None = None,
    clock: Clock = utcnow,
    include_simulator: bool | None = None,
) -> Runtime:
    providers = dict(providers) if providers is not None else build_providers(settings)
    configured = [p for p in providers if p != SIMULATOR]
    catalog = build_catalog(
        providers=configured,
        gateway_models=settings.gateway_models,
        default_model=settings.sora_default_model,
        prices_file=settings.sora_prices,
        models_file=settings.sora_models,
        include_simulator=include_simulator,
    )
    unknown = [m for m in settings.fallback_models if catalog.get(m) is None]
    if unknown:
        raise CatalogError(
            f"SORA_FALLBACK_MODELS: {', '.join(map(repr, unknown))} not offered here (offered: {', '.join(catalog.ids())})"
        )
    db = await settings.database().open()
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    metrics = Metrics()
    slack_session: aiohttp.ClientSession | None = None
    if slack is None:
        # one session for every Web API call: without it slack_sdk opens (and closes) a
        # session, so a TCP and TLS handshake, per call
        slack_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_S))
        slack = make_slack_client(token, settings.slack_api_url, session=slack_session, metrics=metrics)
    deps = Deps(
        settings=settings,
        db=db,
        catalog=catalog,
        providers=providers,
        slack=slack,
        authz=AdminCheck(slack, settings.admin_user_ids),
        http=httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)),
        media_dir=Path(f"{settings.sora_db_path}.media"),
        timing=timing or Timing.from_settings(settings),
        clock=clock,
        leases=Leases(new_replica_id(), settings.sora_lease_seconds, shared=db.engine == "postgres", clock=clock),
        metrics=metrics,
    )
    poller = Poller(deps)
    deps.poller = poller
    metrics.in_flight = lambda: len(poller.tasks)
    metrics.leases_held = lambda: len(deps.leases.held) if deps.leases.shared else 0
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    listeners = ListenerTasks()
    return Runtime(deps=deps, app=build_app(deps, signing_secret=secret, listeners=listeners), poller=poller,
                   listeners=listeners, slack_session=slack_session, readiness=Readiness(deps))


def make_web_app(runtime: Runtime) -> web.Application:
    """HTTP mode: events, commands and interactivity at POST /slack/events; GET /healthz,
    /readyz and /metrics; provider callbacks at POST /callbacks/{openai,kling,seedance,fal}."""

    async def slack_events(request: web.Request) -> web.Response:
        gate = runtime.deps.ack_first
        gate.enter()  # job steps wait while Slack waits for this answer
        try:
            bolt_request = await to_bolt_request(request)
            bolt_response = await runtime.app.async_dispatch(bolt_request)
            return await to_aiohttp_response(bolt_response)
        finally:
            gate.leave()

    web_app = make_ops_app(runtime)
    web_app.router.add_post("/slack/events", slack_events)
    callbacks.add_routes(web_app, runtime.deps)
    return web_app


def make_ops_app(runtime: Runtime) -> web.Application:
    """What an operator's probes and Prometheus read: GET /healthz (alive), /readyz (may take
    traffic) and /metrics. Socket Mode serves these alone, on PORT when it is set."""

    async def healthz(_: web.Request) -> web.Response:
        # alive even while the database is away: restarting every replica would not bring it
        # back (/readyz takes the replica out of traffic instead)
        try:
            row = await asyncio.wait_for(runtime.deps.db.fetchone(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('queued','submitted','running')"), HEALTH_DB_TIMEOUT_S)
            unfinished: int | None = int(row[0]) if row else 0
        except Exception:
            unfinished = None
        leases = runtime.deps.leases
        return web.json_response({"ok": True, "unfinished_jobs": unfinished,
                                  "watching": len(runtime.poller.tasks), "replica": leases.replica_id,
                                  "owned_jobs": len(leases.held) if leases.shared else len(runtime.poller.tasks)})

    async def readyz(_: web.Request) -> web.Response:
        assert runtime.readiness is not None
        ready, found = await runtime.readiness.check()
        return web.json_response(found, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        # as a header: aiohttp's content_type argument refuses one that carries a charset
        return web.Response(body=runtime.deps.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    web_app = web.Application(client_max_size=1 << 20)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)
    return web_app
