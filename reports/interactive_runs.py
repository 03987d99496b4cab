"""Interactive versions of the single-run / comparison report's figures (reports.plots): throughput per
label, outcome shares, latency CDFs, and throughput, outcomes and each request's latency over time."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports import interactive as ia
from reports.metrics import RATE_NAMES, cdf_points, label_timeline
from reports.plots import OUTCOME_COLORS, OUTCOME_NAMES, over_time_bin_s
from runfolder.frame import RunData
from runfolder.records import OUTCOMES

log = logging.getLogger(__name__)

MAX_LATENCY_DOTS = 2_000  # per label in "latency by send time": above, sampled evenly (the page stays small)


def throughput_chart(runs: pd.DataFrame, stats: pd.DataFrame) -> go.Figure:
    labels = list(stats.index)
    colors = ia.label_colors(labels)
    col = "output_tokens_per_s"
    mean = stats[(col, "mean")].to_numpy(dtype=float)
    low, high = stats[(col, "min")].to_numpy(dtype=float), stats[(col, "max")].to_numpy(dtype=float)
    count = stats[(col, "count")].to_numpy()
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=mean,
        marker_color=[ia.rgba(colors[k], 0.75) for k in labels],
        error_y={"type": "data", "array": high - mean, "arrayminus": mean - low, "color": "black"},
        customdata=np.column_stack([low, high, count]),
        hovertemplate="%{x}: mean %{y:.1f} tok/s<br>min-max %{customdata[0]:.1f}-%{customdata[1]:.1f} over "
        "%{customdata[2]} run(s)<extra></extra>",
        name="mean of repeats",
    )
    fig.add_scatter(
        x=runs["label"],
        y=runs[col].astype(float),
        mode="markers",
        marker={"color": "black", "size": 6},
        customdata=[Path(r).name for r in runs["run"]],
        hovertemplate="%{customdata}: %{y:.1f} tok/s<extra></extra>",
        name="one run",
    )
    fig.update_yaxes(title="output tokens/s", rangemode="tozero")
    return ia.style(fig, title="Output throughput per label (whiskers: min-max of repeats)", height=420)


def outcomes_chart(stats: pd.DataFrame) -> go.Figure:
    labels = list(stats.index)
    fig = go.Figure()
    for outcome in OUTCOMES:
        key = (RATE_NAMES[outcome], "mean")
        if key not in stats:  # run folders from before the "cut" outcome
            continue
        share = 100 * stats[key].to_numpy(dtype=float)
        fig.add_bar(
            x=labels,
            y=share,
            name=OUTCOME_NAMES[outcome],
            marker_color=OUTCOME_COLORS[outcome],
            hovertemplate=f"%{{x}}: %{{y:.1f}} % {OUTCOME_NAMES[outcome]}<extra></extra>",
        )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="% of attempted requests", range=[0, 100])
    return ia.style(
        fig,
        title="Outcome of every attempted request (mean over repeats)",
        height=420,
        legend_title="outcome",
    )


def latency_cdf_chart(by_label: Mapping[str, list[RunData]]) -> go.Figure:
    colors = ia.label_colors(list(by_label))
    fig = make_subplots(1, 2, subplot_titles=("Time to first token", "End-to-end latency"))
    for col, column in ((1, "ttft_s"), (2, "e2e_s")):
        for label, runs in by_label.items():
            values = np.concatenate(
                [r.records.loc[r.records["outcome"] == "success", column].to_numpy(dtype=float) for r in runs]
            )
            x, p = cdf_points(values)  # at most 1,000 quantiles: a million requests plot as fast as ten
            if x.size == 0:
                continue
            fig.add_scatter(
                x=1000 * x,
                y=p,
                mode="lines",
                line={"shape": "hv", "color": colors[label]},
                name=f"{label} (n={np.isfinite(values).sum():,})",
                legendgroup=label,
                showlegend=col == 1,
                hovertemplate=f"{label}: %{{y:.1%}} of successes at or below %{{x:,.0f}} ms<extra></extra>",
                row=1,
                col=col,
            )
        fig.update_xaxes(title="ms", type="log", row=1, col=col)
    fig.update_yaxes(title="fraction of successful requests <= x", range=[0, 1.02])
    return ia.style(
        fig,
        title="Latency CDFs of successful requests (all repeats pooled; log x)",
        height=430,
        legend_title="label",
    )


def over_time_chart(by_label: Mapping[str, list[RunData]]) -> go.Figure:
    """Output tok/s over the window, each request's TTFT and E2E by send time (a view the PNG lacks: hover
    a dot for one request), and each label's outcomes per second by request end."""
    labels = list(by_label)
    colors = ia.label_colors(labels)
    bin_s = over_time_bin_s(by_label)
    titles = [
        f"Output throughput (bins of {bin_s:g} s, by token arrival, mean of repeats)",
        "Latency of each successful request by send time (first run of each label; open: TTFT, filled: E2E)",
        *(f"{label}: outcomes over time" for label in labels),
    ]
    fig = make_subplots(
        len(titles),
        1,
        shared_xaxes=True,
        subplot_titles=titles,
        vertical_spacing=0.06,
        row_heights=[1.4, 1.4] + [1.0] * len(labels),
    )
    for label, runs in by_label.items():
        line = label_timeline(runs, bin_s)
        x, y = ia.step_xy(line["t_s"].to_numpy(), line["output_tokens_per_s"].to_numpy(), bin_s)
        fig.add_scatter(
            x=x,
            y=y,
            mode="lines",
            line={"shape": "hv", "color": colors[label]},
            name=label,
            legendgroup=label,
            hovertemplate=f"{label}: %{{y:.1f}} tok/s from %{{x:g}} s<extra></extra>",
            row=1,
            col=1,
        )
        _latency_dots(fig, runs[0], colors[label])
    for row, (label, runs) in enumerate(by_label.items(), start=3):
        line = label_timeline(runs, bin_s)
        for outcome in OUTCOMES:
            fig.add_bar(
                x=line["t_s"] + bin_s / 2,
                y=line[outcome],
                width=bin_s,
                name=OUTCOME_NAMES[outcome],
                marker={"color": OUTCOME_COLORS[outcome], "line": {"width": 0}},
                legendgroup=outcome,
                showlegend=row == 3,
                hovertemplate=f"{label}, {OUTCOME_NAMES[outcome]}: %{{y:.2f}}/s at %{{x:g}} s<extra></extra>",
                row=row,
                col=1,
            )
        fig.update_yaxes(title="requests/s", row=row, col=1)
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="output tok/s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="latency (s)", type="log", row=2, col=1)
    fig.update_xaxes(title="time since the start of the measured window (s)", row=len(titles), col=1)
    ia.style(fig, title="Throughput, latency and outcomes over time", height=300 + 210 * len(titles))
    return ia.legend_per_row(fig, len(titles))


