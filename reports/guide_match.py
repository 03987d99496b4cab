"""Locating the migration guide's 70 % success / 12 % rejections / 18 % timeouts on a measured curve.

Distance between two outcome mixes: the total variation distance, half the sum of the absolute
differences over success, rejected, timed out and everything else (errors, cut): 0 for the same mix, 1
for disjoint ones; in percentage points it is the share of requests that would have to change outcome.

The search (orchestrate.sweep_run) moves the offered load toward the guide's success share: success falls
with load, so the rate where it crosses the target is bracketed by the sweep's points and narrowed by
interpolation on a log scale; past capacity a server serves a fixed rate, so success ~ capacity / load,
which is how a rate outside the bracket is extrapolated.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence

from reports.sweep_folder import GuideMix

log = logging.getLogger(__name__)

MIX_KEYS = ("success", "rejected", "timeout")


def guide_shares(guide: GuideMix) -> dict[str, float] | None:
    values = (guide.success_rate, guide.rejection_rate, guide.timeout_rate)
    if any(v is None for v in values):
        return None
    shares = dict(zip(MIX_KEYS, values, strict=True))
    shares["other"] = max(0.0, 1.0 - sum(values))  # type: ignore[arg-type]
    return shares  # type: ignore[return-value]


def measured_shares(shares: dict[str, float]) -> dict[str, float]:
    out = {key: float(shares.get(key, 0.0)) for key in MIX_KEYS}
    out["other"] = sum(float(shares.get(key, 0.0)) for key in ("error", "cut", "deadline"))
    return out


def mix_distance(measured: dict[str, float], guide: GuideMix) -> float | None:
    """Total variation distance between a measured mix (outcome -> share) and the guide's; None when the
    guide gives no full mix."""
    target = guide_shares(guide)
    if target is None:
        return None
    got = measured_shares(measured)
    return 0.5 * sum(abs(got[key] - target[key]) for key in target)


def next_guide_rate(points: Sequence[tuple[float, float]], target_success: float) -> float:
    """The next load to try, from (rate, success share) points: inside the tightest bracket of the target,
    by log-linear interpolation (kept to the bracket's inner 80 % so that every step narrows it);
    outside, by success ~ capacity / load."""
    ordered = sorted(points)
    for (r1, s1), (r2, s2) in itertools.pairwise(ordered):
        if s1 >= target_success > s2:
            frac = (s1 - target_success) / (s1 - s2)
            frac = min(max(frac, 0.1), 0.9)
            return math.exp(math.log(r1) + frac * (math.log(r2) - math.log(r1)))
    rate, success = ordered[-1] if ordered[-1][1] >= target_success else ordered[0]
    if success >= target_success:  # every point serves more than the target: go past the highest
        return rate * max(1.2, success / target_success)
    return rate * min(0.8, max(success, 0.05) / target_success)  # every point serves less: go below
