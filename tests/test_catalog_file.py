"""The catalog is data: the built-in file, and an admin's SORA_MODELS file laid over it.

A model is added, renamed and retired through the file without code, and through the real
app: the gateway fake sees the provider's model id, an old name keeps working, a retired
model is answered with its note and replacement before anything is charged or sent.
"""

from __future__ import annotations

import json
import tomllib

import httpx
import pytest

from bot.catalog import BUILTIN_CATALOG, ROUTES, CatalogError, build_catalog, builtin_models
from bot.cli import jobs_json
from bot.providers.gateway import GatewayProvider
from tests.fakes.providers import FakeGatewayServer


def _file(tmp_path, text: str):
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


# --- the built-in catalog ------------------------------------------------------------------


def test_the_built_in_catalog_is_written_in_the_admins_format_and_every_model_builds() -> None:
    data = tomllib.loads(BUILTIN_CATALOG.read_text())
    assert set(data) == {"default_order", "models"}
    tables = builtin_models()
    assert tables.keys() == data["models"].keys()
    # every model on every one of its routes is a valid model: build with all routes configured
    everything = build_catalog(providers=[r for r in ROUTES if r != "simulator"],
                               gateway_models=["sora-2", "sora-2-pro"], include_simulator=True)
    retired = {m for m, t in tables.items() if "retired" in t}
    assert set(everything.ids()) | retired == set(tables)
    for spec in everything:
        assert spec.default_duration in spec.durations and spec.default_resolution in spec.resolutions
        assert spec.price_source, spec.id


def test_todays_provider_ids_are_the_defaults() -> None:
    catalog = build_catalog(providers=["veo", "gemini", "xai", "seedance", "fal", "kling"])
    assert catalog.get("veo-3.1").provider_model == "veo-3.1-generate-001"
    assert catalog.get("veo-3.1").provider == "veo"  # Agent Platform first, when configured
    assert catalog.get("veo-3.1-lite").resolutions == ("720p", "1080p")
    assert catalog.get("gemini-omni-flash").provider_model == "gemini-omni-1.2-flash"
    assert catalog.get("gemini-omni-flash").durations == tuple(range(3, 16))
    assert catalog.get("grok-imagine").provider_model == "grok-imagine-video-1.5"
    assert catalog.get("seedance-2.5").durations == tuple(range(4, 31))
    assert catalog.get("fal/fal-ai/kling-video/v3/standard/text-to-video").provider_model == \
        "fal-ai/kling-video/v3/standard/text-to-video"
    assert catalog.get("fal/fal-ai/kling-video/v2.1/standard/text-to-video") is None  # not published
    assert "Try `fal/fal-ai/kling-video/v3/standard/text-to-video`" in \
        catalog.why_not("fal/fal-ai/kling-video/v2.1/standard/text-to-video")
    assert catalog.default_model == "veo-3.1"


def test_a_gemini_key_alone_gets_the_retired_veo_explained_with_a_replacement() -> None:
    catalog = build_catalog(providers=["gemini"])
    assert catalog.ids() == ["gemini-omni-flash"] and catalog.default_model == "gemini-omni-flash"
    why = catalog.why_not("veo-3.1")
    assert "2026-10-22" in why and "Agent Platform" in why and "Try `gemini-omni-flash`" in why
    assert "isn't set up for" in build_catalog(providers=[]).why_not("kling-3.0")


# --- an admin's file -------------------------------------------------------------------------


