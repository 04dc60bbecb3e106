"""The request modal: building it, reading its state, and turning a submission into a job.

The selects dispatch actions so that changing the model refreshes the lengths, resolutions
and aspect ratios it allows, and the cost line, with `views.update`. Block ids of the
dependent selects carry the model (and resolution), so Slack drops a choice that the new
model doesn't offer instead of keeping it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.slack import prompt_input
from bot.catalog import ModelSpec
from bot.clock import budget_day
from bot.deps import Deps
from bot.errors import InvalidRequest
from bot.money import format_usd
from bot.parsing import MAX_PROMPT_CHARS, JobRequest
from bot.lifecycle.segments import Plan, menu_lengths, plan_video
from storage import ledger

MODAL = "sora_request_modal"
MODEL_ACTION = "sora_modal_model"
DURATION_ACTION = "sora_modal_duration"
RESOLUTION_ACTION = "sora_modal_resolution"
ASPECT_ACTION = "sora_modal_aspect"
OPEN_ACTION = "sora_open_request_modal"  # the App Home button
MENU_MAX = 100  # a select's options, its option groups, and one group's options (Block Kit)


@dataclass(frozen=True, slots=True)
class Choices:
    model: str
    duration_s: int
    resolution: str
    aspect: str
    prompt: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the result goes: a fixed conversation/thread (message shortcut) or a picker."""

    channel: str | None = None
    thread_ts: str | None = None
    cut_from: int | None = None  # the message shortcut's text was this long and had to be cut

    def dump(self) -> str:
        return json.dumps({"channel": self.channel, "thread_ts": self.thread_ts, "cut_from": self.cut_from})

    @classmethod
    def load(cls, text: str | None) -> "Target":
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        channel = data.get("channel") if isinstance(data.get("channel"), str) else None
        thread_ts = data.get("thread_ts") if isinstance(data.get("thread_ts"), str) else None
        cut_from = data.get("cut_from") if isinstance(data.get("cut_from"), int) else None
        return cls(channel, thread_ts, cut_from)


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text[:75]}, "value": value}


def _model_menu(deps: Deps, models: Sequence[ModelSpec], text: Callable[[ModelSpec], str]) -> dict[str, Any]:
    """`options` for up to 100 models; past that `option_groups` by provider, a provider with
    more than 100 split into numbered parts, so every model can be picked."""
    if len(models) <= MENU_MAX:
        return {"options": [_option(text(m), m.id) for m in models]}
    by_provider: dict[str, list[ModelSpec]] = {}
    for m in models:
        by_provider.setdefault(m.provider, []).append(m)
    groups = []
    for provider, specs in by_provider.items():
        parts = [specs[i:i + MENU_MAX] for i in range(0, len(specs), MENU_MAX)]
        for n, part in enumerate(parts, 1):
            suffix = f" ({n}/{len(parts)})" if len(parts) > 1 else ""
            label = deps.provider_label(provider)[:75 - len(suffix)] + suffix
            groups.append({"label": {"type": "plain_text", "text": label},
                           "options": [_option(text(m), m.id) for m in part]})
    # 100 groups of 100: a catalog past 10,000 models shows its first 10,000 here
    return {"option_groups": groups[:MENU_MAX]}


def _menu_options(menu: dict[str, Any]) -> list[dict[str, Any]]:
    return menu.get("options") or [o for group in menu.get("option_groups", []) for o in group["options"]]


def _select(block_id: str, label: str, action_id: str, menu: dict[str, Any], initial: str | None) -> dict[str, Any]:
    """A dispatching static_select; `menu` holds its `options` or `option_groups`."""
    element: dict[str, Any] = {"type": "static_select", "action_id": action_id, **menu}
    chosen = next((o for o in _menu_options(menu) if o["value"] == initial), None)
    if chosen is not None:
        element["initial_option"] = chosen
    return {"type": "input", "block_id": block_id, "dispatch_action": True,
            "label": {"type": "plain_text", "text": label}, "element": element}


