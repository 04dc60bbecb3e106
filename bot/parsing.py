"""Slash and mention text -> a command: the prompt, its options, or a subcommand."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from bot.catalog import Catalog, ModelSpec
from bot.errors import InvalidRequest
from bot.slack.slack_text import to_plain

MAX_PROMPT_CHARS = 4000

# C0/C1 control characters except tab and newline; Slack clients can paste them in.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# An option token: -m, --model, --model=x; Slack clients turn "--" into an em dash.
_OPTION = re.compile(r"^(?:--|—|–|-)([A-Za-z][A-Za-z-]*)(?:=(.*))?$")
_NEGATIVE_NUMBER = re.compile(r"^-\d")

_OPTION_NAMES = {
    "m": "model", "model": "model",
    "d": "duration", "duration": "duration", "seconds": "duration", "length": "duration",
    "r": "resolution", "resolution": "resolution", "res": "resolution",
    "a": "aspect", "aspect": "aspect", "aspect-ratio": "aspect", "ar": "aspect", "ratio": "aspect",
}
OPTIONS_HELP = "`-m/--model`, `-d/--duration`, `-r/--resolution`, `-a/--aspect`"

_ASPECT_WORDS = {"landscape": "16:9", "wide": "16:9", "portrait": "9:16", "vertical": "9:16", "square": "1:1"}


class JobRequest(BaseModel):
    """A request that passed validation against the catalog; what becomes a job."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    model: str
    duration_s: int
    resolution: str
    aspect_ratio: str

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise InvalidRequest(
                "Tell me what to make, for example `/sora a golden retriever running through "
                "autumn leaves`. `/sora help` lists the options."
            )
        if len(v) > MAX_PROMPT_CHARS:
            raise InvalidRequest(
                f"That prompt is {len(v):,} characters long; the limit is {MAX_PROMPT_CHARS:,}. "
                "Please shorten it."
            )
        return v

    @model_validator(mode="after")
    def _against_catalog(self, info: ValidationInfo) -> "JobRequest":
        catalog: Catalog = (info.context or {})["catalog"]
        spec = catalog.get(self.model)
        if spec is None:
            raise InvalidRequest(unknown_model_text(catalog, self.model) + " `/sora models` shows prices.")
        if self.resolution not in spec.resolutions:
            raise InvalidRequest(
                f"`{spec.id}` doesn't offer `{_short(self.resolution)}`. Allowed resolutions: "
                f"{', '.join(spec.resolutions)}."
            )
        allowed = spec.allowed_durations(self.resolution)
        # longer than one clip: a long video, planned as segments (or refused, naming the
        # limit) by bot.lifecycle.segments when it is accepted
        if self.duration_s not in allowed and not self.duration_s > allowed[-1]:
            at = f" at {self.resolution}" if self.resolution in spec.durations_by_resolution else ""
            raise InvalidRequest(
                f"`{spec.id}` can't make a {self.duration_s} s video{at}. Allowed lengths: "
                f"{spec.durations_text(self.resolution)}."
            )
        if self.aspect_ratio not in spec.aspect_ratios:
            raise InvalidRequest(
                f"`{spec.id}` doesn't offer the aspect ratio `{_short(self.aspect_ratio)}`. "
                f"Allowed: {', '.join(spec.aspect_ratios)}."
            )
        return self

    def spec(self, catalog: Catalog) -> ModelSpec:
        spec = catalog.get(self.model)
        assert spec is not None
        return spec


@dataclass(frozen=True, slots=True)
class Generate:
    request: JobRequest


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Models:
    pass


@dataclass(frozen=True, slots=True)
class Budget:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    job_ref: str | None


@dataclass(frozen=True, slots=True)
class Cancel:
    job_ref: str


@dataclass(frozen=True, slots=True)
class Compare:
    """One prompt on two to four models: a request per model, reserved together."""

    requests: list[JobRequest]


Command = Generate | Help | Models | Budget | Status | Cancel | Compare

COMPARE_MIN, COMPARE_MAX = 2, 4
COMPARE_USAGE = "`/sora compare [-m model1,model2,…] [-d seconds] <prompt>`"


