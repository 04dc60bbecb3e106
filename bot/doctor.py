"""`sora-bot doctor`: one line per check (config, database, Slack token, each provider)."""

from __future__ import annotations

import asyncio

from slack_sdk.errors import SlackApiError

from bot.catalog import Catalog, CatalogError, ModelSpec, build_catalog
from bot.config import Settings
from bot.errors import ProviderError
from bot.slack.slack_io import make_slack_client, slack_error

CHECK_TIMEOUT_S = 20.0


def _line(ok: bool | None, name: str, detail: str) -> str:
    mark = "ok  " if ok else ("skip" if ok is None else "FAIL")
    return f"[{mark}] {name}: {detail}"


async def run_checks(settings: Settings) -> int:
    """Print one line per check; 1 if any failed."""
    from bot.app import build_providers

    results: list[tuple[bool | None, str, str]] = []
    catalog: Catalog | None = None
    providers = build_providers(settings)
    unserved = [name for name in settings.configured_providers if name not in providers]
    if unserved:
        results.append((False, "config", f"set up but not served by this version: {', '.join(unserved)}"))
    try:
        catalog = build_catalog(
            providers=[p for p in providers if p != "simulator"], gateway_models=settings.gateway_models,
            default_model=settings.sora_default_model, prices_file=settings.sora_prices,
            models_file=settings.sora_models,
        )
        results.append((True, "config", f"models {', '.join(catalog.ids())}; default {catalog.default_model}"))
    except CatalogError as exc:
        results.append((False, "config", str(exc)))

    where = "database"
    try:
        db = settings.database()
        where = db.describe()
        await db.open()
        try:
            row = await db.fetchone("SELECT COUNT(*) FROM jobs WHERE status IN ('queued','submitted','running')")
            version = await db.schema_version()
        finally:
            await db.close()
        results.append((True, "database", f"{where}, schema {version} ({row[0] if row else 0} unfinished jobs)"))
    except Exception as exc:  # any failure to open is the finding itself
        results.append((False, "database", f"{where}: {type(exc).__name__}: {exc}"))

    results.append(await _check_slack(settings))

    try:
        for name, provider in providers.items():
            results.append(await _check_provider(name, provider))
        if catalog is not None:
            for spec in catalog:
                provider = providers.get(spec.provider)
                if provider is not None:
                    results.append(await _check_model(spec, provider))
    finally:
        for provider in providers.values():
            await provider.aclose()

    for ok, name, detail in results:
        print(_line(ok, name, detail))
    return 1 if any(ok is False for ok, _, _ in results) else 0


async def _check_slack(settings: Settings) -> tuple[bool | None, str, str]:
    if settings.slack_bot_token is None:
        return False, "slack", "SLACK_BOT_TOKEN is not set"
    client = make_slack_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    try:
        auth = await client.auth_test()
        return True, "slack", f"auth.test ok: bot {auth.get('user_id')} in team {auth.get('team')}"
    except SlackApiError as exc:
        return False, "slack", f"auth.test failed: {slack_error(exc)}"
    except Exception as exc:  # network errors of any library
        return False, "slack", f"cannot reach {settings.slack_api_url}: {type(exc).__name__}"


async def _check_model(spec: ModelSpec, provider: object) -> tuple[bool | None, str, str]:
    """One cheap lookup of the model at its provider, where the provider has one (a model
    list or a model lookup); else a skip line that says so."""
    name = f"model {spec.id}"
    check_model = getattr(provider, "check_model", None)
    if check_model is None:
        return None, name, f"{spec.provider} has no model lookup; the first request will tell"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            detail = await check_model(spec.provider_model)
        return True, name, detail
    except ProviderError as exc:
        return False, name, f"{spec.provider_model}: {exc.kind.value}: {exc.user_message()}"
    except TimeoutError:
        return False, name, f"no answer within {CHECK_TIMEOUT_S:.0f} s"


async def _check_provider(name: str, provider: object) -> tuple[bool, str, str]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            detail = await provider.check()  # type: ignore[attr-defined]
        return True, name, detail
    except ProviderError as exc:
        # user_message() is written for people and never holds a key
        return False, name, f"{exc.kind.value}: {exc.user_message()}"
    except TimeoutError:
        return False, name, f"no answer within {CHECK_TIMEOUT_S:.0f} s"
