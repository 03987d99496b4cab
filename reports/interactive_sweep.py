"""The sweep's figures (reports.curves) as interactive charts: each figure against the offered load with its
95 % interval as a filled band; hover a point for its estimate and interval, click a profile to hide it."""

from __future__ import annotations

import logging
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports import interactive as ia
from reports.curves import SHARES, Points, knee_text
from reports.knee import Knee
from reports.point_figures import PointFigures
from reports.sweep_folder import ProbedProfile, SweepPlan
from reports.sweep_tables import interval_text, steady_text

log = logging.getLogger(__name__)

# (panel, figure, scale to the axis unit, kind for interval_text, line dash, series suffix)
CURVES = (
    (1, "served_per_s", 1, "rps", None, ""),
    (2, "goodput_per_s", 1, "rps", None, ""),
    (3, "ttft_p50_s", 1000, "ms", None, " p50"),
    (3, "ttft_p99_s", 1000, "ms", "dash", " p99"),
    (4, "e2e_p99_s", 1, "s", None, " p99"),
)
TITLES = (
    "Served (successful req/s; thin lines: probed capacity)",
    "Goodput (successes within the SLO, req/s)",
    "TTFT p50 (solid) and p99 (dashed), ms",
    "E2E p99, s",
)
CELLS = ((1, 1), (1, 2), (2, 1), (2, 2))


def _curve(
    fig: go.Figure,
    rows: list[PointFigures],
    figure: str,
    scale: float,
    kind: str,
    *,
    name: str,
    series: str,
    color: str,
    dash: str | None,
    panel: int,
) -> None:
    """The estimate's line with its markers (hollow: not settled) and its 95 % band; hover: the interval."""
    rows = [f for f in rows if f.figure(figure).estimate == f.figure(figure).estimate]  # NaN: no successes
    if not rows:
        return
    row, col = CELLS[panel - 1]
    ivs = [f.figure(figure) for f in rows]
    x = [f.offered_per_s for f in rows]
    low = [scale * (iv.low if iv.low == iv.low else iv.estimate) for iv in ivs]
    high = [scale * (iv.high if iv.high == iv.high else iv.estimate) for iv in ivs]
    fig.add_trace(ia.band(x, low, high, color=color, group=name), row=row, col=col)
    fig.add_scatter(
        x=x,
        y=[scale * iv.estimate for iv in ivs],
        mode="lines+markers",
        line={"color": color, "dash": dash},
        marker={
            "size": 8,
            "color": [color if f.settled else "white" for f in rows],
            "line": {"color": color, "width": 1.5},
        },
        customdata=[
            [interval_text(iv, kind), steady_text(f), f.requests] for iv, f in zip(ivs, rows, strict=True)
        ],
        hovertemplate=f"{name}{series} at %{{x:.3f}} req/s offered<br>%{{customdata[0]}} (95 %)<br>"
        "%{customdata[1]}, %{customdata[2]} requests<extra></extra>",
        name=name,
        legendgroup=name,
        showlegend=panel == 1,
        row=row,
        col=col,
    )


