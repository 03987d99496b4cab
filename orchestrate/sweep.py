"""The sweep of offered load: which rates, in which order, and each run's Locust load, all from the
campaign's rules applied to the probed quantities (nothing machine-specific is written here).

Order (reports.sweep_report.run_order, which the report reads back): rate by rate, from the lowest; at
each rate every profile once, the profile order rotating from one rate to the next, so that a slow spell
on a shared machine does not always hit the same profile.
Every profile gets the same seeded Poisson schedule at a given rate.
"""

from __future__ import annotations

import logging
import math

from orchestrate import campaign as camp
from reports.sweep_report import SweepRun

log = logging.getLogger(__name__)


def plan_rates(spec: camp.SweepSpec, quantities: dict[str, float]) -> list[float]:
    """`points` rates spaced geometrically from `lowest` to `highest` (both included), ascending."""
    low = spec.lowest.value(quantities)
    high = spec.highest.value(quantities)
    if high <= low:  # the rules cross on an odd probe (e.g. one profile): still span a factor of 3
        high = 3 * low
    ratio = (high / low) ** (1 / (spec.points - 1))
    return [round(low * ratio**i, 4) for i in range(spec.points)]


def comparison_point(rates: list[float], spec: camp.SweepSpec, quantities: dict[str, float]) -> int:
    """The index of the sweep rate nearest (on a log scale) the comparison rule's rate."""
    target = spec.comparison.value(quantities)
    return min(range(len(rates)), key=lambda i: abs(math.log(rates[i] / target)))


def window_s(spec: camp.SweepSpec, rate_per_s: float) -> float:
    """Long enough for `min_requests_per_point` expected arrivals at this rate (itself derived from the
    probed capacity), within the budget's bounds [min_window_s, max_window_s]."""
    return min(max(spec.min_requests_per_point / rate_per_s, spec.min_window_s), spec.max_window_s)


def short_windows(spec: camp.SweepSpec, rates: list[float]) -> dict[int, float]:
    """The points (index -> expected arrivals, rate x window) whose window max_window_s keeps below
    min_requests_per_point: their figures rest on fewer requests than the campaign asks for."""
    expected = {i: rate * round(window_s(spec, rate), 1) for i, rate in enumerate(rates)}
    return {i: n for i, n in expected.items() if n < spec.min_requests_per_point - 0.5}


def users_for(spec: camp.SweepSpec, rate_per_s: float, request_timeout_s: float) -> int:
    """Enough Locust users that each arrival finds one free: at most rate x deadline are in flight."""
    return min(spec.max_users, math.ceil(rate_per_s * request_timeout_s * spec.users_headroom) + 1)


def point_load(
    base: dict, spec: camp.SweepSpec, run: SweepRun, quantities: dict[str, float]
) -> camp.LoadSpec:
    timeout_s = spec.request_timeout_s.value(quantities)
    return camp.LoadSpec.model_validate(
        {
            **base,
            "arrival": "poisson",
            "rate": run.rate_per_s,
            "users": users_for(spec, run.rate_per_s, timeout_s),
            "seed": int(base.get("seed", 0)) + run.point,  # one schedule per rate, the same for every profile
            "warmup_s": round(spec.warmup_s.value(quantities), 2),
            "duration_s": round(window_s(spec, run.rate_per_s), 1),
            "request_timeout_s": round(timeout_s, 2),
            "stop_timeout_s": round(spec.stop_timeout_s.value(quantities), 2),
            "think_time_s": 0,
            "slo_ttft_s": quantities["slo_ttft_s"],
            "slo_e2e_s": quantities["slo_e2e_s"],
        }
    )


def with_slo(campaign: camp.Campaign, quantities: dict[str, float]) -> dict[str, float]:
    """The probed quantities plus the campaign's SLOs derived from them."""
    out = dict(quantities)
    out["slo_ttft_s"] = campaign.slo.ttft_s.value(quantities)
    out["slo_e2e_s"] = campaign.slo.e2e_s.value(quantities)
    return out
