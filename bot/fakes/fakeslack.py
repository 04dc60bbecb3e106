"""An in-memory fake of the Slack Web API parts the bot uses, for `sora-bot demo` and the tests.

It also plays Slack's side of Socket Mode: `apps.connections.open` hands out a WebSocket URL
on the same server, and the tests push envelopes down that socket and read back the acks.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web

from bot.fakes import fakeslack_limits as limits

# Slack's documented limits, enforced so the bot meets the same walls it would in production
# (bot/fakes/fakeslack_limits.py holds them, with where they come from).
MAX_TEXT_CHARS = limits.MESSAGE_TEXT
MAX_BLOCKS = limits.MESSAGE_BLOCKS

# Params Slack accepts as JSON-encoded strings inside a form body.
_JSON_PARAMS = ("blocks", "files", "attachments", "view", "metadata")

_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".m4v", ".mkv", ".avi", ".gif")

# Upload POSTs and response_url POSTs are recorded under these pseudo method names.
UPLOAD = "upload"
RESPOND = "respond"
# GETs of a user's private file (`url_private` / `url_private_download`), recorded under this name.
FILE_DOWNLOAD = "file_download"

# What Slack serves for a private file URL fetched without a valid token: its sign-in page, 200.
_SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"
_FILETYPES = {
    "image/png": ("png", "PNG"),
    "image/jpeg": ("jpg", "JPEG"),
    "image/webp": ("webp", "WebP"),
    "image/gif": ("gif", "GIF"),
    "image/heic": ("heic", "HEIC"),
    "text/plain": ("text", "Plain Text"),
    "application/pdf": ("pdf", "PDF"),
    "video/mp4": ("mp4", "MPEG 4 Video"),
}

# The envelope types Slack sends over a Socket Mode connection that carry a payload to ack.
ENVELOPE_TYPES = ("slash_commands", "events_api", "interactive")


@dataclass
class Call:
    """One request as it arrived, including ones that failed or were failed on purpose."""

    method: str
    params: dict[str, Any]
    http_status: int = 200
    token: str | None = None
    refused: dict[str, Any] | None = None  # the ok: false answer a handler gave, if any


@dataclass
class Message:
    """A message as a Slack user would see it (or, for ephemerals, as one user would)."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    user: str = ""
    files: list[dict[str, Any]] = field(default_factory=list)
    edits: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    ephemeral_to: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)

    def to_api(self, bot_user_id: str, bot_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts}
        if self.user == bot_user_id:
            body["bot_id"] = bot_id
        if self.thread_ts is not None:
            body["thread_ts"] = self.thread_ts
        if self.blocks:
            body["blocks"] = self.blocks
        if self.attachments:
            body["attachments"] = self.attachments
        if self.files:
            body["files"] = self.files
        return body


@dataclass
class Upload:
    """What reached an upload URL: enough to check the right bytes went up without keeping them."""

    file_id: str
    filename: str
    length: int
    size: int
    sha256: str
    data: bytes | None = None  # the bytes themselves, when the fake was told to keep them


@dataclass
class Hold:
    """A call kept waiting by `FakeSlack.hold_next`; `reached` is set once it arrived."""

    after: bool
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class _Channel:
    id: str
    name: str
    private: bool
    member: bool


@dataclass
class _User:
    id: str
    name: str
    is_admin: bool
    is_owner: bool
    tz: str


@dataclass
class _Fault:
    status: int
    error: str | None
    retry_after: float | None


