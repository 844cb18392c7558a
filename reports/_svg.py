"""Hand-written inline SVG for the report charts.

No scripts, no external fonts or requests: the markup is meant to be embedded in
``report.html`` (HTML5 puts inline ``<svg>`` in the SVG namespace, so no ``xmlns`` is
written). Colours are the Okabe-Ito colour-blind-safe palette; shapes and dash patterns
carry meaning as well so the charts stay readable in greyscale print. Output is
deterministic: coordinates are rounded to 0.1 px and no ids are generated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from thaw.reports._charts import (
    CurveSeries,
    CurvesInfo,
    EfficiencyInfo,
    ParamScatter,
    RangeTestInfo,
)
from thaw.reports._format import html_escape, truncate

OKABE_ITO = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: weak on white paper)
)
COMPLETE_COLOUR = OKABE_ITO[0]
PRUNED_COLOUR = OKABE_ITO[1]
AXIS_COLOUR = "#333333"
GRID_COLOUR = "#dddddd"
FONT = "Helvetica, Arial, sans-serif"
FONT_SIZE = 12
SCATTER_FONT = 15
"""Scatter charts are 480 units wide: 15-unit text is >= 10 px on a 390 px phone."""
LEGEND_ROW = 18
DASHES = ("", "7 4", "2 3", "9 3 2 3", "4 4", "1 2")
"""Dash patterns per series, so lines differ in greyscale print too."""


@dataclass(frozen=True)
class _Scale:
    """Maps data values to pixels (``start`` is the pixel for ``lo``)."""

    lo: float
    hi: float
    log: bool
    start: float
    end: float

    def __call__(self, value: float) -> float:
        a, b, v = self.lo, self.hi, value
        if self.log:
            a, b, v = math.log10(a), math.log10(b), math.log10(value)
        frac = 0.5 if b == a else (v - a) / (b - a)
        return self.start + frac * (self.end - self.start)


def _n(value: float) -> str:
    """Pixel coordinate text: 0.1 px resolution, no ``-0.0``."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _tick_text(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "-0.0") else text


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * magnitude:
            return mult * magnitude
    return 10 * magnitude