def normalize(deps: Deps, choices: Choices) -> Choices:
    """Snap choices onto what the model allows (a model change may invalidate the others)."""
    spec = deps.catalog.get(choices.model) or deps.catalog.get(deps.catalog.default_model)
    assert spec is not None
    resolution = choices.resolution if choices.resolution in spec.resolutions else spec.default_resolution
    allowed = [*spec.allowed_durations(resolution),
               *menu_lengths(spec, resolution, max_video_seconds=deps.settings.sora_max_video_seconds)]
    duration = choices.duration_s if choices.duration_s in allowed else (
        spec.default_duration if spec.default_duration in allowed else allowed[0])
    aspect = choices.aspect if choices.aspect in spec.aspect_ratios else spec.default_aspect
    return Choices(spec.id, duration, resolution, aspect, choices.prompt)


def defaults(deps: Deps, prompt: str = "") -> Choices:
    spec = deps.catalog.get(deps.catalog.default_model)
    assert spec is not None
    return normalize(deps, Choices(spec.id, spec.default_duration, spec.default_resolution, spec.default_aspect, prompt))


async def cost_line(deps: Deps, user_id: str, spec: ModelSpec, choices: Choices) -> str:
    now = deps.clock()
    budgets = await deps.budgets()
    limit, totals = await ledger.totals_for(deps.db, user_id, budget_day(now, deps.settings.tz), budgets.default_user_micros)
    per_s = spec.prices_micros[choices.resolution]
    total = per_s * choices.duration_s
    what = f"{choices.duration_s} s × {format_usd(per_s)} = *{format_usd(total)}*"
    if choices.duration_s > spec.allowed_durations(choices.resolution)[-1]:
        # a long video: the plan is said here, before anything is reserved or charged
        try:
            plan = plan_video(spec, choices.duration_s, choices.prompt or "-", resolution=choices.resolution,
                              max_video_seconds=deps.settings.sora_max_video_seconds)
        except InvalidRequest as exc:
            return f":warning: {exc.user_message()}"
        total = plan.cost_micros
        what = plan.text().replace(f"{format_usd(total)} in all", f"*{format_usd(total)}* in all")
    left = max(0, limit - totals.used_micros)
    warn = " · :warning: more than you have left" if total > left else ""
    return f"{what} · you have {format_usd(left)} left today{warn}"


