"""Long videos are planned as segments over the real built-in catalog, before anything is charged.

The plan names its split, route and total cost; lengths beyond a model's cap or
SORA_MAX_VIDEO_SECONDS are refused naming the limit; an admin's SORA_MODELS file changes what
a model can do for long videos without code.
"""

from __future__ import annotations

import pytest

from bot.catalog import ROUTES, CatalogError, build_catalog
from bot.config import ConfigError, load_settings
from bot.errors import InvalidRequest
from bot.lifecycle.segments import plan_video

# every route configured, so every built-in model is offered on its first route
ALL = build_catalog(providers=[r for r in ROUTES if r != "simulator"], include_simulator=True)


def _plan(model: str, seconds: int, prompt: str = "a fox in snow", *, resolution: str | None = None,
          max_video_seconds: int = 60, catalog=ALL):
    return plan_video(catalog.get(model), seconds, prompt, max_video_seconds=max_video_seconds,
                      resolution=resolution, others=list(catalog))


@pytest.mark.parametrize(
    ("model", "seconds", "resolution", "line", "continues"),
    [
        # The "30 s as 4 segments on veo-3.1 (8 + 8 + 7 + 7 s), $12.00" can't be made
        # from real Veo: its clips are 4, 6 or 8 s and each extension adds exactly 7 s
        # (reference 2026-12 §1a), so the totals are 8 + 7k etc.; 29 s is the nearest below
        # 30, and the plan says so rather than charge for more than was asked.
        ("veo-3.1", 30, "720p",
         "29 s as 4 segments on `veo-3.1` (8 + 7 + 7 + 7 s), $11.60 in all; 30 s can't be made from "
         "its clip lengths, so this is the nearest below", "extend"),
        # 1080p clips are 8 s only; 8 + 4 × 7 is exactly 36
        ("veo-3.1", 36, "1080p", "36 s as 5 segments on `veo-3.1` (8 + 7 + 7 + 7 + 7 s), $14.40 in all", "extend"),
        # Omni extends by 3–10 s: fewest segments first, then the largest first clip
        ("gemini-omni-flash", 25, "720p", "25 s as 2 segments on `gemini-omni-flash` (15 + 10 s), $2.50 in all",
         "extend"),
        # Lite has no extension here but takes an image: last-frame continuity, exact total
        ("veo-3.1-lite", 30, "720p", "30 s as 4 segments on `veo-3.1-lite` (8 + 8 + 8 + 6 s), $1.50 in all",
         "last_frame"),
        ("gen4.5", 30, None, "30 s as 3 segments on `gen4.5` (10 + 10 + 10 s), $3.60 in all", "last_frame"),
        # as even as possible, largest first
        ("kling-3.0", 40, None, "40 s as 3 segments on `kling-3.0` (14 + 13 + 13 s), $6.28 in all", "last_frame"),
        # the last-frame route has no per-model cap: only SORA_MAX_VIDEO_SECONDS
        ("gen4.5", 60, None, "60 s as 6 segments on `gen4.5` (10 + 10 + 10 + 10 + 10 + 10 s), $7.20 in all",
         "last_frame"),
        # within one clip: one segment, so callers can always plan
        ("veo-3.1", 8, None, "8 s in one clip on `veo-3.1`, $3.20 in all", None),
        ("gen4.5", 7, None, "7 s in one clip on `gen4.5`, $0.84 in all", None),
        ("simulator", 20, None, "20 s in one clip on `simulator`, $2.00 in all", None),
        # the simulator takes an image, so its long videos continue from the last frame
        ("simulator", 30, None, "30 s as 2 segments on `simulator` (15 + 15 s), $3.00 in all", "last_frame"),
        ("veo-3.1", 5, None, "4 s in one clip on `veo-3.1`, $1.60 in all; 5 s can't be made from its clip "
                             "lengths, so this is the nearest below", None),
    ],
)
def test_a_length_is_planned_as_allowed_segments_and_said_before_charging(
        model, seconds, resolution, line, continues) -> None:
    plan = _plan(model, seconds, resolution=resolution)
    assert plan.text() == line
    assert [s.index for s in plan.segments] == list(range(len(plan.segments)))
    assert [s.continuation for s in plan.segments] == ["first"] + [continues] * (len(plan.segments) - 1)
    spec = ALL.get(model)
    res = resolution or spec.default_resolution
    first_ok = spec.allowed_durations(res)
    then_ok = spec.extend_seconds if continues == "extend" else first_ok
    assert plan.segments[0].seconds in first_ok and all(s.seconds in then_ok for s in plan.segments[1:])


