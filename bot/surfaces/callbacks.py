"""Provider callbacks: verify them, drop repeats, find the job and poke its watcher.

A callback is a hint, never the truth. Nothing in its body (status, URL, error) is used to
finish, fail or charge a job: the watcher asks the provider and acts on that answer, so a
forged or replayed callback can at most cause one extra status call. Slow polling stays on
as the safety net for callbacks that never come.

OpenAI-shape webhooks are signed (Standard Webhooks, OPENAI_WEBHOOK_SECRET). Kling and
Seedance calls are not, so the URL we give them at submit carries our job id and a token only
this bot can make: HMAC-SHA256 of "<provider>:<job id>" under a key derived from the Slack
signing secret (HTTP mode requires it; nothing extra to store or configure). fal's URL carries
the same token, and fal also signs each webhook with ED25519 (keys from its JWKS, checked by
`FalWebhookVerifier`): an unsigned or badly signed fal webhook is refused before anything is
recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from bot.catalog import FAL, KLING, OPENAI, SEEDANCE
from bot.clock import iso
from bot.config import Settings
from bot.deps import Deps
from bot.providers.fal import FalKeysUnavailable, FalProvider, FalSignatureError
from bot.providers.http import first_text
from storage import jobs as jobstore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# OpenAI retries a failed delivery for up to 72 h with the same webhook-id.
KEEP_DELIVERIES = timedelta(days=7)
OPENAI_EVENTS = ("video.completed", "video.failed")
_KEY_LABEL = b"sora-bot provider callbacks v1"
_TOKEN_BYTES = 16


# --- per-job URL tokens for the unsigned providers ----------------------------------------------


def callback_key(signing_secret: str) -> bytes:
    """The key of the URL tokens, derived (not equal) so a token reveals nothing of the secret."""
    return hmac.new(signing_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def job_token(key: bytes, provider: str, job_id: str) -> str:
    """128 bits of HMAC-SHA256 over "<provider>:<job id>", URL-safe base64."""
    mac = hmac.new(key, f"{provider}:{job_id}".encode(), hashlib.sha256).digest()[:_TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def callback_url(base_url: str, provider: str, job_id: str, key: bytes) -> str:
    """Where `provider` should report on our job `job_id`: `{base}/callbacks/{provider}?job=…&t=…`."""
    query = urlencode({"job": job_id, "t": job_token(key, provider, job_id)})
    return f"{base_url.rstrip('/')}/callbacks/{provider}?{query}"


def _key_for(settings: Settings) -> bytes | None:
    """The token key when callbacks are on: a public base URL, HTTP mode, a signing secret."""
    if not settings.sora_public_base_url or settings.slack_app_token is not None:
        return None
    if settings.slack_signing_secret is None:
        return None
    return callback_key(settings.slack_signing_secret.get_secret_value())


def openai_webhooks_on(settings: Settings) -> bool:
    """Whether OpenAI's webhooks can reach us: a signing secret, and HTTP mode (the route is
    on the bot's HTTP server, which Socket Mode doesn't run)."""
    return settings.openai_webhook_secret is not None and settings.slack_app_token is None


def url_builder(settings: Settings, provider: str) -> Callable[[str], str] | None:
    """job id -> callback URL for an adapter's submit; None when callbacks are off."""
    key = _key_for(settings)
    base = settings.sora_public_base_url
    if key is None or base is None:
        return None
    return lambda job_id: callback_url(base, provider, job_id, key)


# --- what each unsigned provider sends ---------------------------------------------------------


# Statuses that say the job is still going: no reason to poll early. (Reading the status
# only to skip a poll is safe: the slow poll still comes.)
_STILL_GOING = {
    KLING: ("submitted", "processing"),
    SEEDANCE: ("queued", "running"),
    FAL: (),  # fal calls only when the request is done
}
_ID_PATHS = {
    KLING: ("task_id", "data.task_id"),  # the body is the task object
    SEEDANCE: ("id",),
    FAL: ("request_id",),
}
_STATUS_PATHS = {
    KLING: ("task_status", "data.task_status"),
    SEEDANCE: ("status",),
    FAL: (),
}


def same_provider_job(stored: str, named: str) -> bool:
    """Whether a callback's bare id names our stored id ("t2v:<id>", "<path>|<id>" or "<id>")."""
    return bool(named) and (stored == named or stored.endswith((f":{named}", f"|{named}")))


# --- routes ----------------------------------------------------------------------------------


