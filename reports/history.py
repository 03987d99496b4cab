"""`python -m reports.compare --history POINT [POINT ...]`: change points in the gated figures over a
series of runs (reports/change_points.py: E-divisive means with a permutation test).

A POINT is a folder: a run folder, or a folder of run folders (a gate job's cand/, a night's results),
whose figures are averaged into one point. Given a single folder that holds several such folders (a
folder of dated runs, e.g. the nightly results the workflow keeps), each of them is a point. Points are
ordered as given, or, from a single folder, by the start of their first run.

Outputs in --out: history.md (each figure's change points: the point where each shift starts, its size
and p-value), history.json, history.png (each figure's series, change points marked).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
import numpy as np

from reports import evidence as ev
from reports import stats
from reports.change_points import ChangePoint, find_change_points
from reports.errors import BadInput
from reports.runs import discover, load_runs

# figure -> (title, unit, scale, higher is better)
FIGURES = {
    "output_tokens_per_s": ("output throughput", "tok/s", 1.0, True),
    "ttft_p95_s": ("TTFT p95 (every request of the point)", "ms", 1000.0, False),
    "server_cpu_s_per_output_token": ("server CPU per output token", "ms", 1000.0, False),
    "success_rate": ("success rate", "%", 100.0, True),
}
MIN_POINTS = 6  # two segments of three: fewer cannot show a change point


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    started_ts_s: float
    runs: int
    figures: dict[str, float | None]


def point_folders(paths: list[Path]) -> list[Path]:
    """The folders that are points: as given, or the subfolders of a single folder of points."""
    if len(paths) == 1:
        children = sorted(p for p in paths[0].iterdir() if p.is_dir() and discover([p]))
        if len(children) >= 2 and not (paths[0] / "summary.json").is_file():
            return children
    return paths


def _geomean(values: list[float]) -> float | None:
    return float(np.exp(np.mean(np.log(values)))) if values and all(v > 0 for v in values) else None


def load_point(folder: Path) -> Point:
    runs = load_runs([folder])
    figures = [ev.run_figures(run) for run in runs]
    cpu = [f.server_cpu_s_per_output_token for f in figures]
    ttft = stats.pooled_quantile([ev.ttft_values_s(run) for run in runs], 95)
    return Point(
        name=folder.name,
        started_ts_s=min(f.started_ts_s for f in figures),
        runs=len(runs),
        figures={
            "output_tokens_per_s": _geomean([f.output_tokens_per_s or 0.0 for f in figures]),
            "ttft_p95_s": ttft if math.isfinite(ttft) else None,
            "server_cpu_s_per_output_token": None if any(v is None for v in cpu) else _geomean(cpu),  # type: ignore[arg-type]
            "success_rate": sum(f.successes for f in figures) / max(sum(f.requests for f in figures), 1),
        },
    )


def load_points(paths: list[Path]) -> list[Point]:
    folders = point_folders(paths)
    points = [load_point(folder) for folder in folders]
    if len(paths) == 1:
        points.sort(key=lambda p: p.started_ts_s)
    if len(points) < MIN_POINTS:
        raise BadInput(
            f"--history needs at least {MIN_POINTS} points (three on each side of a change), "
            f"got {len(points)}"
        )
    return points


def changes(points: list[Point], alpha: float, permutations: int) -> dict[str, list[ChangePoint]]:
    found = {}
    for figure in FIGURES:
        series = [p.figures[figure] for p in points]
        if any(v is None for v in series):
            continue  # not measured in every point (e.g. CPU in runs made without the block runner)
        found[figure] = find_change_points(series, alpha=alpha, permutations=permutations)  # type: ignore[arg-type]
    return found


def to_markdown(points: list[Point], found: dict[str, list[ChangePoint]], alpha: float) -> str:
    lines = [
        "## Change points",
        "",
        f"{len(points)} points, first {points[0].name}, last {points[-1].name}. Method: E-divisive means "
        f"with a permutation test (p < {alpha:g}), reports/change_points.py.",
        "",
        "| figure | starts at point | # | before | after | change | p |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for figure, cps in found.items():
        title, unit, scale, _ = FIGURES[figure]
        for cp in cps:
            lines.append(
                f"| {title} | {points[cp.index].name} | {cp.index + 1} | "
                f"{cp.before_mean * scale:.4g} {unit} | {cp.after_mean * scale:.4g} {unit} | "
                f"{cp.change_pct:+.1f} % | {cp.p_value:.3f} |"
            )
    quiet = [FIGURES[f][0] for f, cps in found.items() if not cps]
    if quiet:
        lines += ["", f"No change point in: {', '.join(quiet)}."]
    return "\n".join(lines)


def plot(points: list[Point], found: dict[str, list[ChangePoint]], path: Path) -> None:
    fig, axes = plt.subplots(len(found), 1, figsize=(9, 2.4 * max(len(found), 1)), sharex=True, squeeze=False)
    x = np.arange(1, len(points) + 1)
    for ax, (figure, cps) in zip(axes[:, 0], found.items(), strict=True):
        title, unit, scale, _ = FIGURES[figure]
        y = np.array([p.figures[figure] for p in points], dtype=float) * scale
        ax.plot(x, y, "o-", color="#1f77b4", markersize=4)
        cuts = [0, *[cp.index for cp in cps], len(points)]
        for start, end in itertools.pairwise(cuts):
            ax.hlines(y[start:end].mean(), start + 0.6, end + 0.4, colors="#888", linestyles="--")
        for cp in cps:
            ax.axvline(cp.index + 0.5, color="#d62728")
            ax.annotate(f"{cp.change_pct:+.1f} % (p {cp.p_value:.3f})", (cp.index + 0.6, y.max()),
                        color="#d62728", fontsize=8, va="top")  # fmt: skip
        ax.set_ylabel(f"{title}\n({unit})", fontsize=8)
    axes[-1, 0].set_xlabel("point (in order)")
    axes[-1, 0].set_xticks(x)
    fig.suptitle("Gated figures over the series; red: change points (E-divisive, permutation test)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_history(paths: list[Path], out: Path, alpha: float = 0.01, permutations: int = 499) -> str:
    points = load_points(paths)
    found = changes(points, alpha, permutations)
    out.mkdir(parents=True, exist_ok=True)
    text = to_markdown(points, found, alpha)
    (out / "history.md").write_text(text + "\n", encoding="utf-8")
    payload = {
        "points": [asdict(p) for p in points],
        "change_points": {
            f: [{**asdict(cp), "change_pct": cp.change_pct} for cp in cps] for f, cps in found.items()
        },
    }
    (out / "history.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if found:
        plot(points, found, out / "history.png")
    return text
