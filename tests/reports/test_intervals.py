"""reports.intervals against known answers: coverage of known true values over seeded replications (so the
bounds below never flake), the effective sample size of independent and of bunched series, MSER-5 on
series with a known warm-up, and the degenerate inputs a sweep point can produce."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reports.intervals import (
    Interval,
    effective_n,
    mser5,
    quantile_interval,
    rate_interval,
    share_interval,
    wilson,
)
from tests.support.synthetic_series import ar1, markov_flags

# --- Wilson ----------------------------------------------------------------------------------------------


def test_wilson_known_value() -> None:
    ci = wilson(5, 10)
    assert ci.estimate == 0.5
    assert ci.low == pytest.approx(0.2366, abs=1e-4)
    assert ci.high == pytest.approx(0.7634, abs=1e-4)
    assert ci.n == 10


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("n", [20, 60, 200])
def test_wilson_coverage(p: float, n: int) -> None:
    successes = np.random.default_rng(1000 * n + round(100 * p)).binomial(n, p, size=2000)
    coverage = np.mean([wilson(s, n).contains(p) for s in successes])
    assert 0.92 <= coverage <= 0.985


def test_wilson_fractional_and_empty() -> None:
    ci = wilson(10.5, 21.0)
    assert ci.estimate == 0.5 and 0 < ci.low < 0.5 < ci.high < 1
    empty = wilson(0, 0)
    assert math.isnan(empty.estimate) and (empty.low, empty.high) == (0.0, 1.0) and empty.n == 0
    assert wilson(0, 30).low == 0.0 and wilson(30, 30).high == 1.0


# --- shares on the effective sample size ------------------------------------------------------------------


def test_effective_n_of_independent_flags_is_close_to_n() -> None:
    flags = np.random.default_rng(2).random((200, 400)) < 0.3
    n_eff = np.array([effective_n(f) for f in flags])
    assert np.all(n_eff <= 400) and np.all(n_eff >= 1)
    # The batch-means variance has 9 degrees of freedom: single series scatter, the bulk sits near n.
    assert np.median(n_eff) >= 0.9 * 400
    assert np.mean(n_eff >= 0.7 * 400) >= 0.75
    coverage = np.mean([share_interval(f).contains(0.3) for f in flags])
    assert coverage >= 0.93  # n_eff <= n: never narrower than plain Wilson


def test_share_interval_on_bunched_flags_covers_where_plain_wilson_does_not() -> None:
    # stay 0.9: lag-k autocorrelation 0.8^k, variance of the mean 9x the binomial one (true n_eff ~ 89).
    # Measured with this seed: share_interval covers 0.922, plain Wilson 0.462, median n_eff 102. Shorter or
    # more persistent chains cover less (400 steps: 0.894; 400 steps at stay 0.95: 0.886): 10 batches
    # of 40 are then too short for the correlation, and the batch-means variance underestimates.
    flags = markov_flags(np.random.default_rng(3), replications=500, steps=800, stay=0.9)
    n_eff = np.array([effective_n(f) for f in flags])
    assert np.median(n_eff) < 0.25 * 800
    covered = np.mean([share_interval(f).contains(0.5) for f in flags])
    naive = np.mean([wilson(f.sum(), len(f)).contains(0.5) for f in flags])
    assert covered >= 0.85
    assert naive <= 0.75


def test_share_interval_estimate_is_the_plain_share() -> None:
    flags = np.array([1, 1, 0, 0] * 10 + [1] * 10, dtype=float)
    ci = share_interval(flags)
    assert ci.estimate == pytest.approx(30 / 50)
    assert ci.n == 50 and ci.method.startswith("wilson(n_eff=")
    assert ci.low < ci.estimate < ci.high


def test_share_interval_degenerate_inputs() -> None:
    empty = share_interval([])
    assert math.isnan(empty.estimate) and (empty.low, empty.high, empty.n) == (0.0, 1.0, 0)
    ones = share_interval(np.ones(100))
    assert ones.estimate == 1.0 and ones.high == 1.0 and 0.9 < ones.low < 1.0
    assert effective_n(np.ones(100)) == 100.0
    assert effective_n([1, 0, 1]) == 3.0  # too short for 10 batches
    assert effective_n([]) == 0.0
    few = share_interval([1, 0, np.nan])  # nan (no outcome) dropped
    assert few.estimate == 0.5 and few.n == 2


# --- quantiles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "true"), [(0.5, math.log(2)), (0.9, math.log(10))])
def test_quantile_interval_coverage_exponential(q: float, true: float) -> None:
    rng = np.random.default_rng(4)
    samples = rng.exponential(size=(400, 200))
    coverage = np.mean(
        [quantile_interval(x, q, resamples=500, seed=i).contains(true) for i, x in enumerate(samples)]
    )
    assert 0.88 <= coverage <= 0.99


def test_quantile_interval_p99_is_finite_and_ordered() -> None:
    ci = quantile_interval(np.random.default_rng(5).exponential(size=200), 0.99)
    assert all(math.isfinite(v) for v in (ci.estimate, ci.low, ci.high))
    assert ci.low <= ci.estimate <= ci.high


def test_quantile_interval_estimate_block_and_determinism() -> None:
    x = np.random.default_rng(6).exponential(size=500)
    ci = quantile_interval(np.append(x, np.nan), 0.9)
    assert ci.estimate == np.quantile(x, 0.9) and ci.n == 500
    assert ci.method == "block bootstrap (1000, block 8)"  # round(500 ** (1/3)) = 8
    assert ci == quantile_interval(x, 0.9)
    assert ci != quantile_interval(x, 0.9, seed=1)
    assert quantile_interval(x, 0.9, block=1).method == "block bootstrap (1000, block 1)"
    assert quantile_interval(x[:5], 0.5, block=50).method.endswith("block 5)")  # a block is at most n


def test_quantile_interval_few_values() -> None:
    few = quantile_interval([1.0, 2.0, 3.0], 0.5)
    assert few.estimate == 2.0 and math.isnan(few.low) and math.isnan(few.high) and "too few" in few.method
    none = quantile_interval([np.nan], 0.5)
    assert math.isnan(none.estimate) and none.n == 0


# --- rates ------------------------------------------------------------------------------------------------


def poisson_times_s(rng: np.random.Generator, rate_per_s: float, window_s: float) -> np.ndarray:
    return np.sort(rng.uniform(0, window_s, rng.poisson(rate_per_s * window_s)))


def test_rate_interval_coverage_poisson() -> None:
    rng = np.random.default_rng(7)
    covered = weighted = 0
    for _ in range(500):
        times_s = poisson_times_s(rng, 2.0, 60.0)
        tokens = rng.integers(50, 151, size=len(times_s))
        covered += rate_interval(times_s, None, 0.0, 60.0).contains(2.0)
        weighted += rate_interval(times_s, tokens, 0.0, 60.0).contains(2.0 * 100)
    assert 0.90 <= covered / 500 <= 0.99
    assert 0.90 <= weighted / 500 <= 0.99


def test_rate_interval_known_batches() -> None:
    # Sub-windows of 1 s hold 1, 3, 1, 3 events; events outside [start, end) do not count (nor one at end_s).
    times_s = [0.5, 1.1, 1.5, 1.9, 2.5, 3.1, 3.2, 3.3, -0.1, 4.0, 7.0]
    ci = rate_interval(times_s, None, 0.0, 4.0, batches=4)
    assert ci.estimate == 2.0 and ci.n == 4 and ci.method == "batch means (4 batches, t)"
    half = 3.182446 * np.std([1, 3, 1, 3], ddof=1) / 2  # t(3 df) 97.5 % quantile
    # reports.stats.t_quantile is within 0.2 % of the exact quantile at 3 degrees of freedom.
    assert ci.half_width == pytest.approx(half, rel=2e-3) and ci.estimate - ci.low == pytest.approx(
        ci.half_width
    )
    # 0, 4, 0, 4 events (weights 2 each): 4 +- 3.18 * 4.62 / 2 reaches below 0, clipped.
    bunched = rate_interval([1.1, 1.2, 1.3, 1.4, 3.1, 3.2, 3.3, 3.4], [2.0] * 8, 0.0, 4.0, batches=4)
    assert bunched.estimate == 4.0 and bunched.low == 0.0 and bunched.high > 8.0


def test_rate_interval_degenerate_inputs() -> None:
    empty_window = rate_interval([1.0], None, 5.0, 5.0)
    assert all(math.isnan(v) for v in (empty_window.estimate, empty_window.low, empty_window.high))
    no_events = rate_interval([], None, 0.0, 10.0)
    # none seen in 10 s: the rate is below 3 / 10 per second with 95 % confidence (the rule of three)
    assert (no_events.estimate, no_events.low, no_events.high) == (0.0, 0.0, 0.3)
    clockwork = rate_interval(np.arange(0.0, 10.0, 0.5), None, 0.0, 10.0)  # ten identical batches
    assert clockwork.estimate == 2.0 and clockwork.half_width == pytest.approx(0.1)  # one event at the edges
    with pytest.raises(ValueError, match="weights"):
        rate_interval([1.0, 2.0], [1.0], 0.0, 10.0)


# --- MSER-5 -----------------------------------------------------------------------------------------------


def test_mser5_stationary_series_is_settled() -> None:
    state = mser5(ar1(np.random.default_rng(8), 500))
    assert state.settled and state.truncate < 0.2 * 500 and state.n == 500 and state.method == "MSER-5"


def test_mser5_end_effect_is_kept_out() -> None:
    # The textbook search (tail down to 2 batch means) calls about 1 stationary series in 4 unsettled.
    series = [ar1(np.random.default_rng(seed), 500) for seed in range(100)]
    assert np.mean([mser5(x).settled for x in series]) >= 0.95
    assert np.mean([mser5(x, min_tail_batches=2).settled for x in series]) < 0.9


def test_mser5_finds_a_warm_up_ramp() -> None:
    n = 500
    warm_up = np.concatenate([np.linspace(10, 0, int(0.3 * n)), np.zeros(n - int(0.3 * n))])
    state = mser5(warm_up + ar1(np.random.default_rng(9), n))
    assert state.settled and 0.2 * n <= state.truncate <= 0.45 * n


def test_mser5_trend_throughout_is_not_settled() -> None:
    state = mser5(np.linspace(0, 20, 500) + ar1(np.random.default_rng(10), 500))
    assert not state.settled


def test_mser5_short_series() -> None:
    assert mser5([1.0, 2.0, 3.0]) == mser5([1.0, 2.0, 3.0])
    short = mser5(np.arange(9.0))
    assert (short.truncate, short.n, short.settled) == (0, 9, False)
    assert mser5([]).n == 0


# --- the Interval itself ----------------------------------------------------------------------------------


def test_interval_helpers() -> None:
    a = Interval(1.0, 0.5, 1.5, "x", 10)
    b = Interval(2.0, 1.6, 2.4, "x", 10)
    c = Interval(1.4, 1.2, 1.7, "x", 10)
    assert a.half_width == 0.5
    assert a.contains(0.5) and a.contains(1.5) and not a.contains(1.6)
    assert a.separates(b) and b.separates(a)
    assert not a.separates(c) and not c.separates(b)
    assert a.to_dict() == {"estimate": 1.0, "low": 0.5, "high": 1.5, "method": "x", "n": 10}


def test_interval_with_nan_bounds() -> None:
    blank = Interval(1.0, math.nan, math.nan, "too few (n=3)", 3)
    other = Interval(9.0, 8.0, 10.0, "x", 10)
    assert not blank.contains(1.0)
    assert not blank.separates(other) and not other.separates(blank)  # cannot tell
    assert math.isnan(blank.half_width)
    assert json.loads(json.dumps(blank.to_dict(), allow_nan=False))["low"] is None
