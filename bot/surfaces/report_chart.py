"""The spend report's chart: a PNG of net spend per budget day stacked by model, with the
workspace cap as a dashed line, a legend, the top users and the summary's lines.

Drawn with Pillow and only its built-in font (no system fonts needed), in integer pixels:
the same report always gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from bot.money import format_usd
from storage.reports import SpendReport

RGB = tuple[int, int, int]

WIDTH, HEIGHT = 1200, 700
# the bars' area: left, top, right, bottom
PLOT = (90, 80, 820, 560)
PANEL_X = 860  # the legend and the top users, right of the plot
SUMMARY_Y = 615  # the summary's lines, under the day labels

BACKGROUND: RGB = (255, 255, 255)
INK: RGB = (33, 37, 41)
MUTED: RGB = (108, 117, 125)
GRID: RGB = (229, 231, 235)
AXIS: RGB = (73, 80, 87)
CAP_LINE: RGB = (200, 0, 90)  # not in PALETTE: a bar never looks like the cap
USER_BAR: RGB = (120, 134, 156)
OTHER: RGB = (189, 189, 189)  # the models past the palette, together
# one colour per model, the biggest spender first (Tableau 10 without its red and grey)
PALETTE: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (188, 189, 34), (23, 190, 207),
)
OTHER_MODELS = "other models"
TOP_USERS = 8
MAX_DAY_LABELS = 16


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow >= 10.1 scales its built-in font; without FreeType it has one fixed size only
    return ImageFont.load_default(size=size)


def model_colours(report: SpendReport) -> dict[str, RGB]:
    """Each model's colour: by net spend in the range, then name; past the palette all share OTHER."""
    spend = {r.model: r.net_micros for r in report.by("model")}
    ordered = sorted(report.models, key=lambda m: (-spend.get(m, 0), m))
    return {m: PALETTE[i] if i < len(PALETTE) else OTHER for i, m in enumerate(ordered)}


