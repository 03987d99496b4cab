"""The sweep's plan: rates from the probe, one exact schedule per rate shared by every profile, windows
fitted to the time budget, v1.1.1's scaled queue."""

from __future__ import annotations

import itertools

import pytest

from orchestrate import campaign as camp
from orchestrate.sweep import (
    REPORT_RESERVE_S,
    RUN_OVERHEAD_GUESS_S,
    base_window_s,
    fit_budget,
    grid_runs,
    plan_rates,
    point_load,
    users_for,
    with_slo,
)

DEFAULT = camp.load_campaign(camp.find("default"))
Q = with_slo(
    DEFAULT,
    {
        "single_ttft_s": 0.1,
        "single_e2e_s": 0.8,
        "single_e2e_ms": 800.0,
        "min_capacity_rps": 1.0,
        "max_capacity_rps": 3.0,
    },
)


def test_rates_span_below_serialized_to_beyond_batching_capacity():
    rates = plan_rates(DEFAULT.sweep_spec, Q)
    assert len(rates) == DEFAULT.sweep_spec.points and rates == sorted(rates)
    assert rates[0] == pytest.approx(0.5) and rates[-1] == pytest.approx(4.5)
    ratios = [b / a for a, b in itertools.pairwise(rates)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)


def test_grid_is_rate_by_rate_with_the_profiles_rotating_and_one_exact_schedule_per_rate():
    scale = fit_budget(DEFAULT.sweep_spec, [1.0, 2.0, 3.0], 3, True, 900)
    runs = grid_runs([1.0, 2.0, 3.0], ["a", "b", "c"], 0, scale, DEFAULT.sweep_spec)
    assert [(r.rate_per_s, r.profile) for r in runs] == [
        (1.0, "a"), (1.0, "b"), (1.0, "c"),
        (2.0, "b"), (2.0, "c"), (2.0, "a"),
        (3.0, "c"), (3.0, "a"), (3.0, "b"),
    ]  # fmt: skip
    loads = [point_load(dict(DEFAULT.load), DEFAULT.sweep_spec, r, Q) for r in runs]
    by_rate: dict[float, set[tuple[int | None, float | None, float]]] = {}
    for run, load in zip(runs, loads, strict=True):
        by_rate.setdefault(run.rate_per_s, set()).add((load.seed, load.rate, load.duration_s))
        assert load.arrival == "poisson-exact" and load.warmup_s == 0
        assert load.rate is not None
        assert load.users >= load.rate * load.request_timeout_s  # Little's law: never short of users
        assert load.duration_s % 5 == 0  # whole segments of the exact schedule
    assert (
        all(len(v) == 1 for v in by_rate.values()) and len({next(iter(v))[0] for v in by_rate.values()}) == 3
    )
    assert users_for(DEFAULT.sweep_spec, 1000.0, 1000.0) == DEFAULT.sweep_spec.max_users


def test_windows_hold_the_wanted_arrivals_then_fit_the_budget():
    spec = DEFAULT.sweep_spec
    assert base_window_s(spec, 0.5) == pytest.approx(60.0)  # 30 arrivals at 0.5 req/s
    assert base_window_s(spec, 10.0) == spec.min_window_s
    rates = [0.5, 1.0, 2.0, 4.0]
    roomy, tight = fit_budget(spec, rates, 3, True, 3600), fit_budget(spec, rates, 3, True, 500)
    assert roomy.factor > 1 > tight.factor
    for scale in (fit_budget(spec, rates, 3, True, s) for s in (700, 900, 1200)):
        if 0.4 < scale.factor < 4:  # not clamped: the planned runs fill the time left, overheads included
            planned = sum(3 * scale.factor * base_window_s(spec, r) for r in rates)
            assert (
                planned + scale.planned_runs * RUN_OVERHEAD_GUESS_S
                < scale.seconds_left - REPORT_RESERVE_S + 1
            )


def test_v111_limits_keep_the_timeout_below_the_full_queues_drain_time():
    v111 = next(p for p in DEFAULT.profiles if p.name == "v1.1.1")
    assert v111.search_guide_mix
    tiers = camp.derived_overrides(v111, Q)["model_concurrency_limiter"]["tier_limits"]
    assert set(tiers) == set(camp.TIERS)
    # 10 queued, 8 single replies (0.8 s) of waiting: the timeout is 0.8x the full queue's drain time
    assert tiers["7-13B"] == {"queue_depth": 10, "queue_timeout_ms": 6400}
