"""`sora-bot doctor` against the fake Slack and every fake provider: a line per check."""

from __future__ import annotations

from contextlib import AsyncExitStack

from bot.config import Settings
from bot.doctor import run_checks
from bot.fakes.fakeslack import FakeSlack
from tests.fakes.fal import FakeFalServer
from tests.fakes.google_agent import FakeAgentPlatformServer
from tests.fakes.kling_seedance_fal import FakeKlingServer, FakeSeedanceServer
from tests.fakes.providers import FakeGatewayServer, FakeOpenAIServer
from tests.fakes.runway_veo import FakeRunwayServer
from tests.fakes.xai import FakeXaiServer


async def _world(stack: AsyncExitStack) -> dict:
    servers = {
        "gateway": FakeGatewayServer(), "openai": FakeOpenAIServer(), "runway": FakeRunwayServer(),
        "veo": FakeAgentPlatformServer(), "kling": FakeKlingServer(), "seedance": FakeSeedanceServer(),
        "fal": FakeFalServer(), "xai": FakeXaiServer(),
    }
    for server in servers.values():
        await stack.enter_async_context(server)
    return servers


def _settings(tmp_path, slack: FakeSlack, s: dict, *, bad_key: str | None = None) -> Settings:
    def key(name: str, value: str) -> str:
        return "wrong-key-0123456789-abcdefghijklmnop" if name == bad_key else value

    return Settings(
        _env_file=None,
        slack_bot_token="xoxb-doctor", slack_api_url=slack.api_url, sora_db_path=tmp_path / "d.db",
        video_gateway_base_url=s["gateway"].base_url, video_gateway_api_key=key("gateway", s["gateway"].api_key),
        openai_base_url=s["openai"].base_url, openai_api_key=key("openai", s["openai"].api_key),
        runway_base_url=s["runway"].base_url, runwayml_api_secret=key("runway", s["runway"].api_key),
        kling_base_url=s["kling"].base_url, kling_access_key=s["kling"].access_key,
        kling_secret_key=key("kling", s["kling"].secret_key),
        ark_base_url=s["seedance"].base_url, ark_api_key=key("seedance", s["seedance"].api_key),
        fal_queue_url=s["fal"].base_url, fal_key=key("fal", s["fal"].api_key),
        xai_base_url=s["xai"].base_url, xai_api_key=key("xai", s["xai"].api_key),
        google_cloud_project=s["veo"].project, google_application_credentials=s["veo"].credentials_file,
        agent_platform_base_url=s["veo"].base_url,
    )


async def test_doctor_reports_every_configured_provider_as_reachable(tmp_path, capsys) -> None:
    async with AsyncExitStack() as stack:
        slack = await stack.enter_async_context(FakeSlack())
        servers = await _world(stack)
        code = await run_checks(_settings(tmp_path, slack, servers))
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("config", "database", "slack", "gateway", "openai", "runway", "veo", "kling", "seedance", "fal", "xai", "simulator"):
        assert f"[ok  ] {name}:" in out, (name, out)
    assert "1234 credits left" in out


async def test_doctor_explains_a_refused_key_without_printing_it(tmp_path, capsys) -> None:
    for provider in ("gateway", "runway", "kling", "seedance", "fal", "xai"):
        async with AsyncExitStack() as stack:
            slack = await stack.enter_async_context(FakeSlack())
            servers = await _world(stack)
            code = await run_checks(_settings(tmp_path, slack, servers, bad_key=provider))
        out = capsys.readouterr().out
        assert code == 1, (provider, out)
        line = next(line for line in out.splitlines() if line.startswith(f"[FAIL] {provider}:"))
        assert "auth_failed" in line, line
        assert "wrong-key-0123456789-abcdefghijklmnop" not in out


async def test_doctor_says_when_a_provider_cannot_be_reached(tmp_path, capsys) -> None:
    async with FakeSlack() as slack:
        settings = Settings(_env_file=None, slack_bot_token="xoxb-doctor", slack_api_url=slack.api_url,
                            sora_db_path=tmp_path / "d.db", runwayml_api_secret="k",
                            runway_base_url="http://127.0.0.1:9")
        code = await run_checks(settings)
    out = capsys.readouterr().out
    assert code == 1 and "[FAIL] runway: provider_unavailable" in out
