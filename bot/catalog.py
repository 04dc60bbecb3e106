"""The model catalog: which models exist, where they run, what they allow and cost.

Prices are integer micro-dollars per second of video, by resolution. Each price carries
its source; `SORA_PRICES` (a TOML file) may override any of them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bot.money import format_usd, usd_to_micros

SIMULATOR = "simulator"
GATEWAY = "gateway"
OPENAI = "openai"
RUNWAY = "runway"
VEO = "veo"
KLING = "kling"
SEEDANCE = "seedance"
FAL = "fal"

# What the request modal needs of an id (Block Kit): a menu option's `value` holds at most
# 150 characters. Resolutions (price-file keys) are option values too, and both go into
# block ids of at most 255: the longest, `duration:{model}:{resolution}`, is then
# 9 + 150 + 1 + 32 = 192 characters.
MODEL_ID_MAX = 150
RESOLUTION_MAX = 32

# Sizes the OpenAI Videos API accepts, by (resolution, aspect ratio).
OPENAI_SIZES: dict[tuple[str, str], str] = {
    ("720p", "16:9"): "1280x720",
    ("720p", "9:16"): "720x1280",
    ("1024p", "16:9"): "1792x1024",
    ("1024p", "9:16"): "1024x1792",
    ("1080p", "16:9"): "1920x1080",
    ("1080p", "9:16"): "1080x1920",
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    provider: str
    provider_model: str
    label: str
    durations: tuple[int, ...]
    default_duration: int
    prices_micros: Mapping[str, int]  # resolution -> micro-dollars per second
    aspect_ratios: tuple[str, ...]
    default_resolution: str = "720p"
    default_aspect: str = "16:9"
    price_source: str = ""
    retired_note: str | None = None
    # resolutions that allow fewer lengths than `durations` (Veo: 1080p and 4k only at 8 s)
    durations_by_resolution: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    audio: bool = False
    image_to_video: bool = False
    # The fewest seconds a render takes, as far as anyone has published one; the poller
    # waits that long before looking closely (bot/schedule.py). 0 = unknown. Too high a
    # value makes videos late, so only documented minimums go here.
    min_render_s: float = 0.0

    @property
    def resolutions(self) -> tuple[str, ...]:
        return tuple(self.prices_micros)

    def allowed_durations(self, resolution: str) -> tuple[int, ...]:
        return self.durations_by_resolution.get(resolution, self.durations)

    def nearest(self, duration_s: int, resolution: str, aspect: str) -> tuple[int, str, str]:
        """(length, resolution, aspect) as close to these as this model makes: a resolution or
        aspect it lacks becomes its default, a length its nearest (the shorter on a tie)."""
        res = resolution if resolution in self.resolutions else self.default_resolution
        allowed = self.allowed_durations(res) or (self.default_duration,)
        duration = min(allowed, key=lambda d: (abs(d - duration_s), d))
        ratio = aspect if aspect in self.aspect_ratios else self.default_aspect
        return duration, res, ratio

    def cost_micros(self, resolution: str, duration_s: int) -> int:
        return self.prices_micros[resolution] * duration_s

    def durations_text(self, resolution: str | None = None) -> str:
        d = self.allowed_durations(resolution) if resolution else self.durations
        if len(d) == 1:
            return f"{d[0]} s"
        contiguous = len(d) > 2 and list(d) == list(range(d[0], d[-1] + 1))
        return f"{d[0]}–{d[-1]} s" if contiguous else ", ".join(str(x) for x in d) + " s"

    def prices_text(self) -> str:
        return ", ".join(f"{res} {format_usd(p)}/s" for res, p in self.prices_micros.items())


def _usd(x: str) -> int:
    return usd_to_micros(x)


# Prices: OpenAI's published Sora 2 API prices (historical since the 2026-09-24 shutdown),
# as recorded in reference/video-apis.md §5 on 2026-11-24. Gateways resell at their own
# prices; SORA_PRICES overrides these.
_SORA_2_PRICES = {"720p": _usd("0.10")}
_SORA_2_PRO_PRICES = {"720p": _usd("0.30"), "1024p": _usd("0.50"), "1080p": _usd("0.50")}
_SORA_SOURCE = "OpenAI API pricing for sora-2/sora-2-pro (reference §5, 2026-11-24)"
_SORA_NOTE = (
    "OpenAI shut the Sora 2 API down on 2026-09-24, so this model only works through a "
    "gateway that still serves it."
)


def _sora_models(provider: str) -> list[ModelSpec]:
    if provider == OPENAI:
        durations_2: tuple[int, ...] = (4, 8, 12, 16, 20)
        durations_pro: tuple[int, ...] = (4, 8, 12, 16, 20)
        # The contract's default of 10 s is not a length the OpenAI shape accepts.
        default_pro = 8
    else:
        durations_2 = tuple(range(4, 21))
        durations_pro = tuple(range(4, 26))
        default_pro = 10
    return [
        ModelSpec(
            id="sora-2",
            provider=provider,
            provider_model="sora-2",
            label="Sora 2",
            durations=durations_2,
            default_duration=8,
            prices_micros=dict(_SORA_2_PRICES),
            aspect_ratios=("16:9", "9:16"),
            price_source=_SORA_SOURCE,
            retired_note=_SORA_NOTE if provider == OPENAI else None,
            # the OpenAI shape takes input_reference; the seed gateway shape has no image field
            image_to_video=provider == OPENAI,
        ),
        ModelSpec(
            id="sora-2-pro",
            provider=provider,
            provider_model="sora-2-pro",
            label="Sora 2 Pro",
            durations=durations_pro,
            default_duration=default_pro,
            prices_micros=dict(_SORA_2_PRO_PRICES),
            aspect_ratios=("16:9", "9:16"),
            price_source=_SORA_SOURCE,
            retired_note=_SORA_NOTE if provider == OPENAI else None,
            # the OpenAI shape takes input_reference; the seed gateway shape has no image field
            image_to_video=provider == OPENAI,
        ),
    ]


SIMULATOR_MODEL = ModelSpec(
    id="simulator",
    provider=SIMULATOR,
    provider_model="simulator",
    label="Simulator (built in, play money)",
    durations=tuple(range(4, 21)),
    default_duration=8,
    # play money, priced like sora-2 so that budgets show
    prices_micros={"720p": _usd("0.10")},
    aspect_ratios=("16:9", "9:16", "1:1"),
    price_source="built-in simulator; priced like sora-2 so budgets show",
)

# Google documents Veo's latency as 11 s to 6 min (reference §1.5).
_VEO_MIN_RENDER_S = 11.0

# Prices of the models teams moved to, in micro-dollars per second, with where they come
# from (reference/video-apis.md §5, compiled 2026-11-24). "estimate" marks prices nobody
# has confirmed from the provider's own list: SORA_PRICES can correct them.
_PROVIDER_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="gen4.5", provider=RUNWAY, provider_model="gen4.5", label="Runway Gen-4.5",
        durations=tuple(range(2, 11)), default_duration=5,
        prices_micros={"720p": _usd("0.12")}, aspect_ratios=("16:9", "9:16"),
        price_source="Runway API: 12 credits/s at $0.01 a credit (reference §5, 2026-11-24)",
        image_to_video=True,
    ),
    ModelSpec(
        id="veo-3.1", provider=VEO, provider_model="veo-3.1-generate-preview", label="Google Veo 3.1",
        durations=(4, 6, 8), default_duration=8,
        prices_micros={"720p": _usd("0.40"), "1080p": _usd("0.40"), "4k": _usd("0.60")},
        aspect_ratios=("16:9", "9:16"), durations_by_resolution={"1080p": (8,), "4k": (8,)},
        price_source="Gemini API pricing, Veo 3.1 with audio (reference §5, transcribed 2026-09-20)",
        audio=True, image_to_video=True, min_render_s=_VEO_MIN_RENDER_S,
    ),
    ModelSpec(
        id="veo-3.1-fast", provider=VEO, provider_model="veo-3.1-fast-generate-preview",
        label="Google Veo 3.1 Fast", durations=(4, 6, 8), default_duration=8,
        prices_micros={"720p": _usd("0.15"), "1080p": _usd("0.15")},
        aspect_ratios=("16:9", "9:16"), durations_by_resolution={"1080p": (8,)},
        price_source="estimate: third-party figure for Veo 3.1 Fast (reference §5)",
        audio=True, image_to_video=True, min_render_s=_VEO_MIN_RENDER_S,
    ),
    ModelSpec(
        # kling-v3 takes 3-15 s (third-party sources; Kling's own docs list 5 and 10 for v2)
        id="kling-3.0", provider=KLING, provider_model="kling-v3", label="Kling 3.0",
        durations=tuple(range(3, 16)), default_duration=5,
        prices_micros={"720p": _usd("0.157"), "1080p": _usd("0.235")},
        aspect_ratios=("16:9", "9:16", "1:1"),
        price_source="estimate: Kling on fal.ai, $0.157/s 720p, $0.235/s 1080p (reference §5 [F4])",
        image_to_video=True,
    ),
    ModelSpec(
        # BytePlus's model id as public projects use it; not yet confirmed in Ark's own docs
        id="seedance-2.0", provider=SEEDANCE, provider_model="dreamina-seedance-2-0-260128",
        label="ByteDance Seedance 2.0", durations=tuple(range(4, 16)), default_duration=5,
        prices_micros={"480p": _usd("0.18"), "720p": _usd("0.36"), "1080p": _usd("0.50")},
        aspect_ratios=("16:9", "9:16", "1:1"),
        price_source="estimate: Seedance is billed in tokens; 720p from Runway's 36 credits/s resale (reference §5)",
        audio=True, image_to_video=True,
    ),
    ModelSpec(
        id="fal/fal-ai/kling-video/v2.1/standard/text-to-video", provider=FAL,
        provider_model="fal-ai/kling-video/v2.1/standard/text-to-video", label="Kling 2.1 on fal.ai",
        durations=(5, 10), default_duration=5, prices_micros={"720p": _usd("0.157")},
        aspect_ratios=("16:9", "9:16", "1:1"),
        price_source="estimate: fal.ai Kling page, $0.157/s at 720p (reference §5 [F4])",
    ),
    ModelSpec(
        id="fal/fal-ai/veo3/fast", provider=FAL, provider_model="fal-ai/veo3/fast",
        label="Veo 3 Fast on fal.ai", durations=(4, 6, 8), default_duration=8,
        prices_micros={"720p": _usd("0.25"), "1080p": _usd("0.25")},
        aspect_ratios=("16:9", "9:16"),
        price_source="estimate: not on a published list (reference §5); set SORA_PRICES",
        audio=True,
    ),
)

# Preference order for the default model (CONTRACT: SORA_DEFAULT_MODEL).
DEFAULT_ORDER = ("sora-2", "veo-3.1", "kling-3.0", "gen4.5", "seedance-2.0")


@dataclass(slots=True)
class Catalog:
    """The offered models, keyed by the bot's model id, in display order."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    default_model: str = SIMULATOR

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id.strip().lower())

    def ids(self) -> list[str]:
        return list(self.models)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.models.values())