def test_a_model_is_added_changed_renamed_and_retired_by_the_file(tmp_path) -> None:
    path = _file(tmp_path, """
default_order = ["hailuo-3", "sora-2"]

[models."hailuo-3"]
route = "gateway"
provider_model = "MiniMax-H3"
label = "MiniMax Hailuo H3"
durations = "5-15"
default_duration = 6
prices = { "768p" = 0.06, "2k" = 0.13 }
aspect_ratios = ["16:9"]

[models."gen4.5"]
prices = { "720p" = 0.10 }          # only the price changes

[models."kling"]
renamed_from = "kling-3.0"
provider_model = "kling-v3-omni"

[models."sora-2-pro"]
retired = "Our gateway stopped serving it on 2026-12-01."
replacement = "sora-2"
""")
    catalog = build_catalog(providers=["gateway", "runway", "kling"], gateway_models=["sora-2", "sora-2-pro"],
                            models_file=path)
    hailuo = catalog.get("hailuo-3")
    assert (hailuo.provider, hailuo.provider_model, hailuo.durations[0], hailuo.default_resolution) == \
        ("gateway", "MiniMax-H3", 5, "768p")
    assert catalog.default_model == "hailuo-3"
    gen = catalog.get("gen4.5")
    assert gen.prices_micros == {"720p": 100_000} and gen.durations == tuple(range(2, 11))
    assert catalog.get("kling-3.0") is catalog.get("kling")  # the old name still works
    assert catalog.get("kling").provider_model == "kling-v3-omni" and "kling-3.0" not in catalog.ids()
    assert catalog.get("sora-2-pro") is None and "sora-2-pro" not in catalog.ids()
    assert catalog.why_not("sora-2-pro") == (
        "`sora-2-pro` is retired: Our gateway stopped serving it on 2026-12-01. Try `sora-2` instead.")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[models.x]\nroute = 'gateway'\n", "a new model needs durations, prices"),
        ("[models.x]\nroute = 'moon'\ndurations = [4]\nprices = { '720p' = 0.1 }\n", "route 'moon' is not one of"),
        ("[models.'gen4.5']\npirce = 1\n", "unknown key 'pirce'"),
        ("[models.'gen4.5']\ndurations = 'ten'\n", "durations 'ten'"),
        ("[models.'gen4.5']\nprices = { '720p' = -1 }\n", "must not be negative"),
        ("[models.'gen4.5']\nprices = { '720p' = 'cheap' }\n", "gen4.5"),
        ("[models.'gen4.5']\ndefault_duration = 30\n", "default_duration 30"),
        ("[models.'gen4.5']\nimage = 'yes'\n", "image must be true or false"),
        ("[models.y]\nrenamed_from = 'nope'\n", "renamed_from 'nope'"),
        ("[models.'gen4.5']\nreplacement = 'nope'\n", "replacement 'nope'"),
        ("[modles.x]\n", "unknown top-level key 'modles'"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_catalog_file_is_one_clear_line(tmp_path, text, words) -> None:
    with pytest.raises(CatalogError) as err:
        build_catalog(providers=["runway", "gateway"], models_file=_file(tmp_path, text))
    assert words in str(err.value) and "SORA_MODELS" in str(err.value) and "\n" not in str(err.value)


def test_run_stops_on_a_bad_catalog_file_with_one_line(monkeypatch, capsys, tmp_path) -> None:
    from bot import cli

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-x")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    monkeypatch.setenv("SORA_DB_PATH", str(tmp_path / "x.db"))
    monkeypatch.setenv("SORA_MODELS", str(_file(tmp_path, "[models.'gen4.5']\ndurations = []\n")))
    monkeypatch.setenv("RUNWAYML_API_SECRET", "key_x")
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SORA_MODELS" in err and "durations" in err


def test_a_renamed_default_model_still_names_it(tmp_path) -> None:
    path = _file(tmp_path, "[models.veo]\nrenamed_from = 'veo-3.1'\n")
    catalog = build_catalog(providers=["veo"], default_model="veo-3.1", models_file=path)
    assert catalog.default_model == "veo" and catalog.get("veo-3.1").id == "veo"
    with pytest.raises(CatalogError, match="retired"):
        build_catalog(providers=["gemini"], default_model="veo-3.1")


# --- through the app -------------------------------------------------------------------------


CATALOG = """
[models."hailuo-3"]
route = "gateway"
provider_model = "MiniMax-H3"
label = "MiniMax Hailuo H3"
durations = "5-15"
default_duration = 6
prices = { "720p" = 0.05 }

[models."sora"]
renamed_from = "sora-2"

[models."sora-2-pro"]
retired = "The gateway stopped serving it."
replacement = "sora"
"""


@pytest.fixture
async def gateway_bot(make_bot, tmp_path):
    async with FakeGatewayServer(run_seconds=0.2) as server, httpx.AsyncClient() as client:
        bot = await make_bot(
            providers={"gateway": GatewayProvider(server.base_url, server.api_key, client=client)},
            include_simulator=False, sora_default_model="sora-2", sora_models=_file(tmp_path, CATALOG),
            video_gateway_models="sora-2,sora-2-pro",
        )
        yield bot, server


async def test_a_model_added_by_the_file_makes_a_video_under_the_providers_name(gateway_bot, slack) -> None:
    bot, server = gateway_bot
    assert "Got it" in (await bot.slash("-m hailuo-3 a lighthouse in fog")).json()["text"]
    await bot.runtime.poller.idle(20)
    [job] = json.loads(await jobs_json(bot.deps.db))
    assert (job["model"], job["status"], job["duration_seconds"], job["cost_usd"]) == ("hailuo-3", "succeeded", 6, 0.3)
    assert [s["model"] for s in server.submits] == ["MiniMax-H3"]
    assert slack.thread(job["channel_id"], job["thread_ts"])[-1].files


async def test_the_old_name_of_a_renamed_model_keeps_working(gateway_bot, slack) -> None:
    bot, server = gateway_bot
    assert bot.deps.catalog.default_model == "sora"  # SORA_DEFAULT_MODEL named the old id
    assert "Got it" in (await bot.slash("-m sora-2 a paper boat")).json()["text"]
    await bot.runtime.poller.idle(20)
    [job] = json.loads(await jobs_json(bot.deps.db))
    assert job["model"] == "sora" and job["status"] == "succeeded"
    assert [s["model"] for s in server.submits] == ["sora-2"]  # the provider's id did not change
    assert "`sora-2`" not in (await bot.slash("models")).json()["text"]


async def test_a_retired_model_is_explained_and_nothing_is_charged_or_sent(gateway_bot, slack) -> None:
    bot, server = gateway_bot
    text = (await bot.slash("-m sora-2-pro a paper boat")).json()["text"]
    assert "`sora-2-pro` is retired: The gateway stopped serving it. Try `sora` instead." in text
    await bot.runtime.poller.idle(5)
    assert json.loads(await jobs_json(bot.deps.db)) == [] and server.submits == []
    assert "sora-2-pro" not in (await bot.slash("models")).json()["text"]