def add_routes(web_app: web.Application, deps: Deps) -> None:
    """POST /callbacks/{openai,kling,seedance,fal} on the bot's HTTP server."""
    settings = deps.settings
    secret = settings.openai_webhook_secret
    verifier = Webhook(secret.get_secret_value()) if secret is not None else None
    key = _key_for(settings)

    async def openai(request: web.Request) -> web.Response:
        if verifier is None:
            return _answer(404, "OpenAI webhooks are off (no OPENAI_WEBHOOK_SECRET)")
        body = await _read_body(request)
        if body is None:
            return _answer(413, "body too large")
        try:
            # checks the timestamp (±5 min) and every v1 signature against the raw body
            event = verifier.verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError) as exc:
            log.info("callback openai: refused (%s)", exc)
            return _answer(401, "bad signature")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return _answer(400, "not an event")
        if event["type"] not in OPENAI_EVENTS:
            log.info("callback openai: ignoring a %s event", event["type"])
            return _answer(200, "ignored")
        video_id = first_text(event, ("data.id",))
        if video_id is None:
            return _answer(400, "no data.id")
        if not await _first_delivery(deps, OPENAI, request.headers["webhook-id"]):
            return _answer(200, "duplicate")
        job = await jobstore.find_by_provider_job(deps.db, OPENAI, video_id)
        if job is None:
            log.info("callback openai: %s for %s matches no unfinished job", event["type"], video_id)
            return _answer(200, "unknown job")
        return await _poke(deps, OPENAI, job.id)

    def unsigned(provider: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            if key is None:
                return _answer(404, "callbacks are off (no SORA_PUBLIC_BASE_URL)")
            job_id = request.query.get("job", "")
            sent = request.query.get("t", "").encode()
            if not job_id or not hmac.compare_digest(sent, job_token(key, provider, job_id).encode()):
                log.info("callback %s: refused (bad token)", provider)
                return _answer(401, "bad token")
            body = await _read_body(request)
            if body is None:
                return _answer(413, "body too large")
            if provider == FAL:
                refused = await _fal_signature_refused(deps, request, body)
                if refused is not None:
                    return refused
            try:
                payload = json.loads(body)
            except ValueError:
                return _answer(400, "not JSON")
            if not isinstance(payload, dict):
                return _answer(400, "not a JSON object")
            if not await _first_delivery(deps, provider, hashlib.sha256(body).hexdigest()):
                return _answer(200, "duplicate")
            job = await jobstore.get_job(deps.db, job_id)
            if job is None or job.provider != provider or job.status.terminal:
                log.info("callback %s: job %s is unknown or finished", provider, job_id)
                return _answer(200, "unknown job")
            named = first_text(payload, _ID_PATHS[provider])
            # before the submit answer is stored the id can't be checked; the poke is harmless
            if job.provider_job_id and named and not same_provider_job(job.provider_job_id, named):
                log.info("callback %s: for %s, which is not job %s's", provider, named, job_id)
                return _answer(200, "unknown job")
            status = (first_text(payload, _STATUS_PATHS[provider]) or "").lower()
            if status in _STILL_GOING[provider]:
                return _answer(200, "noted")
            return await _poke(deps, provider, job.id)

        return handler

    def counted(provider: str, handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
        async def answer(request: web.Request) -> web.StreamResponse:
            response = await handler(request)
            deps.metrics.callback(provider, response.status, response.get("note", ""))
            return response

        return answer

    web_app.router.add_post("/callbacks/openai", counted(OPENAI, openai))
    for provider in (KLING, SEEDANCE, FAL):
        web_app.router.add_post(f"/callbacks/{provider}", counted(provider, unsigned(provider)))


async def _fal_signature_refused(deps: Deps, request: web.Request, body: bytes) -> web.Response | None:
    """None when fal signed this body; else the answer: 401 for an unsigned, stale or forged
    webhook, 503 (fal retries) when its key set can't be fetched."""
    fal = deps.providers.get(FAL)
    if not isinstance(fal, FalProvider):
        return _answer(404, "fal is not configured")
    try:
        await fal.webhooks.verify(request.headers, body)
    except FalKeysUnavailable as exc:
        log.warning("callback fal: can't check the signature now (%s)", exc)
        return _answer(503, "signing keys unavailable")
    except FalSignatureError as exc:
        log.info("callback fal: refused (%s)", exc)
        return _answer(401, "bad signature")
    return None


async def _read_body(request: web.Request) -> bytes | None:
    """The raw body, or None when it is over MAX_BODY_BYTES (read no further than that)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _first_delivery(deps: Deps, provider: str, delivery_id: str) -> bool:
    now = deps.clock()
    first = await jobstore.note_callback_delivery(
        deps.db, provider, delivery_id, now=iso(now), forget_before=iso(now - KEEP_DELIVERIES)
    )
    if not first:
        log.info("callback %s: delivery %s seen already", provider, delivery_id[:24])
    return first


async def _poke(deps: Deps, provider: str, job_id: str) -> web.Response:
    if deps.poller is not None:
        await deps.poller.wake(job_id)  # on its watcher, whichever replica that is
    log.info("callback %s: job %s polls now", provider, job_id)
    return _answer(200, "ok")


def _answer(status: int, note: str) -> web.Response:
    response = web.json_response({"ok": status == 200, "note": note}, status=status)
    response["note"] = note  # for the metrics: accepted, duplicate, ignored or refused
    return response
