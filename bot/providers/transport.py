"""An httpx transport that sends requests through an aiohttp session.

The provider adapters speak httpx (its client API, redirects, error classes, and its mock
transport in tests). Underneath, httpx's own connection layer costs about 2 ms of CPU per
request; aiohttp's C-accelerated parser costs a fraction of that, and with thousands of
waiting jobs status calls are most of what the bot does while it waits. So httpx keeps the
API and aiohttp carries the bytes: its errors become the httpx errors they correspond to,
so `bot.providers.http` maps them to ProviderErrors exactly as before.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.request import proxy_bypass

import aiohttp
import certifi
import httpx
from yarl import URL

READ_CHUNK_BYTES = 64 * 1024
# aiohttp computes these from the body it is given
_DROPPED_HEADERS = frozenset({"content-length", "transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """At most `max_connections` pooled connections; redirects, cookies and decoding stay
    with httpx (the session neither follows, keeps nor decompresses anything)."""

    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._ssl = _ssl_context()  # at start-up, not on the event loop at the first request
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # HTTP(S)_PROXY and NO_PROXY, as httpx honours them with its own transport, read once
        # when the client is built as httpx reads them: aiohttp's trust_env reads them (and
        # ~/.netrc) again in a worker thread for every request, about 1 ms of CPU each
        self._env_proxies = aiohttp.helpers.proxies_from_env()
        self._proxy_by_host: dict[tuple[str, str], tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        # made on first use: a session belongs to the running event loop
        if self._closed:
            raise httpx.UnsupportedProtocol("the transport has been closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        # the providers' bodies are JSON or a reference image of bounded size
        body = await request.aread()
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _DROPPED_HEADERS]
        proxy, proxy_auth = self._proxy_for(request.url)
        try:
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=_timeout(request.extensions.get("timeout")),
                proxy=proxy,
                proxy_auth=proxy_auth,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _httpx_error(exc, request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    def _proxy_for(self, url: httpx.URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        key = (url.scheme, url.host)
        found = self._proxy_by_host.get(key)
        if found is None:
            info = self._env_proxies.get(url.scheme)
            found = (None, None) if info is None or proxy_bypass(url.host) else (info.proxy, info.proxy_auth)
            self._proxy_by_host[key] = found
        return found

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(READ_CHUNK_BYTES):
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        # release() puts a fully read connection back in the pool; an unread one is closed
        self._response.release()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The same trust store as httpx's own transport, loaded once (it takes ~30 ms)."""
    return ssl.create_default_context(cafile=certifi.where())


def _timeout(spec: Any) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts (connect, read, pool) as aiohttp's."""
    if not isinstance(spec, dict):
        return aiohttp.ClientTimeout(total=None)
    connect, read, pool = spec.get("connect"), spec.get("read"), spec.get("pool")
    acquire = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(total=None, connect=acquire, sock_connect=connect, sock_read=read)


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error for an aiohttp one. The distinction that matters downstream is
    whether the request can have reached the server (a create's outcome is then unknown)."""
    message = f"{type(exc).__name__}: {exc}"
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        kind = httpx.UnsupportedProtocol
    elif isinstance(exc, asyncio.TimeoutError):  # aiohttp's SocketTimeoutError included
        kind = httpx.ReadTimeout
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError, aiohttp.ClientPayloadError)):
        kind = httpx.RemoteProtocolError
    else:  # a reset or other socket error once connected: the request may have arrived
        kind = httpx.ReadError
    return kind(message, request=request)
