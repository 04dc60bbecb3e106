"""Who may use `/sora-admin`: workspace admins and owners, plus SORA_ADMIN_USER_IDS."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class AdminCheck:
    """Answers from users.info are cached briefly; any error denies (fail closed)."""

    def __init__(self, slack: AsyncWebClient, configured: frozenset[str], *, ttl_s: float = 300.0) -> None:
        self.slack = slack
        self.configured = configured
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[bool, float]] = {}

    async def is_admin(self, user_id: str) -> bool:
        if user_id in self.configured:
            return True
        hit = self._cache.get(user_id)
        now = time.monotonic()
        if hit is not None and now - hit[1] < self.ttl_s:
            return hit[0]
        try:
            resp = await self.slack.users_info(user=user_id)
            user = resp.get("user") or {}
            allowed = bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        except SlackApiError as exc:
            log.warning("admin check for %s failed (%s): denying", user_id, exc.response.get("error"))
            return False
        except Exception as exc:  # network trouble of any kind: deny, never allow
            log.warning("admin check for %s failed (%s): denying", user_id, type(exc).__name__)
            return False
        self._cache[user_id] = (allowed, now)
        return allowed
