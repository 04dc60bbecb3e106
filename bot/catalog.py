"""The model catalog: which models exist, where they run, what they allow and cost.

The catalog is data: `bot/catalog.toml` is the built-in one, and an admin's file in the
same format (`SORA_MODELS`) adds, changes, renames or retires models without a release.
Prices are integer micro-dollars per second of video, by resolution; each carries its
source. `SORA_PRICES` (a TOML file of `["model"] resolution = $/s`) may still override
any price.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.money import format_usd, usd_to_micros

SIMULATOR = "simulator"
GATEWAY = "gateway"
OPENAI = "openai"
RUNWAY = "runway"
VEO = "veo"  # Google's Agent Platform (formerly Vertex AI)
GEMINI = "gemini"  # the Gemini API, with an API key
KLING = "kling"
SEEDANCE = "seedance"
FAL = "fal"
XAI = "xai"
ROUTES = (SIMULATOR, GATEWAY, OPENAI, RUNWAY, VEO, GEMINI, KLING, SEEDANCE, FAL, XAI)

BUILTIN_CATALOG = Path(__file__).with_name("catalog.toml")

# What the request modal needs of an id (Block Kit): a menu option's `value` holds at most
# 150 characters. Resolutions (price keys) are option values too, and both go into block
# ids of at most 255: the longest, `duration:{model}:{resolution}`, is then
# 9 + 150 + 1 + 32 = 192 characters.
MODEL_ID_MAX = 150
RESOLUTION_MAX = 32

# Sizes the OpenAI Videos shape accepts, by (resolution, aspect ratio): openai 3.57's
# VideoCreateParams types `size` as exactly these four.
OPENAI_SIZES: dict[tuple[str, str], str] = {
    ("720p", "16:9"): "1280x720",
    ("720p", "9:16"): "720x1280",
    ("1024p", "16:9"): "1792x1024",
    ("1024p", "9:16"): "1024x1792",
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
    # what to say when the provider answers that it no longer serves the model
    retired_note: str | None = None
    # set when the catalog retired it: why, and the bot id to suggest instead
    retired: str | None = None
    replacement: str | None = None
    # resolutions that allow fewer lengths than `durations` (Veo: 1080p and 4k only at 8 s)
    durations_by_resolution: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    audio: bool = False
    image_to_video: bool = False
    # The fewest seconds a render takes, as far as anyone has published one; the poller
    # waits that long before looking closely (bot/lifecycle/schedule.py). 0 = unknown. Too high a
    # value makes videos late, so only documented minimums go here.
    min_render_s: float = 0.0
    # Long videos (bot/lifecycle/segments.py): the seconds one native extension call may add (empty =
    # the provider has none here) and the longest video that extending may reach.
    extend_seconds: tuple[int, ...] = ()
    max_total_seconds: int = 0

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


class CatalogError(ValueError):
    """A configuration problem (unknown model, bad catalog or price file): stops start-up."""


@dataclass(slots=True)
class Catalog:
    """The offered models, keyed by the bot's model id, in display order, and what is known
    of the others: retired ones, ones whose provider isn't set up, and older names."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    default_model: str = SIMULATOR
    aliases: dict[str, str] = field(default_factory=dict)  # an older id -> the current one
    absent: dict[str, ModelSpec] = field(default_factory=dict)  # known, not offered

    def canonical(self, model_id: str) -> str:
        key = model_id.strip().lower()
        return self.aliases.get(key, key)

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(self.canonical(model_id))

    def ids(self) -> list[str]:
        return list(self.models)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models.values())

    def why_not(self, model_id: str) -> str | None:
        """Why a known model isn't offered here, with what to use instead; None if unknown."""
        spec = self.absent.get(self.canonical(model_id))
        if spec is None:
            return None
        instead = self.get(spec.replacement) if spec.replacement else None
        if spec.retired:
            text = f"`{spec.id}` is retired: {spec.retired.rstrip('.')}."
        else:
            text = f"`{spec.id}` runs on {route_name(spec.provider)}, which this bot isn't set up for."
        if instead is not None:
            return f"{text} Try `{instead.id}` instead."
        return text


