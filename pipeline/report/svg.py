"""Inline SVG plots: one metric across the measurements of one canary analysis.

Why hand-written SVG: the page must render with no network and no JavaScript, and a
plot of a handful of points against a threshold line needs forty lines, not a plotting
library. Every text is escaped; numbers are formatted, never ``repr``'d.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

WIDTH, HEIGHT = 320, 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 22, 28
_UNITS = {"seconds": ("ms", 1000.0), "ratio": ("", 1.0), "requests": ("", 1.0)}


def _fmt(value: float, unit: str) -> str:
    label, scale = _UNITS.get(unit, ("", 1.0))
    number = value * scale
    text = f"{number:.3f}" if unit == "ratio" else (
        f"{number:.1f}" if abs(number) < 100 else f"{number:.0f}")
    return f"{text} {label}".strip()


def plot(name: str, points: Sequence[dict[str, Any]], *, title: str = "") -> str:
    """An SVG of ``points`` (``value``, ``threshold``, ``comparison``, ``unit``, ``ok``).

    A missing value (NaN recorded as null) is drawn as a red cross on the axis and
    labelled ``n/a``: no data never looks like a pass.
    """
    unit = str(points[0].get("unit") or "") if points else ""
    values = [float(p["value"]) for p in points if p.get("value") is not None]
    thresholds = [float(p["threshold"]) for p in points if p.get("threshold") is not None]
    low = min([*values, *thresholds, 0.0 if unit != "ratio" else min([*values, *thresholds,
                                                                        1.0])])
    high = max([*values, *thresholds, low + 1e-9])
    if unit == "ratio":
        high = max(high, 1.0)
    span = (high - low) or 1.0
    low, high = low - span * 0.08, high + span * 0.08
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - (v - low) / (high - low))

    def x(i: int) -> float:
        return _LEFT + plot_w * ((i + 0.5) / max(len(points), 1))

    head = escape(title or name)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{WIDTH}" '
             f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{head}">',
             f'<title>{head}</title>',
             f'<text x="{_LEFT}" y="14" class="t">{head}</text>',
             f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" '
             'fill="#fafafa" stroke="#ccc"/>']
    for v in (low + (high - low) * 0.08, high - (high - low) * 0.08):
        parts.append(f'<text x="{_LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end" '
                     f'class="a">{escape(_fmt(v, unit))}</text>')
    if thresholds:
        t = thresholds[0]
        cmp = escape(str(points[0].get("comparison") or ""))
        parts.append(f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y(t):.1f}" '
                     f'y2="{y(t):.1f}" stroke="#d33" stroke-dasharray="5 3"/>')
        parts.append(f'<text x="{WIDTH - _RIGHT - 2}" y="{y(t) - 4:.1f}" text-anchor="end" '
                     f'class="th">threshold {cmp} {escape(_fmt(t, unit))}</text>')
    line = [(x(i), y(float(p["value"]))) for i, p in enumerate(points)
            if p.get("value") is not None]
    if len(line) > 1:
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in line)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#36c"/>')
    for i, p in enumerate(points):
        cx = x(i)
        parts.append(f'<text x="{cx:.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
                     f'class="a">#{i + 1}</text>')
        if p.get("value") is None:
            base = _TOP + plot_h - 6
            parts.append(f'<path d="M{cx - 5:.1f},{base - 5:.1f} l10,10 m0,-10 l-10,10" '
                         'stroke="#d33" stroke-width="2"/>')
            parts.append(f'<text x="{cx:.1f}" y="{base - 9:.1f}" text-anchor="middle" '
                         'class="th">n/a</text>')
            continue
        color = "#2a2" if p.get("ok") else "#d33"
        value = escape(_fmt(p["value"], unit))
        parts.append(f'<circle cx="{cx:.1f}" cy="{y(p["value"]):.1f}" r="4" fill="{color}">'
                     f'<title>measurement {i + 1}: {value}</title></circle>')
        parts.append(f'<text x="{cx:.1f}" y="{y(p["value"]) - 7:.1f}" text-anchor="middle" '
                     f'class="v">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["plot"]
