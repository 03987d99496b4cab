"""The gate's statistical test: is the candidate worse than the baseline, over a few noisy repeats?

Each run contributes one figure (its throughput, its TTFT p95). The test works on the logarithm of those
figures, so that a change is a ratio (a 10 % drop is the same step at 40 tok/s as at 400) and so that one
slow run weighs as a ratio, not as an absolute gap. The estimate is the ratio of the geometric means.

Its uncertainty comes from a t interval on the spread of the runs themselves: the noise is learned in the
job, from the runs being judged (the gate's blocks give it pairs - 1 degrees of freedom). A prior from
elsewhere is optional (`noise` in the gates file, weighted as `prior_df` pseudo-repeats; a conjugate normal
model with a scaled-inverse-chi-square prior on the variance); the gate ships without one, since a number
measured on another machine says little about this runner. When the two sides ran interleaved (baseline,
candidate, then candidate, baseline, ...) with equal counts, the test pairs run i of each side: a slow
spell on a shared machine then hits both runs of a pair and cancels out of their ratio.

A tail percentile (TTFT p95) of one short block rests on its two or three slowest requests, so for it the
test pools every request of a side and takes the percentile of the pool; its uncertainty is a cluster
bootstrap over the pairs (whole pairs resampled, so that the pairing and the requests' correlation within
a block are kept), used as a normal interval with the t quantile of pairs - 1 degrees of freedom.

Verdicts, for a threshold T (the change the gate must catch) and confidence 1 - alpha, on the "worse" scale
(positive = worse):
- fail: the worsening is significant (the one-sided lower confidence bound is above 0) and its estimate
  is at least T / 2 (a significant but small change does not fail);
- pass: the one-sided upper confidence bound is below T (the candidate is, with confidence, not worse by T);
- inconclusive: neither; the repeats cannot tell. Never a pass. `more_repeats` says how many more runs per
  side would decide it if the estimate and the spread stayed as they are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

StatVerdict = Literal["pass", "fail", "inconclusive"]
MAX_EXTRA_REPEATS = 50  # beyond this, "more repeats" is no advice: the noise is too large for the threshold


@dataclass(frozen=True, slots=True)
class NoisePrior:
    """Expected noise of one run's figure, as a coefficient of variation (std / mean, on the log scale).

    `cv` is between any two runs; `pair_cv` between two runs made one after the other (interleaved), on
    the same per-run scale (the std of their log ratio / sqrt 2).
    """

    cv: float
    pair_cv: float | None = None
    df: float = 4.0  # how many repeats the prior is worth


@dataclass(frozen=True, slots=True)
class Comparison:
    """Candidate against baseline on one figure. `*_pct` are on the worse scale: positive = worse."""

    worse_pct: float  # the estimate: ratio of geometric means, as a worsening in %
    low_pct: float  # one-sided lower confidence bound of the worsening
    high_pct: float  # one-sided upper confidence bound
    threshold_pct: float
    verdict: StatVerdict
    paired: bool
    n_base: int
    n_cand: int
    sigma_log: float  # the per-run noise the test used (log scale)
    df: float
    more_repeats: int | None  # more runs per side that would decide an inconclusive test (None: > cap)

    method: str = "t"  # "t" on per-run figures, or "pooled" (a pooled percentile, cluster bootstrap)

    def describe(self) -> str:
        way = "worse" if self.worse_pct >= 0 else "better"
        runs = f"{self.n_base} pairs" if self.paired else f"{self.n_base} vs {self.n_cand} runs"
        how = "pooled requests, cluster bootstrap" if self.method == "pooled" else f"{self.df:.0f} df"
        if self.method == "pooled" and not math.isfinite(self.sigma_log):
            return (
                f"{abs(self.worse_pct):.1f} % {way}; {runs}: too few for a cluster bootstrap's standard "
                f"error (at least {MIN_BOOTSTRAP_RUNS} per side), so no bounds"
            )
        return (
            f"{abs(self.worse_pct):.1f} % {way} "
            f"[one-sided bounds {self.low_pct:+.1f} .. {self.high_pct:+.1f} % worse]; "
            f"noise measured in this job {100 * self.sigma_log:.1f} % per run ({runs}, {how})"
        )


def worse_log(
    base: Sequence[float] | np.ndarray, cand: Sequence[float] | np.ndarray, higher_is_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-run log figures turned so that the candidate's excess over the baseline means "worse"."""
    sign = -1.0 if higher_is_better else 1.0
    return sign * np.log(np.asarray(base, dtype=float)), sign * np.log(np.asarray(cand, dtype=float))


