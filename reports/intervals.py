"""Confidence intervals for one sweep point's figures, from its few tens to few hundred requests.

Requests are recorded in send order, and past a server's capacity they are strongly correlated in time (a
queue fills, timeouts come in bunches), so no interval here treats neighbouring requests as independent:

- shares (success, timeout, rejection rate): `share_interval`, a Wilson score interval on the effective
  sample size. Wilson keeps its coverage near 0 and 1 and for small n, where the normal interval does not;
  the effective size (from batch means, `effective_n`) shrinks n by how much bunching inflates the variance.
- latency quantiles (TTFT, E2E p50/p90/p99): `quantile_interval`, a moving-block bootstrap percentile
  interval. Quantiles have no simple variance formula, and resampling blocks of consecutive requests keeps
  the short-range correlation that resampling single requests would erase. A p99 from 200 values rests on
  its top two values: its interval is honest about the estimate, not about the tail (see
  benchmarks/interval_coverage.py for measured coverages).
- rates (completed req/s, output tok/s): `rate_interval`, batch means over equal sub-windows of the
  measured window with a t quantile; sub-window totals of a long enough window are nearly independent and
  normal even when single events are not.
- warm-up: `mser5` says how many leading observations to drop before any of the above (MSER-5).

95 % intervals by default. No SciPy: the normal quantile is the standard library's and the t quantile is
reports.stats.t_quantile (SciPy is not a dependency of this project).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from reports.stats import t_quantile

# The confidence of every interval the reports give, unless a caller asks for another.
CONFIDENCE = 0.95

MIN_QUANTILE_VALUES = 5  # below this a bootstrap of a quantile resamples the same few values: no interval
MSER_BATCH = 5  # MSER-5: batch means of 5 observations smooth the noise the truncation rule reacts to


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with a two-sided confidence interval; nan bounds when the data cannot give one."""

    estimate: float
    low: float
    high: float
    method: str  # short name, e.g. "wilson(n_eff=41.2)", "block bootstrap (1000, block 8)"
    n: int  # observations behind it (requests, or batches for batch means)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        # A nan bound compares False: an interval that could not be computed contains nothing.
        return bool(self.low <= value <= self.high)

    def separates(self, other: Interval) -> bool:
        """True when the two intervals do not overlap (False when either has nan bounds: cannot tell)."""
        return bool(self.high < other.low or other.high < self.low)

    def to_dict(self) -> dict[str, Any]:
        """For JSON: non-finite numbers become None (JSON has no nan)."""
        return {
            "estimate": _json_number(self.estimate),
            "low": _json_number(self.low),
            "high": _json_number(self.high),
            "method": self.method,
            "n": self.n,
        }


@dataclass(frozen=True, slots=True)
class SteadyState:
    """Where a series has left its warm-up, by MSER-5."""

    truncate: int  # observations to drop from the start
    n: int  # observations given (after dropping nan)
    settled: bool  # False when the truncation point falls in the second half (the series is still trending)
    method: str  # "MSER-5"


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf((1 + confidence) / 2)


