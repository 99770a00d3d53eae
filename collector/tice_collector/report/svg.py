"""Small inline SVG charts for the report: a line chart of shares over weeks, and bars.

Written directly (no chart library): two chart types, each a few dozen elements, inline in
the HTML with no script and no external file, scaled by the page (viewBox) and printable.

Readable without colour: each series has its own marker shape and dash pattern as well as
its colour, and is labelled at its last point; every bar carries its value as text. Colours
are the Okabe-Ito palette (Okabe & Ito, "Color Universal Design", 2008), chosen to stay
distinct for the common colour-vision deficiencies; its yellow is left out (too light on
white, and in grey).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Okabe-Ito, without its yellow (#F0E442).
BLACK, ORANGE, SKY_BLUE, GREEN, BLUE, VERMILLION, PURPLE = (
    "#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7")
MARKERS = ("circle", "square", "triangle", "diamond", "cross", "down")


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str  # one of MARKERS
    dash: str  # an SVG stroke-dasharray, "" for a solid line


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x label; None: no value (a break in the line)
    style: Style


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def marker(kind: str, x: float, y: float, colour: str, size: float = 4.0) -> str:
    """One point's marker: shapes differ so series read apart in grey."""
    s = size
    fill = f'fill="{colour}" stroke="{colour}"'
    if kind == "circle":
        return f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(s)}" {fill}/>'
    if kind == "square":
        return f'<rect x="{_num(x - s)}" y="{_num(y - s)}" width="{_num(2 * s)}" height="{_num(2 * s)}" {fill}/>'
    if kind == "diamond":
        pts = f"{_num(x)},{_num(y - s * 1.3)} {_num(x + s * 1.3)},{_num(y)} {_num(x)},{_num(y + s * 1.3)} " \
              f"{_num(x - s * 1.3)},{_num(y)}"
        return f'<polygon points="{pts}" {fill}/>'
    if kind == "triangle":
        pts = f"{_num(x)},{_num(y - s * 1.3)} {_num(x + s * 1.2)},{_num(y + s)} {_num(x - s * 1.2)},{_num(y + s)}"
        return f'<polygon points="{pts}" {fill}/>'
    if kind == "down":
        pts = f"{_num(x)},{_num(y + s * 1.3)} {_num(x + s * 1.2)},{_num(y - s)} {_num(x - s * 1.2)},{_num(y - s)}"
        return f'<polygon points="{pts}" fill="white" stroke="{colour}" stroke-width="1.5"/>'
    if kind == "cross":
        return (f'<path d="M{_num(x - s)},{_num(y - s)}L{_num(x + s)},{_num(y + s)}M{_num(x - s)},{_num(y + s)}'
                f'L{_num(x + s)},{_num(y - s)}" stroke="{colour}" stroke-width="2"/>')
    raise ValueError(f"unknown marker {kind!r}; one of {', '.join(MARKERS)}")


def line_chart(series: Sequence[Series], x_labels: Sequence[str], *, title: str, y_label: str,
               percent: Callable[[float], str], width: int = 720, height: int = 300) -> str:
    """Shares (0..1) over weeks: one line per series, broken where a value is None.

    `percent` formats a share for the axis and the labels (the report's language decides).
    """
    left, right, top, bottom = 48, 190, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(x_labels))

    def x_at(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def y_at(v: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, v)))

    out = [f'<svg viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}" class="chart">', f"<title>{escape(title)}</title>",
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_at(tick)
        out.append(f'<line x1="{left}" y1="{_num(y)}" x2="{left + plot_w}" y2="{_num(y)}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{_num(y + 4)}" text-anchor="end" class="tick">'
                   f"{escape(percent(tick))}</text>")
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>')
    every = max(1, -(-n // 12))  # at most about 12 labels under the axis
    for i, label in enumerate(x_labels):
        if i % every == 0:
            out.append(f'<text x="{_num(x_at(i))}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">'
                       f"{escape(label)}</text>")
    out.append(f'<text x="{left}" y="{height - 6}" class="tick">{escape(y_label)}</text>')
    label_ys: list[float] = []
    for s in series:
        dash = f' stroke-dasharray="{s.style.dash}"' if s.style.dash else ""
        segment: list[str] = []
        segments: list[list[str]] = []
        for i, v in enumerate(s.values):
            if v is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{_num(x_at(i))},{_num(y_at(v))}")
        if segment:
            segments.append(segment)
        out.append(f'<g class="series"><title>{escape(s.name)}</title>')
        for seg in segments:
            out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{s.style.colour}" '
                       f'stroke-width="2"{dash}/>')
        for i, v in enumerate(s.values):
            if v is not None:
                out.append(f'<g>{marker(s.style.marker, x_at(i), y_at(v), s.style.colour)}'
                           f"<title>{escape(s.name)} {escape(x_labels[i])}: {escape(percent(v))}</title></g>")
        last = max((i for i, v in enumerate(s.values) if v is not None), default=None)
        if last is not None:
            value = s.values[last]
            assert value is not None
            y = y_at(value)
            while any(abs(y - other) < 13 for other in label_ys):  # keep end labels apart
                y += 13
            label_ys.append(y)
            lx = left + plot_w + 10
            out.append(marker(s.style.marker, lx, y, s.style.colour))
            out.append(f'<text x="{lx + 9}" y="{_num(y + 4)}" class="label">{escape(s.name)} '
                       f"{escape(percent(value))}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(bars: Sequence[tuple[str, float | None]], *, title: str, percent: Callable[[float], str],
              missing: str, width: int = 720) -> str:
    """Horizontal bars of shares (0..1), each with its value written at its end; None: `missing`."""
    left, right, top, row = 190, 70, 30, 22
    height = top + row * max(1, len(bars)) + 10
    plot_w = width - left - right
    out = [f'<svg viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}" class="chart">', f"<title>{escape(title)}</title>",
           f'<text x="4" y="16" class="chart-title">{escape(title)}</text>']
    for tick in (0.0, 0.5, 1.0):
        x = left + plot_w * tick
        out.append(f'<line x1="{_num(x)}" y1="{top - 4}" x2="{_num(x)}" y2="{height - 8}" class="grid"/>')
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        short = label if len(label) <= 30 else label[:29] + "…"
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="tick">{escape(short)}</text>')
        if value is None:
            out.append(f'<text x="{left + 4}" y="{y + 14}" class="label">{escape(missing)}</text>')
            continue
        w = plot_w * max(0.0, min(1.0, value))
        out.append(f'<rect x="{left}" y="{y + 3}" width="{_num(w)}" height="{row - 8}" fill="{BLUE}"/>')
        out.append(f'<text x="{_num(left + w + 4)}" y="{y + 14}" class="label">{escape(percent(value))}</text>')
    out.append("</svg>")
    return "\n".join(out)