def threshold_log(threshold_pct: float, higher_is_better: bool) -> float:
    """A drop of T % (higher is better) or a rise of T % (lower is better), as a step on the log scale."""
    share = threshold_pct / 100.0
    if higher_is_better:
        return math.inf if share >= 1 else -math.log(1.0 - share)
    return math.log(1.0 + share)


def _to_worse_pct(step_log: float, higher_is_better: bool) -> float:
    """Back from the log scale to a worsening in % (a drop for throughput, a rise for latency)."""
    if higher_is_better:
        return 100.0 * (1.0 - math.exp(-step_log))
    return 100.0 * (math.exp(step_log) - 1.0)


def _decide(estimate: float, half_width: float, threshold: float) -> StatVerdict:
    if estimate - half_width > 0 and estimate >= threshold / 2:
        return "fail"
    if estimate + half_width < threshold:
        return "pass"
    return "inconclusive"


def compare(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    *,
    higher_is_better: bool,
    threshold_pct: float,
    alpha: float,
    prior: NoisePrior | None,
    paired: bool = False,
) -> Comparison:
    """The test of the module docstring on per-run figures (all finite and positive)."""
    b, c = worse_log(base, cand, higher_is_better)
    paired = paired and len(b) == len(c) and len(b) >= 2
    if paired:
        estimate = float(np.mean(c - b))
        # The spread of the pair differences, per run (the difference of two runs has twice a run's variance).
        data_var = float(np.var(c - b, ddof=1)) / 2.0
        data_df = len(b) - 1
        prior_sigma = prior.pair_cv if prior is not None and prior.pair_cv is not None else None
        if prior_sigma is None and prior is not None:
            prior_sigma = prior.cv
    else:
        estimate = float(np.mean(c) - np.mean(b))
        data_df = (len(b) - 1) + (len(c) - 1)
        ss = float(np.sum((b - b.mean()) ** 2) + np.sum((c - c.mean()) ** 2))
        data_var = ss / data_df if data_df > 0 else 0.0
        prior_sigma = prior.cv if prior is not None else None
    prior_df = prior.df if prior is not None and prior_sigma is not None else 0.0
    df = prior_df + data_df
    if df <= 0:
        # One run per side and no prior: nothing says how noisy a run is.
        sigma = math.nan
    else:
        # The prior is stored as it is measured: a standard deviation on the log scale already.
        prior_var = prior_sigma**2 if prior_sigma is not None else 0.0
        sigma = math.sqrt((prior_df * prior_var + data_df * data_var) / df)

    return _conclude(estimate, sigma, df, len(b), len(c), paired, threshold_pct, higher_is_better, alpha)


def _conclude(
    estimate: float, sigma: float, df: float, n_b: int, n_c: int, paired: bool, threshold_pct: float,
    higher_is_better: bool, alpha: float, method: str = "t",
) -> Comparison:  # fmt: skip
    """The verdict of an estimate (log scale, positive = worse) with a per-run noise `sigma` of `df`
    degrees of freedom: its one-sided bounds, and for an undecided test how many more runs would decide."""
    threshold = threshold_log(threshold_pct, higher_is_better)

    def half_width(nb: int, nc: int, dof: float) -> float:
        if not dof > 0 or not math.isfinite(sigma):
            return math.inf
        spread = sigma * math.sqrt(2.0 / nb) if paired else sigma * math.sqrt(1.0 / nb + 1.0 / nc)
        return t_quantile(1.0 - alpha, dof) * spread

    width = half_width(n_b, n_c, df)
    verdict = _decide(estimate, width, threshold) if math.isfinite(estimate) else "inconclusive"
    more = (
        0
        if verdict != "inconclusive" or not math.isfinite(estimate)
        else _more_repeats(estimate, threshold, n_b, n_c, df, 1 if paired else 2, half_width)
    )
    return Comparison(
        worse_pct=_to_worse_pct(estimate, higher_is_better),
        low_pct=_to_worse_pct(estimate - width, higher_is_better) if math.isfinite(width) else -math.inf,
        high_pct=_to_worse_pct(estimate + width, higher_is_better) if math.isfinite(width) else math.inf,
        threshold_pct=threshold_pct,
        verdict=verdict,
        paired=paired,
        n_base=n_b,
        n_cand=n_c,
        sigma_log=sigma,
        df=df,
        more_repeats=more,
        method=method,
    )


