"""Where each profile's behaviour breaks on a load sweep: the knee, computed from the curve.

A sweep point holds when the served share (successes of attempted requests) is at least `follow_share`
(served throughput follows the offered load) and the share of attempted requests within the SLO is at
least `slo_attainment`. The knee is the highest offered load below the first point that fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One profile at one offered load."""

    rate_per_s: float  # offered (the schedule's rate)
    served_share: float  # successes / attempted
    slo_attainment: float | None  # good (success within the SLO) / attempted; None without an SLO


@dataclass(frozen=True, slots=True)
class Knee:
    holds_up_to_rps: float | None  # the highest swept load before the first failing point (None: none held)
    breaks_at_rps: float | None  # the first failing load (None: every swept load held)
    reason: str | None  # "served" (throughput stopped following), "slo" (latency left the SLO), both, None

    def describe(self) -> str:
        if self.breaks_at_rps is None:
            return f"holds across the sweep (up to {self.holds_up_to_rps:.2f} req/s)"
        why = {"served": "served throughput stops following", "slo": "latency leaves the SLO"}.get(
            self.reason or "", "served throughput stops following and latency leaves the SLO"
        )
        if self.holds_up_to_rps is None:
            return f"breaks already at the lowest load, {self.breaks_at_rps:.2f} req/s ({why})"
        return f"between {self.holds_up_to_rps:.2f} and {self.breaks_at_rps:.2f} req/s ({why})"


def find_knee(points: Sequence[CurvePoint], follow_share: float, slo_attainment: float) -> Knee:
    """The knee of one profile's curve; `points` in any order."""
    ordered = sorted(points, key=lambda p: p.rate_per_s)
    held: float | None = None
    for point in ordered:
        served_ok = point.served_share >= follow_share
        slo_ok = point.slo_attainment is None or point.slo_attainment >= slo_attainment
        if served_ok and slo_ok:
            held = point.rate_per_s
            continue
        reason = "served" if slo_ok else "slo" if served_ok else "served+slo"
        return Knee(held, point.rate_per_s, reason)
    return Knee(held, None, None)