_ROUTE_NAMES = {
    SIMULATOR: "the built-in simulator", GATEWAY: "the video gateway", OPENAI: "the OpenAI Videos API",
    RUNWAY: "Runway", VEO: "Google's Agent Platform", GEMINI: "the Gemini API", KLING: "Kling",
    SEEDANCE: "BytePlus ModelArk", FAL: "fal.ai", XAI: "xAI",
}


def route_name(route: str) -> str:
    return _ROUTE_NAMES.get(route, route)


# --- reading catalog files ---------------------------------------------------------------------

_FIELDS = {
    "route", "provider_model", "label", "durations", "default_duration", "prices", "aspect_ratios",
    "default_resolution", "default_aspect", "durations_by_resolution", "image", "audio", "min_render_s",
    "price_source", "retired", "replacement", "if_retired", "renamed_from", "via",
    "extend_seconds", "max_total_seconds",
}
_VIA_FIELDS = _FIELDS - {"route", "renamed_from", "via"}
_REQUIRED = ("route", "durations", "prices")


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogError(f"{what}: file not found: {path}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{what}: not valid TOML: {exc}") from exc


@dataclass(slots=True)
class _Entries:
    tables: dict[str, dict[str, Any]]  # bot id -> its keys, in display order
    default_order: list[str]
    aliases: dict[str, str]
    from_file: set[str]  # ids whose table came from (or was touched by) the admin's file


def _load_entries(models_file: Path | None) -> _Entries:
    builtin = _read_toml(BUILTIN_CATALOG, "built-in catalog")
    entries = _Entries(tables={}, default_order=list(builtin.get("default_order", [])), aliases={}, from_file=set())
    _lay_over(entries, builtin, "built-in catalog", admin=False)
    if models_file is not None:
        _lay_over(entries, _read_toml(models_file, "SORA_MODELS"), "SORA_MODELS", admin=True)
    return entries


def _lay_over(entries: _Entries, data: dict[str, Any], what: str, *, admin: bool) -> None:
    unknown = set(data) - {"models", "default_order"}
    if unknown:
        raise CatalogError(f"{what}: unknown top-level key {sorted(unknown)[0]!r} (expected [models.\"<id>\"] tables)")
    if "default_order" in data:
        order = data["default_order"]
        if not isinstance(order, list) or not all(isinstance(m, str) for m in order):
            raise CatalogError(f"{what}: default_order must be a list of model ids")
        entries.default_order = [m.strip().lower() for m in order]
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise CatalogError(f"{what}: models must be tables, e.g. [models.\"veo-3.1\"]")
    for raw_id, table in models.items():
        model_id = str(raw_id).strip().lower()
        where = f"{what}: [models.\"{raw_id}\"]"
        if not model_id:
            raise CatalogError(f"{what}: a model id is empty")
        if len(model_id) > MODEL_ID_MAX:
            raise CatalogError(f"{what}: model id {model_id[:40]!r}... is {len(model_id)} characters; "
                               f"Slack's menus carry model ids of at most {MODEL_ID_MAX}")
        if not isinstance(table, dict):
            raise CatalogError(f"{where} must be a table")
        bad = set(table) - _FIELDS
        if bad:
            raise CatalogError(f"{where}: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(_FIELDS))})")
        table = dict(table)
        old = table.pop("renamed_from", None)
        if old is not None:
            if not isinstance(old, str) or entries.tables.get(old.strip().lower()) is None:
                raise CatalogError(f"{where}: renamed_from {old!r} is not a model in the catalog")
            old_id = old.strip().lower()
            base = entries.tables.pop(old_id)
            # our new name for it is not the provider's: its id stays what it was
            base.setdefault("provider_model", _default_provider_model(old_id, base.get("route")))
            entries.aliases[old_id] = model_id
            entries.aliases = {k: (model_id if v == old_id else v) for k, v in entries.aliases.items()}
            entries.default_order = [model_id if m == old_id else m for m in entries.default_order]
            entries.from_file.discard(old_id)
            entries.tables[model_id] = _merged(base, table)
        elif model_id in entries.tables:
            entries.tables[model_id] = _merged(entries.tables[model_id], table)
        else:
            missing = [k for k in _REQUIRED if k not in table]
            if missing:
                raise CatalogError(f"{where}: a new model needs {', '.join(missing)}")
            entries.tables[model_id] = table
        entries.aliases.pop(model_id, None)  # an id of its own is no longer another's name
        if admin:
            entries.from_file.add(model_id)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key == "via" and isinstance(value, dict) and isinstance(out.get("via"), dict):
            via = {r: dict(t) for r, t in out["via"].items()}
            for route, table in value.items():
                via[route] = {**via.get(route, {}), **table} if isinstance(table, dict) else table
            out["via"] = via
        else:
            out[key] = value
    return out


