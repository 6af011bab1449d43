"""Charts as inline SVG, drawn on the server: no front-end library, readable without JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H, PAD = 320, 220, 32


def _x(recall: float) -> float:
    return PAD + recall * (W - 2 * PAD)


def _y(precision: float) -> float:
    return H - PAD - precision * (H - 2 * PAD)


def pr_curve(curve: dict[str, list[float]], presets: dict[str, float | None], label: str) -> str:
    """A label's precision-recall curve, with each threshold preset marked where it falls on the curve."""
    points = list(zip(curve.get("recall", []), curve.get("precision", []), strict=False))
    path = " ".join(f"{_x(r):.1f},{_y(p):.1f}" for r, p in points)
    marks = []
    cuts = curve.get("thresholds", [])
    for preset, value in presets.items():
        if value is None or not cuts:
            continue
        i = next((k for k, cut in enumerate(cuts) if cut >= value), len(cuts) - 1)
        r, p = curve["recall"][i], curve["precision"][i]
        marks.append(
            f'<circle cx="{_x(r):.1f}" cy="{_y(p):.1f}" r="4" class="preset"><title>{escape(preset)}: '
            f"threshold {value:.2f}, precision {p:.2f}, recall {r:.2f}</title></circle>"
            f'<text x="{_x(r) + 5:.1f}" y="{_y(p) - 5:.1f}" class="mark">{escape(preset)}</text>'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="precision-recall curve of {escape(label)}">'
        f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" class="frame"/>'
        f'<polyline points="{path}" class="line"/>{"".join(marks)}'
        f'<text x="{W / 2}" y="{H - 6}" class="axis">recall</text>'
        f'<text x="8" y="{H / 2}" class="axis" transform="rotate(-90 8 {H / 2})">precision</text></svg>'
    )


def bars(values: Sequence[tuple[str, float]], *, width: int = 480, unit: str = "") -> str:
    """A vertical bar chart of (label, value) pairs, e.g. a label's weekly volume."""
    if not values:
        return '<p class="muted">no data</p>'
    top = max(v for _, v in values) or 1
    step = width / len(values)
    height = 120
    out = [f'<svg class="chart" viewBox="0 0 {width} {height + 20}" role="img" aria-label="bar chart">']
    for k, (name, value) in enumerate(values):
        h = value / top * height
        out.append(
            f'<rect x="{k * step + 1:.1f}" y="{height - h:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
            f'class="bar"><title>{escape(name)}: {value:g}{unit}</title></rect>'
        )
    out.append(f'<text x="0" y="{height + 14}" class="axis">{escape(values[0][0])}</text>')
    out.append(f'<text x="{width}" y="{height + 14}" class="axis" text-anchor="end">{escape(values[-1][0])}</text>')
    out.append("</svg>")
    return "".join(out)
