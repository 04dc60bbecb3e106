"""The catalog: what is offered where, defaults, prices and their overrides."""

from __future__ import annotations

import pytest

from bot.catalog import MODEL_ID_MAX, RESOLUTION_MAX, CatalogError, build_catalog


def test_only_the_simulator_when_no_provider_is_configured() -> None:
    catalog = build_catalog(providers=[])
    assert catalog.ids() == ["simulator"] and catalog.default_model == "simulator"


def test_gateway_models_route_sora_through_the_gateway() -> None:
    catalog = build_catalog(providers=["gateway", "openai"], gateway_models=["sora-2"])
    assert catalog.get("sora-2").provider == "gateway"
    assert catalog.get("sora-2-pro").provider == "openai"
    assert catalog.default_model == "sora-2" and "simulator" not in catalog.ids()


def test_openai_route_only_offers_lengths_that_shape_accepts() -> None:
    catalog = build_catalog(providers=["openai"])
    pro = catalog.get("sora-2-pro")
    # openai 3.57 types `seconds` as "4" | "8" | "12" (the contract's 16 and 20 get a 400 today)
    assert pro.durations == (4, 8, 12) and pro.default_duration in pro.durations
    assert "1080p" not in pro.resolutions and pro.resolutions == ("720p", "1024p")
    gateway_pro = build_catalog(providers=["gateway"], gateway_models=["sora-2-pro"]).get("sora-2-pro")
    assert gateway_pro.durations[-1] == 25 and gateway_pro.default_duration == 10


def test_contract_prices_hold() -> None:
    catalog = build_catalog(providers=["gateway"], gateway_models=["sora-2", "sora-2-pro"], include_simulator=True)
    assert catalog.get("sora-2").cost_micros("720p", 8) == 800_000
    assert catalog.get("sora-2-pro").cost_micros("720p", 10) == 3_000_000
    assert catalog.get("sora-2-pro").cost_micros("1024p", 10) == 5_000_000
    assert catalog.get("simulator").cost_micros("720p", 8) == 800_000


def test_an_unknown_default_model_is_a_clear_error() -> None:
    with pytest.raises(CatalogError, match="SORA_DEFAULT_MODEL: 'veo-9'"):
        build_catalog(providers=[], default_model="veo-9")


def test_a_price_file_overrides_prices_exactly(tmp_path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["sora-2"]\n720p = 0.08\n["kling-3.0"]\n720p = 0.2\n')
    catalog = build_catalog(providers=["gateway"], gateway_models=["sora-2"], prices_file=prices)
    assert catalog.get("sora-2").prices_micros["720p"] == 80_000
    assert "SORA_PRICES" in catalog.get("sora-2").price_source


@pytest.mark.parametrize(
    ("content", "message"),
    [("not toml [", "not valid TOML"), ('["sora-2"]\n720p = -1\n', "negative"), ('["sora-2"]\n720p = "cheap"\n', "sora-2")],
)
def test_a_bad_price_file_is_a_clear_error(tmp_path, content, message) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(content)
    with pytest.raises(CatalogError, match=message):
        build_catalog(providers=["gateway"], gateway_models=["sora-2"], prices_file=prices)


def test_run_refuses_a_bad_catalog_with_one_line(monkeypatch, capsys, tmp_path) -> None:
    from bot import cli

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-x")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    monkeypatch.setenv("SORA_DB_PATH", str(tmp_path / "x.db"))
    monkeypatch.setenv("SORA_PRICES", str(tmp_path / "missing.toml"))
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SORA_PRICES" in err


def test_any_model_the_gateway_serves_can_be_routed_through_it(tmp_path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["hailuo-02"]\n720p = 0.045\n1080p = 0.08\n')
    catalog = build_catalog(providers=["gateway"], gateway_models=["sora-2", "veo-3.1", "hailuo-02"],
                            prices_file=prices)
    veo = catalog.get("veo-3.1")
    assert veo.provider == "gateway" and veo.provider_model == "veo-3.1" and veo.durations == (4, 6, 8)
    hailuo = catalog.get("hailuo-02")
    assert hailuo.provider == "gateway" and hailuo.prices_micros == {"720p": 45_000, "1080p": 80_000}
    assert hailuo.cost_micros("1080p", 10) == 800_000


def test_a_gateway_model_without_a_price_stops_start_up() -> None:
    with pytest.raises(CatalogError, match="VIDEO_GATEWAY_MODELS: 'hailuo-02' has no price"):
        build_catalog(providers=["gateway"], gateway_models=["hailuo-02"])


def test_run_refuses_a_model_id_too_long_for_slack_with_one_line(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from tests.botproc import free_port

    too_long = "m" * (MODEL_ID_MAX + 1)
    prices = tmp_path / "prices.toml"
    prices.write_text(f'["{too_long}"]\n720p = 0.05\n')
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s", "SORA_DB_PATH": str(tmp_path / "x.db"),
           "HOST": "127.0.0.1", "PORT": str(free_port()), "VIDEO_GATEWAY_BASE_URL": "http://127.0.0.1:9",
           "VIDEO_GATEWAY_API_KEY": "k", "VIDEO_GATEWAY_MODELS": f"sora-2,{too_long}", "SORA_PRICES": str(prices)}
    # a real `sora-bot run`: were the id let through, it would serve, and the timeout says so
    done = subprocess.run([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "VIDEO_GATEWAY_MODELS" in err and f"{MODEL_ID_MAX + 1} characters" in err and too_long not in err


def test_an_id_and_resolution_at_their_limits_are_offered(tmp_path) -> None:
    longest = "m" * MODEL_ID_MAX
    prices = tmp_path / "prices.toml"
    prices.write_text(f'["{longest}"]\n"{"r" * RESOLUTION_MAX}" = 0.05\n')
    catalog = build_catalog(providers=["gateway"], gateway_models=[longest], prices_file=prices)
    assert catalog.get(longest).resolutions == ("r" * RESOLUTION_MAX,)


def test_a_resolution_name_too_long_for_slack_stops_start_up(tmp_path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(f'["sora-2"]\n"{"r" * (RESOLUTION_MAX + 1)}" = 0.05\n')
    with pytest.raises(CatalogError, match=f"longer than {RESOLUTION_MAX} characters"):
        build_catalog(providers=["gateway"], gateway_models=["sora-2"], prices_file=prices)
