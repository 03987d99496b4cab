"""The tables of `benchmarks/server_vs_engine.py`: per-point figures (median over the repeats) and ratios
between systems with their spread, and the goals table (docs/benchmarks.md).

Ratio method: at each point every system runs once per repeat, back to back in rotated order, so each
repeat gives one paired ratio (ours / other, same point, same repeat); a cell shows the median of those
ratios and, in brackets, their range [min-max] over the repeats."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, fields

ENGINE = "engine"
PEER = "mlx_lm.server"


@dataclass
class PointResult:
    tok_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float


# One point: its label and, per system, its results in repeat order.
Point = tuple[str, dict[str, list[PointResult]]]


@dataclass(frozen=True)
class Goal:
    """ours / `other` on `field`, at most (`at_most`) or at least `bound`."""

    label: str
    field: str
    other: str
    bound: float
    at_most: bool

    def met(self, ratio: float) -> bool:
        return ratio <= self.bound if self.at_most else ratio >= self.bound


GOALS = (
    Goal("TTFT p50 / peer", "ttft_p50_s", PEER, 1.0, True),
    Goal("TTFT p99 / peer", "ttft_p99_s", PEER, 1.0, True),
    Goal("tok/s / peer", "tok_s", PEER, 1.05, False),
    Goal("tok/s / engine", "tok_s", ENGINE, 0.95, False),
    Goal("TTFT p50 / engine", "ttft_p50_s", ENGINE, 1.1, True),
)


def median_result(results: list[PointResult]) -> PointResult:
    return PointResult(*(statistics.median(getattr(r, f.name) for r in results) for f in fields(PointResult)))


def ratios(ours: list[PointResult], other: list[PointResult], field: str) -> list[float]:
    """One ratio per repeat: ours / other on `field`, paired by repeat."""
    return [getattr(a, field) / getattr(b, field) for a, b in zip(ours, other, strict=True)]


def ratio_cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def print_tables(title: str, points: list[Point], ours: list[str]) -> None:
    peer = [PEER] if PEER in points[0][1] else []
    systems = [ENGINE, *ours, *peer]
    pairs = [(o, ENGINE) for o in ours] + [(o, p) for p in peer for o in ours]
    head = " | ".join(systems) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs)
    for field, name, scale in (
        ("tok_s", "output tok/s", 1.0),
        ("ttft_p50_s", "TTFT p50 ms", 1000.0),
        ("ttft_p99_s", "TTFT p99 ms", 1000.0),
        ("tpot_p50_s", "TPOT p50 ms", 1000.0),
    ):
        print(f"\n### {title}: {name}\n")
        print(f"| load | {head} |")
        print("|---" * (1 + len(systems) + len(pairs)) + "|")
        for label, cell in points:
            values = " | ".join(f"{scale * getattr(median_result(cell[n]), field):.0f}" for n in systems)
            cells = " | ".join(ratio_cell(ratios(cell[a], cell[b], field)) for a, b in pairs)
            print(f"| {label} | {values} | {cells} |")


def print_goals(points: list[Point], ours: str) -> int:
    """The goals table for `ours`: each ratio's median [range] and whether its median meets the goal
    (and, marked, whether every repeat did); returns the number of cells whose median misses."""
    goals = [g for g in GOALS if g.other in points[0][1]]
    print(f"\n### Goals: {ours}, median ratio [range over repeats]")
    print("(ok: the median meets the goal; ok, all: every repeat does)\n")
    bounds = " | ".join(f"{g.label} {'<=' if g.at_most else '>='} {g.bound:.2f}" for g in goals)
    print(f"| load | {bounds} |")
    print("|---" * (1 + len(goals)) + "|")
    missed = 0
    for label, cell in points:
        cells = []
        for goal in goals:
            values = ratios(cell[ours], cell[goal.other], goal.field)
            median_met = goal.met(statistics.median(values))
            missed += not median_met
            every = all(goal.met(v) for v in values)
            verdict = ("ok, all" if every else "ok") if median_met else "**missed**"
            cells.append(f"{ratio_cell(values)} {verdict}")
        print(f"| {label} | {' | '.join(cells)} |")
    print(f"\n{missed} of {len(points) * len(goals)} goal cells missed (by the median)")
    return missed
