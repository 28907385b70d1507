"""A small line chart drawn as SVG on the server, for charts a page redraws often.

The Train page's live loss curve was a Plotly chart, and drawing Plotly cost each browser about
0.3 s of CPU per visit to the page (measured with one headless Chromium, 10 moves between Home and
Train, in bench/classroom_load.py's set-up). Twenty students on one 2-core server pay that twenty
times over. As SVG shown through ``st.image`` the chart is one ``<img>`` for the browser to
decode, and building it costs the server well under a millisecond.

Each series keeps its values in a ``data-y`` attribute, so tests read the plotted numbers back.
"""

from __future__ import annotations

import math
from html import escape

COLORS = ("#4C6FFF", "#E8590C", "#2B8A3E", "#AE3EC9")  # the theme's primary colour first
MAX_MARKERS = 60  # a marker per point up to this many points; beyond it, the line alone


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) in [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.4g}"


def line_chart_svg(x: list[float], series: dict[str, list[float]], *, x_label: str,
                   y_label: str, width: int = 720, height: int = 300,
                   integer_x: bool = False) -> str:
    """An SVG line chart of ``series`` (name -> y values, one per ``x``) with axes and a legend.

    Non-finite values (a diverged loss) are left out of the line. With no finite value at all
    the chart says so instead of drawing empty axes.
    """
    points = {name: [(float(a), float(b)) for a, b in zip(x, ys)
                     if b is not None and math.isfinite(b)] for name, ys in series.items()}
    finite = [p for pts in points.values() for p in pts]
    left, right, top, bottom = 64, 16, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" '
             'fill="#31333F">',
             f"<title>{escape(y_label)} by {escape(x_label)}</title>"]
    if not finite:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">'
                     "no finite values to plot yet</text></svg>")
        return "".join(parts)
    x_lo, x_hi = min(p[0] for p in finite), max(p[0] for p in finite)
    y_lo, y_hi = min(p[1] for p in finite), max(p[1] for p in finite)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.05 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(a: float) -> float:
        return left + (a - x_lo) / (x_hi - x_lo) * plot_w

    def py(b: float) -> float:
        return top + (y_hi - b) / (y_hi - y_lo) * plot_h

    x_ticks = nice_ticks(x_lo, x_hi, 8)
    if integer_x:
        x_ticks = [t for t in x_ticks if float(t).is_integer()] or [x_lo]
    for tick in nice_ticks(y_lo, y_hi):
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#E6E9EF"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{_label(tick)}</text>")
    for tick in x_ticks:
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
                     f"{_label(tick)}</text>")
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                 'stroke="#A3A8B8"/>'
                 f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">'
                 f"{escape(x_label)}</text>"
                 f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    legend_x = left
    for i, (name, pts) in enumerate(points.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in pts)
        values = ",".join(repr(b) for _, b in pts)
        parts.append(f'<polyline data-series="{escape(name)}" data-y="{values}" '
                     f'points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(pts) <= MAX_MARKERS:
            parts.extend(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{color}"/>'
                         for a, b in pts)
        parts.append(f'<rect x="{legend_x}" y="12" width="14" height="3" fill="{color}"/>'
                     f'<text x="{legend_x + 20}" y="18">{escape(name)}</text>')
        legend_x += 30 + 8 * len(name)
    parts.append("</svg>")
    return "".join(parts)
