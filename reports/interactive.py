"""Interactive charts for report.html: Plotly figures, offline, beside the static PNG/SVG.

plotly.js comes from the `plotly` Python package (its bundled plotly.min.js, about 4.8 MB) and is written
once per page, inline: the page needs no network when generated or opened. Each chart is a <div> with its
figure's JSON and a call to Plotly.newPlot. The PNG/SVG files stay for report.md and CI summaries.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from matplotlib.colors import to_hex, to_rgb

from reports import plots

log = logging.getLogger(__name__)

# The mode bar's PNG export works offline; the Plotly logo links to their site, so it goes.
CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False}
CHART_CLASS = "plotly-graph-div"  # what plotly.io.to_html gives each chart's div (tests count these)
FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12}
AXIS = {"showline": True, "linecolor": "#888", "gridcolor": "#eee", "zeroline": False}


@functools.cache
def plotly_js() -> str:
    """plotly.min.js as the package ships it (cached: several reports in one process share it)."""
    from plotly.offline import get_plotlyjs

    js: str = get_plotlyjs()
    return js


def script_tag() -> str:
    return f'<script type="text/javascript">{plotly_js()}</script>'


def to_div(fig: go.Figure, name: str) -> str:
    """The chart's <div> and its newPlot call; `name` makes its id (chart-NAME), which tests look up."""
    div: str = pio.to_html(
        fig,
        include_plotlyjs=False,
        full_html=False,
        config=CONFIG,
        div_id=f"chart-{name}",
        validate=False,  # the figures are built here from known keys; validation costs ~30 % of the time
    )
    return div


def label_colors(labels: Sequence[str]) -> dict[str, str]:
    """The PNGs' colours (plots.label_colors), as hex: matplotlib may give RGB tuples, Plotly wants CSS."""
    return {label: to_hex(color) for label, color in plots.label_colors(labels).items()}


def rgba(color: str, alpha: float) -> str:
    r, g, b = (round(255 * c) for c in to_rgb(color))
    return f"rgba({r},{g},{b},{alpha})"


def style(fig: go.Figure, *, title: str, height: int, legend_title: str | None = None) -> go.Figure:
    """The look every chart shares: white, thin grid, the legend on the right (click a name to hide it)."""
    fig.update_layout(
        title={"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
        height=height,
        template="plotly_white",
        font=FONT,
        margin={"l": 70, "r": 20, "t": 60, "b": 50},
        hovermode="closest",
        legend={"title": {"text": legend_title or ""}, "groupclick": "togglegroup"},
    )
    fig.update_xaxes(**AXIS)
    fig.update_yaxes(**AXIS)
    return fig


def step_xy(
    starts: np.ndarray, values: np.ndarray, width: float | np.ndarray
) -> tuple[list[float], list[float]]:
    """A value held over [start, start + width): the points of a 'hv' line that also covers the last one."""
    if len(starts) == 0:
        return [], []
    ends = np.asarray(starts) + width
    return [*np.asarray(starts).tolist(), float(ends[-1])], [*np.asarray(values).tolist(), float(values[-1])]


def segments(x0: np.ndarray, x1: np.ndarray, y: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Horizontal segments as one line trace: (x0, y) -> (x1, y), separated by gaps (None)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for a, b, c in zip(x0.tolist(), x1.tolist(), y.tolist(), strict=True):
        xs += [a, b, None]
        ys += [c, c, None]
    return xs, ys


def band(
    x: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    *,
    color: str,
    group: str,
) -> go.Scatter:
    """A 95 % interval as a filled polygon (low left to right, high right to left); not hoverable: the
    estimate's line carries the interval in its hover text."""
    return go.Scatter(
        x=[*x, *reversed(x)],
        y=[*low, *reversed(high)],
        mode="lines",  # plotly adds markers to short traces otherwise
        fill="toself",
        fillcolor=rgba(color, 0.15),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
    )


def legend_per_row(fig: go.Figure, rows: int) -> go.Figure:
    """A legend beside each panel of a one-column figure, at its top: one long legend would name series
    of every panel far from them. Call after the traces are added and before `style`."""
    for row in range(1, rows + 1):
        axis = "y" if row == 1 else f"y{row}"
        name = "legend" if row == 1 else f"legend{row}"
        fig.update_traces(legend=name, selector={"yaxis": axis})
        top = fig.layout[f"yaxis{'' if row == 1 else row}"].domain[1]
        fig.update_layout({name: {"y": top, "yanchor": "top", "x": 1.02, "xanchor": "left"}})
    return fig