def linear_ticks(
    lo: float, hi: float, integer: bool = False, target: int = 5
) -> tuple[float, float, tuple[float, ...]]:
    """``(domain_lo, domain_hi, ticks)``: a padded domain rounded to a 1-2-2.5-5 step."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = 1.0 if integer or lo == 0 else abs(lo) * 0.1
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, target)
    if integer:
        step = max(1.0, float(round(step)))
    d_lo = math.floor(lo / step + 1e-9) * step
    d_hi = math.ceil(hi / step - 1e-9) * step
    count = int(round((d_hi - d_lo) / step))
    ticks = tuple(round(d_lo + i * step, 12) for i in range(count + 1))
    return d_lo, d_hi, ticks


def log_ticks(lo: float, hi: float) -> tuple[float, float, tuple[float, ...]]:
    """``(domain_lo, domain_hi, ticks)`` for a log axis; ``lo`` and ``hi`` must be > 0."""
    if hi < lo:
        lo, hi = hi, lo
    ratio = hi / lo
    pad = ratio**0.05 if ratio > 1 else 1.5
    d_lo, d_hi = lo / pad, hi * pad
    k0, k1 = math.floor(math.log10(d_lo)), math.ceil(math.log10(d_hi))
    ticks: tuple[float, ...] = ()
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = tuple(
            float(f"{m}e{k}")
            for k in range(k0, k1 + 1)
            for m in mantissas
            if d_lo <= m * 10.0**k <= d_hi
        )
        if len(ticks) >= 3:
            break
    while len(ticks) > 8:
        ticks = ticks[::2]
    return d_lo, d_hi, ticks


def _axis_ticks(
    lo: float, hi: float, log: bool, integer: bool = False
) -> tuple[float, float, tuple[float, ...]]:
    return log_ticks(lo, hi) if log else linear_ticks(lo, hi, integer)


def _with_margin(lo: float, hi: float, log: bool, frac: float = 0.03) -> tuple[float, float]:
    """Widen a domain slightly so points on its edge do not sit on the axis line."""
    if log:
        a, b = math.log10(lo), math.log10(hi)
        pad = (b - a) * frac
        return 10 ** (a - pad), 10 ** (b + pad)
    pad = (hi - lo) * frac
    return lo - pad, hi + pad


def _open_svg(width: int, height: int, title: str, font_size: int = FONT_SIZE) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{html_escape(title)}" font-family="{FONT}" '
        f'font-size="{font_size}">',
        f"<title>{html_escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]


def _axes(
    x: _Scale,
    y: _Scale,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    x_label: str,
    y_label: str,
    x_tick_labels: Sequence[str] | None = None,
    font_size: int = FONT_SIZE,
) -> list[str]:
    """Grid, axis lines, tick labels and axis titles for the plot area x.start..x.end."""
    k = font_size / FONT_SIZE
    left, right, bottom, top = x.start, x.end, y.start, y.end
    out = ['<g class="grid" stroke="#dddddd" stroke-width="1">']
    out += [
        f'<line x1="{_n(left)}" y1="{_n(y(t))}" x2="{_n(right)}" y2="{_n(y(t))}"/>' for t in y_ticks
    ]
    out.append("</g>")
    out.append(
        f'<path d="M{_n(left)},{_n(top)} V{_n(bottom)} H{_n(right)}" fill="none" '
        f'stroke="{AXIS_COLOUR}" stroke-width="1.2"/>'
    )
    out.append(f'<g class="ticks" fill="{AXIS_COLOUR}" stroke="none">')
    labels = x_tick_labels if x_tick_labels is not None else [_tick_text(t) for t in x_ticks]
    for tick, label in zip(x_ticks, labels, strict=True):
        px = x(tick)
        out.append(
            f'<line x1="{_n(px)}" y1="{_n(bottom)}" x2="{_n(px)}" y2="{_n(bottom + 5)}" '
            f'stroke="{AXIS_COLOUR}"/>'
        )
        out.append(
            f'<text x="{_n(px)}" y="{_n(bottom + 18 * k)}" text-anchor="middle">'
            f"{html_escape(truncate(label, 14))}</text>"
        )
    for tick in y_ticks:
        py = y(tick)
        out.append(
            f'<line x1="{_n(left - 5)}" y1="{_n(py)}" x2="{_n(left)}" y2="{_n(py)}" '
            f'stroke="{AXIS_COLOUR}"/>'
        )
        out.append(
            f'<text x="{_n(left - 8)}" y="{_n(py + 4 * k)}" text-anchor="end">'
            f"{html_escape(_tick_text(tick))}</text>"
        )
    out.append("</g>")
    mid_x, mid_y = (left + right) / 2, (top + bottom) / 2
    out.append(
        f'<text x="{_n(mid_x)}" y="{_n(bottom + 40 * k)}" text-anchor="middle" '
        f'font-weight="bold">{html_escape(x_label)}</text>'
    )
    y_pos = _n(left - 52 * k)
    out.append(
        f'<text x="{y_pos}" y="{_n(mid_y)}" text-anchor="middle" font-weight="bold" '
        f'transform="rotate(-90 {y_pos} {_n(mid_y)})">{html_escape(y_label)}</text>'
    )
    return out


SERIES_COLOURS = OKABE_ITO[:7]
"""Line colours in order (Okabe-Ito without yellow, which is too weak on white)."""
MARKERS = ("circle", "square", "triangle", "diamond", "down")
"""Best-epoch marker shapes per series (with colour and dash they tell series apart)."""
CHART_FONT = 16
"""Font size of the wide charts (viewBox units): at a 390 px phone width they still show
text >= 10 px, since the viewBox is at most :data:`CHART_WIDTH` wide."""
CHART_WIDTH = 560


def series_style(index: int) -> tuple[str, str, str]:
    """``(colour, dash pattern, marker)`` of the ``index``-th series: the three cycle at
    different lengths (7, 6, 5), so any two of the first 42 series differ in something."""
    return (
        SERIES_COLOURS[index % len(SERIES_COLOURS)],
        DASHES[index % len(DASHES)],
        MARKERS[index % len(MARKERS)],
    )


def render_curves_svg(info: CurvesInfo, *, train: bool = True, title: str | None = None) -> str:
    """Validation loss per epoch (thick line), one colour, dash pattern and marker per trial;
    with ``train``, training loss as a thin faded line of the same colour.

    The series' marker sits on its best epoch; a cross marks where a pruned trial stopped.
    The legend is below the plot, so the chart stays legible on a phone. Returns an empty
    string when there is nothing to draw.
    """
    values = [
        v
        for s in info.series
        for v in (*s.val_loss, *(s.train_loss if train else ()))
        if v is not None
    ]
    if not values or info.max_epoch == 0:
        return ""
    fs = CHART_FONT
    row = round(fs * 1.5)
    width, left, right, top = CHART_WIDTH, 84, CHART_WIDTH - 16, 14
    plot_h = 260
    bottom = top + plot_h
    legend_top = bottom + 3 * fs + 12
    n_keys = 3 if train else 2
    n_rows = len(info.series) + n_keys
    height = legend_top + row * n_rows + 8

    y_lo, y_hi, y_ticks = _axis_ticks(min(values), max(values), info.y_log)
    max_epoch = info.max_epoch
    x_lo, x_hi = (0.5, 1.5) if max_epoch == 1 else (1.0, float(max_epoch))
    x_ticks = tuple(
        t for t in linear_ticks(1, max(max_epoch, 2), integer=True)[2] if x_lo <= t <= x_hi
    )
    x = _Scale(x_lo, x_hi, False, left, right)
    y = _Scale(*_with_margin(y_lo, y_hi, info.y_log), info.y_log, bottom, top)

    out = _open_svg(width, height, title or "Learning curves: loss per epoch", fs)
    out += _axes(x, y, x_ticks, y_ticks, info.x_label, info.y_label, font_size=fs)
    for i, series in enumerate(info.series):
        colour, dash, marker = series_style(i)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="series" stroke="{colour}" fill="{colour}">')
        out.append(f"<title>{html_escape(_series_title(series))}</title>")
        if train:
            out += _polyline(
                series.epochs, series.train_loss, x, y, 'stroke-width="1.2" stroke-opacity="0.4"'
            )
        out += _polyline(series.epochs, series.val_loss, x, y, f'stroke-width="2.6"{dash_attr}')
        best = _value_at(series, series.best_epoch, exact=True)
        if best is not None:
            out.append(_marker(marker, x(best[0]), y(best[1]), 5.5))
        stop = _value_at(series, series.stopped_epoch, exact=False)
        if stop is not None:
            out.append(_cross(x(stop[0]), y(stop[1]), 7))
        out.append("</g>")

    lx = 12.0
    out.append('<g class="legend">')
    for i, series in enumerate(info.series):
        colour, dash, marker = series_style(i)
        row_y = legend_top + i * row
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<g stroke="{colour}" fill="{colour}"><line x1="{_n(lx)}" y1="{_n(row_y)}" '
            f'x2="{_n(lx + 40)}" y2="{_n(row_y)}" stroke-width="2.6"{dash_attr}/>'
            f"{_marker(marker, lx + 20, row_y, 5.5)}</g>"
        )
        out.append(
            f'<text x="{_n(lx + 50)}" y="{_n(row_y + fs * 0.35)}">'
            f"{html_escape(truncate(_legend_label(series), 52))}</text>"
        )
    key_y = legend_top + len(info.series) * row
    keys = [
        (
            f'<line x1="{_n(lx)}" y1="{_n(key_y)}" x2="{_n(lx + 40)}" y2="{_n(key_y)}" '
            f'stroke="{AXIS_COLOUR}" stroke-width="2.6"/>',
            "validation loss; the marker is the best epoch",
        )
    ]
    if train:
        keys.append(
            (
                f'<line x1="{_n(lx)}" y1="{_n(key_y + row)}" x2="{_n(lx + 40)}" '
                f'y2="{_n(key_y + row)}" stroke="{AXIS_COLOUR}" stroke-width="1.2" '
                'stroke-opacity="0.4"/>',
                "training loss (thin, faded)",
            )
        )
    cross_y = key_y + row * len(keys)
    keys.append(
        (
            f'<g stroke="{AXIS_COLOUR}">{_cross(lx + 20, cross_y, 7)}</g>',
            "pruned: stopped here",
        )
    )
    for k, (shape, text) in enumerate(keys):
        out.append(shape)
        out.append(f'<text x="{_n(lx + 50)}" y="{_n(key_y + k * row + fs * 0.35)}">{text}</text>')
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _marker(shape: str, cx: float, cy: float, r: float) -> str:
    edge = 'stroke="#ffffff" stroke-width="1"'
    if shape == "circle":
        return f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{_n(r)}" {edge}/>'
    if shape == "square":
        return (
            f'<rect x="{_n(cx - r)}" y="{_n(cy - r)}" width="{_n(2 * r)}" '
            f'height="{_n(2 * r)}" {edge}/>'
        )
    if shape == "diamond":
        return (
            f'<path d="M{_n(cx)},{_n(cy - r * 1.3)} L{_n(cx + r * 1.3)},{_n(cy)} '
            f'L{_n(cx)},{_n(cy + r * 1.3)} L{_n(cx - r * 1.3)},{_n(cy)} Z" {edge}/>'
        )
    if shape == "down":
        return (
            f'<path d="M{_n(cx)},{_n(cy + r * 1.2)} L{_n(cx + r * 1.2)},{_n(cy - r)} '
            f'L{_n(cx - r * 1.2)},{_n(cy - r)} Z" {edge}/>'
        )
    return f'<path d="{_triangle(cx, cy, r * 1.2)}" {edge}/>'


def render_scatter_svg(scatter: ParamScatter, y_label: str, y_log: bool) -> str:
    """One parameter (x) against best validation loss (y) for every plotted trial.

    Filled circles are COMPLETE trials, hollow triangles PRUNED ones, a ring marks rank 1.
    Returns an empty string when no trial can be plotted.
    """
    if not scatter.points:
        return ""
    fs = SCATTER_FONT
    width, left, right, top, bottom = 480, 84, 466, 52, 282
    height = bottom + 64
    ys = [p.y for p in scatter.points]
    y_lo, y_hi, y_ticks = _axis_ticks(min(ys), max(ys), y_log)
    y = _Scale(*_with_margin(y_lo, y_hi, y_log), y_log, bottom, top + 8)

    tick_labels: list[str] | None = None
    if scatter.kind == "categorical":
        n = len(scatter.categories)
        x = _Scale(-0.5, n - 0.5, False, left, right)
        x_ticks: tuple[float, ...] = tuple(float(i) for i in range(n))
        tick_labels = list(scatter.categories)
    else:
        xs = [p.x for p in scatter.points]
        x_lo, x_hi, x_ticks = _axis_ticks(
            min(xs), max(xs), scatter.log_x, integer=scatter.kind == "int"
        )
        x = _Scale(*_with_margin(x_lo, x_hi, scatter.log_x), scatter.log_x, left, right)

    title = f"{scatter.param} against best validation loss"
    out = _open_svg(width, height, title, fs)
    out += _axes(x, y, x_ticks, y_ticks, scatter.x_label, y_label, tick_labels, font_size=fs)
    out.append('<g class="points">')
    # Pruned first so completed trials are drawn on top.
    for point in sorted(scatter.points, key=lambda p: (p.state == "COMPLETE", p.number)):
        px, py = x(point.x), y(point.y)
        tip = html_escape(
            f"trial {point.number} ({point.state.lower()}): "
            f"{scatter.param}={point.x_text}, best val loss {point.y:.4g}"
        )
        if point.state == "COMPLETE":
            shape = (
                f'<circle cx="{_n(px)}" cy="{_n(py)}" r="4.5" fill="{COMPLETE_COLOUR}" '
                'fill-opacity="0.85" stroke="#ffffff" stroke-width="0.8">'
                f"<title>{tip}</title></circle>"
            )
        else:
            shape = (
                f'<path d="{_triangle(px, py, 5.5)}" fill="none" stroke="{PRUNED_COLOUR}" '
                f'stroke-width="1.6"><title>{tip}</title></path>'
            )
        out.append(shape)
        if point.rank == 1:
            out.append(
                f'<circle cx="{_n(px)}" cy="{_n(py)}" r="9" fill="none" '
                f'stroke="{AXIS_COLOUR}" stroke-width="1.5"/>'
            )
    out.append("</g>")
    out.append(
        '<g class="legend">'
        f'<circle cx="20" cy="14" r="4.5" fill="{COMPLETE_COLOUR}"/>'
        '<text x="30" y="19">complete</text>'
        f'<circle cx="140" cy="14" r="8" fill="none" stroke="{AXIS_COLOUR}" '
        'stroke-width="1.5"/>'
        '<text x="154" y="19">rank 1</text>'
        f'<path d="{_triangle(20, 36, 5.5)}" fill="none" stroke="{PRUNED_COLOUR}" '
        'stroke-width="1.6"/>'
        '<text x="30" y="41">pruned (best before stopping)</text>'
        "</g>"
    )
    out.append("</svg>")
    return "\n".join(out)


def render_efficiency_svg(info: EfficiencyInfo, compact: bool = False) -> str:
    """Best score so far (step line) against cumulative epochs spent, one line per study.

    Each study has its own colour and dash pattern; a dot marks every improvement and a
    ring the point where the study's final best was reached. Empty string: nothing to draw.
    ``compact``: one study in a report, no legend, :data:`CHART_WIDTH` wide with
    :data:`CHART_FONT` text (at least 10 px on a phone).
    """
    curves = [c for c in info.curves if c.points]
    if not curves:
        return ""
    values = [v for c in curves for _, v in c.points]
    max_x = max(c.total_epochs for c in curves)
    min_x = min(c.points[0][0] for c in curves)
    legend_rows = len(info.curves) + 2
    width, left, right_margin, top, bottom_margin = 780, 72, 250, 16, 58
    height = max(360, top + LEGEND_ROW * legend_rows + bottom_margin)
    font_size = FONT_SIZE
    if compact:
        width, left, right_margin, top, bottom_margin = CHART_WIDTH, 84, 16, 14, 64
        height, font_size = 320, CHART_FONT
    right, bottom = width - right_margin, height - bottom_margin

    y_lo, y_hi, y_ticks = _axis_ticks(min(values), max(values), info.y_log)
    x_lo, x_hi, x_ticks = linear_ticks(0, max(max_x, min_x, 1), integer=True)
    x = _Scale(x_lo, x_hi, False, left, right)
    y = _Scale(*_with_margin(y_lo, y_hi, info.y_log), info.y_log, bottom, top)

    out = _open_svg(
        width, height, "Search efficiency: best score against epochs spent", font_size=font_size
    )
    out += _axes(x, y, x_ticks, y_ticks, info.x_label, info.y_label, font_size=font_size)
    for i, curve in enumerate(info.curves):
        if not curve.points:
            continue
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        dash = DASHES[i % len(DASHES)]
        style = 'stroke-width="2.2"' + (f' stroke-dasharray="{dash}"' if dash else "")
        coords: list[tuple[float, float]] = []
        previous: float | None = None
        improvements: list[tuple[float, float]] = []
        for epochs, best in curve.points:
            if previous is not None and best != previous:
                coords.append((x(epochs), y(previous)))
            if previous is None or best != previous:
                improvements.append((x(epochs), y(best)))
            coords.append((x(epochs), y(best)))
            previous = best
        if curve.total_epochs > curve.points[-1][0] and previous is not None:
            coords.append((x(curve.total_epochs), y(previous)))
        points = " ".join(f"{_n(px)},{_n(py)}" for px, py in _dedupe(coords))
        tip = html_escape(
            f"{curve.label}: best {_tick_text(curve.best or 0.0)} after "
            f"{curve.epochs_to_best} of {curve.total_epochs} epochs"
        )
        out.append(f'<g class="series" stroke="{colour}" fill="{colour}">')
        out.append(f"<title>{tip}</title>")
        out.append(f'<polyline points="{points}" fill="none" {style}/>')
        out += [
            f'<circle cx="{_n(px)}" cy="{_n(py)}" r="2.5" stroke="none"/>'
            for px, py in improvements
        ]
        if curve.epochs_to_best is not None and curve.best is not None:
            out.append(
                f'<circle cx="{_n(x(curve.epochs_to_best))}" cy="{_n(y(curve.best))}" r="7" '
                'fill="none" stroke-width="1.8"/>'
            )
        out.append("</g>")
    if compact:
        out.append("</svg>")
        return "\n".join(out)

    lx, ly = right + 18, top + 8
    out.append('<g class="legend">')
    for i, curve in enumerate(info.curves):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        dash = DASHES[i % len(DASHES)]
        row_y = ly + i * LEGEND_ROW
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{_n(lx)}" y1="{_n(row_y)}" x2="{_n(lx + 24)}" y2="{_n(row_y)}" '
            f'stroke="{colour}" stroke-width="2.2"{dash_attr}/>'
        )
        out.append(
            f'<text x="{_n(lx + 30)}" y="{_n(row_y + 4)}">'
            f"{html_escape(truncate(curve.label, 34) + ('' if curve.points else ' - no score'))}"
            "</text>"
        )
    key_y = ly + (len(info.curves) + 0.5) * LEGEND_ROW
    out.append(
        f'<circle cx="{_n(lx + 12)}" cy="{_n(key_y)}" r="2.5" fill="{AXIS_COLOUR}"/>'
        f'<text x="{_n(lx + 30)}" y="{_n(key_y + 4)}">new best</text>'
    )
    key_y += LEGEND_ROW
    out.append(
        f'<circle cx="{_n(lx + 12)}" cy="{_n(key_y)}" r="7" fill="none" '
        f'stroke="{AXIS_COLOUR}" stroke-width="1.8"/>'
        f'<text x="{_n(lx + 30)}" y="{_n(key_y + 4)}">final best reached</text>'
    )
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _dedupe(coords: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drop consecutive points that round to the same pixel."""
    out: list[tuple[float, float]] = []
    for point in coords:
        if not out or (_n(point[0]), _n(point[1])) != (_n(out[-1][0]), _n(out[-1][1])):
            out.append(point)
    return out