def _nice_step(top_micros: int, ticks: int = 5) -> int:
    """A 1-2-5 step (in micros) that splits 0..top into at most `ticks` parts, at least a cent."""
    step = 10_000
    while True:
        for factor in (1, 2, 5):
            if step * factor * ticks >= top_micros:
                return step * factor
        step *= 10


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
         width: int) -> str:
    """`text` cut (with '...') to `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def render_chart(report: SpendReport, *, cap_micros: int | None, tz_name: str, lines: Sequence[str] = ()) -> bytes:
    """The chart as PNG bytes, WIDTH x HEIGHT. `cap_micros` (the workspace's daily cap) draws
    the budget line; None draws none. `lines`: the summary, printed under the chart."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title, body, small = _font(20), _font(14), _font(12)
    left, top, right, bottom = PLOT

    draw.text((left, 20), f"Video spend per budget day, {report.first_day} to {report.last_day}", fill=INK, font=title)
    cap_words = f"dashed line: workspace cap {format_usd(cap_micros)} a day" if cap_micros is not None else "no workspace cap set"
    draw.text((left, 50), f"Net of refunds, stacked by model; days start at 00:00 {tz_name}; {cap_words}",
              fill=MUTED, font=small)

    colours = model_colours(report)
    day_totals = report.day_totals()
    highest = max([*day_totals.values(), cap_micros or 0, 0])
    scale = max(highest, 1_000_000)  # at least $1: a few cents don't fill the chart
    step = _nice_step(scale)
    axis_max = step * -(-scale // step)  # the first tick at or above the highest value
    plot_h = bottom - top

    def y_of(micros: int) -> int:
        return bottom - micros * plot_h // axis_max

    for tick in range(0, axis_max + 1, step):
        y = y_of(tick)
        draw.line([(left, y), (right, y)], fill=GRID if tick else AXIS, width=1)
        label = format_usd(tick)
        draw.text((left - 8 - draw.textlength(label, font=small), y - 7), label, fill=MUTED, font=small)
    draw.line([(left, top), (left, bottom)], fill=AXIS, width=1)

    days = report.days
    slot = (right - left) // max(len(days), 1)
    bar_w = max(2, slot * 7 // 10)
    every = -(-len(days) // MAX_DAY_LABELS)  # label every n-th day when there are many
    for i, day in enumerate(days):
        x0 = left + i * slot + (slot - bar_w) // 2
        base = 0
        # the biggest spender at the bottom of every bar, as in the legend
        for model in colours:
            amount = max(report.daily[day].get(model, 0), 0)
            if amount:
                y_low, y_high = y_of(base), y_of(base + amount)
                if y_high < y_low:  # under a pixel draws nothing rather than a misleading line
                    draw.rectangle([x0, y_high, x0 + bar_w - 1, y_low - 1], fill=colours[model])
                base += amount
        if i % every == 0:
            label = day[5:]  # MM-DD
            draw.text((x0 + bar_w // 2 - draw.textlength(label, font=small) // 2, bottom + 6), label,
                      fill=MUTED, font=small)

    if cap_micros is not None and cap_micros <= axis_max:
        y = y_of(cap_micros)
        for x in range(left, right, 12):  # dashed
            draw.line([(x, y), (min(x + 7, right), y)], fill=CAP_LINE, width=2)
        draw.text((right - 4 - draw.textlength("cap", font=small), y - 16), "cap", fill=CAP_LINE, font=small)

    if not any(day_totals.values()):
        words = "No spend in this range"
        draw.text(((left + right) // 2 - draw.textlength(words, font=body) // 2, (top + bottom) // 2), words,
                  fill=MUTED, font=body)

    _legend_and_users(draw, report, colours, body=body, small=small)

    y = SUMMARY_Y
    for line in lines[:5]:
        draw.text((left, y), _fit(draw, line, small, WIDTH - left - 20), fill=INK, font=small)
        y += 16

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _legend_and_users(draw: ImageDraw.ImageDraw, report: SpendReport, colours: dict[str, RGB], *,
                      body: ImageFont.FreeTypeFont | ImageFont.ImageFont,
                      small: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
    x, y = PANEL_X, PLOT[1]
    width = WIDTH - x - 20
    draw.text((x, y), "Models", fill=INK, font=body)
    y += 24
    spend = {r.model: r.net_micros for r in report.by("model")}
    shown = [m for m, c in colours.items() if c != OTHER]
    rest = [m for m, c in colours.items() if c == OTHER]
    entries = [(m, colours[m], spend.get(m, 0)) for m in shown]
    if rest:
        entries.append((f"{OTHER_MODELS} ({len(rest)})", OTHER, sum(spend.get(m, 0) for m in rest)))
    if not entries:
        draw.text((x, y), "none", fill=MUTED, font=small)
        y += 18
    for name, colour, amount in entries:
        draw.rectangle([x, y + 2, x + 11, y + 13], fill=colour)
        money = format_usd(amount)
        draw.text((x + width - draw.textlength(money, font=small), y), money, fill=INK, font=small)
        draw.text((x + 18, y), _fit(draw, name, small, width - 90), fill=INK, font=small)
        y += 20

    y += 16
    draw.text((x, y), "Top users", fill=INK, font=body)
    y += 24
    top = report.top_users(TOP_USERS)
    if not top:
        draw.text((x, y), "nobody spent anything", fill=MUTED, font=small)
    most = top[0].net_micros if top else 1
    for r in top:
        money = format_usd(r.net_micros)
        draw.text((x, y), _fit(draw, r.user_id, small, width - 90), fill=INK, font=small)
        draw.text((x + width - draw.textlength(money, font=small), y), money, fill=INK, font=small)
        bar = max(1, (width * r.net_micros) // most)
        draw.rectangle([x, y + 17, x + bar - 1, y + 22], fill=USER_BAR)
        y += 32
