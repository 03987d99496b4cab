"""Where each profile's behaviour breaks on a load sweep: the knee, as an interval with a verdict.

A point holds when, with 95 % confidence, the served share (successes of attempted requests) is at
least `follow_share` and the share within the SLO at least `slo_attainment`: the one-sided 95 % lower
bounds (the low ends of 90 % two-sided intervals, which the caller passes) clear the thresholds. It
breaks when either upper bound lies below its threshold, and is indeterminate when an interval straddles
one (too few requests to tell). The knee lies between the highest load up to which
every point holds and the lowest load that breaks; the sweep places extra points between the two by
bisection on a log scale (`next_rate`), as GuideLLM's sweep does, instead of reading a fixed grid's flip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from reports.intervals import Interval

log = logging.getLogger(__name__)

Verdict = Literal["holds", "breaks", "indeterminate"]


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One profile at one offered load."""

    rate_per_s: float  # offered (exact)
    served_share: Interval  # successes / attempted
    slo_attainment: Interval | None  # good / attempted; None without an SLO


def point_verdict(point: CurvePoint, follow_share: float, slo_attainment: float) -> tuple[Verdict, str]:
    """The verdict and which criterion decided it ("served", "slo", "served+slo", or "" when it holds)."""
    checks = [("served", point.served_share, follow_share)]
    if point.slo_attainment is not None:
        checks.append(("slo", point.slo_attainment, slo_attainment))
    below = [name for name, iv, limit in checks if iv.high < limit]
    unsure = [name for name, iv, limit in checks if iv.low < limit <= iv.high]
    if below:
        return "breaks", "+".join(below)
    if unsure:
        return "indeterminate", "+".join(unsure)
    return "holds", ""


@dataclass(frozen=True, slots=True)
class Knee:
    holds_up_to_rps: float | None  # every point up to here holds (None: the lowest did not)
    breaks_from_rps: float | None  # the lowest load that breaks (None: none did)
    reason: str | None  # what broke first: "served", "slo" or both
    indeterminate_rps: tuple[float, ...] = ()  # points between, or below, that could not be told

    @property
    def verdict(self) -> str:
        held, broke = self.holds_up_to_rps is not None, self.breaks_from_rps is not None
        if held and broke:
            return "located" if not self.between() else "located, with indeterminate points between"
        if broke:  # nothing below it held with confidence
            return (
                "breaks throughout"
                if not self.indeterminate_rps
                else "breaks from here; below, indeterminate"
            )
        if held:
            return "holds throughout" if not self.between() else "holds; above, indeterminate"
        return "indeterminate"

    def between(self) -> tuple[float, ...]:
        low = self.holds_up_to_rps or 0.0
        high = self.breaks_from_rps or math.inf
        return tuple(r for r in self.indeterminate_rps if low < r < high)

    def describe(self) -> str:
        why = {"served": "served share falls", "slo": "latency leaves the SLO"}.get(
            self.reason or "", "served share falls and latency leaves the SLO"
        )
        unsure = ", ".join(f"{r:.2f}" for r in self.indeterminate_rps)
        unsure_text = f"; indeterminate at {unsure} req/s" if unsure else ""
        if self.breaks_from_rps is None:
            if self.holds_up_to_rps is None:
                return f"indeterminate across the sweep{unsure_text}"
            return f"holds up to {self.holds_up_to_rps:.2f} req/s, no load broke it{unsure_text}"
        if self.holds_up_to_rps is None:
            return (
                f"breaks from {self.breaks_from_rps:.2f} req/s ({why}); no load held with confidence"
                f"{unsure_text}"
            )
        return (
            f"holds up to {self.holds_up_to_rps:.2f}, breaks from {self.breaks_from_rps:.2f} req/s "
            f"({why}){unsure_text}"
        )


def find_knee(points: Sequence[CurvePoint], follow_share: float, slo_attainment: float) -> Knee:
    """The knee of one profile's curve; `points` in any order."""
    ordered = sorted(points, key=lambda p: p.rate_per_s)
    verdicts = [point_verdict(p, follow_share, slo_attainment) for p in ordered]
    broke = next(((p, why) for p, (v, why) in zip(ordered, verdicts, strict=True) if v == "breaks"), None)
    limit = broke[0].rate_per_s if broke else math.inf
    # Below the first breaking load, an indeterminate point (too few requests to tell) does not hide a
    # holding one above it; it is listed instead.
    held_rates = [p.rate_per_s for p, (v, _) in zip(ordered, verdicts, strict=True) if v == "holds"]
    held = max((r for r in held_rates if r < limit), default=None)
    unsure = tuple(
        p.rate_per_s
        for p, (v, _) in zip(ordered, verdicts, strict=True)
        if v == "indeterminate" and p.rate_per_s < limit
    )
    return Knee(held, broke[0].rate_per_s if broke else None, broke[1] if broke else None, unsure)


def next_rate(knee: Knee, lowest_rps: float, min_ratio: float = 1.15) -> float | None:
    """The load to try next: the geometric middle between the last holding load and the first breaking
    one, unless a measured point is already near it (an indeterminate one needs more requests, not a
    neighbour); with no holding load, half the lowest measured one, to find where the profile holds.
    None when the knee is already narrow or nothing broke."""
    if knee.breaks_from_rps is None:
        return None
    if knee.holds_up_to_rps is None:
        return lowest_rps / 2
    if knee.breaks_from_rps / knee.holds_up_to_rps <= min_ratio:
        return None
    middle = math.sqrt(knee.holds_up_to_rps * knee.breaks_from_rps)
    if any(abs(math.log(r / middle)) < math.log(min_ratio) / 2 for r in knee.between()):
        return None
    return middle
