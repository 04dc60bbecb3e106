"""/readyz: may this replica take Slack's traffic now? /healthz stays the liveness check.

Ready means the database answers and Slack works for this replica: in Socket Mode its
WebSocket is connected; in HTTP mode the bot token passes `auth.test`. A passing `auth.test` is
remembered for a minute (a load balancer asks every few seconds, and a token is rarely revoked);
a failing one is asked again on the next probe, so a replica comes back as soon as Slack does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.deps import Deps
from bot.slack.slack_io import slack_error

DB_TIMEOUT_S = 2.0
SLACK_TIMEOUT_S = 3.0
AUTH_REMEMBERED_S = 60.0


@dataclass(slots=True)
class Readiness:
    deps: Deps
    # Socket Mode: is the WebSocket up? (None in HTTP mode: auth.test decides)
    connected: Callable[[], Awaitable[bool]] | None = None
    _auth_ok_until: float = field(default=0.0)

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, what each check found); never raises."""
        db_ok, db_note = await self._database()
        slack_ok, slack_note = await self._slack()
        return db_ok and slack_ok, {"ready": db_ok and slack_ok, "database": db_note, "slack": slack_note}

    async def _database(self) -> tuple[bool, str]:
        try:
            await asyncio.wait_for(self.deps.db.fetchone("SELECT 1"), DB_TIMEOUT_S)
            return True, "ok"
        except TimeoutError:
            return False, f"no answer in {DB_TIMEOUT_S:.0f} s"
        except Exception as exc:  # whatever the driver raises, the replica is not ready
            return False, f"unreachable ({type(exc).__name__})"

    async def _slack(self) -> tuple[bool, str]:
        if self.connected is not None:
            try:
                up = await asyncio.wait_for(self.connected(), SLACK_TIMEOUT_S)
            except Exception:
                up = False
            return (True, "connected") if up else (False, "Socket Mode not connected")
        if time.monotonic() < self._auth_ok_until:
            return True, "ok"
        try:
            await asyncio.wait_for(self.deps.slack.auth_test(), SLACK_TIMEOUT_S)
        except SlackApiError as exc:
            return False, f"auth.test refused: {slack_error(exc)}"
        except Exception as exc:
            return False, f"unreachable ({type(exc).__name__})"
        self._auth_ok_until = time.monotonic() + AUTH_REMEMBERED_S
        return True, "ok"