class _SlackError(Exception):
    """Raised inside a method handler to answer `{"ok": false, "error": ...}`; `messages`
    become `response_metadata.messages`, as Slack explains an invalid_blocks."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []


class FakeSlack:
    """A local Slack Web API bound to 127.0.0.1 on a free port, recording everything it is sent."""

    def __init__(self, *, bot_user_id: str = "UBOT", bot_id: str = "BBOT", team_id: str = "T0001") -> None:
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id

        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self.ephemerals: list[Message] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.views: list[dict[str, Any]] = []
        self.uploads: dict[str, Upload] = {}
        # keep each uploaded file's bytes (a test that opens the video); off: most tests
        # upload many files and need only their size and digest
        self.keep_upload_bytes = False

        self._channels: dict[str, _Channel] = {}
        self._users: dict[str, _User] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        # files.getUploadURLExternal hands these out; the byte upload and completion look them up
        self._pending_uploads: dict[str, tuple[str, int]] = {}
        self._shared_files: set[str] = set()
        self._file_shares: dict[str, list[Message]] = {}
        # files users uploaded (add_file): id -> (Slack file object, bytes)
        self._private_files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._holds: dict[str, deque[Hold]] = {}
        self._refusals: list[tuple[str, str, Callable[[dict[str, Any]], bool] | None]] = []
        # one counter for every ts so they are strictly increasing across channels and kinds
        self._ts_micros = itertools.count(1_700_000_000_000_100, 100)
        self._ids = itertools.count(1)
        self._response_urls = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

        # Socket Mode: what went down the sockets, what came back, and the sockets themselves
        self.envelopes: list[dict[str, Any]] = []
        self.socket_acks: dict[str, dict[str, Any]] = {}
        self.ack_seconds: dict[str, float] = {}
        self.socket_messages: list[Any] = []
        self.socket_connects = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._sent_at: dict[str, float] = {}
        # a ticket is good for one WebSocket upgrade, as with Slack's wss URLs
        self._tickets: set[str] = set()
        self._ticket_ids = itertools.count(1)
        self._envelope_ids = itertools.count(1)
        self._next_socket = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        # large enough for any form body the bot sends; byte uploads are streamed and not bounded by it
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_post("/respond/{n}", self._handle_respond)
        app.router.add_get("/files-pri/{team_file}/{tail:.+}", self._handle_file_download)
        app.router.add_get("/socket", self._handle_socket)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        # close frames first, so connected clients see a clean close rather than a reset
        await self.close_sockets(code=WSCloseCode.GOING_AWAY)
        await runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def socket_url(self) -> str:
        """The WebSocket URL without a ticket; `apps.connections.open` adds one."""
        return self.base_url.replace("http://", "ws://", 1) + "/socket"

    # ------------------------------------------------------------------ Socket Mode

    @property
    def socket_connected(self) -> int:
        """How many Socket Mode connections are open now (truthy when at least one is)."""
        return sum(1 for ws in self._sockets if not ws.closed)

    async def wait_for_socket(self, timeout: float = 10.0, *, count: int = 1) -> None:
        """Wait until `count` Socket Mode connections are open and have been sent their hello."""
        await self.wait_for(lambda: self.socket_connected >= count, timeout)

    async def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Send one envelope down one open connection (round robin, as Slack picks any) and return its id."""
        if type_ not in ENVELOPE_TYPES:
            raise ValueError(f"envelope type must be one of {ENVELOPE_TYPES}, got {type_!r}")
        open_sockets = [ws for ws in self._sockets if not ws.closed]
        if not open_sockets:
            raise RuntimeError("no Socket Mode connection is open")
        envelope_id = f"env-{next(self._envelope_ids):06d}"
        if accepts_response_payload is None:
            # slash commands (and view submissions) may answer in the ack; events never can
            accepts_response_payload = type_ != "events_api"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type_,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        # only Events API envelopes carry retry fields in Slack; others get them only when asked for
        if type_ == "events_api" or retry_attempt or retry_reason:
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        ws = open_sockets[self._next_socket % len(open_sockets)]
        self._next_socket += 1
        self.envelopes.append(envelope)
        self._sent_at[envelope_id] = time.monotonic()
        await ws.send_json(envelope)
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The ack the client sent for `envelope_id`: `{"envelope_id": ..., "payload"?: {...}}`."""
        await self.wait_for(lambda: envelope_id in self.socket_acks, timeout)
        return self.socket_acks[envelope_id]

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every connected client to reconnect, as Slack does before it recycles a connection."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        for ws in [ws for ws in self._sockets if not ws.closed]:
            await ws.send_json(message)

    async def close_sockets(self, *, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close every Socket Mode connection from the server side."""
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.close(code=code, message=b"fake-slack closing")

    # ------------------------------------------------------------------ world setup

    def add_channel(self, channel_id: str, *, name: str | None = None, private: bool = False, member: bool = False) -> None:
        self._channels[channel_id] = _Channel(channel_id, name or channel_id.lower(), private, member)

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        is_admin: bool = False,
        is_owner: bool = False,
        tz: str = "UTC",
    ) -> None:
        self._users[user_id] = _User(user_id, name or user_id.lower(), is_admin, is_owner, tz)

    def add_message(self, channel: str, text: str, *, user: str, thread_ts: str | None = None) -> Message:
        """Put a message from a human in the world, e.g. the one an app_mention event points at."""
        message = Message(channel=channel, ts=self._next_ts(), thread_ts=thread_ts, text=text, user=user)
        self.messages.append(message)
        return message

    def add_file(
        self, file_id: str, data: bytes, *, name: str, mimetype: str, user: str = "U1"
    ) -> dict[str, Any]:
        """A file a user uploaded to Slack; returns its file object (as in events and files.info).

        Its `url_private` / `url_private_download` point at this fake and serve the bytes only
        with `Authorization: Bearer xox…`; without one they answer Slack's sign-in page (HTML,
        status 200), as Slack does. `files.info` returns the same object.
        """
        filetype, pretty = _FILETYPES.get(mimetype, (mimetype.rpartition("/")[2] or "binary", mimetype))
        base = f"{self.base_url}/files-pri/{self.team_id}-{file_id}"
        now = int(time.time())
        info: dict[str, Any] = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": pretty,
            "user": user,
            "mode": "hosted",
            "is_external": False,
            "is_public": False,
            "size": len(data),
            "url_private": f"{base}/{quote(name)}",
            "url_private_download": f"{base}/download/{quote(name)}",
            "permalink": f"https://fake-workspace.slack.com/files/{user}/{file_id}/{quote(name)}",
            "shares": {},
        }
        self._private_files[file_id] = (info, bytes(data))
        return dict(info)

    def new_response_url(self) -> str:
        url = f"{self.base_url}/respond/{next(self._response_urls)}"
        self.responses[url] = []
        return url

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls to `method` (or "upload"/"respond") fail.

        429 answers with a Retry-After header, >= 500 with that HTTP status, 200 with `{"ok": false}`.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        queue = self._faults.setdefault(method, deque())
        queue.extend(_Fault(status, error, retry_after) for _ in range(times))

    def refuse(
        self, method: str, error: str = "invalid_blocks", *, when: Callable[[dict[str, Any]], bool] | None = None
    ) -> Callable[[], None]:
        """Answer every call to `method` (whose params satisfy `when`) with `{"ok": false, "error": error}`,
        as Slack does a payload it won't take, until the returned function is called."""
        rule = (method, error, when)
        self._refusals.append(rule)
        return lambda: self._refusals.remove(rule) if rule in self._refusals else None

    def hold_next(self, method: str, *, after: bool = False) -> "Hold":
        """Keep the next call to `method` waiting until `release()` (or until the caller dies).

        `after=False` holds it before Slack acts; `after=True` acts (posts, shares) and then
        holds the answer, the window in which a client crash leaves it unsure what happened.
        """
        hold = Hold(after=after)
        self._holds.setdefault(method, deque()).append(hold)
        return hold

    # ------------------------------------------------------------------ recording / queries

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, ts: str) -> list[Message]:
        visible = [m for m in self.messages if m.channel == channel and m.ephemeral_to is None]
        root = [m for m in visible if m.ts == ts and m.thread_ts is None]
        replies = sorted((m for m in visible if m.thread_ts == ts), key=lambda m: _ts_key(m.ts))
        return root + replies

    def roots(self, channel: str) -> list[Message]:
        found = (m for m in self.messages if m.channel == channel and m.thread_ts is None and m.ephemeral_to is None)
        return sorted(found, key=lambda m: _ts_key(m.ts))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: BaseException | None = None
        while True:
            try:
                if predicate():
                    return
                last_error = None
            # a predicate that indexes into a list not yet filled just means "not yet"
            except Exception as exc:
                last_error = exc
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        name = getattr(predicate, "__qualname__", repr(predicate))
        recent = "\n".join(f"  {c.method} -> {c.http_status} {_short(c.params)}" for c in self.calls[-10:])
        detail = f" (last error: {last_error!r})" if last_error is not None else ""
        raise AssertionError(
            f"condition {name} not met within {timeout:g}s{detail}\n"
            f"last calls:\n{recent or '  (none)'}\n"
            f"what Slack shows:\n{self.render_all() or '(nothing)'}"
        )

    def render_thread(self, channel: str, ts: str) -> str:
        messages = self.thread(channel, ts)
        if not messages:
            return f"(no message {ts} in {channel})"
        lines: list[str] = []
        for message in messages:
            prefix = "  ↳ " if message.thread_ts is not None else ""
            lines.extend(self._render_message(message, prefix))
        return "\n".join(lines)

    def render_all(self) -> str:
        sections: list[str] = []
        channels = list(dict.fromkeys(m.channel for m in self.messages))
        for channel in channels:
            threads = [self.render_thread(channel, root.ts) for root in self.roots(channel)]
            # replies whose root is not in this fake (e.g. thread_ts from an event) still deserve a line
            known_roots = {root.ts for root in self.roots(channel)}
            orphans = [
                m
                for m in self.messages
                if m.channel == channel and m.ephemeral_to is None and m.thread_ts and m.thread_ts not in known_roots
            ]
            for orphan in orphans:
                threads.append("\n".join(self._render_message(orphan, f"  ↳ (in {orphan.thread_ts}) ")))
            if threads:
                sections.append(f"#{channel}\n" + "\n".join(threads))
        for message in self.ephemerals:
            sections.append("\n".join(self._render_message(message, f"(only {message.ephemeral_to} in #{message.channel}) ")))
        for url, bodies in self.responses.items():
            for body in bodies:
                mode = body.get("response_type", "ephemeral")
                text = str(body.get("text", ""))
                block_lines = _render_blocks(body.get("blocks") or [])
                sections.append("\n".join([f"(response_url {url.rsplit('/', 1)[-1]}, {mode}) {text}", *block_lines]))
        return "\n\n".join(sections)

    def _render_message(self, message: Message, prefix: str) -> list[str]:
        if message.user == self.bot_user_id:
            who = "bot"
        else:
            known = self._users.get(message.user)
            who = known.name if known is not None else message.user
        return _render_message_lines(message, who, prefix)

    # ------------------------------------------------------------------ HTTP handlers

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await _read_params(request)
        except ValueError:
            self.calls.append(Call(method, {}, 200, _token(request, {})))
            return web.json_response({"ok": False, "error": "invalid_json"})
        token = _token(request, params)
        params.pop("token", None)
        call = Call(method, params, 200, token)
        self.calls.append(call)

        fault = self._take_fault(method)
        if fault is not None:
            response = _fault_response(fault, json_body=True)
            call.http_status = response.status
            return response

        if token is None:
            return web.json_response({"ok": False, "error": "not_authed"})
        if method == "apps.connections.open":
            # only an app-level token may open a Socket Mode connection
            if not token.startswith("xapp-"):
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": self._issue_socket_url()})
        if not token.startswith("xox"):
            return web.json_response({"ok": False, "error": "invalid_auth"})

        for refused_method, error, when in list(self._refusals):
            if refused_method == method and (when is None or when(params)):
                call.refused = {"ok": False, "error": error}
                return web.json_response(call.refused)
        holds = self._holds.get(method)
        hold = holds.popleft() if holds else None
        if hold is not None and not hold.after:
            hold.reached.set()
            await hold.released.wait()
            if request.transport is None or request.transport.is_closing():
                # the caller died while held: Slack never got the request, so nothing happens
                return web.json_response({"ok": False, "error": "request_abandoned"})
        handler = self._methods().get(method)
        try:
            body = handler(params) if handler is not None else {}
        except _SlackError as exc:
            answer: dict[str, Any] = {"ok": False, "error": exc.error}
            if exc.messages:
                answer["errors"] = exc.messages
                answer["response_metadata"] = {"messages": [f"[ERROR] {m}" for m in exc.messages]}
            call.refused = answer
            return web.json_response(answer)
        if hold is not None and hold.after:
            hold.reached.set()
            await hold.released.wait()
        return web.json_response({"ok": True, **body})

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        call = Call(UPLOAD, {"file_id": file_id}, 200)
        self.calls.append(call)
        fault = self._take_fault(UPLOAD)
        if fault is not None:
            response = _fault_response(fault, json_body=False)
            call.http_status = response.status
            return response
        pending = self._pending_uploads.get(file_id)
        if pending is None:
            call.http_status = 404
            return web.Response(status=404, text="file_not_found")
        kept: list[bytes] | None = [] if self.keep_upload_bytes else None
        size, digest = await _read_upload_body(request, kept)
        filename, length = pending
        self.uploads[file_id] = Upload(file_id, filename, length, size, digest,
                                       b"".join(kept) if kept is not None else None)
        call.params.update(size=size, sha256=digest)
        return web.Response(text=f"OK - {size}")

    async def _handle_respond(self, request: web.Request) -> web.Response:
        url = f"{self.base_url}/respond/{request.match_info['n']}"
        try:
            body = await request.json()
        except ValueError:
            body = None
        call = Call(RESPOND, {"url": url, "body": body}, 200)
        self.calls.append(call)
        fault = self._take_fault(RESPOND)
        if fault is not None:
            response = _fault_response(fault, json_body=False)
            call.http_status = response.status
            return response
        if url not in self.responses:
            call.http_status = 404
            return web.Response(status=404, text="no_service")
        if not isinstance(body, dict):
            call.http_status = 400
            return web.Response(status=400, text="invalid_payload")
        text = str(body.get("text") or "")
        problems = limits.blocks_problems(body["blocks"], max_blocks=MAX_BLOCKS) if "blocks" in body else []
        if limits.units(text) > MAX_TEXT_CHARS or problems:
            # response_url answers a refused payload with a status and a word, not JSON
            call.http_status = 400
            return web.Response(status=400, text="invalid_blocks" if problems else "msg_too_long")
        self.responses[url].append(body)
        return web.Response(text="ok")

    async def _handle_file_download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["team_file"].partition("-")[2]
        token = _token(request, {})
        call = Call(FILE_DOWNLOAD, {"file_id": file_id, "path": request.path}, 200, token)
        self.calls.append(call)
        fault = self._take_fault(FILE_DOWNLOAD)
        if fault is not None:
            response = _fault_response(fault, json_body=False)
            call.http_status = response.status
            return response
        if token is None or not token.startswith("xox"):
            return web.Response(text=_SIGN_IN_PAGE, content_type="text/html")
        entry = self._private_files.get(file_id)
        if entry is None:
            call.http_status = 404
            return web.Response(status=404, text="file_not_found")
        info, data = entry
        return web.Response(body=data, headers={"Content-Type": str(info["mimetype"])})

    def _issue_socket_url(self) -> str:
        ticket = str(next(self._ticket_ids))
        self._tickets.add(ticket)
        return f"{self.socket_url}?ticket={ticket}"

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid_ticket")
        # autoping answers the client's pings; the SDK counts a connection stale without pongs
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        self._tickets.discard(ticket)
        self.socket_connects += 1
        hello = {
            "type": "hello",
            "num_connections": self.socket_connected + 1,
            "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": "A1"},
        }
        await ws.send_json(hello)
        # counted as connected only after the hello, so wait_for_socket means "ready for envelopes"
        self._sockets.append(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    self.socket_messages.append(msg.data)
                    continue
                envelope_id = data.get("envelope_id") if isinstance(data, dict) else None
                if isinstance(envelope_id, str) and envelope_id in self._sent_at:
                    # the first ack counts, as with Slack; a late duplicate is kept as a plain message
                    if envelope_id not in self.socket_acks:
                        self.socket_acks[envelope_id] = data
                        self.ack_seconds[envelope_id] = time.monotonic() - self._sent_at[envelope_id]
                        continue
                self.socket_messages.append(data)
        finally:
            self._sockets.remove(ws)
        return ws

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        return queue.popleft()

    # ------------------------------------------------------------------ Web API methods

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.join": self._conversations_join,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "files.info": self._files_info,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "views.open": lambda params: self._views("views.open", params),
            "views.update": lambda params: self._views("views.update", params),
            "views.publish": lambda params: self._views("views.publish", params),
        }

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": "sora-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable_channel(params)
        text, blocks, attachments = _content(params)
        thread_ts = self._thread_root(channel, params.get("thread_ts"))
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            thread_ts=thread_ts,
            text=text,
            blocks=blocks,
            user=self.bot_user_id,
            attachments=attachments,
        )
        self.messages.append(message)
        return {"channel": channel, "ts": message.ts, "message": message.to_api(self.bot_user_id, self.bot_id)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        ts = str(params.get("ts") or "")
        message = self._find(channel, ts)
        if message is None:
            raise _SlackError("message_not_found")
        text = params.get("text")
        if text is not None and limits.units(str(text)) > MAX_TEXT_CHARS:
            raise _SlackError("msg_too_long")
        blocks = _blocks(params)
        message.edits.append((message.text, message.blocks))
        if text is not None:
            message.text = str(text)
        # Slack keeps the previous blocks when the update omits them; an explicit [] clears them
        if "blocks" in params:
            message.blocks = blocks
        return {
            "channel": channel,
            "ts": ts,
            "text": message.text,
            "message": message.to_api(self.bot_user_id, self.bot_id),
        }

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable_channel(params)
        user = params.get("user")
        if not user:
            raise _SlackError("user_not_in_channel")
        text, blocks, attachments = _content(params)
        thread_ts = self._thread_root(channel, params.get("thread_ts"))
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            thread_ts=thread_ts,
            text=text,
            blocks=blocks,
            user=self.bot_user_id,
            ephemeral_to=str(user),
            attachments=attachments,
        )
        self.messages.append(message)
        self.ephemerals.append(message)
        return {"message_ts": message.ts}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        ts = str(params.get("message_ts") or "")
        message = self._find(channel, ts)
        if message is None:
            raise _SlackError("message_not_found")
        # Slack answers on the workspace's own host (auth.test's `url`); a reply's link opens
        # it in its thread
        permalink = f"https://fake-workspace.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        if message.thread_ts is not None and message.thread_ts != ts:
            permalink += f"?thread_ts={message.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": permalink}

    def _conversations_join(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = str(params.get("channel") or "")
        if not channel_id:
            raise _SlackError("channel_not_found")
        if channel_id.startswith("D"):
            raise _SlackError("method_not_supported_for_channel_type")
        # channels nobody registered stand for public channels that exist elsewhere in the workspace
        channel = self._channels.setdefault(channel_id, _Channel(channel_id, channel_id.lower(), False, False))
        if channel.private:
            raise _SlackError("method_not_supported_for_channel_type")
        channel.member = True
        return {"channel": _channel_api(channel)}

    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users:
            raise _SlackError("users_list_not_supplied")
        return {"channel": {"id": f"D{users[0]}"}}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = str(params.get("channel") or "")
        if not channel_id:
            raise _SlackError("channel_not_found")
        if channel_id.startswith("D"):
            return {"channel": {"id": channel_id, "is_im": True, "is_private": True, "is_member": True}}
        channel = self._channels.get(channel_id, _Channel(channel_id, channel_id.lower(), False, False))
        if channel.private and not channel.member:
            raise _SlackError("channel_not_found")
        return {"channel": _channel_api(channel)}

    def _files_get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = params.get("filename")
        try:
            length = int(params.get("length"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _SlackError("invalid_arguments") from None
        if not filename or length < 0:
            raise _SlackError("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self._pending_uploads[file_id] = (str(filename), length)
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        entries = params.get("files")
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) and e.get("id") for e in entries):
            raise _SlackError("invalid_arguments")
        channels = [str(params["channel_id"])] if params.get("channel_id") else []
        channels += [c for c in str(params.get("channels") or "").split(",") if c]
        for channel in channels:
            if not self._can_share_into(channel):
                raise _SlackError("not_in_channel")
        files: list[dict[str, Any]] = []
        for entry in entries:
            upload = self.uploads.get(str(entry["id"]))
            # a file id is good for one completion, as with Slack
            if upload is None or upload.file_id in self._shared_files:
                raise _SlackError("file_not_found")
            files.append(
                {
                    "id": upload.file_id,
                    "title": str(entry.get("title") or upload.filename),
                    "name": upload.filename,
                    "size": upload.size,
                    "sha256": upload.sha256,
                }
            )
        thread_ts = params.get("thread_ts")
        roots = {channel: self._thread_root(channel, thread_ts) for channel in channels}
        self._shared_files.update(f["id"] for f in files)
        comment = str(params.get("initial_comment") or "")
        for channel in channels:
            message = Message(
                channel=channel,
                ts=self._next_ts(),
                thread_ts=roots[channel],
                text=comment,
                user=self.bot_user_id,
                files=[dict(f) for f in files],
            )
            self.messages.append(message)
            for f in files:
                self._file_shares.setdefault(f["id"], []).append(message)
        return {"files": [{"id": f["id"], "title": f["title"], "name": f["name"], "size": f["size"]} for f in files]}

    def _files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params.get("file") or "")
        private = self._private_files.get(file_id)
        if private is not None:
            return {"file": dict(private[0])}
        upload = self.uploads.get(file_id)
        if upload is None:
            raise _SlackError("file_not_found")
        shares: dict[str, dict[str, list[dict[str, str]]]] = {}
        for message in self._file_shares.get(file_id, []):
            channel = self._channels.get(message.channel)
            scope = "private" if (channel is not None and channel.private) or message.channel.startswith("D") else "public"
            entry = {"ts": message.ts, **({"thread_ts": message.thread_ts} if message.thread_ts else {})}
            shares.setdefault(scope, {}).setdefault(message.channel, []).append(entry)
        return {"file": {"id": file_id, "name": upload.filename, "size": upload.size, "shares": shares}}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = str(params.get("user") or "")
        if user_id == self.bot_user_id:
            bot = _User(user_id, "sora-bot", False, False, "UTC")
            return {"user": {**_user_api(bot, self.team_id), "is_bot": True}}
        user = self._users.get(user_id)
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": _user_api(user, self.team_id)}

    def _users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        # one page holds everyone: the fake workspace is small
        members = [_user_api(u, self.team_id) for u in self._users.values()]
        return {"members": members, "response_metadata": {"next_cursor": ""}}

    def _views(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.views.append({"method": method, "params": params})
        view = params.get("view")
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        problems = limits.view_problems(view)
        if problems:
            raise _SlackError("invalid_arguments", problems)
        view_id = str(params.get("view_id") or f"V{next(self._ids):08d}")
        return {"view": {**view, "id": view_id, "team_id": self.team_id}}

    # ------------------------------------------------------------------ helpers

    def _next_ts(self) -> str:
        micros = next(self._ts_micros)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _find(self, channel: str, ts: str) -> Message | None:
        for message in self.messages:
            if message.channel == channel and message.ts == ts and message.ephemeral_to is None:
                return message
        return None

    def _writable_channel(self, params: dict[str, Any]) -> str:
        channel_id = str(params.get("channel") or "")
        if not channel_id:
            raise _SlackError("channel_not_found")
        # posting to a user id lands in the DM with that user
        if channel_id[0] in "UW":
            return f"D{channel_id}"
        if channel_id.startswith("D"):
            return channel_id
        channel = self._channels.get(channel_id)
        if channel is not None and channel.private and not channel.member:
            raise _SlackError("channel_not_found")
        return channel_id

    def _can_share_into(self, channel_id: str) -> bool:
        if channel_id.startswith("D"):
            return True
        channel = self._channels.get(channel_id)
        # chat:write.public does not cover files: an unregistered channel is one the bot is not in
        return channel is not None and channel.member

    def _thread_root(self, channel: str, thread_ts: Any) -> str | None:
        if thread_ts in (None, ""):
            return None
        parent = self._find(channel, str(thread_ts))
        if parent is None:
            raise _SlackError("thread_not_found")
        # replying to a reply lands in the same thread in Slack
        return parent.thread_ts or parent.ts


# ---------------------------------------------------------------------- Socket Mode payloads

_triggers = itertools.count(1)
_event_ids = itertools.count(1)


def slash_command_payload(
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    team: str = "T0001",
    trigger_id: str | None = None,
    response_url: str = "",
    command: str = "/sora",
) -> dict[str, Any]:
    """A `slash_commands` envelope payload: the same string fields Slack would form-post."""
    return {
        "token": "legacy",
        "team_id": team,
        "team_domain": "fake-workspace",
        "channel_id": channel,
        "channel_name": channel.lower(),
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "A1",
        "is_enterprise_install": "false",
        "response_url": response_url,
        # Slack makes every trigger_id unique; the bot keys command dedupe on it
        "trigger_id": trigger_id or f"trigger.{next(_triggers)}",
    }


def app_mention_payload(
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    ts: str = "1700000000.000001",
    thread_ts: str | None = None,
    event_id: str | None = None,
    team: str = "T0001",
    bot_user_id: str = "UBOT",
) -> dict[str, Any]:
    """An `events_api` envelope payload for an app_mention, in the Events API callback shape."""
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return {
        "token": "legacy",
        "team_id": team,
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_event_ids):08d}",
        "event_time": int(time.time()),
        "event": event,
        "authorizations": [{"team_id": team, "user_id": bot_user_id, "is_bot": True}],
        "is_ext_shared_channel": False,
    }


