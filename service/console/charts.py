"""Server-side SVG charts (inline in the page: no JavaScript, no external asset).

Generic building blocks for any console page:

* ``nice_ticks(lo, hi)``: round tick values covering [lo, hi];
* ``forest_plot(rows, x_label=...)``: one horizontal interval per row
  (estimate marker + interval line), a zero line, labelled x axis;
* ``interval_series(x_labels, series, y_label=...)``: lines with shaded
  interval bands over an ordinal x axis (days), a zero line;
* ``guardrail_plot(checks, harm_below=...)``: a guarded rollout's guardrail
  over its checks: estimate, confidence sequence, zero line, the harm side
  shaded and named, the steps as separators.
* ``monthly_bars(months, series, y_label=...)``: small grouped bars per
  month (one group per month, one bar per series, each bar patterned and
  labelled with its value), for dashboards.

Every chart has ``role="img"`` with a <title> and <desc> (screen readers),
axis labels with units, and never uses colour alone: series also differ by
marker shape and dash pattern, and rows carry a text label (e.g. the
verdict). Colours come from one palette with at least 4.5:1 contrast on
white. Numbers are formatted by the caller-supplied ``fmt``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#1f5fa8", "#b34700", "#2d7d46", "#7a3ea1", "#8a6d00", "#a4243b")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "4 4", "1 2")
SHAPES = ("circle", "square", "diamond", "triangle", "circle", "square")
INK = "#1a1a1a"
MUTED = "#595959"
GRID = "#d9d9d9"


def percent(value: float, digits: int = 1) -> str:
    return f"{value * 100:+.{digits}f} %"


def points(value: float, digits: int = 2) -> str:
    """A difference of two proportions in percentage points (0.0123 -> ``+1.23 pts``)."""
    return f"{value * 100:+.{digits}f} pts"


def tick_format(ticks: Sequence[float], fmt: Callable[[float], str]) -> Callable[[float], str]:
    """Tick labels as short as the tick step allows (``+50 %`` rather than ``+50.0 %``)."""
    if fmt not in (percent, points) or len(ticks) < 2:
        return fmt
    step = abs(ticks[1] - ticks[0]) * 100
    digits = 0 if step >= 1 else min(3, max(1, -math.floor(math.log10(step))))
    return lambda v: fmt(v, digits)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values spanning [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


@dataclass
class Scale:
    lo: float
    hi: float
    px_lo: float
    px_hi: float

    def __call__(self, value: float) -> float:
        if self.hi == self.lo:
            return (self.px_lo + self.px_hi) / 2
        return self.px_lo + (value - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)


def _marker(shape: str, x: float, y: float, color: str, size: float = 5.5) -> str:
    if shape == "square":
        return f'<rect x="{x - size:.1f}" y="{y - size:.1f}" width="{2 * size:.1f}" height="{2 * size:.1f}" fill="{color}"/>'
    if shape == "diamond":
        s = size * 1.3
        return f'<polygon points="{x:.1f},{y - s:.1f} {x + s:.1f},{y:.1f} {x:.1f},{y + s:.1f} {x - s:.1f},{y:.1f}" fill="{color}"/>'
    if shape == "triangle":
        s = size * 1.2
        return f'<polygon points="{x:.1f},{y - s:.1f} {x + s:.1f},{y + s:.1f} {x - s:.1f},{y + s:.1f}" fill="{color}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}" fill="{color}"/>'


def _open(width: int, height: int, title: str, desc: str, ident: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-labelledby="{ident}-title {ident}-desc" '
            f'font-family="system-ui, sans-serif" font-size="13">',
            f'<title id="{ident}-title">{escape(title)}</title>', f'<desc id="{ident}-desc">{escape(desc)}</desc>']


@dataclass
class ForestRow:
    label: str  # left column, e.g. the variation
    estimate: float | None
    lo: float | None
    hi: float | None
    note: str = ""  # right column text, e.g. "winner" (meaning never by colour alone)
    highlight: bool = False  # drawn in the accent colour


def forest_plot(rows: Sequence[ForestRow], *, title: str, x_label: str, ident: str = "forest",
                fmt: Callable[[float], str] = percent, width: int = 860) -> Markup:
    """Intervals per row on one x axis through zero (e.g. relative lift per variation)."""
    row_h, top, bottom, left, right = 34, 16, 58, 150, 190
    height = top + bottom + row_h * max(1, len(rows))
    values = [v for r in rows for v in (r.lo, r.hi, r.estimate) if v is not None and math.isfinite(v)] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.01
    ticks = nice_ticks(lo - pad, hi + pad)
    x = Scale(ticks[0], ticks[-1], left, width - right)
    tick_fmt = tick_format(ticks, fmt)
    desc = "; ".join(
        f"{r.label}: {fmt(r.estimate)} ({fmt(r.lo)} to {fmt(r.hi)}) {r.note}".strip()
        if r.estimate is not None and r.lo is not None else f"{r.label}: not computable" for r in rows)
    out = _open(width, height, title, desc, ident)
    plot_bottom = top + row_h * max(1, len(rows))
    for t in ticks:
        px = x(t)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{plot_bottom}" stroke="{GRID}"/>')
        out.append(f'<text x="{px:.1f}" y="{plot_bottom + 18}" text-anchor="middle" fill="{MUTED}">'
                   f'{escape(tick_fmt(t) if t else "0")}</text>')
    zero = x(0.0)
    out.append(f'<line x1="{zero:.1f}" y1="{top - 6}" x2="{zero:.1f}" y2="{plot_bottom}" stroke="{INK}" '
               f'stroke-width="1.5"/>')
    out.append(f'<text x="{(left + width - right) / 2:.1f}" y="{height - 12}" text-anchor="middle" '
               f'fill="{INK}" font-weight="600">{escape(x_label)}</text>')
    for i, r in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        color = PALETTE[1] if r.highlight else PALETTE[0]
        out.append(f'<text x="{left - 12}" y="{cy + 4:.1f}" text-anchor="end" fill="{INK}">{escape(r.label)}</text>')
        if r.estimate is None or r.lo is None or r.hi is None:
            out.append(f'<text x="{zero + 8:.1f}" y="{cy + 4:.1f}" fill="{MUTED}">not computable</text>')
        else:
            out.append(f'<line x1="{x(r.lo):.1f}" y1="{cy:.1f}" x2="{x(r.hi):.1f}" y2="{cy:.1f}" stroke="{color}" '
                       f'stroke-width="3"/>')
            for end in (r.lo, r.hi):
                out.append(f'<line x1="{x(end):.1f}" y1="{cy - 6:.1f}" x2="{x(end):.1f}" y2="{cy + 6:.1f}" '
                           f'stroke="{color}" stroke-width="2"/>')
            out.append(_marker("diamond" if r.highlight else "circle", x(r.estimate), cy, color))
            out.append(f'<text x="{width - right + 12}" y="{cy + 4:.1f}" fill="{INK}">'
                       f'{escape(fmt(r.estimate))} {escape(r.note)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _y_grid(out: list, ticks, y, tick_fmt, left: float, right_edge: float) -> None:
    """Horizontal grid lines with their value labels on the left."""
    for t in ticks:
        py = y(t)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{right_edge}" y2="{py:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end" fill="{MUTED}">'
                   f'{escape(tick_fmt(t) if t else "0")}</text>')


def _axes(out: list, zero: float, left: float, right_edge: float, top: float, plot_bottom: float,
          x_label: str, y_label: str) -> None:
    """The zero line and both axis titles."""
    out.append(f'<line x1="{left}" y1="{zero:.1f}" x2="{right_edge}" y2="{zero:.1f}" stroke="{INK}" '
               f'stroke-width="1.5"/>')
    out.append(f'<text x="{(left + right_edge) / 2:.1f}" y="{plot_bottom + 42}" text-anchor="middle" '
               f'fill="{INK}" font-weight="600">{escape(x_label)}</text>')
    mid = (top + plot_bottom) / 2
    out.append(f'<text transform="translate(16 {mid:.1f}) rotate(-90)" text-anchor="middle" fill="{INK}" '
               f'font-weight="600">{escape(y_label)}</text>')


@dataclass
class Series:
    label: str
    points: list  # [(x_index, estimate | None, lo | None, hi | None)]


def interval_series(x_labels: Sequence[str], series: Sequence[Series], *, title: str, y_label: str,
                    x_label: str, ident: str = "series", fmt: Callable[[float], str] = percent,
                    width: int = 860, height: int = 320) -> Markup:
    """Estimate lines with interval bands over ordinal x positions (e.g. cumulative lift per day)."""
    left, right, top, bottom = 100, 24, 16, 70
    legend_h = 22 * len(series)
    height = height + legend_h
    plot_bottom = height - bottom - legend_h
    values = [v for s in series for p in s.points for v in p[1:] if v is not None and math.isfinite(v)] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.01
    ticks = nice_ticks(lo - pad, hi + pad)
    n = max(1, len(x_labels) - 1)
    x = Scale(0, n, left, width - right)
    y = Scale(ticks[0], ticks[-1], plot_bottom, top)
    tick_fmt = tick_format(ticks, fmt)
    last = [s.points[-1] for s in series if s.points]
    desc = "; ".join(f"{s.label} on {x_labels[p[0]]}: {fmt(p[1])}" + (f" ({fmt(p[2])} to {fmt(p[3])})" if p[2] is not None else "")
                     for s, p in zip(series, last, strict=False) if p[1] is not None) or "No data yet."
    out = _open(width, height, title, f"{len(x_labels)} days. Latest: {desc}", ident)
    _y_grid(out, ticks, y, tick_fmt, left, width - right)
    every = max(1, math.ceil(len(x_labels) / 8))
    for i, label in enumerate(x_labels):
        if i % every == 0 or i == len(x_labels) - 1:
            out.append(f'<text x="{x(i):.1f}" y="{plot_bottom + 18}" text-anchor="middle" fill="{MUTED}">'
                       f'{escape(label)}</text>')
    _axes(out, y(0), left, width - right, top, plot_bottom, x_label, y_label)
    for k, s in enumerate(series):
        color, dash, shape = PALETTE[k % len(PALETTE)], DASHES[k % len(DASHES)], SHAPES[k % len(SHAPES)]
        band = [p for p in s.points if p[2] is not None and p[3] is not None]
        if len(band) >= 2:
            upper = " ".join(f"{x(p[0]):.1f},{y(p[3]):.1f}" for p in band)
            lower = " ".join(f"{x(p[0]):.1f},{y(p[2]):.1f}" for p in reversed(band))
            out.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.14" stroke="none"/>')
        line = [p for p in s.points if p[1] is not None]
        if len(line) >= 2:
            path = " ".join(f"{x(p[0]):.1f},{y(p[1]):.1f}" for p in line)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"{dash_attr}/>')
        for p in line:
            if len(line) < 15 or p is line[-1]:
                out.append(_marker(shape, x(p[0]), y(p[1]), color, 4))
        ly = plot_bottom + 58 + 22 * k
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{left}" y1="{ly:.1f}" x2="{left + 36}" y2="{ly:.1f}" stroke="{color}" '
                   f'stroke-width="2.5"{dash_attr}/>')
        out.append(_marker(shape, left + 18, ly, color, 4))
        out.append(f'<text x="{left + 46}" y="{ly + 4:.1f}" fill="{INK}">{escape(s.label)} '
                   f'(line: estimate; band: interval)</text>')
    out.append("</svg>")
    return Markup("".join(out))


@dataclass
class Check:
    """One point of a guardrail plot: a stored check of a guarded rollout."""

    label: str  # x axis label, e.g. the check's time
    estimate: float | None
    lo: float | None
    hi: float | None
    harm: bool = False
    stage: str = ""  # the rollout step the check belongs to, e.g. "10 %"


HARM = "#a4243b"


def guardrail_plot(checks: Sequence[Check], *, title: str, y_label: str, x_label: str, harm_below: bool,
                   harm_text: str, ident: str = "guardrail", fmt: Callable[[float], str] = percent,
                   width: int = 860, height: int = 320) -> Markup:
    """A guardrail over the checks of a guarded rollout: the estimate (line) and its confidence
    sequence (band, error bars when few), a zero line, the harm side shaded and labelled
    (``harm_below``: harm is a negative lift), checks that found harm marked by a distinct
    shape, and the rollout's steps as labelled vertical separators."""
    left, right, top, bottom = 100, 48, 34, 70
    legend = ["line and dots: estimate of the lift at each check",
              "band and bars: its confidence sequence (valid at every look)",
              f"shaded side: harm ({harm_text}); triangle: a check that found harm"]
    legend_h = 20 * len(legend)
    height = height + legend_h
    plot_bottom = height - bottom - legend_h
    values = [v for c in checks for v in (c.estimate, c.lo, c.hi) if v is not None and math.isfinite(v)] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.01
    ticks = nice_ticks(lo - pad, hi + pad)
    n = len(checks)
    x = Scale(0, max(1, n - 1), left + 12, width - right - 12) if n > 1 else Scale(0, 0, left, width - right)
    y = Scale(ticks[0], ticks[-1], plot_bottom, top)
    tick_fmt = tick_format(ticks, fmt)
    harms = [i for i, c in enumerate(checks) if c.harm]
    latest = next((c for c in reversed(checks) if c.estimate is not None), None)
    desc = f"{n} check(s). "
    if latest is not None and latest.lo is not None:
        desc += f"Latest ({latest.label}): {fmt(latest.estimate)}, interval {fmt(latest.lo)} to {fmt(latest.hi)}. "
    elif n:
        desc += "Not enough data for an estimate yet. "
    desc += (f"Harm found at check {harms[0] + 1} ({checks[harms[0]].label})." if harms
             else "No check found harm.") + f" Harm side: {harm_text}."
    out = _open(width, height, title, desc, ident)
    zero = y(0.0)
    # The harm side, shaded and labelled in words (colour is not the only carrier).
    band_top, band_bottom = (zero, plot_bottom) if harm_below else (top, zero)
    if band_bottom - band_top > 0.5:
        out.append(f'<rect x="{left}" y="{band_top:.1f}" width="{width - right - left}" '
                   f'height="{band_bottom - band_top:.1f}" fill="{HARM}" fill-opacity="0.07"/>')
    arrow = "▼" if harm_below else "▲"
    label_y = plot_bottom - 8 if harm_below else top + 16
    harm_label = (f'<text x="{left + 8}" y="{label_y:.1f}" fill="{HARM}" font-weight="600" stroke="#fff" '
                  f'stroke-width="4" paint-order="stroke">{arrow} harm side: {escape(harm_text)}</text>')
    _y_grid(out, ticks, y, tick_fmt, left, width - right)
    # Step boundaries: where the check's step changes.
    for i in range(n):
        if i == 0 or checks[i].stage != checks[i - 1].stage:
            px = x(i) if i == 0 else (x(i - 1) + x(i)) / 2
            if i > 0:
                out.append(f'<line x1="{px:.1f}" y1="{top - 4}" x2="{px:.1f}" y2="{plot_bottom}" stroke="{MUTED}" '
                           f'stroke-dasharray="3 3"/>')
            out.append(f'<text x="{px + 4:.1f}" y="{top - 8}" fill="{MUTED}">step {escape(checks[i].stage)}</text>')
    every = max(1, math.ceil(n / 6))
    for i, c in enumerate(checks):
        if (i % every == 0 and n - 1 - i >= every / 2) or i == n - 1:
            anchor = "end" if i == n - 1 and n > 1 else "middle"
            out.append(f'<text x="{x(i):.1f}" y="{plot_bottom + 18}" text-anchor="{anchor}" fill="{MUTED}">'
                       f'{escape(c.label)}</text>')
    _axes(out, zero, left, width - right, top, plot_bottom, x_label, y_label)
    color = PALETTE[0]
    band = [(i, c) for i, c in enumerate(checks) if c.lo is not None and c.hi is not None]
    if len(band) >= 2:
        upper = " ".join(f"{x(i):.1f},{y(c.hi):.1f}" for i, c in band)
        lower = " ".join(f"{x(i):.1f},{y(c.lo):.1f}" for i, c in reversed(band))
        out.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.16" stroke="none"/>')
    if len(band) <= 40:
        for i, c in band:
            out.append(f'<line x1="{x(i):.1f}" y1="{y(c.lo):.1f}" x2="{x(i):.1f}" y2="{y(c.hi):.1f}" '
                       f'stroke="{color}" stroke-width="1.5"/>')
    line = [(i, c) for i, c in enumerate(checks) if c.estimate is not None]
    if len(line) >= 2:
        path = " ".join(f"{x(i):.1f},{y(c.estimate):.1f}" for i, c in line)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
    for i, c in line:
        if c.harm:
            out.append(_marker("triangle", x(i), y(c.estimate), HARM, 6))
        elif len(line) <= 60 or i == line[-1][0]:
            out.append(_marker("circle", x(i), y(c.estimate), color, 3.5))
    if not line:
        out.append(f'<text x="{(left + width - right) / 2:.1f}" y="{(top + plot_bottom) / 2:.1f}" '
                   f'text-anchor="middle" fill="{MUTED}">not enough data for an estimate yet</text>')
    out.append(harm_label)  # over the data, with a white halo
    for k, text in enumerate(legend):
        ly = plot_bottom + 58 + 20 * k
        if k == 0:
            out.append(f'<line x1="{left}" y1="{ly:.1f}" x2="{left + 36}" y2="{ly:.1f}" stroke="{color}" '
                       f'stroke-width="2.5"/>' + _marker("circle", left + 18, ly, color, 3.5))
        elif k == 1:
            out.append(f'<rect x="{left}" y="{ly - 7:.1f}" width="36" height="14" fill="{color}" '
                       f'fill-opacity="0.16"/><line x1="{left + 18}" y1="{ly - 7:.1f}" x2="{left + 18}" '
                       f'y2="{ly + 7:.1f}" stroke="{color}" stroke-width="1.5"/>')
        else:
            out.append(f'<rect x="{left}" y="{ly - 7:.1f}" width="36" height="14" fill="{HARM}" '
                       f'fill-opacity="0.07" stroke="{GRID}"/>' + _marker("triangle", left + 18, ly, HARM, 5))
        out.append(f'<text x="{left + 46}" y="{ly + 4:.1f}" fill="{INK}">{escape(text)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def monthly_bars(months: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, title: str,
                 y_label: str, ident: str = "bars", fmt: Callable[[float], str] = lambda v: f"{v:g}",
                 width: int = 420, height: int = 220) -> Markup:
    """Grouped bars: for each month, one bar per ``(label, values)`` series; None draws no bar.

    Each bar carries its value as text above it, and series differ by fill
    pattern (solid, hatched, dotted) and a legend, not by colour alone."""
    left, right, top, bottom = 56, 12, 14, 46
    legend_h = 18 * len(series) if len(series) > 1 else 0
    height = height + legend_h
    plot_bottom = height - bottom - legend_h
    values = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)] + [0.0]
    ticks = nice_ticks(0.0, max(1.0, max(values)), count=4)  # at least 0..1: small values stay small
    y = Scale(ticks[0], ticks[-1], plot_bottom, top)
    slot = (width - left - right) / max(1, len(months))
    bar = max(4.0, min(28.0, (slot - 10) / max(1, len(series))))
    desc = "; ".join(f"{label}: " + ", ".join(f"{m} {fmt(v) if v is not None else 'n/a'}"
                                               for m, v in zip(months, vs, strict=False))
                     for label, vs in series) or "No data."
    out = _open(width, height, title, desc, ident)
    out.append('<defs>' + "".join(
        f'<pattern id="{ident}-p{k}" width="6" height="6" patternUnits="userSpaceOnUse">'
        + (f'<rect width="6" height="6" fill="{PALETTE[k]}"/>' if k == 0 else
           f'<rect width="6" height="6" fill="#ffffff"/><path d="M0,6 L6,0" stroke="{PALETTE[k]}" stroke-width="2"/>'
           if k == 1 else f'<rect width="6" height="6" fill="#ffffff"/><circle cx="3" cy="3" r="1.6" fill="{PALETTE[k]}"/>')
        + '</pattern>' for k in range(min(3, len(series)))) + '</defs>')
    for t in ticks:
        py = y(t)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" fill="{MUTED}">{escape(f"{t:g}")}</text>')
    for i, month in enumerate(months):
        x0 = left + slot * i + (slot - bar * len(series)) / 2
        out.append(f'<text x="{left + slot * (i + 0.5):.1f}" y="{plot_bottom + 16}" text-anchor="middle" '
                   f'fill="{MUTED}">{escape(month)}</text>')
        for k, (label, vs) in enumerate(series):
            value = vs[i] if i < len(vs) else None
            if value is None or not math.isfinite(value):
                continue
            top_y = y(value)
            out.append(f'<rect x="{x0 + bar * k:.1f}" y="{top_y:.1f}" width="{bar - 2:.1f}" '
                       f'height="{max(0.0, plot_bottom - top_y):.1f}" fill="url(#{ident}-p{min(k, 2)})" '
                       f'stroke="{PALETTE[min(k, 2)]}"><title>{escape(label)} {escape(month)}: {escape(fmt(value))}</title></rect>')
            out.append(f'<text x="{x0 + bar * k + (bar - 2) / 2:.1f}" y="{top_y - 3:.1f}" text-anchor="middle" '
                       f'font-size="11" fill="{INK}">{escape(fmt(value))}</text>')
    out.append(f'<line x1="{left}" y1="{plot_bottom}" x2="{width - right}" y2="{plot_bottom}" stroke="{INK}"/>')
    out.append(f'<text transform="translate(14 {(top + plot_bottom) / 2:.1f}) rotate(-90)" text-anchor="middle" '
               f'fill="{INK}" font-size="12">{escape(y_label)}</text>')
    if len(series) > 1:
        for k, (label, _) in enumerate(series):
            ly = plot_bottom + 34 + 18 * k
            out.append(f'<rect x="{left}" y="{ly - 9}" width="14" height="12" fill="url(#{ident}-p{min(k, 2)})" '
                       f'stroke="{PALETTE[min(k, 2)]}"/>')
            out.append(f'<text x="{left + 20}" y="{ly + 1}" fill="{INK}" font-size="12">{escape(label)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
