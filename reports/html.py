"""A self-contained HTML report (one file to attach, no network): tables, and every plot as an interactive
chart (reports.interactive: plotly.js inline, once) where there is one, else as a base64 PNG."""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from reports import interactive

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
p.note { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.88rem; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
figure.chart { border: 1px solid #eee; padding: 4px; }
ul.warnings li { color: #a34700; }
"""


def _table(cells: pd.DataFrame) -> str:
    table: str = cells.to_html(index=False, escape=True, border=0, na_rep="—")
    return table


def _image(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'
    )


def _chart(div: str, caption: str) -> str:
    return f'<figure class="chart">{div}<figcaption>{html.escape(caption)}</figcaption></figure>'


def render(
    title: str,
    intro: Sequence[str],
    sections: Sequence[tuple[str, str, pd.DataFrame]],
    plots: Sequence[tuple[Path, str]],
    warnings: Sequence[str] = (),
    warnings_at: int = 0,
    charts: Mapping[Path, str] | None = None,
) -> str:
    """The page: intro lines, each (title, note, cells) table (warnings before the `warnings_at`th), plots;
    a plot whose PNG has an interactive chart in `charts` (PNG path -> chart div) is shown as the chart."""
    charts = {png: div for png, div in (charts or {}).items() if any(png == p for p, _ in plots)}
    head = f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
    if charts:
        head += interactive.script_tag()
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"{head}</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="note">{html.escape(line)}</p>' for line in intro),
    ]
    for i, (heading, note, cells) in enumerate(sections):
        if i == warnings_at and warnings:
            items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
            parts.append(f'<h2>Warnings</h2><ul class="warnings">{items}</ul>')
        parts += [
            f"<h2>{html.escape(heading)}</h2>",
            f'<p class="note">{html.escape(note)}</p>',
            _table(cells),
        ]
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [
            _chart(charts[png], caption) if png in charts else _image(png, caption) for png, caption in plots
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
