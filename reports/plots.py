"""The report's figures (matplotlib, Agg): each function returns a Figure; `save` writes PNG and SVG."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, ssh)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from reports.metrics import RATE_NAMES, bin_width, cdf_points, label_timeline
from runfolder.frame import RunData
from runfolder.records import OUTCOMES

log = logging.getLogger(__name__)

OUTCOME_COLORS = {
    "success": "#2e7d32",
    "rejected": "#f9a825",
    "timeout": "#7b1fa2",
    "error": "#c62828",
    "cut": "#757575",
}
OUTCOME_NAMES = {
    "success": "success",
    "rejected": "rejected (429/overload)",
    "timeout": "timed out",
    "error": "error",
    "cut": "cut by the end of the run",
}
DPI = 110
plt.rcParams.update(
    {
        "svg.hashsalt": "mlx-serving-bench",  # stable SVG ids, so reruns diff cleanly
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.axisbelow": True,
        "grid.alpha": 0.3,
        "font.size": 10,
    }
)


PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")  # 2000, not 2x10^3, on log axes


def _two_and_five(value: float, _pos: object) -> str:
    # Minor ticks of a log axis: label only 2x and 5x each decade, so that 60, 70, 80, 90 do not overlap.
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if any(math.isclose(mantissa, m) for m in (2, 5)) else ""


PLAIN_MINOR = FuncFormatter(_two_and_five)  # minor labels on log axes, 2x and 5x only


def label_colors(labels: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def save(fig: Figure, folder: Path, name: str) -> Path:
    """Write NAME.png and NAME.svg; returns the PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(folder / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    log.debug("wrote %s", png)
    return png


def throughput(runs: pd.DataFrame, stats: pd.DataFrame) -> Figure:
    labels = list(stats.index)
    colors = label_colors(labels)
    mean = stats[("output_tokens_per_s", "mean")].to_numpy()
    low = mean - stats[("output_tokens_per_s", "min")].to_numpy()
    high = stats[("output_tokens_per_s", "max")].to_numpy() - mean
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(labels) + 2), 4.2))
    x = np.arange(len(labels))
    ax.bar(x, mean, color=[colors[k] for k in labels], alpha=0.75, width=0.6, label="mean of repeats")
    ax.errorbar(x, mean, yerr=[low, high], fmt="none", ecolor="black", capsize=6, label="min-max of repeats")
    for i, label in enumerate(labels):
        values = runs.loc[runs["label"] == label, "output_tokens_per_s"].astype(float)
        ax.scatter(
            np.full(len(values), i),
            values,
            color="black",
            s=14,
            zorder=3,
            label="one run" if i == 0 else None,
        )
        ax.annotate(
            f"{mean[i]:.1f}", (i, mean[i] + high[i]), textcoords="offset points", xytext=(0, 6), ha="center"
        )
    ax.set_xticks(x, [f"{k}\n(n={int(stats.loc[k, ('output_tokens_per_s', 'count')])})" for k in labels])
    ax.set_ylabel("Output throughput (tokens/s)")
    ax.set_ylim(0, max(float(np.nanmax(mean + high)), 1e-9) * 1.18)
    ax.set_title("Output throughput per label\n(output tokens of successful requests / measured window)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def outcomes(stats: pd.DataFrame) -> Figure:
    labels = list(stats.index)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(labels) + 2.5), 4.2))
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for outcome in OUTCOMES:
        key = (RATE_NAMES[outcome], "mean")
        # run folders from before the "cut" outcome have no such column
        share = 100 * stats[key].to_numpy(dtype=float) if key in stats else np.zeros(len(labels))
        ax.bar(
            x, share, bottom=bottom, width=0.6, color=OUTCOME_COLORS[outcome], label=OUTCOME_NAMES[outcome]
        )
        for i, value in enumerate(share):
            if value >= 4:  # thinner segments would not fit their label
                ink = "black" if outcome == "rejected" else "white"  # contrast on the amber segment
                ax.text(
                    i, bottom[i] + value / 2, f"{value:.0f}%", ha="center", va="center", color=ink, fontsize=9
                )
        bottom += share
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 100)
    ax.set_ylabel("Share of attempted requests (%)")
    ax.set_title("Outcome of every attempted request\n(mean over repeats)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="outcome")
    return fig


def latency_cdfs(by_label: Mapping[str, list[RunData]]) -> Figure:
    colors = label_colors(list(by_label))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, column, name in (
        (axes[0], "ttft_s", "Time to first token"),
        (axes[1], "e2e_s", "End-to-end latency"),
    ):
        spans = []
        for label, runs in by_label.items():
            values = np.concatenate(
                [r.records.loc[r.records["outcome"] == "success", column].to_numpy(dtype=float) for r in runs]
            )
            x, p = cdf_points(values)
            if x.size == 0:
                continue
            spans.append((x[0], x[-1]))
            ax.step(
                1000 * x,
                p,
                where="post",
                color=colors[label],
                label=f"{label} (n={np.isfinite(values).sum():,})",
            )
        if (
            spans
            and min(s[0] for s in spans) > 0
            and max(s[1] for s in spans) / min(s[0] for s in spans) > 30
        ):
            ax.set_xscale("log")  # a wide range hides the fast requests on a linear axis
            ax.xaxis.set_major_formatter(PLAIN)
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("Fraction of successful requests ≤ x")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name}: CDF")
        if spans:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Latency distributions (successful requests, all repeats pooled)")
    fig.tight_layout()
    return fig