def _polyline(
    epochs: Sequence[int], values: Sequence[float | None], x: _Scale, y: _Scale, style: str
) -> list[str]:
    """Lines through consecutive finite points; gaps where values are missing."""
    out: list[str] = []
    segment: list[tuple[float, float]] = []
    for epoch, value in [*zip(epochs, values, strict=True), (0, None)]:
        if value is not None:
            segment.append((x(epoch), y(value)))
            continue
        if len(segment) == 1:
            px, py = segment[0]
            out.append(f'<circle cx="{_n(px)}" cy="{_n(py)}" r="2" stroke="none"/>')
        elif segment:
            points = " ".join(f"{_n(px)},{_n(py)}" for px, py in segment)
            out.append(f'<polyline points="{points}" fill="none" {style}/>')
        segment = []
    return out


def _value_at(series: CurveSeries, epoch: int | None, exact: bool) -> tuple[int, float] | None:
    """Validation loss at ``epoch``; with ``exact=False`` the last finite value up to it."""
    if epoch is None or epoch < 1:
        return None
    upto = min(epoch, len(series.val_loss))
    if exact:
        value = series.val_loss[epoch - 1] if epoch <= len(series.val_loss) else None
        return None if value is None else (epoch, value)
    for i in range(upto - 1, -1, -1):
        value = series.val_loss[i]
        if value is not None:
            return (i + 1, value)
    return None