class CatalogError(ValueError):
    """A configuration problem (unknown model, bad price file): stops start-up."""


def build_catalog(
    *,
    providers: Iterable[str],
    gateway_models: Iterable[str] = (),
    default_model: str | None = None,
    prices_file: Path | None = None,
    include_simulator: bool | None = None,
) -> Catalog:
    """Offer the models whose provider is configured.

    Sora models go through the gateway when listed in VIDEO_GATEWAY_MODELS, else through the
    OpenAI shape when that key is set. The simulator is offered when nothing else is, or when
    asked for explicitly (demo, tests).
    """
    configured = set(providers)
    gateway_set = {m.strip() for m in gateway_models if m.strip()}
    offered: dict[str, ModelSpec] = {}
    if GATEWAY in configured:
        for spec in _sora_models(GATEWAY):
            if spec.id in gateway_set:
                offered[spec.id] = spec
    price_table = _read_price_file(prices_file) if prices_file is not None else {}
    if GATEWAY in configured:
        sora_ids = {spec.id for spec in _sora_models(GATEWAY)}
        for model_id in sorted(gateway_set - sora_ids):
            _check_model_id(model_id)
            offered[model_id] = _gateway_model(model_id, price_table)
    if OPENAI in configured:
        for spec in _sora_models(OPENAI):
            offered.setdefault(spec.id, spec)
    for spec in _PROVIDER_MODELS:
        if spec.provider in configured:
            offered.setdefault(spec.id, spec)
    if include_simulator or (include_simulator is None and not offered):
        offered[SIMULATOR_MODEL.id] = SIMULATOR_MODEL
    if prices_file is not None:
        offered = _apply_price_overrides(offered, price_table, prices_file)

    if default_model:
        if default_model not in offered:
            raise CatalogError(
                f"SORA_DEFAULT_MODEL: {default_model!r} is not an offered model "
                f"(offered: {', '.join(offered)})"
            )
        chosen = default_model
    else:
        chosen = next((m for m in DEFAULT_ORDER if m in offered), None) or next(iter(offered))
    return Catalog(models=offered, default_model=chosen)


