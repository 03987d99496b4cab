"""The sweep's figures, against the offered load actually sent (exact schedules), with 95 % bands.

`curves.png`: served throughput and goodput (the offered load as the diagonal), TTFT p50/p99 and E2E p99
against the SLO, each with its interval as a band; hollow markers: points that did not reach steady state;
dotted verticals: where each profile's knee breaks. `outcomes.png`: the outcome shares per profile, with
the success share's interval as an error bar.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.knee import Knee
from reports.plots import OUTCOME_COLORS, PLAIN, PLAIN_MINOR, label_colors, save
from reports.point_figures import PointFigures
from reports.sweep_folder import ProbedProfile, SweepPlan

log = logging.getLogger(__name__)

SHARES = (
    ("success", "success", OUTCOME_COLORS["success"]),
    ("rejected", "rejected", OUTCOME_COLORS["rejected"]),
    ("timeout", "timed out (server)", OUTCOME_COLORS["timeout"]),
    ("deadline", "client deadline", "#ce93d8"),
    ("error", "error", OUTCOME_COLORS["error"]),
    ("cut", "cut at the end", "#9e9e9e"),
)
Points = dict[str, dict[float, PointFigures]]


def _band(
    ax: Axes, rows: list[PointFigures], figure: str, color: str, scale: float, label: str, style: str = "-"
) -> None:
    xs = [f.offered_per_s for f in rows]
    ivs = [f.figure(figure) for f in rows]
    ys = [scale * iv.estimate for iv in ivs]
    ax.plot(xs, ys, style, color=color, label=label)
    ax.fill_between(
        xs, [scale * iv.low for iv in ivs], [scale * iv.high for iv in ivs], color=color, alpha=0.15
    )
    for f, y in zip(rows, ys, strict=True):
        ax.plot([f.offered_per_s], [y], "o", color=color, markerfacecolor=color if f.settled else "white")


def curves_figure(
    points: Points, knees: dict[str, Knee], plan: SweepPlan, probe: dict[str, ProbedProfile]
) -> Figure:
    colors = label_colors(list(points))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    served, good, ttft, e2e = axes.flat
    top = max((f.offered_per_s for pts in points.values() for f in pts.values()), default=1.0) * 1.1
    for ax in (served, good):
        ax.plot([0, top], [0, top], color="#9e9e9e", linestyle="--", linewidth=1, label="offered")
    for name, pts in points.items():
        rows = [pts[r] for r in sorted(pts)]
        if not rows:
            continue
        color = colors[name]
        _band(served, rows, "served_per_s", color, 1, name)
        _band(good, rows, "goodput_per_s", color, 1, name)
        _band(ttft, rows, "ttft_p50_s", color, 1000, f"{name} p50")
        _band(ttft, rows, "ttft_p99_s", color, 1000, f"{name} p99", "--")
        _band(e2e, rows, "e2e_p99_s", color, 1, f"{name} p99")
        cap = probe.get(name)
        if cap is not None and cap.capacity_rps:
            served.axhline(cap.capacity_rps, color=color, linewidth=0.8, alpha=0.5)
    ttft.axhline(1000 * plan.quantities["slo_ttft_s"], color="#c62828", linewidth=1, label="SLO")
    e2e.axhline(plan.quantities["slo_e2e_s"], color="#c62828", linewidth=1, label="SLO")
    titles = (
        (served, "Served (successful req/s; thin lines: probed capacity)", "req/s"),
        (good, "Goodput (successes within the SLO, req/s)", "req/s"),
        (ttft, "TTFT p50 (solid) and p99 (dashed)", "ms"),
        (e2e, "E2E p99", "s"),
    )
    for ax, title, unit in titles:
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("offered load (req/s sent, exact Poisson schedule)")
        ax.set_ylabel(unit)
        for name, knee in knees.items():
            if knee.breaks_from_rps is not None:
                ax.axvline(knee.breaks_from_rps, color=colors[name], linestyle=":", linewidth=1.4, alpha=0.9)
        ax.legend(fontsize=8)
    for ax in (ttft, e2e):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_minor_formatter(PLAIN_MINOR)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    fig.suptitle(
        "Bands: 95 % intervals. Hollow markers: not in steady state. Dotted: where each knee breaks.",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def outcomes_figure(points: Points, knees: dict[str, Knee]) -> Figure:
    names = list(points)
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.8), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = [points[name][r] for r in sorted(points[name])]
        x = [f"{f.offered_per_s:.2f}" + ("" if f.settled else "*") for f in rows]
        bottom = [0.0] * len(rows)
        for key, label, color in SHARES:
            share = [100 * f.shares[key].estimate for f in rows]
            if not any(share):
                continue
            ax.bar(x, share, bottom=bottom, color=color, label=label)
            bottom = [b + s for b, s in zip(bottom, share, strict=True)]
        success = [f.shares["success"] for f in rows]
        ax.errorbar(
            x,
            [100 * iv.estimate for iv in success],
            yerr=[
                [max(0.0, 100 * (iv.estimate - iv.low)) for iv in success],
                [max(0.0, 100 * (iv.high - iv.estimate)) for iv in success],
            ],
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=1,
        )
        knee = knees.get(name)
        ax.set_title(f"{name}\n{knee_text(knee)}", fontsize=9)
        ax.set_xlabel("offered load (req/s; * not steady)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    axes[0][0].set_ylabel("% of requests (bars: success share's 95 % interval)")
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def knee_text(knee: Knee | None) -> str:
    if knee is None:
        return ""
    held = f"holds {knee.holds_up_to_rps:.2f}" if knee.holds_up_to_rps is not None else "no load held"
    broke = f"breaks {knee.breaks_from_rps:.2f}" if knee.breaks_from_rps is not None else "none broke"
    return f"{held}, {broke} req/s"


def write_curves(
    points: Points, knees: dict[str, Knee], plan: SweepPlan, probe: dict[str, ProbedProfile], folder: Path
) -> list[tuple[Path, str]]:
    return [
        (
            save(curves_figure(points, knees, plan, probe), folder, "curves"),
            "Served throughput, goodput, TTFT and E2E p99 against the offered load, with 95 % bands.",
        ),
        (
            save(outcomes_figure(points, knees), folder, "outcomes"),
            "Outcome shares of the requests at each offered load, per profile, with the success interval.",
        ),
    ]