def curves_chart(
    points: Points, knees: dict[str, Knee], plan: SweepPlan, probe: dict[str, ProbedProfile]
) -> go.Figure:
    colors = ia.label_colors(list(points))
    fig = make_subplots(2, 2, subplot_titles=TITLES, horizontal_spacing=0.08, vertical_spacing=0.14)
    top = max((f.offered_per_s for pts in points.values() for f in pts.values()), default=1.0) * 1.1
    for panel in (1, 2):
        fig.add_scatter(
            x=[0, top],
            y=[0, top],
            mode="lines",
            line={"color": "#9e9e9e", "dash": "dash", "width": 1},
            name="offered",
            legendgroup="offered",
            showlegend=panel == 1,
            hoverinfo="skip",
            row=1,
            col=panel,
        )
    for name, pts in points.items():
        rows = [pts[r] for r in sorted(pts)]
        for panel, figure, scale, kind, dash, series in CURVES:
            _curve(
                fig,
                rows,
                figure,
                scale,
                kind,
                name=name,
                series=series,
                color=colors[name],
                dash=dash,
                panel=panel,
            )
        cap = probe.get(name)
        if cap is not None and cap.capacity_rps:
            fig.add_hline(
                y=cap.capacity_rps, line={"color": colors[name], "width": 1}, opacity=0.5, row=1, col=1
            )
    slo = plan.quantities
    fig.add_hline(y=1000 * slo["slo_ttft_s"], line={"color": "#c62828", "width": 1}, row=2, col=1)
    fig.add_hline(y=slo["slo_e2e_s"], line={"color": "#c62828", "width": 1}, row=2, col=2)
    for name, knee in knees.items():
        if knee.breaks_from_rps is not None:
            for row, col in CELLS:
                fig.add_vline(
                    x=knee.breaks_from_rps,
                    line={"color": colors[name], "dash": "dot", "width": 1.4},
                    row=row,
                    col=col,
                )
    fig.update_xaxes(title="offered load (req/s sent, exact Poisson schedule)")
    fig.update_yaxes(title="req/s", rangemode="tozero", row=1)
    fig.update_yaxes(type="log", row=2)
    fig.update_yaxes(title="ms", row=2, col=1)
    fig.update_yaxes(title="s", row=2, col=2)
    title = (
        "Against the offered load. Bands: 95 % intervals. Hollow markers: not in steady state. "
        "Dotted: where each knee breaks. Red: the SLO."
    )
    return ia.style(fig, title=title, height=820, legend_title="profile")


def outcomes_chart(points: Points, knees: dict[str, Knee]) -> go.Figure:
    names = list(points)
    titles = [f"{name}<br>{knee_text(knees.get(name))}" for name in names]
    fig = make_subplots(1, len(names), shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04)
    for col, name in enumerate(names, start=1):
        rows = [points[name][r] for r in sorted(points[name])]
        x = [f"{f.offered_per_s:.2f}" + ("" if f.settled else "*") for f in rows]
        present = [key for key, _, _ in SHARES if any(f.shares[key].estimate for f in rows)]
        for key, label, color in SHARES:
            if key not in present:
                continue
            success = key == "success"
            ivs = [f.shares[key] for f in rows]
            fig.add_bar(
                x=x,
                y=[100 * iv.estimate for iv in ivs],
                marker_color=color,
                name=label,
                legendgroup=key,
                showlegend=col == 1 or key not in _present_before(points, names[: col - 1]),
                customdata=[[interval_text(iv, "pct"), f.requests] for iv, f in zip(ivs, rows, strict=True)],
                hovertemplate=f"{name} at %{{x}} req/s: {label} %{{customdata[0]}} (95 %), of "
                "%{customdata[1]} requests<extra></extra>",
                # The success share's interval, as in the PNG (the others stack on it: whiskers would clash).
                error_y={
                    "type": "data",
                    "array": [100 * max(0.0, iv.high - iv.estimate) for iv in ivs],
                    "arrayminus": [100 * max(0.0, iv.estimate - iv.low) for iv in ivs],
                    "color": "black",
                    "thickness": 1,
                }
                if success
                else None,
                row=1,
                col=col,
            )
        fig.update_xaxes(title="offered load (req/s; * not steady)", type="category", row=1, col=col)
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="% of requests", range=[0, 100], row=1, col=1)
    ia.style(
        fig,
        title="Outcome shares at each offered load (whiskers: the success share's 95 % interval)",
        height=480,
        legend_title="outcome",
    )
    return fig.update_layout(margin={"t": 100})  # room for the two-line panel titles under the title


def _present_before(points: Points, names: list[str]) -> set[str]:
    """Outcomes already in the legend from earlier panels (each appears once)."""
    return {key for n in names for f in points[n].values() for key, _, _ in SHARES if f.shares[key].estimate}


def charts(
    points: Points, knees: dict[str, Knee], plan: SweepPlan, probe: dict[str, ProbedProfile], folder: Path
) -> dict[Path, str]:
    """PNG path (as curves.write_curves names it) -> the interactive chart's div."""
    return {
        folder / "curves.png": ia.to_div(curves_chart(points, knees, plan, probe), "curves"),
        folder / "outcomes.png": ia.to_div(outcomes_chart(points, knees), "outcomes"),
    }
