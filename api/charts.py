"""The status page's graphs: inline SVG drawn on the server from ``api/history.py``.

No JavaScript (the page's CSP runs none) and no style attributes: the look comes from the
classes in ``CSS``, light and dark, in the page's one <style>. Every text drawn is a number
or a fixed label of ours, escaped all the same. A step with no value (no search: no p50)
and a gap longer than GAP_STEPS steps (the node was down) break the line.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .history import DAY_POINTS, GAP_STEPS, HOUR_POINTS, History, Point

E = html.escape

# The drawing's coordinate box; the SVG scales to its column (the text with it).
WIDTH, HEIGHT = 320, 120
LEFT, RIGHT, TOP, BOTTOM = 38, 314, 10, 98  # the plot area
GRID_LINES = 3  # horizontal lines: bottom, middle, top

CSS = """
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr));gap:.8rem}
figure.chart{margin:0;padding:.5rem .6rem;border:1px solid var(--border);border-radius:.5rem;
background:var(--card);min-width:0}
figure.chart figcaption{font-size:.85rem;display:flex;flex-wrap:wrap;gap:.2rem .6rem}
figure.chart .latest{color:var(--muted)}
svg.chart{display:block;width:100%;height:auto}
svg.chart .grid{stroke:var(--border);stroke-width:1}
svg.chart .axis{fill:var(--muted);font-size:10px;font-family:system-ui,sans-serif}
svg.chart .empty{fill:var(--muted);font-size:12px}
svg.chart polyline{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg.chart .s1{stroke:var(--accent)}svg.chart .s2{stroke:var(--series2)}
svg.chart circle.s1{fill:var(--accent)}svg.chart circle.s2{fill:var(--series2)}
.key{display:inline-block;width:.8rem;height:.2rem;vertical-align:middle;margin-right:.2rem}
.key.s1{background:var(--accent)}.key.s2{background:var(--series2)}
:root{--series2:#b4541d}@media (prefers-color-scheme:dark){:root{--series2:#f0a35e}}
"""


@dataclass(frozen=True, slots=True)
class Line:
    field: str  # a Point attribute
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    slug: str
    title: str
    lines: tuple[Line, ...]
    unit: str = ""


CHARTS = (
    Chart("pages", "Pages fetched per minute", (Line("pages_per_minute", "pages/min"),)),
    Chart("documents", "Documents in the index", (Line("documents", "documents"),)),
    Chart("searches", "Searches per second", (Line("searches_per_second", "searches/s"),)),
    Chart(
        "latency",
        "Search time",
        (Line("p50_ms", "p50"), Line("p95_ms", "p95")),
        unit=" ms",
    ),
    Chart("peers", "Peers", (Line("peers", "peers"),)),
    Chart(
        "traffic",
        "Peer traffic per second",
        (Line("bytes_in_per_second", "in"), Line("bytes_out_per_second", "out")),
        unit=" B",
    ),
)


def compact(value: float) -> str:
    """1234 -> '1.2k': axis labels that fit beside a small graph."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.3g}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^n at or above ``value`` (1 for nothing to show)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * power:
            return float(factor * power)
    return float(10 * power)


def duration(seconds: float) -> str:
    if seconds >= 7200 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _segments(
    points: Sequence[Point], field: str, start: float, window: float, step: float, top: float
) -> list[list[tuple[float, float]]]:
    """Screen coordinates of ``field``, one list per run of points without a gap."""
    runs: list[list[tuple[float, float]]] = []
    last_t: float | None = None
    for p in points:
        value = getattr(p, field)
        if value is None:
            last_t = None
            continue
        if p.t < start:
            continue
        x = LEFT + min(1.0, (p.t - start) / window) * (RIGHT - LEFT)
        y = BOTTOM - min(1.0, value / top) * (BOTTOM - TOP)
        if last_t is None or p.t - last_t > GAP_STEPS * step:
            runs.append([])
        runs[-1].append((round(x, 1), round(y, 1)))
        last_t = p.t
    return runs


def _svg(chart: Chart, points: Sequence[Point], now: float, window: float, step: float) -> str:
    start = now - window
    shown = [p for p in points if p.t >= start]
    values = [v for p in shown for line in chart.lines if (v := getattr(p, line.field)) is not None]
    top = nice_ceiling(max(values, default=0.0))
    parts = []
    for i in range(GRID_LINES):
        y = BOTTOM - i * (BOTTOM - TOP) / (GRID_LINES - 1)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:g}" x2="{RIGHT}" y2="{y:g}"/>')
    parts.append(f'<text class="axis" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">')
    parts.append(f"{E(compact(top))}</text>")
    parts.append(f'<text class="axis" x="{LEFT - 4}" y="{BOTTOM + 3}" text-anchor="end">0</text>')
    parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 4}">-{E(duration(window))}</text>')
    parts.append(f'<text class="axis" x="{RIGHT}" y="{HEIGHT - 4}" text-anchor="end">now</text>')
    if not values:
        parts.append(
            f'<text class="empty" x="{(LEFT + RIGHT) / 2:g}" y="{(TOP + BOTTOM) / 2:g}" '
            'text-anchor="middle">collecting…</text>'
        )
    for n, line in enumerate(chart.lines, 1):
        for run in _segments(shown, line.field, start, window, step, top):
            if len(run) == 1:
                ((x, y),) = run
                parts.append(f'<circle class="s{n}" cx="{x:g}" cy="{y:g}" r="2"/>')
            else:
                coords = " ".join(f"{x:g},{y:g}" for x, y in run)
                parts.append(f'<polyline class="series s{n}" points="{coords}"/>')
    label = f"{chart.title}, the last {duration(window)}; scale 0 to {compact(top)}{chart.unit}"
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{E(label)}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def _figure(
    section: str, chart: Chart, points: Sequence[Point], now: float, window: float, step: float
) -> str:
    latest = points[-1] if points and points[-1].t >= now - window else None
    caption = [f'<span class="name">{E(chart.title)}</span>']
    for n, line in enumerate(chart.lines, 1):
        value = getattr(latest, line.field) if latest is not None else None
        text = "–" if value is None else compact(value) + chart.unit
        key = f'<span class="key s{n}"></span>' if len(chart.lines) > 1 else ""
        caption.append(f'<span class="latest">{key}{E(line.label)} {E(text)}</span>')
    return (
        f'<figure class="chart" id="chart-{section}-{chart.slug}">'
        f"<figcaption>{''.join(caption)}</figcaption>"
        f"{_svg(chart, points, now, window, step)}</figure>"
    )


def history_html(history: History, now: float) -> str:
    """Both sections: the last hour (a point a step) and the last day (one every 5)."""
    out = []
    for section, ring, step, count in (
        ("hour", history.hour, history.step, HOUR_POINTS),
        ("day", history.day, history.day_step, DAY_POINTS),
    ):
        window = step * count
        title = {3600.0: "The last hour", 86400.0: "The last day"}.get(
            window, f"The last {duration(window)}"
        )
        points = list(ring)
        figures = "".join(_figure(section, c, points, now, window, step) for c in CHARTS)
        out.append(
            f'<section class="history" id="history-{section}"><h2>{E(title)}</h2>'
            f'<div class="charts">{figures}</div></section>'
        )
    return "".join(out)
