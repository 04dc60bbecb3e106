"""Long videos: how a requested length is split into segments a model can make, and what it costs.

A model makes clips up to its longest length; a longer video is a first clip plus segments
that continue it. The route is the model's, not the request's: native extension when the
catalog gives the model `extend_seconds` (capped by its `max_total_seconds`), otherwise
image-to-video from the previous segment's last frame when it takes an image (capped only by
SORA_MAX_VIDEO_SECONDS), otherwise no long videos at all. Only planning lives here: nothing is
charged or submitted, so a caller can show the plan (and reserve its cost) before any of it.

The split: the longest total not above the request that the allowed lengths can make (the
request itself when possible; a shorter one is said in the plan's text, never a longer one,
because that would charge more than was asked), then the fewest segments, then lengths as even
as possible, largest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.catalog import ModelSpec
from bot.errors import InvalidRequest
from bot.money import format_usd

Continuation = Literal["first", "extend", "last_frame"]

PROMPT_SEPARATOR = "||"


@dataclass(frozen=True, slots=True)
class Segment:
    index: int  # 0-based, in playing order
    seconds: int
    prompt: str
    continuation: Continuation  # how it follows the one before ("first" for the opening clip)
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Plan:
    model_id: str
    resolution: str
    requested_seconds: int
    segments: tuple[Segment, ...]

    @property
    def total_seconds(self) -> int:
        return sum(s.seconds for s in self.segments)

    @property
    def cost_micros(self) -> int:
        """What the whole plan costs: reserve this once, before the first segment."""
        return sum(s.cost_micros for s in self.segments)

    def text(self) -> str:
        """'30 s as 4 segments on `veo-3.1` (8 + 8 + 7 + 7 s), $12.00 in all', plus why when the
        total is shorter than asked."""
        n = len(self.segments)
        if n == 1:
            line = f"{self.total_seconds} s in one clip on `{self.model_id}`, {format_usd(self.cost_micros)} in all"
        else:
            lengths = " + ".join(str(s.seconds) for s in self.segments)
            line = (f"{self.total_seconds} s as {n} segments on `{self.model_id}` ({lengths} s), "
                    f"{format_usd(self.cost_micros)} in all")
        if self.total_seconds != self.requested_seconds:
            line += (f"; {self.requested_seconds} s can't be made from its clip lengths, "
                     f"so this is the nearest below")
        return line


def longest_video(spec: ModelSpec, *, max_video_seconds: int) -> int:
    """The longest video `plan_video` can plan on this model (at its longest clip length)."""
    if spec.extend_seconds:
        return min(spec.max_total_seconds, max_video_seconds)
    if spec.image_to_video:
        return max_video_seconds
    return min(max(spec.durations), max_video_seconds)


# The round lengths a menu offers beyond one clip (a person may still type any length).
MENU_LENGTHS = (10, 12, 15, 20, 24, 30, 40, 45, 60, 90, 120, 180, 240, 300, 420, 600)


def menu_lengths(spec: ModelSpec, resolution: str, *, max_video_seconds: int) -> list[int]:
    """Lengths past this model's longest clip that a length menu offers, up to the longest
    video it can plan (itself offered, so the menu reaches the limit)."""
    top = spec.allowed_durations(resolution)[-1]
    longest = longest_video(spec, max_video_seconds=max_video_seconds)
    picks = [d for d in MENU_LENGTHS if top < d <= longest]
    if longest > top and longest not in picks:
        picks.append(longest)
    return picks


def plan_video(
    spec: ModelSpec,
    total_seconds: int,
    prompt: str,
    *,
    max_video_seconds: int,
    resolution: str | None = None,
    others: Iterable[ModelSpec] = (),
) -> Plan:
    """Plan `total_seconds` of video on this model as segments, priced at `resolution`.

    A length within one clip is a one-segment plan, so callers can always plan. `prompt` may
    direct each segment: `a || b || c`; fewer parts than segments and the last part carries
    on. `others` (the offered models) only feed the suggestion in a refusal. Raises
    InvalidRequest, naming the limit, when the length or the prompt can't be planned.
    """
    res = resolution or spec.default_resolution
    if res not in spec.prices_micros:
        raise InvalidRequest(f"`{spec.id}` doesn't offer {res}; it offers {', '.join(spec.resolutions)}.")
    if isinstance(total_seconds, bool) or not isinstance(total_seconds, int) or total_seconds < 1:
        raise InvalidRequest(f"A video's length is a whole number of seconds, at least 1; got {total_seconds!r}.")
    if total_seconds > max_video_seconds:
        raise InvalidRequest(f"You asked for {total_seconds} s, and {max_video_seconds} s is the longest video "
                             f"here (SORA_MAX_VIDEO_SECONDS); ask for {max_video_seconds} s or less.")
    clips = spec.allowed_durations(res)
    if total_seconds <= clips[-1]:
        lengths, how = _one_clip(spec, total_seconds, clips, res), "first"
    else:
        how = _continuation(spec, total_seconds, others, max_video_seconds=max_video_seconds)
        following = spec.extend_seconds if how == "extend" else clips
        lengths = _split(total_seconds, clips, following)
    prompts = _segment_prompts(prompt, len(lengths))
    segments = tuple(
        Segment(index=i, seconds=s, prompt=prompts[i], continuation="first" if i == 0 else how,
                cost_micros=spec.cost_micros(res, s))
        for i, s in enumerate(lengths)
    )
    return Plan(model_id=spec.id, resolution=res, requested_seconds=total_seconds, segments=segments)


def _one_clip(spec: ModelSpec, total_seconds: int, clips: Sequence[int], res: str) -> tuple[int, ...]:
    fitting = [d for d in clips if d <= total_seconds]
    if not fitting:
        raise InvalidRequest(f"`{spec.id}` makes clips of {spec.durations_text(res)} at {res}, so {total_seconds} s "
                             f"isn't possible; ask for at least {clips[0]} s.")
    return (fitting[-1],)


def _continuation(spec: ModelSpec, total_seconds: int, others: Iterable[ModelSpec], *,
                  max_video_seconds: int) -> Continuation:
    """How this model continues a clip, or a refusal naming its limit."""
    if spec.extend_seconds:
        if total_seconds > spec.max_total_seconds:
            raise InvalidRequest(
                f"`{spec.id}` can extend a video to at most {spec.max_total_seconds} s, so {total_seconds} s "
                f"isn't possible; ask for {spec.max_total_seconds} s or less"
                f"{_instead(spec, total_seconds, others, max_video_seconds)}.")
        return "extend"
    if spec.image_to_video:
        return "last_frame"
    longest = max(spec.durations)
    raise InvalidRequest(
        f"`{spec.id}` can make at most {longest} s in one clip and can't continue a clip (no extension "
        f"and no image input), so {total_seconds} s isn't possible; ask for {longest} s or less"
        f"{_instead(spec, total_seconds, others, max_video_seconds)}.")


def _instead(spec: ModelSpec, total_seconds: int, others: Iterable[ModelSpec], max_video_seconds: int) -> str:
    for other in others:
        longest = longest_video(other, max_video_seconds=max_video_seconds)
        if other.id != spec.id and longest >= total_seconds:
            return f", or pick {other.id} (up to {longest} s)"
    return ""


def _split(total: int, first: Sequence[int], following: Sequence[int]) -> tuple[int, ...]:
    """Lengths (a `first` clip, then `following` ones) for the longest total not above `total`:
    fewest segments, then the smallest sum of squares (the most even), then largest first."""
    # fewest following segments that sum to s, for every s up to total (None: can't)
    fewest: list[int | None] = [0] + [None] * total
    for s in range(1, total + 1):
        counts = [fewest[s - r] for r in following if r <= s and fewest[s - r] is not None]
        fewest[s] = min(counts) + 1 if counts else None  # type: ignore[operator]

    def segments_for(t: int) -> int | None:
        counts = [fewest[t - f] for f in first if f <= t and fewest[t - f] is not None]
        return min(counts) + 1 if counts else None  # type: ignore[operator]

    # the caller only splits what is longer than one clip, so the longest clip always fits
    target = next(t for t in range(total, 0, -1) if segments_for(t) is not None)
    n = segments_for(target)
    assert n is not None
    # squares[j][s]: the smallest sum of squares of j following lengths summing to s
    squares: list[dict[int, int]] = [{0: 0}]
    for _ in range(n - 1):
        step: dict[int, int] = {}
        for s, sq in squares[-1].items():
            for r in following:
                if s + r <= target and sq + r * r < step.get(s + r, 1 << 62):
                    step[s + r] = sq + r * r
        squares.append(step)
    rest_of = squares[n - 1]
    best_first = min((f for f in first if target - f in rest_of),
                     key=lambda f: (f * f + rest_of[target - f], -f))
    lengths = [best_first]
    s, j = target - best_first, n - 1
    while j:
        # the largest next length that still completes an optimal split: largest first
        r = max(r for r in following
                if s - r in squares[j - 1] and squares[j - 1][s - r] + r * r == squares[j][s])
        lengths.append(r)
        s, j = s - r, j - 1
    return tuple(lengths)


def _segment_prompts(prompt: str, count: int) -> list[str]:
    """One prompt per segment from `a || b || c`; the last part carries on to the end."""
    if PROMPT_SEPARATOR not in prompt:
        return [prompt] * count
    parts = [p.strip() for p in prompt.split(PROMPT_SEPARATOR)]
    empty = [i + 1 for i, p in enumerate(parts) if not p]
    if empty:
        raise InvalidRequest(f"Part {empty[0]} of the prompt is empty; write something between each "
                             f"`{PROMPT_SEPARATOR}`, one part per segment.")
    if len(parts) > count:
        noun = "one clip" if count == 1 else f"{count} segments"
        raise InvalidRequest(f"The prompt has {len(parts)} parts (split by `{PROMPT_SEPARATOR}`), but this video "
                             f"is {noun}; use at most {count} part{'s' if count != 1 else ''}.")
    return parts + [parts[-1]] * (count - len(parts))