@pytest.mark.parametrize(
    ("model", "seconds", "kwargs", "words"),
    [
        # neither extension nor an image input: refused with the reason, and a model that can
        ("fal/fal-ai/veo3.1/fast", 30, {}, "`fal/fal-ai/veo3.1/fast` can make at most 8 s in one clip and can't "
                                           "continue a clip (no extension and no image input), so 30 s isn't "
                                           "possible; ask for 8 s or less"),
        ("fal/fal-ai/kling-video/v3/standard/text-to-video", 16, {}, "can make at most 15 s in one clip and "
                                                                     "can't continue a clip"),
        # per-model caps of native extension
        ("veo-3.1", 38, {}, "`veo-3.1` can extend a video to at most 37 s, so 38 s isn't possible; "
                            "ask for 37 s or less"),
        ("gemini-omni-flash", 31, {}, "at most 30 s"),
        # SORA_MAX_VIDEO_SECONDS caps every route, the last-frame one included
        ("gen4.5", 61, {}, "You asked for 61 s, and 60 s is the longest video here (SORA_MAX_VIDEO_SECONDS); "
                           "ask for 60 s or less."),
        ("veo-3.1", 30, {"max_video_seconds": 20}, "20 s is the longest video here (SORA_MAX_VIDEO_SECONDS)"),
        ("kling-3.0", 12, {"max_video_seconds": 10}, "10 s is the longest video here"),
        # a length no clip reaches
        ("veo-3.1", 6, {"resolution": "1080p"}, "`veo-3.1` makes clips of 8 s at 1080p, so 6 s isn't possible; "
                                                "ask for at least 8 s."),
        ("veo-3.1", 0, {}, "at least 1"),
        ("gen4.5", 10, {"resolution": "4k"}, "`gen4.5` doesn't offer 4k; it offers 720p."),
    ],
)
def test_a_length_beyond_the_plan_is_refused_naming_the_limit(model, seconds, kwargs, words) -> None:
    with pytest.raises(InvalidRequest) as err:
        _plan(model, seconds, **kwargs)
    assert words in err.value.user_message()


def test_a_refusal_suggests_an_offered_model_that_can_make_it() -> None:
    # fal's text-to-video Kling can neither extend nor start from an image
    catalog = build_catalog(providers=["veo", "runway", "fal"], include_simulator=True)
    with pytest.raises(InvalidRequest) as err:
        _plan("fal/fal-ai/kling-video/v3/standard/text-to-video", 30, catalog=catalog)
    assert err.value.user_message().endswith("ask for 15 s or less, or pick veo-3.1 (up to 37 s).")


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("a fox || it runs || it sleeps", ["a fox", "it runs", "it sleeps"]),  # one part each
        ("a fox||it runs", ["a fox", "it runs", "it runs"]),  # fewer: the last carries on
        ("a fox in snow", ["a fox in snow"] * 3),  # no parts: the same prompt throughout
    ],
)
def test_each_segment_gets_its_part_of_the_prompt(prompt, prompts) -> None:
    plan = _plan("gen4.5", 30, prompt)
    assert [s.prompt for s in plan.segments] == prompts


@pytest.mark.parametrize(
    ("model", "seconds", "prompt", "words"),
    [
        ("gen4.5", 30, "a || b || c || d", "The prompt has 4 parts (split by `||`), but this video is 3 segments; "
                                           "use at most 3 parts."),
        ("gen4.5", 8, "a || b", "this video is one clip; use at most 1 part."),
        ("gen4.5", 30, "a || || c", "Part 2 of the prompt is empty"),
        ("gen4.5", 30, "a || b ||", "Part 3 of the prompt is empty"),
    ],
)
def test_too_many_or_empty_prompt_parts_are_refused(model, seconds, prompt, words) -> None:
    with pytest.raises(InvalidRequest) as err:
        _plan(model, seconds, prompt)
    assert words in err.value.user_message()


@pytest.mark.parametrize(
    ("model", "seconds", "resolution", "each_micros", "total_micros"),
    [
        # sub-cent prices stay exact: Kling 720p is $0.157/s
        ("kling-3.0", 40, "720p", [14 * 157_000, 13 * 157_000, 13 * 157_000], 6_280_000),
        ("kling-3.0", 40, "1080p", [14 * 235_000, 13 * 235_000, 13 * 235_000], 9_400_000),
        ("veo-3.1", 36, "4k", [8 * 600_000] + [7 * 600_000] * 4, 21_600_000),
        ("gemini-omni-flash", 30, "360p", [10 * 30_000] * 3, 900_000),
    ],
)
def test_the_cost_is_the_sum_of_segment_prices_to_the_micro_dollar(
        model, seconds, resolution, each_micros, total_micros) -> None:
    plan = _plan(model, seconds, resolution=resolution)
    assert [s.cost_micros for s in plan.segments] == each_micros
    assert plan.cost_micros == sum(each_micros) == total_micros
    assert plan.resolution == resolution