async def build_view(deps: Deps, user_id: str, choices: Choices, target: Target, *, title: str = "Generate a video") -> dict[str, Any]:
    choices = normalize(deps, choices)
    spec = deps.catalog.get(choices.model)
    assert spec is not None
    models = _model_menu(deps, list(deps.catalog), lambda m: f"{m.label} · {m.prices_text()}")
    longer = menu_lengths(spec, choices.resolution, max_video_seconds=deps.settings.sora_max_video_seconds)
    durations = ([_option(f"{d} s", str(d)) for d in spec.allowed_durations(choices.resolution)]
                 + [_option(f"{d} s (in segments)", str(d)) for d in longer])[:100]
    resolutions = [_option(r, r) for r in spec.resolutions]
    aspects = [_option(a, a) for a in spec.aspect_ratios]
    blocks: list[dict[str, Any]] = [
        *prompt_input.blocks(choices.prompt, label="What should the video show?",
                             placeholder="A golden retriever running through autumn leaves"),
    ]
    if target.cut_from:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f":warning: That message is {target.cut_from:,} characters long and a prompt holds "
            f"{MAX_PROMPT_CHARS:,}, so only its first {MAX_PROMPT_CHARS:,} are above. Nothing is "
            "charged until you press Generate.")}]})
    blocks += [
        _select("model", "Model", MODEL_ACTION, models, spec.id),
        # these ids change with the model so Slack forgets choices the new model lacks
        _select(f"resolution:{spec.id}", "Resolution", RESOLUTION_ACTION, {"options": resolutions}, choices.resolution),
        _select(f"duration:{spec.id}:{choices.resolution}", "Length", DURATION_ACTION, {"options": durations},
                str(choices.duration_s)),
        _select(f"aspect:{spec.id}", "Aspect ratio", ASPECT_ACTION, {"options": aspects}, choices.aspect),
    ]
    others = [m for m in deps.catalog if m.id != spec.id]
    if others:
        blocks.append({
            "type": "input", "block_id": "compare", "optional": True,
            "label": {"type": "plain_text", "text": "Compare models (optional)"},
            "hint": {"type": "plain_text", "text": "Also run this prompt on up to three other models, side by side in one thread. "
                                                   "Each is charged only if its video arrives."},
            "element": {"type": "multi_static_select", "action_id": "value", **_model_menu(deps, others, lambda m: m.label),
                        "max_selected_items": 3,
                        "placeholder": {"type": "plain_text", "text": "Pick models to compare"}},
        })
    if spec.image_to_video:
        blocks.append({
            "type": "input", "block_id": "image", "optional": True,
            "label": {"type": "plain_text", "text": "Start from an image (optional)"},
            "element": {"type": "file_input", "action_id": "value", "filetypes": ["png", "jpg", "jpeg", "webp"], "max_files": 1},
        })
    if target.channel is None:
        blocks.append({
            "type": "input", "block_id": "channel",
            "label": {"type": "plain_text", "text": "Post it in"},
            "element": {"type": "conversations_select", "action_id": "value", "default_to_current_conversation": True,
                        "filter": {"include": ["public", "private", "im"], "exclude_bot_users": True}},
        })
    else:
        where = f"<#{target.channel}>" if target.channel.startswith(("C", "G")) else "this conversation"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"The video goes into the thread of that message in {where}."}]})
    blocks.append({"type": "context", "block_id": "cost", "elements": [{"type": "mrkdwn", "text": await cost_line(deps, user_id, spec, choices)}]})
    return {
        "type": "modal", "callback_id": MODAL, "private_metadata": target.dump(),
        "title": {"type": "plain_text", "text": title[:24]},
        "submit": {"type": "plain_text", "text": "Generate"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def _selected(values: dict[str, Any], prefix: str, action: str) -> str | None:
    for block_id, actions in values.items():
        if block_id == prefix or block_id.startswith(prefix + ":"):
            option = ((actions or {}).get(action) or {}).get("selected_option") or {}
            value = option.get("value")
            if isinstance(value, str):
                return value
    return None


def read_state(deps: Deps, view: dict[str, Any]) -> tuple[Choices, dict[str, Any]]:
    """The choices in a submitted or changing view, snapped to what the model allows."""
    values = ((view.get("state") or {}).get("values")) or {}
    prompt = prompt_input.read(values)
    base = defaults(deps)
    model = _selected(values, "model", MODEL_ACTION) or base.model
    duration_text = _selected(values, "duration", DURATION_ACTION)
    raw = Choices(
        model=model,
        duration_s=int(duration_text) if duration_text and duration_text.isdigit() else -1,
        resolution=_selected(values, "resolution", RESOLUTION_ACTION) or "",
        aspect=_selected(values, "aspect", ASPECT_ACTION) or "",
        prompt=prompt if isinstance(prompt, str) else "",
    )
    return raw, values


def picked_channel(values: dict[str, Any]) -> str | None:
    selected = (((values.get("channel") or {}).get("value")) or {}).get("selected_conversation")
    return selected if isinstance(selected, str) and selected else None


def picked_compare(values: dict[str, Any]) -> list[str]:
    options = (((values.get("compare") or {}).get("value")) or {}).get("selected_options")
    if not isinstance(options, list):
        return []
    return [o["value"] for o in options if isinstance(o, dict) and isinstance(o.get("value"), str)]


def picked_files(values: dict[str, Any]) -> list[dict[str, Any]]:
    files = (((values.get("image") or {}).get("value")) or {}).get("files")
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def field_for_error(message: str) -> str:
    """Which input an error belongs on, so it shows next to what to change."""
    lowered = message.lower()
    for needle, block in (("aspect", "aspect"), ("resolution", "resolution"), ("can't make a", "duration"),
                          ("length", "duration"), ("model", "model"), ("image", "image")):
        if needle in lowered:
            return block
    return "prompt"


def block_id_for(values: dict[str, Any], field: str) -> str:
    """The submitted view's real block id for a logical field (ids carry the model)."""
    for block_id in values:
        if block_id == field or block_id.startswith(field + ":"):
            return block_id
    return "prompt"


def done_view(text: str) -> dict[str, Any]:
    """What the modal turns into once the request is on its way (or failed after the ack)."""
    return {"type": "modal", "title": {"type": "plain_text", "text": "Generate a video"},
            "close": {"type": "plain_text", "text": "Close"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}]}


@dataclass(frozen=True, slots=True)
class Outcome:
    """errors: inline errors for the ack; job_id when a job was made; image: a file to fetch first."""

    errors: dict[str, str] | None = None
    text: str = ""
    job_id: str | None = None
    image_file: dict[str, Any] | None = None
    pending: tuple[Any, ...] | None = None  # (request, channel, thread_ts, source, dedupe_key)


async def submit(deps: Deps, *, user_id: str, team_id: str | None, view: dict[str, Any]) -> Outcome:
    """Validate a submission; without an image, reserve and create the job before the ack."""
    from pydantic import ValidationError

    from bot.lifecycle import flow
    from bot.surfaces.commands import ACK_WAIT_S
    from bot.errors import BudgetExceeded, InvalidRequest, NotAllowed
    from bot.parsing import JobRequest, strip_controls

    raw, values = read_state(deps, view)
    target = Target.load(view.get("private_metadata"))
    channel = target.channel or picked_channel(values)
    if channel is None:
        return Outcome(errors={"channel": "Pick where the video should be posted."})
    spec = deps.catalog.get(raw.model)
    if spec is None:
        return Outcome(errors={block_id_for(values, "model"): "That model isn't offered any more; pick another."})
    try:
        request = JobRequest.model_validate(
            {"prompt": strip_controls(raw.prompt), "model": spec.id, "duration_s": raw.duration_s,
             "resolution": raw.resolution, "aspect_ratio": raw.aspect},
            context={"catalog": deps.catalog},
        )
    except InvalidRequest as exc:
        message = exc.user_message()
        return Outcome(errors={block_id_for(values, field_for_error(message)): message[:300]})
    except ValidationError as exc:
        return Outcome(errors={"prompt": f"That request isn't valid: {exc.errors()[0]['msg']}"[:300]})
    source = "shortcut" if target.thread_ts else "modal"
    dedupe = f"modal:{view.get('id') or ''}" if view.get("id") else None
    pending = (request, channel, target.thread_ts, source, dedupe)
    files = picked_files(values)
    others = picked_compare(values)
    if others:
        return await _submit_compare(deps, request, others, user_id=user_id, team_id=team_id, channel=channel,
                                     thread_ts=target.thread_ts, source=source, dedupe=dedupe,
                                     values=values, with_image=bool(files))
    try:
        plan = flow.plan_for(deps, request)
    except InvalidRequest as exc:
        return Outcome(errors={block_id_for(values, "duration"): exc.user_message()[:300]})
    if plan is not None:
        if files:
            return Outcome(errors={"image": "A video longer than one clip can't start from an image yet; "
                                            "remove the image or pick a shorter length."})
        return await _submit_plan(deps, request, plan, user_id=user_id, team_id=team_id, channel=channel,
                                  thread_ts=target.thread_ts, source=source, dedupe=dedupe, values=values)
    if files:
        if not spec.image_to_video:
            return Outcome(errors={"image": f"`{spec.id}` can't start from an image; remove it or pick another model."})
        return Outcome(image_file=files[0], pending=pending)
    try:
        job, created = await flow.accept_request(
            deps, request, user_id=user_id, team_id=team_id, channel_id=channel, source=source,
            thread_ts=target.thread_ts, dedupe_key=dedupe, wait_s=ACK_WAIT_S,
        )
    except BudgetExceeded as exc:
        return Outcome(errors={block_id_for(values, "duration"): exc.user_message()[:300]})
    except (InvalidRequest, NotAllowed) as exc:
        return Outcome(errors={"prompt": exc.user_message()[:300]})
    return Outcome(text=f"Got it: job `{job.id}`, {format_usd(job.estimate_micros)} reserved.", job_id=job.id)


async def _submit_plan(deps: Deps, request: JobRequest, plan: Plan, *, user_id: str, team_id: str | None,
                       channel: str, thread_ts: str | None, source: str, dedupe: str | None,
                       values: dict[str, Any]) -> Outcome:
    from bot.lifecycle import flow
    from bot.slack import messages
    from bot.surfaces.commands import ACK_WAIT_S
    from bot.errors import BudgetExceeded, NotAllowed

    try:
        got = await flow.accept_plan(deps, request, plan, user_id=user_id, team_id=team_id, channel_id=channel,
                                     source=source, thread_ts=thread_ts, dedupe_key=dedupe, wait_s=ACK_WAIT_S)
    except BudgetExceeded as exc:
        return Outcome(errors={block_id_for(values, "duration"): exc.user_message()[:300]})
    except (InvalidRequest, NotAllowed) as exc:
        return Outcome(errors={"prompt": exc.user_message()[:300]})
    return Outcome(text=messages.long_video_accepted(plan, got.compare_id or got.jobs[0].id), job_id=got.jobs[0].id)


async def finish_with_image(deps: Deps, *, user_id: str, team_id: str | None, outcome: Outcome) -> str:
    """After the ack: fetch and prepare the image, then reserve and create the job."""
    from bot.lifecycle import flow
    from bot.media import images
    from bot.errors import BudgetExceeded, InvalidRequest, NotAllowed

    assert outcome.pending is not None and outcome.image_file is not None
    request, channel, thread_ts, source, dedupe = outcome.pending
    file = outcome.image_file
    try:
        # by id only: files.info checks the type and size before anything is downloaded
        data, _mime = await images.fetch_slack_file(deps, file_id=file.get("id"))
        image = await images.prepare_image_async(data, spec=request.spec(deps.catalog),
                                                 resolution=request.resolution, aspect=request.aspect_ratio)
        job, _ = await flow.accept_request(
            deps, request, user_id=user_id, team_id=team_id, channel_id=channel, source=source,
            thread_ts=thread_ts, dedupe_key=dedupe, image=image,
        )
    except (InvalidRequest, BudgetExceeded, NotAllowed) as exc:
        deps.metrics.refused(exc)
        return f":warning: {exc.user_message()} Nothing was charged."
    return f"Got it: job `{job.id}`, {format_usd(job.estimate_micros)} reserved. The video will appear in the conversation you picked."


async def _submit_compare(deps: Deps, request: Any, others: list[str], *, user_id: str, team_id: str | None,
                          channel: str, thread_ts: str | None, source: str, dedupe: str | None,
                          values: dict[str, Any], with_image: bool) -> Outcome:
    """"Compare models" picked: the chosen model plus up to three, as one compare request."""
    from bot.lifecycle import compare
    from bot.surfaces.commands import ACK_WAIT_S
    from bot.errors import BudgetExceeded, InvalidRequest, NotAllowed
    from bot.parsing import COMPARE_MAX, request_on

    if with_image:
        return Outcome(errors={"image": "A compare can't start from an image; remove it, or pick no models to compare."})
    if request.model in others or len(set(others)) != len(others) or len(others) + 1 > COMPARE_MAX:
        return Outcome(errors={"compare": f"Pick up to {COMPARE_MAX - 1} other models, each once."})
    try:
        requests = [request]
        for model in others:
            spec = deps.catalog.get(model)
            if spec is None:
                raise InvalidRequest(f"`{model}` isn't offered any more; pick another.")
            requests.append(request_on(deps.catalog, spec, request.prompt, duration=request.duration_s,
                                       resolution=request.resolution, aspect=request.aspect_ratio))
        text = await compare.start(
            deps, requests, user_id=user_id, team_id=team_id, channel_id=channel, source=source,
            thread_ts=thread_ts, response_url=None, dedupe_key=dedupe, wait_s=ACK_WAIT_S,
        )
    except (BudgetExceeded, InvalidRequest, NotAllowed) as exc:
        return Outcome(errors={"compare": exc.user_message()[:300]})
    return Outcome(text=text)
