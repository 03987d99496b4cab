"""The gate's statistics (reports/stats.py): the t test on per-run figures with the noise learned from the
runs, the optional prior on its measured scale, and the pooled percentile with its cluster bootstrap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from reports import stats


def test_t_quantile_matches_tables() -> None:
    # Student's t, one-sided 95 %: the textbook values.
    for df, expected in ((1, 6.314), (2, 2.920), (3, 2.353), (5, 2.015), (10, 1.812), (30, 1.697)):
        assert stats.t_quantile(0.95, df) == pytest.approx(expected, abs=0.003)


def test_compare_is_symmetric_in_direction_and_scale_free() -> None:
    kw: dict[str, Any] = {"threshold_pct": 10, "alpha": 0.05, "prior": None}
    drop = stats.compare([100, 102, 98], [80, 82, 78], higher_is_better=True, **kw)
    scaled = stats.compare([1000, 1020, 980], [800, 820, 780], higher_is_better=True, **kw)
    assert drop.verdict == scaled.verdict == "fail" and drop.worse_pct == pytest.approx(scaled.worse_pct)
    # A latency rising by the same ratio is as much worse; falling is better and passes.
    rise = stats.compare([1.0, 1.02, 0.98], [1.25, 1.27, 1.23], higher_is_better=False, **kw)
    assert rise.verdict == "fail" and rise.worse_pct > 0
    fall = stats.compare([1.0, 1.02, 0.98], [0.8, 0.82, 0.78], higher_is_better=False, **kw)
    assert fall.verdict == "pass" and fall.worse_pct < 0


def test_a_significant_but_small_drop_does_not_fail() -> None:
    """3 % down over very tight repeats is real but under half the 10 % threshold: a pass."""
    result = stats.compare(
        [100.0, 100.1, 99.9] * 3, [97.0, 97.1, 96.9] * 3, higher_is_better=True, threshold_pct=10, alpha=0.05,
        prior=None,
    )  # fmt: skip
    assert result.low_pct > 0 and result.verdict == "pass"


def test_more_repeats_estimate_shrinks_as_repeats_accrue() -> None:
    kw: dict[str, Any] = {
        "higher_is_better": True,
        "threshold_pct": 10,
        "alpha": 0.05,
        "prior": stats.NoisePrior(cv=0.1),
    }
    few = stats.compare([100, 90], [95, 85], **kw)
    more = stats.compare([100, 90] * 3, [95, 85] * 3, **kw)
    assert few.verdict == "inconclusive" and few.more_repeats is not None
    assert more.verdict == "inconclusive" or more.more_repeats == 0
    assert more.more_repeats is None or more.more_repeats < few.more_repeats
    hopeless = stats.compare([100, 30], [30, 100], **kw)  # no change, enormous noise
    assert hopeless.verdict == "inconclusive" and hopeless.more_repeats is None


def test_the_noise_is_learned_from_the_pairs() -> None:
    """Known per-run noise (5 % on the log scale, a shared slow spell per pair): the test's estimate of the
    per-run noise comes out near 5 %, whatever the spells."""
    rng = np.random.default_rng(3)
    spells = rng.normal(0, 0.3, 400)  # large, shared by both runs of a pair: must cancel
    base = np.exp(5 + spells + rng.normal(0, 0.05, 400))
    cand = np.exp(5 + spells + rng.normal(0, 0.05, 400))
    result = stats.compare(
        base, cand, higher_is_better=True, threshold_pct=10, alpha=0.05, prior=None, paired=True
    )
    assert result.sigma_log == pytest.approx(0.05, rel=0.15)
    assert result.df == 399 and result.verdict == "pass"
    unpaired = stats.compare(base, cand, higher_is_better=True, threshold_pct=10, alpha=0.05, prior=None)
    assert unpaired.sigma_log > 0.2  # the spells stay in when the pairing is ignored


def test_the_prior_is_used_on_its_own_log_scale() -> None:
    """A prior of 0.10 (log-scale std) with no data spread is a per-run noise of exactly 0.10."""
    prior = stats.NoisePrior(cv=0.10, pair_cv=0.10, df=1000)
    result = stats.compare([100, 100], [100, 100], higher_is_better=True, threshold_pct=10, alpha=0.05,
                           prior=prior, paired=True)  # fmt: skip
    assert result.sigma_log == pytest.approx(0.10 * np.sqrt(1000 / 1001), rel=1e-3)


def _blocks(rng: np.random.Generator, n: int, scale: float) -> list[np.ndarray]:
    return [scale * rng.lognormal(np.log(0.05), 0.5, 40) for _ in range(n)]


def test_pooled_p95_passes_the_same_and_fails_a_doubling() -> None:
    rng = np.random.default_rng(7)
    base, same, doubled = _blocks(rng, 10, 1.0), _blocks(rng, 10, 1.0), _blocks(rng, 10, 2.0)
    kw: dict[str, Any] = {"q": 95, "threshold_pct": 50, "alpha": 0.05, "paired": True}
    assert stats.compare_pooled_quantile(base, same, **kw).verdict == "pass"
    worse = stats.compare_pooled_quantile(base, doubled, **kw)
    assert worse.verdict == "fail" and worse.worse_pct == pytest.approx(100, abs=30)
    assert worse.method == "pooled" and "cluster bootstrap" in worse.describe()


def test_pooled_p95_of_few_noisy_blocks_is_inconclusive_and_says_how_many_more() -> None:
    rng = np.random.default_rng(11)
    base = [rng.lognormal(np.log(0.05), 1.5, 10) for _ in range(3)]
    cand = [1.3 * rng.lognormal(np.log(0.05), 1.5, 10) for _ in range(3)]
    result = stats.compare_pooled_quantile(base, cand, q=95, threshold_pct=50, alpha=0.05, paired=True)
    assert result.verdict == "inconclusive"
    assert result.more_repeats is None or result.more_repeats > 0


def test_pooled_p95_of_two_agreeing_pairs_shows_no_rise() -> None:
    """Two pairs whose blocks happen to agree: a bootstrap over 2 clusters would call a 30 % rise shown
    (its standard error near zero); under 5 runs per side the test declines, and says how many more."""
    rng = np.random.default_rng(3)
    block = rng.lognormal(np.log(0.05), 0.3, 40)
    base, cand = [block, block * 1.01], [block * 1.3, block * 1.31]
    result = stats.compare_pooled_quantile(base, cand, q=95, threshold_pct=50, alpha=0.05, paired=True)
    assert result.verdict == "inconclusive" and result.more_repeats == 3
    assert "too few for a cluster bootstrap" in result.describe()
    five = stats.compare_pooled_quantile(
        [block * (1 + i / 100) for i in range(5)], [block * (1.3 + i / 100) for i in range(5)],
        q=95, threshold_pct=10, alpha=0.05, paired=True,
    )  # fmt: skip
    assert five.verdict == "fail"  # from 5 runs per side the bootstrap decides again