def _default_provider_model(model_id: str, route: Any) -> str:
    """The provider's id when a table names none: the bot id, less fal's `fal/` prefix."""
    first = route[0] if isinstance(route, list) and route else route
    return model_id.removeprefix("fal/") if first == FAL else model_id


def _routes(table: dict[str, Any], where: str) -> list[str]:
    route = table.get("route")
    routes = [route] if isinstance(route, str) else route
    if not isinstance(routes, list) or not routes or not all(isinstance(r, str) for r in routes):
        raise CatalogError(f"{where}: route must be one of {', '.join(ROUTES)}, or a list of them")
    routes = [r.strip().lower() for r in routes]
    for r in routes:
        if r not in ROUTES:
            raise CatalogError(f"{where}: route {r!r} is not one of {', '.join(ROUTES)}")
    return routes


def _durations(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, str):
        lo, sep, hi = value.partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise CatalogError(f"{where}: durations {value!r} must be a list like [4, 8] or a range like \"3-15\"") from None
        out = tuple(range(first, last + 1))
    elif isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        out = tuple(sorted(set(value)))
    else:
        raise CatalogError(f"{where}: durations must be a list like [4, 8] or a range like \"3-15\"")
    if not out or out[0] < 1 or out[-1] > 600:
        raise CatalogError(f"{where}: durations must be whole seconds from 1 to 600")
    return out


def _prices(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, dict) or not value:
        raise CatalogError(f"{where}: prices must be a table of resolution = $/s, e.g. {{ \"720p\" = 0.10 }}")
    out: dict[str, int] = {}
    for res, amount in value.items():
        out[_resolution(res, where)] = _price(amount, f"{where} prices.{res}")
    return out


def _resolution(res: Any, where: str) -> str:
    res = str(res).strip()
    if not res or len(res) > RESOLUTION_MAX:
        raise CatalogError(f"{where}: resolution {res[:40]!r} must be 1 to {RESOLUTION_MAX} characters")
    return res