def _latency_dots(fig: go.Figure, run: RunData, color: str) -> None:
    rec = run.records[run.records["outcome"] == "success"]
    rows = np.unique(np.linspace(0, len(rec) - 1, min(len(rec), MAX_LATENCY_DOTS)).round().astype(int))
    rec = rec.iloc[rows] if len(rec) else rec
    sent = (rec["scheduled_ts_s"].to_numpy(dtype=float) - run.window_start_s).round(3)
    for column, symbol, name in (("ttft_s", "circle-open", "TTFT"), ("e2e_s", "circle", "E2E")):
        fig.add_scatter(
            x=sent,
            y=rec[column].to_numpy(dtype=float, na_value=np.nan),
            mode="markers",
            marker={"color": color, "size": 5, "symbol": symbol, "opacity": 0.7},
            name=f"{run.label} {name}",
            legendgroup=run.label,
            showlegend=False,
            hovertemplate=f"{run.label}: {name} %{{y:.3f}} s, sent at %{{x:.2f}} s<extra></extra>",
            row=2,
            col=1,
        )


def charts(
    runs: pd.DataFrame, stats: pd.DataFrame, by_label: Mapping[str, list[RunData]], folder: Path
) -> dict[Path, str]:
    """PNG path (as report.make_plots names it) -> the interactive chart's div."""
    return {
        folder / "throughput.png": ia.to_div(throughput_chart(runs, stats), "throughput"),
        folder / "outcomes.png": ia.to_div(outcomes_chart(stats), "outcomes"),
        folder / "latency_cdf.png": ia.to_div(latency_cdf_chart(by_label), "latency_cdf"),
        folder / "over_time.png": ia.to_div(over_time_chart(by_label), "over_time"),
    }