def _finite(values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    finite: np.ndarray = array[~np.isnan(array)]
    return finite


def wilson(successes: float, n: float, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval for a share; `successes` and `n` may be fractional (an effective sample size).
    n == 0: estimate nan, interval [0, 1] (nothing is known)."""
    label = f"wilson(n={n:.4g})"
    if n <= 0:
        return Interval(math.nan, 0.0, 1.0, label, 0)
    p = successes / n
    z = _z(confidence)
    z2_n = z * z / n
    center = (p + z2_n / 2) / (1 + z2_n)
    spread = z / (1 + z2_n) * math.sqrt(p * (1 - p) / n + z2_n / (4 * n))
    # Rounding can push a bound a hair past [0, 1] when p is 0 or 1.
    return Interval(p, max(0.0, center - spread), min(1.0, center + spread), label, round(n))


def _batch_means(values: np.ndarray, batches: int) -> np.ndarray:
    """Means of `batches` equal consecutive batches; the last n % batches values are left out."""
    size = len(values) // batches
    means: np.ndarray = values[: size * batches].reshape(batches, size).mean(axis=1)
    return means


def effective_n(flags: ArrayLike, batches: int = 10) -> float:
    """Effective sample size of a 0/1 series in send order: n times (binomial variance of the mean) /
    (batch-means variance of the mean), never more than n (correlation never adds information, and negative
    correlation is treated as independent) nor less than 1. Fewer than 2 * batches observations, or a
    constant series, give n: there is no variance to compare."""
    x = _finite(flags)
    n = len(x)
    p = float(x.mean()) if n else math.nan
    if n < 2 * batches or batches < 2 or p in (0.0, 1.0):
        return float(n)
    binomial_var = p * (1 - p) / n
    batch_var = float(np.var(_batch_means(x, batches), ddof=1)) / batches
    if batch_var <= binomial_var:
        return float(n)
    return float(max(min(n, 1), n * binomial_var / batch_var))


def share_interval(flags: ArrayLike, batches: int = 10, confidence: float = CONFIDENCE) -> Interval:
    """The share of 1s (the plain share) with a Wilson interval on the effective sample size."""
    x = _finite(flags)
    if len(x) == 0:
        return Interval(math.nan, 0.0, 1.0, "wilson(n_eff=0)", 0)
    p = float(x.mean())
    n_eff = effective_n(x, batches)
    ci = wilson(p * n_eff, n_eff, confidence)
    return Interval(p, ci.low, ci.high, f"wilson(n_eff={n_eff:.1f})", len(x))


def _block_indices(n: int, block: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) indices: random starts of `block` consecutive positions, concatenated, cut at n."""
    blocks = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(resamples, blocks))
    return (starts[:, :, None] + np.arange(block)).reshape(resamples, blocks * block)[:, :n]


def quantile_interval(
    values: ArrayLike,
    q: float,
    confidence: float = CONFIDENCE,
    resamples: int = 1000,
    block: int | None = None,
    seed: int = 0,
) -> Interval:
    """The q quantile of `values` (in send order, nan dropped) with a moving-block bootstrap percentile
    interval: blocks of `block` consecutive values (default round(n ** (1/3)), which grows with n as the
    theory wants; block=1 is the iid bootstrap). Deterministic for a given seed. Fewer than 5 values: the
    estimate (nan if none) with nan bounds."""
    x = _finite(values)
    n = len(x)
    estimate = float(np.quantile(x, q)) if n else math.nan
    if n < MIN_QUANTILE_VALUES:
        return Interval(estimate, math.nan, math.nan, f"too few (n={n})", n)
    length = max(1, round(n ** (1 / 3))) if block is None else max(1, min(block, n))
    rng = np.random.default_rng(seed)
    stats = np.quantile(x[_block_indices(n, length, resamples, rng)], q, axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Interval(estimate, float(low), float(high), f"block bootstrap ({resamples}, block {length})", n)


def rate_interval(
    event_times_s: ArrayLike,
    weights: ArrayLike | None,
    start_s: float,
    end_s: float,
    batches: int = 10,
    confidence: float = CONFIDENCE,
) -> Interval:
    """A rate over [start_s, end_s) (events per second, or weight per second: tokens with weight = tokens)
    with a batch-means t interval over `batches` equal sub-windows; low clipped at 0. `n` is the number of
    batches. A window of length <= 0 gives nan."""
    method = f"batch means ({batches} batches, t)"
    window_s = end_s - start_s
    if not window_s > 0 or batches < 1:
        return Interval(math.nan, math.nan, math.nan, method, 0)
    times_s = np.asarray(event_times_s, dtype=float).ravel()
    w = np.ones_like(times_s) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape != times_s.shape:
        raise ValueError(f"{len(w)} weights for {len(times_s)} event times")
    inside = (times_s >= start_s) & (times_s < end_s)
    # Clip: an event a rounding error short of end_s must not land in a batch past the last.
    which = np.minimum(((times_s[inside] - start_s) / window_s * batches).astype(int), batches - 1)
    batch_rates_per_s = np.bincount(which, weights=w[inside], minlength=batches) / (window_s / batches)
    estimate = float(w[inside].sum() / window_s)
    if batches < 2:
        return Interval(estimate, math.nan, math.nan, method, batches)
    half = t_quantile((1 + confidence) / 2, batches - 1) * float(np.std(batch_rates_per_s, ddof=1))
    half /= math.sqrt(batches)
    # A server that completes requests like a clock gives ten equal batches and a zero-width interval, but
    # where the window's edges fall still moves the count by one event: never narrower than that.
    if inside.any():
        half = max(half, float(w[inside].mean()) / window_s)
    elif weights is None:
        # No event at all: ten empty batches say nothing about how rare events are. A Poisson count of
        # zero bounds the rate by 3 / window (the rule of three, 95 % one-sided).
        return Interval(0.0, 0.0, 3.0 / window_s, method + ", none seen: rule of three", batches)
    return Interval(estimate, max(0.0, estimate - half), estimate + half, method, batches)


def _mser_tail_batches(k: int) -> int:
    """Batch means every MSER candidate keeps: at least 5 (and 10 % of them), yet few enough that a cut past
    the middle (not settled) stays possible."""
    return max(2, min(max(5, math.ceil(k / 10)), (k - 1) // 2))


def mser5(series: ArrayLike, *, min_tail_batches: int | None = None) -> SteadyState:
    """MSER-5 (White 1997; Franklin & White): the warm-up to drop so that the rest has the smallest
    standard-error-like statistic. The series (nan dropped, in order) is cut into batches of 5 (the tail
    batch dropped); for each candidate d (in batches) the statistic is sum((z_j - mean(z[d:]))^2) / (k - d)^2
    over the remaining k - d batch means; truncate = 5 * argmin. settled = the argmin is in the first half
    (d* <= k / 2): a later one means the series is still trending and no cut makes it stationary.

    Candidates keep at least `min_tail_batches` batch means (default: 5, or 10 % of k if more, but fewer
    than half). The textbook search runs to d = k - 2, but a tail of two or three batch means can have a
    tiny spread by chance (MSER's end effect): on stationary AR(1) noise of 500 values it then reports "not
    settled" about one time in four; with the default, under one in a hundred. min_tail_batches=2 gives the
    textbook search. Fewer than 10 observations (2 batches): truncate 0, settled False (too short to tell).
    """
    x = _finite(series)
    n = len(x)
    k = n // MSER_BATCH
    if k < 2:
        return SteadyState(0, n, False, "MSER-5")
    tail = _mser_tail_batches(k) if min_tail_batches is None else max(2, min(min_tail_batches, k))
    z = x[: k * MSER_BATCH].reshape(k, MSER_BATCH).mean(axis=1)
    z = z - z.mean()  # centring keeps the sum-of-squares difference below free of cancellation
    # Sums over each tail z[d:], for all d at once.
    tail_sum = np.cumsum(z[::-1])[::-1]
    tail_sq = np.cumsum((z * z)[::-1])[::-1]
    remaining = np.arange(k, 0, -1)
    squares = np.maximum(tail_sq - tail_sum**2 / remaining, 0.0)
    d = int(np.argmin((squares / remaining**2)[: k - tail + 1]))
    return SteadyState(MSER_BATCH * d, n, d <= k / 2, "MSER-5")