def model_list(catalog: Catalog, most: int = 20) -> str:
    """The offered model ids for an answer, at most `most` of them: a gateway may serve 150."""
    ids = catalog.ids()
    shown = ", ".join(f"`{m}`" for m in ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def unknown_model_text(catalog: Catalog, name: str) -> str:
    """Why `name` can't be used: retired or not set up here (with what to use instead), or unknown."""
    why = catalog.why_not(name)
    if why is not None:
        return f"{why} Models here: {model_list(catalog)}."
    return f"I don't know the model `{_short(name)}`. Models here: {model_list(catalog)}."


def _short(value: str, limit: int = 40) -> str:
    """An echo of a user's value that is safe in mrkdwn code spans and short."""
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return value.replace("`", "'").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clean_text(text: str) -> str:
    """Slack's &amp;/&lt;/&gt; escaping undone, control characters removed (markup kept)."""
    return _CONTROL.sub("", html.unescape(text or ""))


def strip_controls(text: str) -> str:
    """Control characters removed: for text typed into a modal, which Slack doesn't escape."""
    return _CONTROL.sub("", text or "")


def parse_command(
    text: str, catalog: Catalog, *, like: "JobRequest | None" = None,
    names: Mapping[str, str] | None = None, drop_user: str | None = None,
) -> Command:
    """Parse what followed `/sora` (or a mention), as Slack sent it. Raises InvalidRequest
    with a clear message.

    Slack's markup becomes the words a person saw (`names`: display names by user id;
    `drop_user`'s mentions, the bot's own, go). `like`: a previous request whose options are
    the defaults ("again but at night").
    """
    cleaned = strip_controls(to_plain(text, names, drop_user=drop_user)).strip()
    words = cleaned.split()
    if words:
        head, rest = words[0].lower(), words[1:]
        if head in ("help", "-h", "--help", "?") and not rest:
            return Help()
        if head == "models" and not rest:
            return Models()
        if head == "budget" and not rest:
            return Budget()
        if head == "status" and len(rest) <= 1:
            return Status(rest[0] if rest else None)
        if head == "cancel" and len(rest) == 1:
            return Cancel(rest[0])
        if head == "cancel" and not rest:
            raise InvalidRequest("Which job? Use `/sora cancel <job>`; `/sora status` lists yours.")
        if head == "compare":
            return Compare(plan_compare(cleaned.split(None, 1)[1] if rest else "", catalog))
    if not words:
        return Help()
    return Generate(parse_request(cleaned, catalog, like=like))


def parse_request(cleaned: str, catalog: Catalog, *, like: "JobRequest | None" = None) -> JobRequest:
    options, prompt = _split_options(cleaned)
    same_model = like is not None and "model" not in options and catalog.get(like.model) is not None
    model = options.get("model", like.model if same_model and like else catalog.default_model).strip().lower()
    spec = catalog.get(model)  # None: the validator names the unknown model
    if spec is not None:
        model = spec.id  # an older name of a renamed model becomes the current one
    duration = _parse_duration(options["duration"]) if "duration" in options else (
        like.duration_s if same_model and like else spec.default_duration if spec else 0)
    resolution = _parse_resolution(options["resolution"]) if "resolution" in options else (
        like.resolution if same_model and like else spec.default_resolution if spec else "")
    aspect = _parse_aspect(options["aspect"]) if "aspect" in options else (
        like.aspect_ratio if same_model and like else spec.default_aspect if spec else "")
    try:
        return JobRequest.model_validate(
            {"prompt": prompt, "model": model, "duration_s": duration, "resolution": resolution,
             "aspect_ratio": aspect},
            context={"catalog": catalog},
        )
    except ValidationError as exc:
        # Our validators raise InvalidRequest; pydantic wraps only its own type errors.
        raise InvalidRequest(f"That request isn't valid: {exc.errors()[0]['msg']}") from None


def _split_options(text: str) -> tuple[dict[str, str], str]:
    """Pull option tokens out of the text wherever they stand; the rest is the prompt."""
    parts = re.split(r"(\s+)", text)
    options: dict[str, str] = {}
    kept: list[str] = []
    i = 0
    while i < len(parts):
        token = parts[i]
        match = _OPTION.match(token) if token and not _NEGATIVE_NUMBER.match(token) else None
        if match is None:
            kept.append(token)
            i += 1
            continue
        name = _OPTION_NAMES.get(match.group(1).lower())
        if name is None:
            raise InvalidRequest(
                f"Unknown option `{_short(token)}`. Options: {OPTIONS_HELP}. "
                "Everything else is the prompt."
            )
        value = match.group(2)
        i += 1
        if value is None:
            # the value is the next non-space token
            while i < len(parts) and parts[i].strip() == "":
                i += 1
            if i >= len(parts):
                raise InvalidRequest(f"The option `{_short(token)}` needs a value, e.g. `{token} 8`.")
            value = parts[i]
            i += 1
        if name in options:
            raise InvalidRequest(f"The option `{name}` was given twice; give it once.")
        options[name] = value
    prompt = "".join(kept)
    prompt = re.sub(r"[ \t]{2,}", " ", prompt).strip()
    return options, prompt


def _parse_duration(value: str) -> int:
    m = re.fullmatch(r"(\d{1,4})\s*(?:s|sec|secs|second|seconds)?", value.strip().lower())
    if not m:
        raise InvalidRequest(f"`{_short(value)}` is not a length in seconds; use e.g. `8` or `8s`.")
    return int(m.group(1))


def _parse_resolution(value: str) -> str:
    v = value.strip().lower()
    if re.fullmatch(r"\d{3,4}", v):
        v += "p"
    return v


def _parse_aspect(value: str) -> str:
    v = value.strip().lower().replace("x", ":").replace("/", ":")
    return _ASPECT_WORDS.get(v, v)


def plan_compare(text: str, catalog: Catalog) -> list[JobRequest]:
    """`compare [-m a,b,c] [-d N] [-r R] [-a A] <prompt>` -> one checked request per model.

    Without `-m`: every offered model that can make that length (the simulator only when it
    is all there is), up to four. Without `-d` the length is the default model's default;
    a model named with `-m` that can't make it gets its nearest length.
    """
    options, prompt = _split_options(text)
    if not prompt.strip():
        raise InvalidRequest(f"Tell me what to compare, e.g. {COMPARE_USAGE.replace('<prompt>', 'a paper boat in the rain')}.")
    default = catalog.get(catalog.default_model)
    wanted = _parse_duration(options["duration"]) if "duration" in options else None
    target = wanted if wanted is not None else (default.default_duration if default else 8)
    resolution = _parse_resolution(options["resolution"]) if "resolution" in options else None
    aspect = _parse_aspect(options["aspect"]) if "aspect" in options else None

    if "model" in options:
        names = [m.strip().lower() for m in options["model"].split(",") if m.strip()]
        if len(set(names)) != len(names):
            raise InvalidRequest("A model is named twice in `-m`; name each once.")
        chosen = []
        for name in names:
            spec = catalog.get(name)
            if spec is None:
                raise InvalidRequest(unknown_model_text(catalog, name))
            chosen.append(spec)
    else:
        real = [m for m in catalog if m.id != "simulator"] or list(catalog)
        chosen = [m for m in real if _fits(m, target, resolution, aspect)][:COMPARE_MAX]
        if len(chosen) < COMPARE_MIN:
            can = f"only {', '.join(f'`{m.id}`' for m in chosen)}" if chosen else "no model"
            raise InvalidRequest(
                f"A compare needs {COMPARE_MIN} to {COMPARE_MAX} models, and {can} here can make "
                f"a {target} s video{' at ' + resolution if resolution else ''}. Name models with `-m`, or try another length."
            )
    if not COMPARE_MIN <= len(chosen) <= COMPARE_MAX:
        raise InvalidRequest(f"A compare takes {COMPARE_MIN} to {COMPARE_MAX} models; you named {len(chosen)}. {COMPARE_USAGE}")

    for spec in chosen:
        if resolution is not None and resolution not in spec.resolutions:
            raise InvalidRequest(f"`{spec.id}` doesn't offer `{_short(resolution)}`. Allowed resolutions: {', '.join(spec.resolutions)}.")
        if aspect is not None and aspect not in spec.aspect_ratios:
            raise InvalidRequest(f"`{spec.id}` doesn't offer the aspect ratio `{_short(aspect)}`. Allowed: {', '.join(spec.aspect_ratios)}.")
    ratio_default = default.default_aspect if default else None
    requests = []
    for spec in chosen:
        # an explicit -d must fit each model (the validator names its lengths); else the nearest
        requests.append(request_on(catalog, spec, prompt, duration=target, exact=wanted is not None,
                                   resolution=resolution, aspect=aspect or ratio_default))
    return requests


def _fits(spec: ModelSpec, duration: int, resolution: str | None, aspect: str | None) -> bool:
    if duration not in spec.allowed_durations(resolution or spec.default_resolution):
        return False
    if resolution is not None and resolution not in spec.resolutions:
        return False
    if aspect is not None and aspect not in spec.aspect_ratios:
        return False
    return True


def request_on(catalog: Catalog, spec: ModelSpec, prompt: str, *, duration: int, exact: bool = False,
               resolution: str | None = None, aspect: str | None = None) -> JobRequest:
    """A request for `spec` as close to the given options as it allows (a compare's other models).

    A resolution or aspect the model lacks becomes its default; the length its nearest,
    unless `exact`, when a length it can't make is refused by the validator.
    """
    nearest, res, ratio = spec.nearest(duration, resolution or "", aspect or "")
    if not exact:
        duration = nearest
    elif duration not in spec.allowed_durations(res):
        # side by side means one clip each: no long videos in a compare
        raise InvalidRequest(f"`{spec.id}` can't make a {duration} s video in one clip. Allowed lengths: "
                             f"{spec.durations_text(res)}.")
    try:
        return JobRequest.model_validate(
            {"prompt": prompt, "model": spec.id, "duration_s": duration, "resolution": res, "aspect_ratio": ratio},
            context={"catalog": catalog},
        )
    except ValidationError as exc:
        raise InvalidRequest(f"That request isn't valid: {exc.errors()[0]['msg']}") from None
