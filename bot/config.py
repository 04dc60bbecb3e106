"""Settings from the environment and `.env`: the only code that reads either."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.money import usd_to_micros

if TYPE_CHECKING:
    from storage.db import Database


class ConfigError(Exception):
    """One line naming the variable; start-up stops on it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    port: int = Field(3000, ge=1, le=65535)
    host: str = "0.0.0.0"

    sora_db_path: Path = Path("./sora-bot.db")
    # unset or sqlite:///path: the embedded SQLite file; postgresql://…: a PostgreSQL server
    # several replicas share (it may carry a password, so it is kept secret)
    sora_database_url: SecretStr | None = None
    # PostgreSQL: a replica that stops renewing its jobs' leases loses them after this long
    sora_lease_seconds: float = Field(30.0, ge=3, le=3600)
    sora_default_model: str | None = None
    sora_daily_budget_usd: Decimal = Decimal("5.00")  # always set: see _daily
    sora_workspace_daily_budget_usd: Decimal | None = None
    sora_max_concurrent_per_user: int = Field(3, ge=1)
    sora_admin_user_ids: str = ""
    sora_timezone: str = "UTC"
    sora_poll_interval: float = Field(5.0, gt=0)
    sora_stall_timeout: float = Field(600.0, gt=0)
    sora_job_timeout: float = Field(1800.0, gt=0)
    # the longest video a request may ask for, planned as segments (bot/lifecycle/segments.py); 600
    # matches the catalog's longest clip and bounds the planner's search
    sora_max_video_seconds: int = Field(60, ge=1, le=600)
    sora_prices: Path | None = None
    # the admin's catalog file: models added, changed, renamed or retired (bot/catalog.toml's format)
    sora_models: Path | None = None
    # requests costing more than this wait for an admin; models to run on when a provider fails
    sora_approval_over_usd: Decimal | None = None
    sora_fallback_models: str = ""
    # Not in the contract: how long a simulated video takes, and the log level.
    sora_simulator_seconds: float = Field(12.0, gt=0)
    # Not in the contract: at most this many status calls a second to any one provider
    sora_status_calls_per_second: float = Field(10.0, gt=0)
    sora_log_level: str = "INFO"
    # Not in the contract: text (human lines) or json (one object a line, for log collectors)
    sora_log_format: str = "text"

    video_gateway_base_url: str | None = None
    video_gateway_api_key: SecretStr | None = None
    video_gateway_models: str = "sora-2,sora-2-pro"
    # Not in the contract: which request style the gateway speaks
    video_gateway_style: str = "seed"
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    runwayml_api_secret: SecretStr | None = None
    runway_base_url: str = "https://api.dev.runwayml.com"
    # Gemini Omni through the Gemini API's Interactions API. google-genai 3.x defaults the
    # Gemini API to v1 (it posts to /v1/interactions), and the SDK that ships today wins.
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com/v1"
    # Veo on Google's Agent Platform (formerly Vertex AI): OAuth tokens from a service-account
    # file, else application default credentials. The base defaults to the location's host.
    google_cloud_project: str | None = None
    google_cloud_location: str = "us-central1"
    google_application_credentials: Path | None = None
    agent_platform_base_url: str | None = None
    xai_api_key: SecretStr | None = None
    xai_base_url: str = "https://api.x.ai/v1"
    kling_access_key: SecretStr | None = None
    kling_secret_key: SecretStr | None = None
    kling_base_url: str = "https://api-singapore.klingai.com"
    ark_api_key: SecretStr | None = None
    ark_base_url: str = "https://ark.ap-southeast.bytepluses.com"
    fal_key: SecretStr | None = None
    fal_queue_url: str = "https://queue.fal.run"
    # Not in the contract: where fal publishes the ED25519 keys its webhooks are signed with
    fal_jwks_url: str = "https://rest.fal.ai/.well-known/jwks.json"
    # Not in the contract: provider callbacks (HTTP mode). The public base URL is where
    # providers reach this bot (unset = no callbacks); the whsec_ key verifies OpenAI's.
    sora_public_base_url: str | None = None
    openai_webhook_secret: SecretStr | None = None

    @field_validator("sora_daily_budget_usd", mode="before")
    @classmethod
    def _daily(cls, v: object) -> object:
        # everyone has a daily budget: "off" here would be a typo, not "unlimited"
        if v is None or (isinstance(v, str) and not v.strip()):
            raise ValueError("must be an amount of dollars, e.g. 5.00")
        return cls._dollars(v)

    @field_validator("sora_workspace_daily_budget_usd", "sora_approval_over_usd", mode="before")
    @classmethod
    def _dollars(cls, v: object) -> object:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "off", "none")):
            return None
        text = str(v).strip().lstrip("$")
        try:
            amount = Decimal(text)
        except Exception as exc:
            raise ValueError(f"not an amount of dollars: {v!r}") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"must be a non-negative amount of dollars, got {v!r}")
        return amount

    @field_validator("sora_database_url")
    @classmethod
    def _database_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value() and not v.get_secret_value().startswith(
                ("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return v

    @field_validator("sora_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r} (try Europe/Berlin or UTC)") from exc
        return v

    @field_validator(
        "slack_api_url", "video_gateway_base_url", "openai_base_url", "runway_base_url",
        "gemini_base_url", "kling_base_url", "ark_base_url", "fal_queue_url", "sora_public_base_url",
        "agent_platform_base_url", "xai_base_url", "fal_jwks_url",
    )
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v

    @field_validator("google_cloud_project", "google_cloud_location")
    @classmethod
    def _google_name(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not v.strip():
            return "us-central1" if info.field_name == "google_cloud_location" else None
        v = v.strip()
        # they go into URL paths and a host name
        if not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"must be a Google Cloud project id or location like us-central1, got {v!r}")
        return v

    @field_validator("openai_webhook_secret")
    @classmethod
    def _whsec(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        key = v.get_secret_value().strip()
        body = key.removeprefix("whsec_").rstrip("=")
        try:
            padded = body + "=" * (-len(body) % 4)
            ok = key.startswith("whsec_") and len(base64.b64decode(padded, validate=True)) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("must be the whsec_<base64> signing secret of the webhook endpoint")
        return SecretStr(key)

    @field_validator("video_gateway_style")
    @classmethod
    def _style(cls, v: str) -> str:
        style = v.strip().lower()
        if style not in ("seed", "newapi"):
            raise ValueError("must be seed (POST /videos/generations) or newapi (POST /video/generations)")
        return style

    @field_validator("sora_log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        level = v.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("sora_log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        fmt = v.strip().lower()
        if fmt not in ("text", "json"):
            raise ValueError("must be text or json")
        return fmt

    @model_validator(mode="after")
    def _timeouts(self) -> "Settings":
        if self.sora_job_timeout <= self.sora_poll_interval:
            raise ValueError("SORA_JOB_TIMEOUT must be longer than SORA_POLL_INTERVAL")
        if self.slack_api_url is None:
            self.slack_api_url = "https://slack.com/api/"
        # an empty base URL in the environment means "the default", not "no URL"
        for name, info in type(self).model_fields.items():
            if name.endswith(("_base_url", "_queue_url", "_jwks_url")) and name not in ("video_gateway_base_url", "agent_platform_base_url"):
                if getattr(self, name) is None:
                    setattr(self, name, info.default)
        if self.kling_access_key is not None and self.kling_secret_key is None:
            raise ValueError("KLING_SECRET_KEY must be set together with KLING_ACCESS_KEY")
        if self.kling_secret_key is not None and self.kling_access_key is None:
            raise ValueError("KLING_ACCESS_KEY must be set together with KLING_SECRET_KEY")
        return self

    # Derived values, in the units the code uses.
    def database(self) -> "Database":
        """The database these settings name (unopened)."""
        from storage.db import database_for

        url = self.sora_database_url.get_secret_value() if self.sora_database_url else None
        return database_for(url, self.sora_db_path)

    @property
    def daily_budget_micros(self) -> int:
        return usd_to_micros(self.sora_daily_budget_usd)

    @property
    def workspace_budget_micros(self) -> int | None:
        v = self.sora_workspace_daily_budget_usd
        return None if v is None else usd_to_micros(v)

    @property
    def approval_over_micros(self) -> int | None:
        v = self.sora_approval_over_usd
        return None if v is None else usd_to_micros(v)

    @property
    def fallback_models(self) -> list[str]:
        return [m.strip().lower() for m in self.sora_fallback_models.split(",") if m.strip()]

    @property
    def admin_user_ids(self) -> frozenset[str]:
        return frozenset(x.strip() for x in self.sora_admin_user_ids.split(",") if x.strip())

    @property
    def gateway_models(self) -> list[str]:
        return [m.strip() for m in self.video_gateway_models.split(",") if m.strip()]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.sora_timezone)

    @property
    def configured_providers(self) -> list[str]:
        out = []
        if self.video_gateway_base_url and self.video_gateway_api_key:
            out.append("gateway")
        if self.openai_api_key:
            out.append("openai")
        if self.runwayml_api_secret:
            out.append("runway")
        if self.google_cloud_project:
            out.append("veo")
        if self.gemini_api_key:
            out.append("gemini")
        if self.kling_access_key and self.kling_secret_key:
            out.append("kling")
        if self.ark_api_key:
            out.append("seedance")
        if self.fal_key:
            out.append("fal")
        if self.xai_api_key:
            out.append("xai")
        return out


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and .env); raise ConfigError with one line on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc") or ()
        name = str(loc[0]).upper() if loc else ""
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if name:
            raise ConfigError(f"{name}: {msg}") from None
        raise ConfigError(msg) from None