def _cross(cx: float, cy: float, size: float) -> str:
    return (
        f'<path d="M{_n(cx - size)},{_n(cy - size)} L{_n(cx + size)},{_n(cy + size)} '
        f'M{_n(cx - size)},{_n(cy + size)} L{_n(cx + size)},{_n(cy - size)}" '
        'fill="none" stroke-width="2.4"/>'
    )


def _triangle(cx: float, cy: float, size: float) -> str:
    return (
        f"M{_n(cx)},{_n(cy - size)} L{_n(cx + size)},{_n(cy + size * 0.8)} "
        f"L{_n(cx - size)},{_n(cy + size * 0.8)} Z"
    )


def _legend_label(series: CurveSeries) -> str:
    label = series.label
    if series.state == "PRUNED":
        reason = series.prune_reason or "pruned"
        label += f" (pruned e{series.stopped_epoch}: {reason})"
    return label


def _series_title(series: CurveSeries) -> str:
    text = f"trial {series.number}"
    if series.strategy is not None:
        text += f", strategy {series.strategy}"
    if series.best_epoch is not None:
        text += f", best epoch {series.best_epoch}"
    if series.state == "PRUNED":
        text += f", pruned at epoch {series.stopped_epoch} ({series.prune_reason or 'no reason'})"
    return text


