"""The sweep's plan: which rates, how long each run, and each run's Locust load, all from the campaign's
rules applied to the probed quantities and the time left in the budget (nothing machine-specific here).

Order: rate by rate from the lowest; at each rate every profile once, the order rotating from one rate to
the next, so that a slow spell on a shared machine does not always hit the same profile. Every profile
gets the same exact Poisson schedule (poisson-exact, seeded by the rate) at a given rate.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from loadgen.arrival_schedule import EXACT_SEGMENT_S as SEGMENT_S
from orchestrate import campaign as camp
from reports.sweep_folder import PointRun, Purpose

log = logging.getLogger(__name__)

RUN_OVERHEAD_GUESS_S = 6.0  # Locust's start and stop, the drain, before any run measured it
REPORT_RESERVE_S = 40.0  # writing the report at the end


def plan_rates(spec: camp.SweepSpec, quantities: dict[str, float]) -> list[float]:
    """`points` rates spaced geometrically from `lowest` to `highest` (both included), ascending."""
    low = spec.lowest.value(quantities)
    high = spec.highest.value(quantities)
    if high <= low:  # the rules cross on an odd probe (e.g. one profile): still span a factor of 3
        high = 3 * low
    ratio = (high / low) ** (1 / (spec.points - 1))
    return [round(low * ratio**i, 4) for i in range(spec.points)]


def base_window_s(spec: camp.SweepSpec, rate_per_s: float) -> float:
    """A run's length before the budget scales it: `min_requests_per_point` arrivals, within bounds."""
    return min(max(spec.min_requests_per_point / rate_per_s, spec.min_window_s), spec.max_window_s)


def adaptive_runs(spec: camp.SweepSpec, profiles: int, guide: bool) -> int:
    """Runs after the grid: knee bisection per profile, the guide search and the others at its load."""
    return spec.knee_steps * profiles + (guide_runs(spec, profiles) if guide else 0)


def guide_runs(spec: camp.SweepSpec, profiles: int) -> int:
    return spec.guide_steps + profiles - 1


@dataclass(frozen=True, slots=True)
class WindowScale:
    """How the budget stretches or shrinks every run's base window (1: as the campaign asks)."""

    factor: float
    planned_runs: int
    seconds_left: float

    def window_s(self, spec: camp.SweepSpec, rate_per_s: float, times: float = 1.0) -> float:
        """Whole segments of the exact schedule (5 s), so that the last one is not cut short."""
        length_s = times * self.factor * base_window_s(spec, rate_per_s)
        return SEGMENT_S * max(2, math.ceil(length_s / SEGMENT_S))


def fit_budget(
    spec: camp.SweepSpec, rates: list[float], profiles: int, guide: bool, seconds_left: float
) -> WindowScale:
    """Scale the base windows so the grid and the adaptive runs fit in the time left (between 0.4x and
    4x: past that, intervals are too wide to be worth a point, or the budget is better spent elsewhere)."""
    extra = adaptive_runs(spec, profiles, guide)
    median_base = sorted(base_window_s(spec, r) for r in rates)[len(rates) // 2]
    # guide runs are longer: count each as guide_window_factor runs' worth of time
    extra_length = extra + ((spec.guide_window_factor - 1) * guide_runs(spec, profiles) if guide else 0)
    planned_s = profiles * sum(base_window_s(spec, r) for r in rates) + extra_length * median_base
    runs = profiles * len(rates) + extra
    usable_s = seconds_left - REPORT_RESERVE_S - runs * RUN_OVERHEAD_GUESS_S
    factor = min(max(usable_s / planned_s, 0.4), 4.0) if planned_s > 0 else 1.0
    return WindowScale(round(factor, 3), runs, seconds_left)


def grid_runs(
    rates: list[float], profiles: list[str], seed: int, scale: WindowScale, spec: camp.SweepSpec
) -> list[PointRun]:
    """Rate by rate from the lowest, every profile once per rate, the order rotating."""
    order = []
    for i, rate in enumerate(rates):
        shift = i % len(profiles)
        for name in profiles[shift:] + profiles[:shift]:
            order.append(point_run(name, rate, "grid", seed, scale.window_s(spec, rate)))
    return order


def point_run(profile: str, rate_per_s: float, purpose: Purpose, seed: int, window_s: float) -> PointRun:
    # The seed follows the rate, so every profile at one rate gets the same schedule and prompts.
    rate_seed = seed + round(rate_per_s * 1000)
    return PointRun(
        profile, rate_per_s, purpose, PointRun.folder_for(profile, rate_per_s, purpose), window_s, rate_seed
    )


def users_for(spec: camp.SweepSpec, rate_per_s: float, request_timeout_s: float) -> int:
    """Enough Locust users that each arrival finds one free: at most rate x deadline are in flight."""
    return min(spec.max_users, math.ceil(rate_per_s * request_timeout_s * spec.users_headroom) + 1)


def point_load(
    base: dict, spec: camp.SweepSpec, run: PointRun, quantities: dict[str, float]
) -> camp.LoadSpec:
    """No warm-up: the report finds the steady part of the run (MSER-5) instead of guessing it."""
    timeout_s = spec.request_timeout_s.value(quantities)
    return camp.LoadSpec.model_validate(
        {
            **base,
            "arrival": "poisson-exact",
            "rate": run.rate_per_s,
            "users": users_for(spec, run.rate_per_s, timeout_s),
            "seed": run.seed,
            "warmup_s": 0,
            "duration_s": run.window_s,
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
    out["slo_ttft_s"] = campaign.slo_spec.ttft_s.value(quantities)
    out["slo_e2e_s"] = campaign.slo_spec.e2e_s.value(quantities)
    return out
