"""The server's metrics over a run (reports.server_plots) as an interactive chart: the same panels and
series on the timeline's time axis; hover for the values at a time, click a legend entry to hide a series."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports import interactive as ia
from reports.metrics import token_arrivals
from reports.server_plots import (
    BATCH,
    CLIENT_COLOR,
    IN_FLIGHT,
    LIMITER_ACTIVE,
    LIMITER_QUEUED,
    OUTPUT_TOKENS,
    REQUESTS,
    RUNNING,
    WAITING,
    client_in_flight,
    min_width,
    per_s,
    plotted,
    time_grid,
)
from reports.server_series import ServerSeries
from runfolder.frame import RunData

log = logging.getLogger(__name__)


def _line(
    fig: go.Figure,
    row: int,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    name: str,
    color: str,
    *,
    dash: str | None = None,
    unit: str = "",
    markers: bool = False,
    width: float = 1.6,
) -> None:
    fig.add_scatter(
        x=x,
        y=y,
        mode="lines+markers" if markers else "lines",
        name=name,
        legendgroup=name,
        line={"shape": "hv", "color": color, "dash": dash, "width": width},
        marker={"size": 4},
        hovertemplate=f"{name}: %{{y:.3~g}}{unit} at %{{x:.1f}} s<extra></extra>",
        row=row,
        col=1,
    )


def _client_step(
    fig: go.Figure, row: int, edges: np.ndarray, values: np.ndarray, name: str, color: str, unit: str
) -> None:
    x, y = ia.step_xy(edges[:-1], values, float(edges[1] - edges[0]))
    _line(fig, row, x, y, name, color, unit=unit)


def _stacked(
    fig: go.Figure, row: int, t: np.ndarray, lower: np.ndarray, upper: np.ndarray, name: str, color: str
) -> None:
    """An area from `lower` to `upper` (stacked on what is below it), hover showing its own height."""
    fig.add_scatter(
        x=t,
        y=lower,
        mode="lines",
        line={"width": 0, "shape": "hv"},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=name,
        row=row,
        col=1,
    )
    fig.add_scatter(
        x=t,
        y=upper,
        mode="lines",
        fill="tonexty",
        fillcolor=ia.rgba(color, 0.6),
        line={"width": 0, "shape": "hv"},
        name=name,
        legendgroup=name,
        customdata=upper - lower,
        hovertemplate=f"{name}: %{{customdata:.3~g}} at %{{x:.1f}} s<extra></extra>",
        row=row,
        col=1,
    )


def _concurrency(
    fig: go.Figure, run: RunData, series: ServerSeries, t: np.ndarray, edges: np.ndarray
) -> None:
    if series.exports(LIMITER_ACTIVE[0]):
        active, queued = series.gauge(LIMITER_ACTIVE), series.gauge(LIMITER_QUEUED)
        _stacked(fig, 1, t, np.zeros_like(active), active, "server: limiter active", "#80cbc4")
        _stacked(fig, 1, t, active, active + queued, "server: limiter queued (stacked)", "#ef9a9a")
    if series.exports(IN_FLIGHT[0]):
        _line(fig, 1, t, series.gauge(IN_FLIGHT), "server: in flight", "#1565c0", markers=True, width=2)
    _client_step(
        fig, 1, edges, client_in_flight(run, edges), "client: requests out (bin mean)", CLIENT_COLOR, ""
    )


def _engine(fig: go.Figure, row: int, series: ServerSeries, t: np.ndarray) -> None:
    running, waiting = series.gauge(RUNNING), series.gauge(WAITING)
    _stacked(fig, row, t, np.zeros_like(running), running, "server: decoding", "#66bb6a")
    _stacked(fig, row, t, running, running + waiting, "server: waiting (stacked)", "#ffa726")
    if any(series.exports(n) for n in BATCH):
        _line(fig, row, t, series.gauge(BATCH), "server: batch size", "#6a1b9a", dash="dash", markers=True)


def _arrivals(fig: go.Figure, row: int, run: RunData, series: ServerSeries, edges: np.ndarray) -> None:
    rec, start = run.records, run.window_start_s
    sent = rec["scheduled_ts_s"].to_numpy(dtype=float) - start
    ends = rec["end_ts_s"].to_numpy(dtype=float) - start
    rejected = (rec["outcome"] == "rejected").to_numpy()
    _client_step(fig, row, edges, per_s(sent, None, edges), "client: sent", CLIENT_COLOR, "/s")
    _client_step(fig, row, edges, per_s(ends[rejected], None, edges), "client: rejected", "#f9a825", "/s")
    if series.exports(REQUESTS):
        starts, widths, refused = series.rate(REQUESTS, {"outcome": "rejected"}, min_width(series))
        x, y = ia.step_xy(starts - start, refused, widths)
        _line(fig, row, x, y, "server: rejected", "#e65100", dash="dash", unit="/s")


def _tokens(fig: go.Figure, row: int, run: RunData, series: ServerSeries, edges: np.ndarray) -> None:
    times, tokens = token_arrivals(run)
    arrived = per_s(times - run.window_start_s, tokens, edges)
    _client_step(fig, row, edges, arrived, "client: tokens by arrival", CLIENT_COLOR, " tok/s")
    if series.exports(OUTPUT_TOKENS):
        starts, widths, rate = series.rate(OUTPUT_TOKENS, None, min_width(series))
        x, y = ia.step_xy(starts - run.window_start_s, rate, widths)
        _line(fig, row, x, y, "server: output tokens counter", "#1565c0", dash="dash", unit=" tok/s")


def server_chart(run: RunData, series: ServerSeries) -> go.Figure:
    t, edges = time_grid(run, series)
    engine = any(series.exports(n) for n in (*RUNNING, *WAITING))
    titles = [
        "Requests in flight: the client's (mean per bin), the server's (at each scrape)",
        *(["The server's engine at each scrape"] if engine else []),
        f"Arrivals and refusals (client in bins of {edges[1] - edges[0]:g} s, server between scrapes)",
        "Output token rate (the server counts a reply's tokens when it completes)",
    ]
    fig = make_subplots(len(titles), 1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.07)
    _concurrency(fig, run, series, t, edges)
    if engine:
        _engine(fig, 2, series, t)
    _arrivals(fig, len(titles) - 1, run, series, edges)
    _tokens(fig, len(titles), run, series, edges)
    for row, unit in enumerate(["requests", *(["sequences"] if engine else []), "requests/s", "tokens/s"], 1):
        fig.update_yaxes(title=unit, rangemode="tozero", row=row, col=1)
        if edges[0] < 0:  # warm-up: the server's series run, the client's records do not (not in records.csv)
            fig.add_vrect(
                x0=float(edges[0]), x1=0, fillcolor="#eceff1", line_width=0, layer="below", row=row, col=1
            )
        fig.add_vline(
            x=run.duration_s, line={"color": "black", "width": 1, "dash": "dash"}, opacity=0.6, row=row, col=1
        )
    fig.update_xaxes(range=[float(edges[0]), float(t[-1])])
    fig.update_xaxes(
        title="time since the start of the measured window (s); dashed: its end"
        + ("; grey: warm-up" if edges[0] < 0 else ""),
        row=len(titles),
        col=1,
    )
    fig.update_annotations(font_size=11, x=0, xanchor="left")
    title = f"{run.label}: server metrics over the run ({run.path.name})"
    ia.style(fig, title=title, height=240 + 230 * len(titles))
    return ia.legend_per_row(fig, len(titles))


def charts(runs: Sequence[RunData], pngs: Sequence[Path]) -> dict[Path, str]:
    """The charts for server_plots.write_server_metrics_plots(runs)'s PNGs (one per plotted run, in order)."""
    return {
        png: ia.to_div(server_chart(run, series), png.stem)
        for png, (run, series) in zip(pngs, plotted(runs), strict=True)
    }