# --- an admin's catalog file (SORA_MODELS), through the settings the app reads -------------------


def _catalog_from_env(monkeypatch, tmp_path, text: str):
    path = tmp_path / "models.toml"
    path.write_text(text)
    monkeypatch.setenv("SORA_MODELS", str(path))
    settings = load_settings()
    # what create_runtime does with these settings
    return build_catalog(providers=["veo", "kling"], models_file=settings.sora_models)


def test_a_catalog_file_adding_extension_to_a_model_changes_its_plan(monkeypatch, tmp_path) -> None:
    assert _plan("kling-3.0", 40).segments[1].continuation == "last_frame"
    catalog = _catalog_from_env(monkeypatch, tmp_path,
                                "[models.'kling-3.0']\nextend_seconds = '4-5'\nmax_total_seconds = 40\n")
    plan = _plan("kling-3.0", 40, catalog=catalog)
    assert plan.text() == "40 s as 6 segments on `kling-3.0` (15 + 5 + 5 + 5 + 5 + 5 s), $6.28 in all"
    assert [s.continuation for s in plan.segments[1:]] == ["extend"] * 5
    with pytest.raises(InvalidRequest, match="at most 40 s"):
        _plan("kling-3.0", 41, catalog=catalog)


def test_a_catalog_file_can_switch_extension_off(monkeypatch, tmp_path) -> None:
    catalog = _catalog_from_env(monkeypatch, tmp_path, "[models.'veo-3.1']\nextend_seconds = []\n")
    plan = _plan("veo-3.1", 40, catalog=catalog)  # past 37 s: last frames have no model cap
    assert plan.text() == "40 s as 5 segments on `veo-3.1` (8 + 8 + 8 + 8 + 8 s), $16.00 in all"
    assert plan.segments[-1].continuation == "last_frame"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[models.'kling-3.0']\nextend_seconds = [5]\n", "extend_seconds needs max_total_seconds"),
        ("[models.'kling-3.0']\nextend_seconds = 'ten'\nmax_total_seconds = 40\n", "extend_seconds: durations 'ten'"),
        ("[models.'kling-3.0']\nextend_seconds = [0]\nmax_total_seconds = 40\n", "extend_seconds: durations must be"),
        ("[models.'kling-3.0']\nextend_seconds = [5]\nmax_total_seconds = 15\n",
         "max_total_seconds must be whole seconds, longer than its longest clip (15 s)"),
        ("[models.'veo-3.1']\nmax_total_seconds = 'long'\n", "max_total_seconds must be whole seconds"),
        ("[models.'veo-3.1']\nmax_total_seconds = 601\n", "at most 600"),
    ],
)
def test_bad_long_video_fields_in_the_catalog_file_are_one_clear_line(monkeypatch, tmp_path, text, words) -> None:
    with pytest.raises(CatalogError) as err:
        _catalog_from_env(monkeypatch, tmp_path, text)
    assert words in str(err.value) and "SORA_MODELS" in str(err.value) and "\n" not in str(err.value)


def test_a_model_through_the_gateway_has_no_extension() -> None:
    # the gateway's API has no extension call: Veo there continues from last frames
    catalog = build_catalog(providers=["gateway"], gateway_models=["veo-3.1"])
    assert catalog.get("veo-3.1").provider == "gateway"
    assert _plan("veo-3.1", 30, catalog=catalog).segments[1].continuation == "last_frame"


# --- SORA_MAX_VIDEO_SECONDS ----------------------------------------------------------------------


def test_max_video_seconds_defaults_to_60_and_a_bad_value_stops_start_up(monkeypatch) -> None:
    monkeypatch.delenv("SORA_MAX_VIDEO_SECONDS", raising=False)
    assert load_settings().sora_max_video_seconds == 60
    monkeypatch.setenv("SORA_MAX_VIDEO_SECONDS", "90")
    assert load_settings().sora_max_video_seconds == 90
    for bad in ("0", "-5", "a minute"):
        monkeypatch.setenv("SORA_MAX_VIDEO_SECONDS", bad)
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert str(err.value).startswith("SORA_MAX_VIDEO_SECONDS: ") and "\n" not in str(err.value)