def over_time_bin_s(by_label: Mapping[str, list[RunData]]) -> float:
    """Bins wide enough to hold a few requests each: continuous batching finishes requests in bursts."""
    all_runs = [r for runs in by_label.values() for r in runs]
    fewest = min(len(r.records) for r in all_runs)
    return bin_width(max(r.duration_s for r in all_runs), target_bins=min(60, max(fewest // 3, 10)))


def over_time(by_label: Mapping[str, list[RunData]]) -> Figure:
    labels = list(by_label)
    colors = label_colors(labels)
    bin_s = over_time_bin_s(by_label)
    fig, axes = plt.subplots(
        1 + len(labels),
        1,
        figsize=(10, 2.6 + 1.9 * len(labels)),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [1.4] + [1.0] * len(labels)},
    )
    top = axes[0][0]
    timelines = {label: label_timeline(runs, bin_s) for label, runs in by_label.items()}
    for label, line in timelines.items():
        # Repeat the last value at the end of the last bin so that the step covers it.
        x = np.append(line["t_s"].to_numpy(), line["t_s"].iloc[-1] + bin_s)
        y = np.append(line["output_tokens_per_s"].to_numpy(), line["output_tokens_per_s"].iloc[-1])
        top.step(x, y, where="post", color=colors[label], label=label)
    top.set_ylabel("Output tok/s")
    top.set_ylim(bottom=0)
    top.set_title(f"Output throughput over time (bins of {bin_s:g} s, by token arrival, mean of repeats)")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="label")
    for (label, line), row in zip(timelines.items(), axes[1:], strict=True):
        ax = row[0]
        bottom = np.zeros(len(line))
        for outcome in OUTCOMES:
            ax.bar(
                line["t_s"],
                line[outcome],
                bottom=bottom,
                width=bin_s,
                align="edge",
                color=OUTCOME_COLORS[outcome],
                label=OUTCOME_NAMES[outcome],
                linewidth=0,
            )
            bottom += line[outcome].to_numpy()
        ax.set_ylabel("Requests/s")
        ax.set_title(f"{label}: outcomes over time", fontsize=9, loc="left")
    axes[1][0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="outcome")
    axes[-1][0].set_xlabel("Time since the start of the measured window (s)")
    fig.tight_layout()
    return fig


def has_sweep(runs: pd.DataFrame) -> bool:
    """Runs differ in load (users or arrival rate) across labels: there is a knee to look for."""
    known = runs.dropna(subset=["load"])
    return known.groupby("load_kind")["load"].nunique().max() > 1 if not known.empty else False


def sweep(runs: pd.DataFrame) -> Figure:
    known = runs.dropna(subset=["load"])
    kind = known["load_kind"].value_counts().idxmax()  # one x axis; runs of the other kind are left out
    data = known[known["load_kind"] == kind].copy()
    data["series"] = data["profile"].fillna("runs")
    xlabel = "Concurrent users (closed loop)" if kind == "users" else "Arrival rate (requests/s, open loop)"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = label_colors(list(dict.fromkeys(data["series"])))
    for series, points in data.groupby("series", sort=False):
        per_load = points.groupby("load").agg(
            tput=("output_tokens_per_s", "mean"),
            tput_min=("output_tokens_per_s", "min"),
            tput_max=("output_tokens_per_s", "max"),
            ttft50=("ttft_p50_s", "mean"),
            ttft99=("ttft_p99_s", "mean"),
            e2e50=("e2e_p50_s", "mean"),
        )
        x = per_load.index.to_numpy(dtype=float)
        yerr = [per_load["tput"] - per_load["tput_min"], per_load["tput_max"] - per_load["tput"]]
        left.errorbar(
            x, per_load["tput"], yerr=yerr, marker="o", capsize=4, color=colors[series], label=series
        )
        right.plot(x, 1000 * per_load["ttft50"], marker="o", color=colors[series], label=f"{series} TTFT p50")
        right.plot(
            x,
            1000 * per_load["ttft99"],
            marker="^",
            ls="--",
            color=colors[series],
            label=f"{series} TTFT p99",
        )
        right.plot(
            x, 1000 * per_load["e2e50"], marker="s", ls=":", color=colors[series], label=f"{series} E2E p50"
        )
    left.set_xlabel(xlabel)
    left.set_ylabel("Output throughput (tokens/s)")
    left.set_ylim(bottom=0)
    left.set_title("Throughput against load\n(it flattens at the knee)")
    left.legend(fontsize=8, title="server profile")
    right.set_xlabel(xlabel)
    right.set_ylabel("Latency (ms)")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(PLAIN)
    right.set_title("Latency against load\n(it climbs past the knee)")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig
