"""`sora-bot doctor`: one line per check (config, database, Slack token, providers)."""

from __future__ import annotations

import httpx
from slack_sdk.errors import SlackApiError

from bot.catalog import CatalogError, build_catalog
from bot.config import Settings
from bot.slack_io import make_slack_client, slack_error
from storage.db import Database


def _line(ok: bool | None, name: str, detail: str) -> str:
    mark = "ok  " if ok else ("skip" if ok is None else "FAIL")
    return f"[{mark}] {name}: {detail}"


async def run_checks(settings: Settings) -> int:
    failures = 0
    results: list[str] = []

    try:
        catalog = build_catalog(
            providers=settings.configured_providers, gateway_models=settings.gateway_models,
            default_model=settings.sora_default_model, prices_file=settings.sora_prices,
        )
        results.append(_line(True, "config", f"models {', '.join(catalog.ids())}; default {catalog.default_model}"))
    except CatalogError as exc:
        failures += 1
        results.append(_line(False, "config", str(exc)))

    try:
        db = await Database(settings.sora_db_path).open()
        row = await db.fetchone("SELECT COUNT(*) FROM jobs WHERE status IN ('queued','submitted','running')")
        await db.close()
        results.append(_line(True, "database", f"{settings.sora_db_path} ({row[0] if row else 0} unfinished jobs)"))
    except Exception as exc:  # any failure to open is the finding itself
        failures += 1
        results.append(_line(False, "database", f"{settings.sora_db_path}: {type(exc).__name__}: {exc}"))

    if settings.slack_bot_token is None:
        failures += 1
        results.append(_line(False, "slack", "SLACK_BOT_TOKEN is not set"))
    else:
        client = make_slack_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
        try:
            auth = await client.auth_test()
            results.append(_line(True, "slack", f"auth.test ok: bot {auth.get('user_id')} in team {auth.get('team')}"))
        except SlackApiError as exc:
            failures += 1
            results.append(_line(False, "slack", f"auth.test failed: {slack_error(exc)}"))
        except Exception as exc:  # network errors of any library
            failures += 1
            results.append(_line(False, "slack", f"cannot reach {settings.slack_api_url}: {type(exc).__name__}"))

    checks: list[tuple[str, str | None, str | None]] = [
        ("gateway", settings.video_gateway_base_url,
         settings.video_gateway_api_key.get_secret_value() if settings.video_gateway_api_key else None),
        ("openai", settings.openai_base_url,
         settings.openai_api_key.get_secret_value() if settings.openai_api_key else None),
    ]
    async with httpx.AsyncClient(timeout=15) as http:
        for name, base, key in checks:
            if not base or not key:
                results.append(_line(None, name, "not configured"))
                continue
            ok, detail = await _check_openai_style(http, base, key)
            failures += 0 if ok else 1
            results.append(_line(ok, name, detail))
    results.append(_line(True, "simulator", "built in"))

    for line in results:
        print(line)
    return 1 if failures else 0


async def _check_openai_style(http: httpx.AsyncClient, base: str, key: str) -> tuple[bool, str]:
    """GET {base}/models: cheap, authenticated, and served by OpenAI-compatible gateways."""
    url = base.rstrip("/") + "/models"
    try:
        r = await http.get(url, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        return False, f"cannot reach {base}: {type(exc).__name__}"
    if r.status_code in (401, 403):
        return False, f"{base} refused the API key (HTTP {r.status_code})"
    if r.status_code >= 500:
        return False, f"{base} answered HTTP {r.status_code}"
    return True, f"{base} reachable, key accepted (HTTP {r.status_code})"
