"""The sweep's figures: per profile against offered load, with each profile's computed knee marked.

`curves.png`: served throughput and goodput (with the offered load as the diagonal), TTFT p50/p99, E2E
p99 against the SLO; `outcomes.png`: the outcome shares per profile. Input: the curve table of
orchestrate.reproduce (one row per profile and rate).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from reports.knee import Knee
from reports.plots import OUTCOME_COLORS, PLAIN, PLAIN_MINOR, label_colors, save

log = logging.getLogger(__name__)

SHARES = (
    ("success_rate", "success", OUTCOME_COLORS["success"]),
    ("rejection_rate", "rejected", OUTCOME_COLORS["rejected"]),
    ("timeout_rate", "timed out", OUTCOME_COLORS["timeout"]),
    ("error_rate", "error", OUTCOME_COLORS["error"]),
    ("cut_rate", "cut at the end", "#9e9e9e"),
)


def _mark_knees(ax, knees: dict[str, Knee], colors: dict[str, str]) -> None:
    for name, knee in knees.items():
        if knee.breaks_at_rps is not None:
            ax.axvline(knee.breaks_at_rps, color=colors[name], linestyle=":", linewidth=1.4, alpha=0.9)


def curves_figure(
    curve: pd.DataFrame, knees: dict[str, Knee], slo: dict[str, float], capacities: dict[str, float]
) -> Figure:
    profiles = list(dict.fromkeys(curve["profile"]))
    colors = label_colors(profiles)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    served, good, ttft, e2e = axes.flat
    top = float(curve["rate_per_s"].max()) * 1.1
    for ax in (served, good):
        ax.plot([0, top], [0, top], color="#9e9e9e", linestyle="--", linewidth=1, label="offered")
    for name in profiles:
        rows = curve[curve["profile"] == name].sort_values("rate_per_s")
        x, color = rows["rate_per_s"], colors[name]
        served.plot(x, rows["requests_per_s"], "o-", color=color, label=name)
        good.plot(x, rows["goodput_requests_per_s"], "o-", color=color, label=name)
        ttft.plot(x, 1000 * rows["ttft_p50_s"], "o-", color=color, label=f"{name} p50")
        ttft.plot(x, 1000 * rows["ttft_p99_s"], "s--", color=color, alpha=0.7, label=f"{name} p99")
        e2e.plot(x, rows["e2e_p99_s"], "o-", color=color, label=f"{name} p99")
    for name, capacity in capacities.items():
        if name in colors:
            served.axhline(capacity, color=colors[name], linewidth=0.8, alpha=0.5)
    ttft.axhline(1000 * slo["ttft_s"], color="#c62828", linewidth=1, label="SLO")
    e2e.axhline(slo["e2e_s"], color="#c62828", linewidth=1, label="SLO")
    titles = (
        (served, "Served throughput (successful req/s; thin lines: probed capacity)", "req/s"),
        (good, "Goodput (successes within the SLO, req/s)", "req/s"),
        (ttft, "TTFT p50 (solid) and p99 (dashed)", "ms"),
        (e2e, "E2E p99", "s"),
    )
    for ax, title, unit in titles:
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("offered load (req/s, Poisson)")
        ax.set_ylabel(unit)
        _mark_knees(ax, knees, colors)
        ax.legend(fontsize=8)
    for ax in (ttft, e2e):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_minor_formatter(PLAIN_MINOR)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    fig.suptitle(
        "Per profile against offered load; dotted verticals: the load where each profile's knee is passed "
        "(served < share or SLO missed)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def outcomes_figure(curve: pd.DataFrame, knees: dict[str, Knee]) -> Figure:
    profiles = list(dict.fromkeys(curve["profile"]))
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.2 * len(profiles), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], profiles, strict=True):
        rows = curve[curve["profile"] == name].sort_values("rate_per_s")
        x = [f"{r:.2f}" for r in rows["rate_per_s"]]
        bottom = pd.Series(0.0, index=rows.index)
        # Older run folders count cut requests beside the records (not in the shares): not stacked then.
        beside = "uncounted_cuts" in rows and rows["uncounted_cuts"].fillna(0).any()
        for column, label, color in SHARES:
            if column not in rows or not rows[column].fillna(0).any() or (column == "cut_rate" and beside):
                continue
            share = 100 * rows[column].fillna(0)
            ax.bar(x, share, bottom=bottom, color=color, label=label)
            bottom += share
        if beside:
            ax.plot(x, 100 * rows["cut_rate"].fillna(0), "kx--", label="cut at the end (beside the shares)")
        knee = knees.get(name)
        ax.set_title(f"{name}\n{_short(knee)}", fontsize=9)
        ax.set_xlabel("offered load (req/s)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    axes[0][0].set_ylabel("% of attempted requests")
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="upper center",
        ncol=len(handles),
        fontsize=8,
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def _short(knee: Knee | None) -> str:
    if knee is None:
        return "knee: n/a"
    if knee.breaks_at_rps is None:
        return f"holds across the sweep ({knee.holds_up_to_rps:.2f} req/s)"
    held = f"{knee.holds_up_to_rps:.2f}" if knee.holds_up_to_rps is not None else "none"
    return f"holds up to {held}, breaks at {knee.breaks_at_rps:.2f} req/s ({knee.reason})"


def write_curves(
    curve: pd.DataFrame,
    knees: dict[str, Knee],
    slo: dict[str, float],
    capacities: dict[str, float],
    folder: Path,
) -> list[tuple[Path, str]]:
    return [
        (
            save(curves_figure(curve, knees, slo, capacities), folder, "curves"),
            "Served throughput, goodput, TTFT and E2E p99 against offered load, each profile's knee dotted.",
        ),
        (
            save(outcomes_figure(curve, knees), folder, "outcomes"),
            "Outcome shares of attempted requests at each offered load, per profile.",
        ),
    ]