def pooled_quantile(groups: Sequence[np.ndarray], q: float) -> float:
    """The q-th percentile of every value of every group together (inf counts as beyond any value)."""
    values = np.concatenate([np.asarray(g, dtype=float) for g in groups]) if groups else np.array([])
    return float(np.percentile(values, q)) if values.size else math.nan


MIN_BOOTSTRAP_RUNS = 5  # per side: fewer give a cluster bootstrap too few distinct resamples


def compare_pooled_quantile(
    base: Sequence[np.ndarray],
    cand: Sequence[np.ndarray],
    *,
    q: float,
    threshold_pct: float,
    alpha: float,
    paired: bool,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """A lower-is-better percentile (latency) of the pooled requests of each side, as in the module
    docstring. `base[i]`, `cand[i]`: the values of run i (paired: run i of each side ran side by side)."""
    n_b, n_c = len(base), len(cand)
    paired = paired and n_b == n_c and n_b >= 2
    estimate = math.log(pooled_quantile(cand, q)) - math.log(pooled_quantile(base, q))
    df = float(n_b - 1 if paired else n_b + n_c - 2)
    if min(n_b, n_c) < MIN_BOOTSTRAP_RUNS:
        # Over 2-4 clusters a bootstrap has a handful of distinct resamples, and its standard error comes
        # out near zero whenever those few runs happen to agree: an unchanged server's TTFT p95 was once
        # "shown" 34 % higher [bounds 25-43 %] from 2 pairs. Too few to tell.
        undecided = _conclude(estimate, math.inf, df, n_b, n_c, paired, threshold_pct, False, alpha, "pooled")
        return replace(undecided, more_repeats=MIN_BOOTSTRAP_RUNS - min(n_b, n_c))
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for i in range(resamples):
        pick_b = rng.integers(0, n_b, n_b)
        pick_c = pick_b if paired else rng.integers(0, n_c, n_c)
        draws[i] = math.log(pooled_quantile([cand[j] for j in pick_c], q)) - math.log(
            pooled_quantile([base[j] for j in pick_b], q)
        )
    draws = draws[np.isfinite(draws)]
    se = float(np.std(draws, ddof=1)) if draws.size > 1 else math.inf
    # The per-run noise that this standard error corresponds to (se = sigma * sqrt(2 / n)): comparable
    # with the t test's, and what scales with more runs.
    sigma = se / math.sqrt(2.0 / n_b) if paired else se / math.sqrt(1.0 / n_b + 1.0 / n_c)
    return _conclude(estimate, sigma, df, n_b, n_c, paired, threshold_pct, False, alpha, method="pooled")


def _more_repeats(
    estimate: float,
    threshold: float,
    n_b: int,
    n_c: int,
    df: float,
    df_per_extra: int,
    half_width: Callable[[int, int, float], float],
) -> int | None:
    """The fewest extra runs per side that decide the test, were the estimate and the noise to hold."""
    for extra in range(1, MAX_EXTRA_REPEATS + 1):
        # Each extra run per side adds a degree of freedom per side (one per pair when paired).
        dof = df + df_per_extra * extra
        if _decide(estimate, half_width(n_b + extra, n_c + extra, dof), threshold) != "inconclusive":
            return extra
    return None


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion
    around the normal quantile (error below 0.2 % at 3 degrees of freedom, smaller beyond), so that the
    gate needs no SciPy."""
    if df <= 0:
        return math.inf
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
