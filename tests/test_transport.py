"""The provider clients' transport (httpx over aiohttp) against a local aiohttp server:
what reaches the server, what comes back, and which failures count as "maybe sent"."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.errors import AmbiguousSubmit, ProviderUnavailable
from bot.providers.http import build_client, send, stream_to_file
from tests.botproc import free_port


class Server:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.peers: set[int] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(peer[1])
        match request.path:
            case "/echo":
                return web.json_response({"ok": True}, headers={"X-Thing": "1"})
            case "/gzip":
                data = gzip.compress(json.dumps({"packed": True}).encode())
                return web.Response(body=data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            case "/slow":
                await asyncio.sleep(1.0)
                return web.json_response({"late": True})
            case "/drop":
                assert request.transport is not None
                request.transport.close()  # read the request, then hang up without answering
                await asyncio.sleep(0.2)
                return web.Response()
            case "/redirect":
                target = request.query["to"]
                return web.Response(status=302, headers={"Location": target})
            case "/big":
                response = web.StreamResponse()
                await response.prepare(request)
                for i in range(40):
                    await response.write(bytes([i]) * 100_000)
                await response.write_eof()
                return response
        return web.json_response({"error": {"message": "nope"}}, status=404)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield srv, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_requests_arrive_whole_and_answers_come_back_whole(server: tuple[Server, str]) -> None:
    srv, base = server
    async with build_client() as client:
        r = await client.post(f"{base}/echo?q=a%20b&x=1", json={"prompt": "a dog ☃"}, headers={"Authorization": "Bearer k"})
        assert (r.status_code, r.json(), r.headers["x-thing"]) == (200, {"ok": True}, "1")
        gz = await client.get(f"{base}/gzip")
        assert gz.json() == {"packed": True}  # decoded once, by httpx
        missing = await client.get(f"{base}/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["message"] == "nope"
    method, path, headers, body = srv.seen[0]
    assert (method, path) == ("POST", "/echo?q=a%20b&x=1")
    assert json.loads(body) == {"prompt": "a dog ☃"}
    assert headers["Authorization"] == "Bearer k" and headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)


async def test_connections_are_pooled_up_to_the_limit(server: tuple[Server, str]) -> None:
    srv, base = server
    async with build_client(max_connections=2) as client:
        await asyncio.gather(*(client.get(f"{base}/echo") for _ in range(30)))
    assert len(srv.seen) == 30
    assert 1 <= len(srv.peers) <= 2


async def test_a_redirect_to_another_host_drops_the_key(server: tuple[Server, str]) -> None:
    srv, base = server
    other = base.replace("127.0.0.1", "localhost")
    async with build_client() as client:
        r = await client.get(f"{base}/redirect?to={other}/echo", headers={"Authorization": "Bearer k"})
    assert r.status_code == 200
    assert [s[1] for s in srv.seen] == [f"/redirect?to={other}/echo", "/echo"]
    assert "Authorization" not in srv.seen[1][2]


async def test_a_create_that_times_out_or_is_hung_up_on_after_sending_is_ambiguous(server: tuple[Server, str]) -> None:
    srv, base = server
    sem = asyncio.Semaphore(2)
    async with build_client(timeout=httpx.Timeout(5.0, read=0.1)) as client:
        for path in ("/slow", "/drop"):
            with pytest.raises(AmbiguousSubmit):
                await send(client, sem, "POST", f"{base}{path}", op="submit", label="Gateway", json={"p": 1})
        with pytest.raises(ProviderUnavailable) as polled:
            await send(client, sem, "GET", f"{base}/slow", op="poll", label="Gateway")
        assert polled.value.retryable
    assert [s[1] for s in srv.seen] == ["/slow", "/drop", "/slow"]  # each reached the server


async def test_a_refused_connection_is_surely_not_sent() -> None:
    sem = asyncio.Semaphore(1)
    async with build_client() as client:
        with pytest.raises(ProviderUnavailable) as info:
            await send(client, sem, "POST", f"http://127.0.0.1:{free_port()}/v1/videos", op="submit", label="Gateway")
    assert not isinstance(info.value, AmbiguousSubmit) and info.value.surely_not_created


async def test_a_download_streams_to_the_file(server: tuple[Server, str], tmp_path: Path) -> None:
    _, base = server
    dest = tmp_path / "v.mp4"
    async with build_client() as client:
        size = await stream_to_file(client, asyncio.Semaphore(1), f"{base}/big", dest, label="Gateway")
    assert size == 4_000_000 == dest.stat().st_size
    data = dest.read_bytes()
    assert data[:100_000] == b"\x00" * 100_000 and data[-1] == 39


async def test_a_closed_client_refuses_new_requests(server: tuple[Server, str]) -> None:
    _, base = server
    client = build_client()
    await client.get(f"{base}/echo")
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.get(f"{base}/echo")


async def test_the_proxy_from_the_environment_is_used(server: tuple[Server, str], monkeypatch) -> None:
    # teams behind an outbound proxy set HTTPS_PROXY/HTTP_PROXY; httpx honoured it, so must this
    srv, base = server
    monkeypatch.setenv("HTTP_PROXY", base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with build_client() as client:
        r = await client.get("http://provider.invalid/echo", headers={"Authorization": "Bearer k"})
    assert r.status_code == 200
    method, path, headers, _ = srv.seen[0]
    assert (method, path, headers["Host"]) == ("GET", "/echo", "provider.invalid")


async def test_no_proxy_from_the_environment_is_honoured(server: tuple[Server, str], monkeypatch) -> None:
    srv, base = server
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with build_client() as client:
        r = await client.get(f"{base}/echo")
    assert r.status_code == 200  # went straight to the server