def _check_model_id(model_id: str) -> None:
    if len(model_id) > MODEL_ID_MAX:
        raise CatalogError(
            f"VIDEO_GATEWAY_MODELS: {model_id[:40]!r}... is {len(model_id)} characters; Slack's menus "
            f"carry model ids of at most {MODEL_ID_MAX}"
        )


def _gateway_model(model_id: str, price_table: dict[str, object]) -> ModelSpec:
    """A model the gateway serves: a known one keeps its limits, any other needs a price."""
    known = next((m for m in _PROVIDER_MODELS if m.id == model_id), None)
    if known is not None:
        return replace(known, provider=GATEWAY, provider_model=model_id,
                       label=f"{known.label} (through the gateway)")
    table = price_table.get(model_id)
    if not isinstance(table, dict) or not table:
        raise CatalogError(
            f"VIDEO_GATEWAY_MODELS: {model_id!r} has no price; add it to the SORA_PRICES file, "
            f'e.g. ["{model_id}"] 720p = 0.10'
        )
    return ModelSpec(
        id=model_id, provider=GATEWAY, provider_model=model_id, label=f"{model_id} (through the gateway)",
        durations=tuple(range(4, 21)), default_duration=8,
        prices_micros={str(res): 0 for res in table},  # filled in from the price file below
        aspect_ratios=("16:9", "9:16", "1:1"),
        default_resolution="720p" if "720p" in table else str(next(iter(table))),
    )


