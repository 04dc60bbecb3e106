"""OAuth bearer tokens for Google Cloud APIs (Veo on the Agent Platform), minted by google-auth.

Credentials come from a service-account key file, else from application default credentials
(`google.auth.default`: GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, the metadata server).
google-auth is synchronous: loading and refreshing run in a worker thread, one at a time, and
the token is reused until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.errors import AuthFailed, ProviderError, ProviderUnavailable

# google-auth (and the requests it brings) is imported where a token is first made: ~6 MiB
# that a bot without Veo on the Agent Platform never needs.
if TYPE_CHECKING:
    import google.auth.exceptions
    from google.auth.credentials import Credentials

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# google-auth itself refreshes 3 min 45 s early; a little more leaves room for a slow call.
REFRESH_MARGIN_S = 300.0
# Some credentials report no expiry; Google's access tokens live an hour.
ASSUMED_LIFETIME_S = 3600.0
TOKEN_TIMEOUT_S = 30.0
_TEXT_LIMIT = 300


class BearerTokenSource(Protocol):
    """What an adapter needs: a current access token, and a way to drop a refused one."""

    async def token(self) -> str: ...

    def invalidate(self) -> None: ...

    async def aclose(self) -> None: ...


class GoogleTokenSource:
    """Access tokens (scope cloud-platform) from a service-account file or ADC.

    `token()` is safe to call from many tasks: one refresh runs at a time and the others wait
    for its result. Failures raise AuthFailed (refused or unusable credentials) or
    ProviderUnavailable (the token endpoint could not be reached); no message carries a key
    or a token.
    """

    def __init__(
        self,
        credentials_file: Path | None = None,
        *,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._file = credentials_file
        self._margin_s = refresh_margin_s
        self._clock = clock
        self._lock = asyncio.Lock()
        # a refresh whose waiter was cancelled (doctor's timeout) goes on in its thread: the
        # next one waits for it rather than touching the same credentials at the same time
        self._thread_lock = threading.Lock()
        self._credentials: Credentials | None = None
        self._request: Any = None  # google.auth.transport.requests.Request, made on first use
        self._token: str | None = None
        self._expires_at = 0.0  # on `clock`

    @property
    def source(self) -> str:
        """Where the credentials come from, for `doctor` (a path, never its contents)."""
        return f"service account {self._file}" if self._file else "application default credentials"

    async def token(self) -> str:
        """A valid access token, refreshed when it is within the margin of its expiry."""
        cached = self._valid_token()
        if cached is not None:
            return cached
        async with self._lock:
            cached = self._valid_token()  # another task refreshed while this one waited
            if cached is not None:
                return cached
            token, lifetime_s = await asyncio.to_thread(self._refresh)
            self._token = token
            self._expires_at = self._clock() + lifetime_s
            return token

    def invalidate(self) -> None:
        """Forget the cached token (the API refused it), so the next call mints a new one."""
        self._token = None
        self._expires_at = 0.0

    async def aclose(self) -> None:
        session = getattr(self._request, "session", None)
        if session is not None:
            await asyncio.to_thread(session.close)

    def _valid_token(self) -> str | None:
        if self._token is not None and self._clock() < self._expires_at - self._margin_s:
            return self._token
        return None

    # --- in the worker thread ---

    def _refresh(self) -> tuple[str, float]:
        """(token, seconds it stays valid). Runs in a thread: google-auth blocks."""
        with self._thread_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> tuple[str, float]:
        import google.auth.exceptions

        if self._credentials is None:
            self._credentials = self._load()
        credentials = self._credentials
        try:
            credentials.refresh(self._transport())
        except google.auth.exceptions.RefreshError as exc:
            raise _refresh_error(exc) from exc
        except google.auth.exceptions.TransportError as exc:
            raise ProviderUnavailable(
                "Google's token service could not be reached.",
                detail=f"token refresh: {_short(exc)}",
            ) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise AuthFailed(
                "The bot can't get a Google access token.", detail=f"token refresh: {_short(exc)}"
            ) from exc
        token = credentials.token
        if not isinstance(token, str) or not token:
            raise AuthFailed(
                "The bot can't get a Google access token.", detail="the token answer had no token"
            )
        expiry = credentials.expiry  # naive UTC, as google-auth keeps it
        if expiry is None:
            return token, ASSUMED_LIFETIME_S
        lifetime_s = (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
        return token, max(0.0, lifetime_s)

    def _load(self) -> Credentials:
        import google.auth
        import google.auth.exceptions

        if self._file is not None:
            return _from_service_account_file(self._file)
        try:
            credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise AuthFailed(
                "The bot found no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file, or set up application default credentials.",
                detail=f"google.auth.default: {_short(exc)}",
            ) from exc
        return credentials  # type: ignore[no-any-return]

    def _transport(self) -> Any:
        if self._request is None:
            try:
                import google.auth.transport.requests as requests_transport
                import requests
            except ImportError as exc:
                raise AuthFailed(
                    "The bot can't refresh Google tokens: the `requests` package is missing "
                    "(install google-auth[requests]).",
                    detail=f"ImportError: {exc}",
                ) from exc
            self._request = requests_transport.Request(session=requests.Session())
        # google-auth passes no timeout of its own to the token call; the default is 120 s
        return functools.partial(self._request, timeout=TOKEN_TIMEOUT_S)


def _from_service_account_file(path: Path) -> Credentials:
    from google.oauth2 import service_account

    where = f"The Google credentials file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthFailed(f"{where} can't be read.", detail=f"{type(exc).__name__}: {exc.strerror}") from exc
    try:
        info = json.loads(text)
    except ValueError as exc:
        # json's message quotes no content, but a key file is no place to take chances
        raise AuthFailed(f"{where} is not JSON.", detail="JSONDecodeError") from exc
    if not isinstance(info, dict):
        raise AuthFailed(f"{where} is not a JSON object.", detail=type(info).__name__)
    kind = info.get("type")
    if kind != "service_account":
        raise AuthFailed(
            f"{where} is not a service-account key (its type is {str(kind)[:40]!r}). "
            "For other credentials, leave GOOGLE_APPLICATION_CREDENTIALS unset and use "
            "application default credentials.",
            detail=f"type {str(kind)[:40]!r}",
        )
    try:
        return service_account.Credentials.from_service_account_info(  # type: ignore[no-any-return]
            info, scopes=[CLOUD_PLATFORM_SCOPE]
        )
    except (ValueError, KeyError, TypeError) as exc:
        # the messages name missing fields or an unreadable key; they never quote the key
        raise AuthFailed(
            f"{where} is not a usable service-account key.",
            detail=f"{type(exc).__name__}: {_short(exc)}",
        ) from exc


def _refresh_error(exc: google.auth.exceptions.RefreshError) -> ProviderError:
    """The token endpoint said no. A retryable refusal (5xx, 429) is transient."""
    detail = f"token refresh refused: {_short(exc)}"
    if getattr(exc, "retryable", False):
        return ProviderUnavailable("Google's token service is having problems.", detail=detail)
    return AuthFailed(
        "Google refused the bot's credentials (check the service account, its key and its "
        "roles).",
        detail=detail,
    )


def _short(exc: BaseException) -> str:
    """The first argument of a google-auth error: its message, not the response it carries."""
    first = exc.args[0] if exc.args else ""
    return str(first)[:_TEXT_LIMIT]
