"""The per-request timeline (reports.timeline) as an interactive chart: one panel per run on a shared time
axis; hover a bar for that request's outcome, TTFT and E2E; click a legend entry to hide that outcome."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports import interactive as ia
from reports.plots import OUTCOME_COLORS, OUTCOME_NAMES
from reports.timeline import (
    LAG_COLOR,
    MAX_REQUESTS,
    WAITING_COLOR,
    Timeline,
    draws_chunk_ticks,
    panel_height_in,
    panel_title,
    timeline_data,
)
from runfolder.frame import RunData

log = logging.getLogger(__name__)

MAX_CHUNK_MARKS = 8_000  # per panel: every k-th chunk of each request above (the page stays a few MB)
HOVER = (
    "request %{customdata[0]}: %{customdata[1]} (%{customdata[2]})<br>TTFT %{customdata[3]}<br>"
    "E2E %{customdata[4]}<br>sent %{customdata[5]} s, ended %{customdata[6]} s<extra></extra>"
)


def _seconds(values: np.ndarray, digits: int = 3) -> list[str]:
    return ["—" if np.isnan(v) else f"{v:.{digits}f} s" for v in values]


def hover_data(run: RunData, t: Timeline) -> np.ndarray:
    """Per bar: number in send order, outcome, its detail, TTFT, E2E, sent and end (s from window start)."""
    rec = run.records.iloc[t.rows]
    ttft = rec["ttft_s"].to_numpy(dtype=float, na_value=np.nan)
    e2e = rec["e2e_s"].to_numpy(dtype=float, na_value=np.nan)
    detail = rec["outcome_detail"].fillna("").astype(str).to_numpy()
    return np.column_stack(
        [
            (t.ranks + 1).astype(str),
            [OUTCOME_NAMES.get(o, o) for o in t.outcome],
            detail,
            _seconds(ttft),
            _seconds(e2e),
            [f"{v:.2f}" for v in t.sent_s],
            [f"{v:.2f}" for v in t.end_s],
        ]
    )


def _panel(fig: go.Figure, row: int, run: RunData, t: Timeline, shown: set[str]) -> None:
    """One run's traces in subplot `row`; each legend entry once (`shown`), toggling every panel."""
    y = np.arange(t.rows.size, dtype=float)
    data = hover_data(run, t)
    has_first = ~np.isnan(t.first_s)
    wait_end = np.where(has_first, t.first_s, t.end_s)
    start = np.where(has_first, t.first_s, t.sent_s)  # no first token: the whole bar in the outcome's colour

    def legend(key: str) -> bool:
        new = key not in shown
        shown.add(key)
        return new

    late = t.sent_s - t.scheduled_s > 1e-3
    if late.any():
        xs, ys = ia.segments(t.scheduled_s[late], t.sent_s[late], y[late])
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"color": LAG_COLOR, "dash": "dot", "width": 1},
            name="due -> sent (late)",
            legendgroup="late",
            showlegend=legend("late"),
            hoverinfo="skip",
            row=row,
            col=1,
        )
    if has_first.any():
        fig.add_bar(
            y=y[has_first],
            x=(wait_end - t.sent_s)[has_first],
            base=t.sent_s[has_first],
            orientation="h",
            marker={"color": WAITING_COLOR, "line": {"width": 0}},
            width=0.8,
            customdata=data[has_first],
            hovertemplate=HOVER,
            name="waiting for the first token",
            legendgroup="waiting",
            showlegend=legend("waiting"),
            row=row,
            col=1,
        )
    for outcome in dict.fromkeys(t.outcome):
        mine = t.outcome == outcome
        color = OUTCOME_COLORS.get(outcome, "black")
        name = OUTCOME_NAMES.get(outcome, outcome)
        fig.add_bar(
            y=y[mine],
            x=(t.end_s - start)[mine],
            base=start[mine],
            orientation="h",
            width=0.8,
            marker={"color": color, "line": {"width": 0}},
            customdata=data[mine],
            hovertemplate=HOVER,
            name=name,
            legendgroup=outcome,
            showlegend=legend(outcome),
            row=row,
            col=1,
        )
        if outcome != "success":  # a refusal lasts milliseconds: a dot at its end keeps it visible
            fig.add_scatter(
                x=t.end_s[mine],
                y=y[mine],
                mode="markers",
                marker={"color": color, "size": 6},
                customdata=data[mine],
                hovertemplate=HOVER,
                name=name,
                legendgroup=outcome,
                showlegend=False,
                row=row,
                col=1,
            )
    tick = float(np.clip(300 / max(t.rows.size, 1), 4, 12))
    fig.add_scatter(
        x=t.first_s[has_first],
        y=y[has_first],
        mode="markers",
        hoverinfo="skip",
        marker={"symbol": "line-ns-open", "color": "black", "size": tick, "line": {"width": 1.2}},
        name="first token",
        legendgroup="first",
        showlegend=legend("first"),
        row=row,
        col=1,
    )
    if draws_chunk_ticks(t.rows.size) and t.token_s.size:
        keep = slice(None, None, max(1, int(np.ceil(t.token_s.size / MAX_CHUNK_MARKS))))
        fig.add_scatter(
            x=t.token_s[keep],
            y=y[t.token_bar[keep]],
            mode="markers",
            hoverinfo="skip",
            marker={"symbol": "line-ns-open", "color": "#263238", "size": tick * 0.6, "line": {"width": 0.6}},
            opacity=0.6,
            name="later chunks",
            legendgroup="chunks",
            showlegend=legend("chunks"),
            row=row,
            col=1,
        )
    fig.add_vline(
        x=t.window_s, line={"color": "black", "width": 1, "dash": "dash"}, opacity=0.6, row=row, col=1
    )
    ticks = np.unique(np.linspace(0, t.rows.size - 1, min(6, t.rows.size)).round().astype(int))
    fig.update_yaxes(
        range=[t.rows.size - 0.5, -0.5],
        tickvals=ticks,
        ticktext=[str(t.ranks[i] + 1) for i in ticks],
        title="request (by send)",
        showgrid=False,
        row=row,
        col=1,
    )


def timeline_chart(runs: Sequence[RunData], *, max_requests: int = MAX_REQUESTS) -> go.Figure:
    """One panel per run, stacked, sharing the time axis (seconds from each run's measured window start)."""
    data = [timeline_data(r, max_requests) for r in runs]
    heights = [panel_height_in(t.rows.size) for t in data]
    fig = make_subplots(
        len(data),
        1,
        shared_xaxes=True,
        row_heights=heights,
        vertical_spacing=0.12 / len(data),
        subplot_titles=[panel_title(r, t) for r, t in zip(runs, data, strict=True)],
    )
    shown: set[str] = set()
    for row, (run, t) in enumerate(zip(runs, data, strict=True), start=1):
        _panel(fig, row, run, t, shown)
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(
        title="time since the start of the measured window (s); dashed: its end", row=len(data), col=1
    )
    fig.update_annotations(font_size=11, x=0, xanchor="left")  # the panel titles, left as in the PNG
    return ia.style(fig, title="Per-request timeline", height=int(120 + 95 * sum(heights)), legend_title="")