# ---------------------------------------------------------------------- request parsing


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query args merged with a urlencoded, multipart or JSON body; JSON-in-form params decoded."""
    params: dict[str, Any] = dict(request.query)
    if request.method != "GET" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("JSON body must be an object")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    data = value.file.read()
                    params[key] = {"filename": value.filename, "size": len(data)}
                else:
                    params[key] = value
    for key in _JSON_PARAMS:
        value = params.get(key)
        if isinstance(value, str):
            try:
                params[key] = json.loads(value)
            except ValueError:
                # left as a string; the method handler reports it as Slack would
                pass
    return params


async def _read_upload_body(request: web.Request, kept: list[bytes] | None = None) -> tuple[int, str]:
    """Size and sha256 of the uploaded file, from a raw body or the file part of a multipart form
    (and its chunks appended to `kept`, when given)."""
    digest = hashlib.sha256()
    size = 0

    def take(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)
        if kept is not None:
            kept.append(bytes(chunk))

    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and (part.filename or part.name == "file"):
                while chunk := await part.read_chunk():
                    take(chunk)
                break
        return size, digest.hexdigest()
    async for chunk in request.content.iter_chunked(256 * 1024):
        take(chunk)
    return size, digest.hexdigest()


def _token(request: web.Request, params: dict[str, Any]) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip() or None
    token = params.get("token")
    return str(token) if token else None


def _blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = params.get("blocks")
    if blocks is None or blocks == "":
        return []
    if not isinstance(blocks, list) or not all(isinstance(b, dict) and b.get("type") for b in blocks):
        raise _SlackError("invalid_blocks")
    problems = limits.blocks_problems(blocks, max_blocks=MAX_BLOCKS)
    if problems:
        raise _SlackError("invalid_blocks", problems)
    return blocks


def _content(params: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    text = str(params.get("text") or "")
    if limits.units(text) > MAX_TEXT_CHARS:
        raise _SlackError("msg_too_long")
    blocks = _blocks(params)
    attachments = params.get("attachments")
    if attachments in (None, ""):
        attachments = []
    if not isinstance(attachments, list):
        raise _SlackError("invalid_attachments")
    if not text and not blocks and not attachments:
        raise _SlackError("no_text")
    return text, blocks, attachments


def _fault_response(fault: _Fault, *, json_body: bool) -> web.Response:
    if fault.status == 429:
        # Retry-After is whole seconds in HTTP, and slack_sdk parses it with int()
        retry_after = 1 if fault.retry_after is None else max(0, math.ceil(fault.retry_after))
        headers = {"Retry-After": str(retry_after)}
        if json_body:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
        return web.Response(status=429, text="ratelimited", headers=headers)
    error = fault.error or ("internal_error" if fault.status >= 500 else "fatal_error")
    status = fault.status
    # the upload and response_url endpoints have no JSON envelope, so a failure must show in the status
    if not json_body and status == 200:
        status = 400
    if json_body:
        return web.json_response({"ok": False, "error": error}, status=status)
    return web.Response(status=status, text=error)


# ---------------------------------------------------------------------- API shapes and rendering


def _channel_api(channel: _Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "name": channel.name,
        "is_channel": not channel.private,
        "is_private": channel.private,
        "is_member": channel.member,
    }


def _user_api(user: _User, team_id: str) -> dict[str, Any]:
    try:
        offset = datetime.now(timezone.utc).astimezone(ZoneInfo(user.tz)).utcoffset()
    except ZoneInfoNotFoundError:
        offset = None
    return {
        "id": user.id,
        "team_id": team_id,
        "name": user.name,
        "real_name": user.name,
        "profile": {"real_name": user.name, "display_name": user.name},
        "is_admin": user.is_admin,
        "is_owner": user.is_owner,
        "is_primary_owner": user.is_owner,
        "is_bot": False,
        "deleted": False,
        "tz": user.tz,
        "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
    }


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _short(params: dict[str, Any], limit: int = 160) -> str:
    text = json.dumps(params, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text_of(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return "" if obj is None else str(obj)


def _render_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    """One compact line per visible piece of a block: what a reader of the message would notice."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("section", "header"):
            if block.get("text"):
                lines.append(_text_of(block["text"]))
            lines.extend(_text_of(f) for f in block.get("fields") or [])
            accessory = block.get("accessory")
            if isinstance(accessory, dict) and accessory.get("type") == "button":
                lines.append(f"[button: {_text_of(accessory.get('text'))}]")
        elif kind == "context":
            parts: list[str] = []
            for element in block.get("elements") or []:
                if isinstance(element, dict):
                    is_image = element.get("type") == "image"
                    parts.append(f"[image: {element.get('alt_text', '')}]" if is_image else _text_of(element))
            lines.append(" · ".join(p for p in parts if p))
        elif kind == "actions":
            labels = [_text_of(e.get("text")) for e in block.get("elements") or [] if isinstance(e, dict)]
            lines.append(" ".join(f"[button: {label}]" for label in labels if label))
        elif kind == "image":
            lines.append(f"[image: {block.get('alt_text', '')}]")
        elif kind == "video":
            lines.append(f"[video block: {_text_of(block.get('title'))}]")
    return [line for line in lines if line]


def _render_file(info: dict[str, Any]) -> str:
    name = str(info.get("name") or info.get("title") or info.get("id"))
    kind = "video" if name.lower().endswith(_VIDEO_SUFFIXES) else "file"
    size_kb = math.ceil(int(info.get("size") or 0) / 1024)
    return f"[{kind}: {name}, {size_kb} KB]"


def _render_message_lines(message: Message, who: str, prefix: str) -> list[str]:
    head = " ".join(p for p in [message.text, *(_render_file(f) for f in message.files)] if p)
    edited = " (edited)" if message.edits else ""
    pad = " " * (len(prefix) + 4)
    return [f"{prefix}{who}: {head}{edited}", *(f"{pad}| {line}" for line in _render_blocks(message.blocks))]