def render_range_test_svg(info: RangeTestInfo) -> str:
    """The learning-rate range test: smoothed training loss against the rate (log scale), one
    line per BatchNorm mode, a marker at each suggested rate. Empty when nothing to draw."""
    rates = [r for c in info.curves for r in c.learning_rates]
    losses = [v for c in info.curves for v in c.losses if v is not None]
    if not rates or not losses:
        return ""
    fs = CHART_FONT
    row = round(fs * 1.5)
    width, left, right, top = CHART_WIDTH, 84, CHART_WIDTH - 16, 14
    bottom = top + 240
    legend_top = bottom + 3 * fs + 12
    height = legend_top + row * (len(info.curves) + 1) + 8
    x_lo, x_hi, x_ticks = log_ticks(min(rates), max(rates))
    y_lo, y_hi, y_ticks = _axis_ticks(min(losses), max(losses), False)
    x = _Scale(x_lo, x_hi, True, left, right)
    y = _Scale(*_with_margin(y_lo, y_hi, False), False, bottom, top)
    out = _open_svg(width, height, "Learning-rate range test: loss against the rate", fs)
    out += _axes(
        x, y, x_ticks, y_ticks, "learning rate (log scale)", "smoothed train loss", None, fs
    )
    for i, curve in enumerate(info.curves):
        colour, dash, marker = series_style(i)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="series" stroke="{colour}" fill="{colour}">')
        out.append(f"<title>BatchNorm {html_escape(curve.batchnorm)}</title>")
        points = [
            (x(r), y(v))
            for r, v in zip(curve.learning_rates, curve.losses, strict=True)
            if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{_n(px)},{_n(py)}" for px, py in points)
            out.append(f'<polyline points="{path}" fill="none" stroke-width="2.4"{dash_attr}/>')
        if curve.suggestion is not None and x_lo <= curve.suggestion <= x_hi:
            px = x(curve.suggestion)
            out.append(
                f'<line x1="{_n(px)}" y1="{_n(top)}" x2="{_n(px)}" y2="{_n(bottom)}" '
                'stroke-width="1" stroke-dasharray="3 3"/>'
            )
            out.append(_marker(marker, px, top + 8, 5.5))
        out.append("</g>")
    out.append('<g class="legend">')
    lx = 12.0
    for i, curve in enumerate(info.curves):
        colour, dash, marker = series_style(i)
        row_y = legend_top + i * row
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        suggestion = (
            f"suggests {_tick_text(curve.suggestion)}"
            if curve.suggestion is not None
            else "no rate"
        )
        out.append(
            f'<g stroke="{colour}" fill="{colour}"><line x1="{_n(lx)}" y1="{_n(row_y)}" '
            f'x2="{_n(lx + 40)}" y2="{_n(row_y)}" stroke-width="2.4"{dash_attr}/>'
            f"{_marker(marker, lx + 20, row_y, 5.5)}</g>"
        )
        out.append(
            f'<text x="{_n(lx + 50)}" y="{_n(row_y + fs * 0.35)}">'
            f"{html_escape(truncate(f'BatchNorm {curve.batchnorm}: {suggestion}', 52))}</text>"
        )
    key_y = legend_top + len(info.curves) * row
    out.append(
        f'<text x="{_n(lx + 50)}" y="{_n(key_y + fs * 0.35)}">dashed line: the suggested rate '
        "(a tenth of the minimum's)</text>"
    )
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