def _read_price_file(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogError(f"SORA_PRICES: file not found: {path}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"SORA_PRICES: not valid TOML: {exc}") from exc


def _apply_price_overrides(
    models: dict[str, ModelSpec], data: dict[str, object], path: Path
) -> dict[str, ModelSpec]:
    out = dict(models)
    for model_id, table in data.items():
        if not isinstance(table, dict):
            raise CatalogError(f"SORA_PRICES: [{model_id}] must be a table of resolution = price")
        spec = out.get(model_id)
        if spec is None:
            # Prices for models not offered here are harmless (a shared price file).
            continue
        prices = dict(spec.prices_micros)
        for res, value in table.items():
            if len(str(res)) > RESOLUTION_MAX:
                raise CatalogError(f"SORA_PRICES: [{model_id}] resolution {str(res)[:40]!r} is longer than "
                                   f"{RESOLUTION_MAX} characters")
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise CatalogError(f"SORA_PRICES: [{model_id}] {res} must be a number")
            try:
                micros = usd_to_micros(value)
            except ValueError as exc:
                raise CatalogError(f"SORA_PRICES: [{model_id}] {res}: {exc}") from exc
            if micros < 0:
                raise CatalogError(f"SORA_PRICES: [{model_id}] {res} must not be negative")
            prices[str(res)] = micros
        out[model_id] = replace(spec, prices_micros=prices, price_source=f"SORA_PRICES ({path})")
    return out