def _price(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CatalogError(f"{where} must be a number of dollars per second")
    try:
        micros = usd_to_micros(value)
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    if micros < 0:
        raise CatalogError(f"{where} must not be negative")
    return micros


def _text(table: dict[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: {key} must be text")
    return value.strip()


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise CatalogError(f"{where}: {key} must be true or false")
    return value


def _spec(model_id: str, table: dict[str, Any], route: str, where: str) -> ModelSpec:
    """One model on one route, its `via.<route>` keys applied, every value checked."""
    via = table.get("via", {})
    if not isinstance(via, dict) or not all(isinstance(t, dict) for t in via.values()):
        raise CatalogError(f"{where}: via must hold tables, e.g. [models.\"{model_id}\".via.openai]")
    for r, t in via.items():
        bad = set(t) - _VIA_FIELDS
        if bad:
            raise CatalogError(f"{where}: via.{r} has an unknown key {sorted(bad)[0]!r}")
    t = {**table, **via.get(route, {})}
    durations = _durations(t["durations"], where)
    prices = _prices(t["prices"], where)
    default_duration = t.get("default_duration", durations[0])
    if default_duration not in durations:
        raise CatalogError(f"{where}: default_duration {default_duration!r} is not one of its durations")
    aspects = t.get("aspect_ratios", ["16:9", "9:16"])
    if not isinstance(aspects, list) or not aspects or not all(isinstance(a, str) and a.strip() for a in aspects):
        raise CatalogError(f"{where}: aspect_ratios must be a list like [\"16:9\", \"9:16\"]")
    aspects = [a.strip() for a in aspects]
    default_res = t.get("default_resolution", "720p" if "720p" in prices else next(iter(prices)))
    if default_res not in prices:
        raise CatalogError(f"{where}: default_resolution {default_res!r} has no price")
    default_aspect = t.get("default_aspect", aspects[0])
    if default_aspect not in aspects:
        raise CatalogError(f"{where}: default_aspect {default_aspect!r} is not one of its aspect_ratios")
    by_res_raw = t.get("durations_by_resolution", {})
    if not isinstance(by_res_raw, dict):
        raise CatalogError(f"{where}: durations_by_resolution must be a table like {{ \"4k\" = [8] }}")
    by_res = {}
    for res, value in by_res_raw.items():
        if res in prices:  # a resolution this route doesn't offer needs no limit
            by_res[str(res)] = _durations(value, f"{where} durations_by_resolution.{res}")
    min_render = t.get("min_render_s", 0)
    if isinstance(min_render, bool) or not isinstance(min_render, (int, float)) or not 0 <= min_render <= 3600:
        raise CatalogError(f"{where}: min_render_s must be a number of seconds from 0 to 3600")
    extend, max_total = _extension(t, durations, where)
    provider_model = _text(t, "provider_model", where) or _default_provider_model(model_id, route)
    return ModelSpec(
        id=model_id, provider=route, provider_model=provider_model,
        label=_text(t, "label", where) or model_id,
        durations=durations, default_duration=default_duration, prices_micros=prices,
        aspect_ratios=tuple(aspects), default_resolution=default_res, default_aspect=default_aspect,
        price_source=_text(t, "price_source", where) or "",
        retired_note=_text(t, "if_retired", where),
        retired=_text(t, "retired", where), replacement=(_text(t, "replacement", where) or "").lower() or None,
        durations_by_resolution=by_res, audio=_flag(t, "audio", where), image_to_video=_flag(t, "image", where),
        min_render_s=float(min_render), extend_seconds=extend, max_total_seconds=max_total,
    )


def _extension(t: dict[str, Any], durations: tuple[int, ...], where: str) -> tuple[tuple[int, ...], int]:
    """(extend_seconds, max_total_seconds); an empty extend_seconds turns extension off, so an
    admin can switch off what the built-in catalog offers without also removing the cap."""
    raw = t.get("extend_seconds", [])
    extend = () if raw == [] else _durations(raw, f"{where} extend_seconds")
    if not extend:
        return (), 0
    cap = t.get("max_total_seconds")
    if cap is None:
        raise CatalogError(f"{where}: extend_seconds needs max_total_seconds, the longest an extended video may be")
    if isinstance(cap, bool) or not isinstance(cap, int) or not durations[-1] < cap <= 600:
        raise CatalogError(f"{where}: max_total_seconds must be whole seconds, longer than its longest clip "
                           f"({durations[-1]} s) and at most 600")
    return extend, cap


# --- building the catalog ----------------------------------------------------------------------


def build_catalog(
    *,
    providers: Iterable[str],
    gateway_models: Iterable[str] = (),
    default_model: str | None = None,
    prices_file: Path | None = None,
    models_file: Path | None = None,
    include_simulator: bool | None = None,
) -> Catalog:
    """Offer the models whose route is configured.

    A model runs on the first of its routes that is configured; the gateway runs the ids in
    VIDEO_GATEWAY_MODELS (and those the admin's file routes to it), and a listed id the
    catalog knows keeps its limits there. The simulator is offered when nothing else is, or
    when asked for explicitly (demo, tests).
    """
    configured = set(providers)
    entries = _load_entries(models_file)
    # a renamed model listed under its old name is still the one the gateway serves
    gateway_set = {entries.aliases.get(k, k) for k in (m.strip().lower() for m in gateway_models) if k}
    price_table = _read_price_file(prices_file) if prices_file is not None else {}
    offered: dict[str, ModelSpec] = {}
    absent: dict[str, ModelSpec] = {}

    for model_id, table in entries.tables.items():
        where = f"[models.\"{model_id}\"]"
        if model_id in entries.from_file:
            where = f"SORA_MODELS: {where}"
        routes = _routes(table, where)
        on_gateway = model_id in gateway_set or (model_id in entries.from_file and GATEWAY in routes)
        if GATEWAY in configured and model_id in gateway_set and GATEWAY not in routes:
            # the gateway serves a model the catalog knows elsewhere: same limits, its own name
            known = _spec(model_id, table, routes[0], where)
            # the gateway's API has no extension call, whatever the provider's own has
            offered[model_id] = replace(known, provider=GATEWAY, provider_model=model_id,
                                        label=f"{known.label} (through the gateway)", retired=None,
                                        extend_seconds=(), max_total_seconds=0)
            continue
        usable = [r for r in routes if r in configured and (r != GATEWAY or on_gateway)]
        if model_id == SIMULATOR:  # never "configured": offered when asked for (or when alone, below)
            usable = [SIMULATOR] if include_simulator else []
        spec = _spec(model_id, table, usable[0] if usable else routes[0], where)
        if usable and spec.retired is None:
            offered[model_id] = spec
        else:
            absent[model_id] = spec

    if GATEWAY in configured:
        for model_id in sorted(gateway_set - set(entries.tables)):
            _check_model_id(model_id)
            offered[model_id] = _gateway_model(model_id, price_table)
    if include_simulator is None and not offered and SIMULATOR in absent:
        offered[SIMULATOR] = absent.pop(SIMULATOR)
    if prices_file is not None:
        offered = _apply_price_overrides(offered, price_table, prices_file)
    for spec in [*offered.values(), *absent.values()]:
        if spec.replacement is not None and spec.replacement not in offered and spec.replacement not in absent:
            origin = "SORA_MODELS: " if spec.id in entries.from_file else ""
            raise CatalogError(f"{origin}[models.\"{spec.id}\"]: replacement {spec.replacement!r} is not a model "
                               "in the catalog")

    aliases = {old: new for old, new in entries.aliases.items() if old not in offered}
    catalog = Catalog(models=offered, aliases=aliases, absent=absent)
    if default_model:
        chosen = catalog.canonical(default_model)
        if chosen not in offered:
            why = catalog.why_not(chosen)
            raise CatalogError(
                f"SORA_DEFAULT_MODEL: {default_model!r} is not an offered model"
                + (f" ({why.replace('`', '')})" if why else "")
                + f" (offered: {', '.join(offered)})"
            )
    else:
        chosen = next((m for m in entries.default_order if m in offered), None) or next(iter(offered), SIMULATOR)
    catalog.default_model = chosen
    return catalog


def _check_model_id(model_id: str) -> None:
    if len(model_id) > MODEL_ID_MAX:
        raise CatalogError(
            f"VIDEO_GATEWAY_MODELS: {model_id[:40]!r}... is {len(model_id)} characters; Slack's menus "
            f"carry model ids of at most {MODEL_ID_MAX}"
        )


def _gateway_model(model_id: str, price_table: dict[str, object]) -> ModelSpec:
    """A model only the gateway knows: it needs a price (SORA_PRICES, or a SORA_MODELS table)."""
    table = price_table.get(model_id)
    if not isinstance(table, dict) or not table:
        raise CatalogError(
            f"VIDEO_GATEWAY_MODELS: {model_id!r} has no price; add it to the SORA_PRICES file, "
            f'e.g. ["{model_id}"] 720p = 0.10, or describe it in the SORA_MODELS file'
        )
    return ModelSpec(
        id=model_id, provider=GATEWAY, provider_model=model_id, label=f"{model_id} (through the gateway)",
        durations=tuple(range(4, 21)), default_duration=8,
        prices_micros={str(res): 0 for res in table},  # filled in from the price file below
        aspect_ratios=("16:9", "9:16", "1:1"),
        default_resolution="720p" if "720p" in table else str(next(iter(table))),
    )


def _read_price_file(path: Path) -> dict[str, object]:
    return _read_toml(path, "SORA_PRICES")


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
            prices[str(res)] = _price(value, f"SORA_PRICES: [{model_id}] {res}")
        out[model_id] = replace(spec, prices_micros=prices, price_source=f"SORA_PRICES ({path})")
    return out


def builtin_models() -> Mapping[str, dict[str, Any]]:
    """The built-in catalog's tables, for tests and `sora-bot doctor`."""
    return _load_entries(None).tables
