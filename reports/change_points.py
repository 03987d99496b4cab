"""Change points in a series of figures: E-divisive means (Matteson & James 2014, "A nonparametric approach
for multiple change point analysis of multivariate data") with a permutation test, as Apache Otava (formerly
Hunter) and MongoDB's performance CI use it.

For a segment of the series and a split at tau, the energy statistic compares the two parts' values:

    Q(tau) = m n / (m + n) * (2 E|X - Y| - E|X - X'| - E|Y - Y'|)

(X the m values before tau, Y the n after; each E a mean over pairs). It is zero in expectation without a
change and grows with any change in distribution. The best split of a segment is its largest Q; its
significance is a permutation test: the segment's values are shuffled `permutations` times, and p is the
share of shuffles whose best Q reaches the observed one ((k + 1) / (R + 1)). While some segment holds a
split with p below `alpha`, the most significant is taken and both halves are searched again (hierarchical
bisection). No distribution is assumed, and a run's noise does not have to be known.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

MIN_SEGMENT = 3  # values on each side of a split: fewer cannot tell a shift from one odd run


@dataclass(frozen=True, slots=True)
class ChangePoint:
    index: int  # the first value of the new level (its position in the series)
    before_mean: float  # the mean of the segment that ends just before it
    after_mean: float  # the mean of the segment that starts at it
    p_value: float  # the permutation test's

    @property
    def change_pct(self) -> float:
        return 100.0 * (self.after_mean / self.before_mean - 1.0) if self.before_mean else float("nan")


def energy_statistic(values: np.ndarray, tau: int) -> float:
    """Q(tau) of the module docstring for the split values[:tau] | values[tau:]."""
    x, y = values[:tau], values[tau:]
    m, n = len(x), len(y)
    between = np.abs(x[:, None] - y[None, :]).mean()
    within_x = np.abs(x[:, None] - x[None, :]).sum() / (m * (m - 1))
    within_y = np.abs(y[:, None] - y[None, :]).sum() / (n * (n - 1))
    return float(m * n / (m + n) * (2 * between - within_x - within_y))


def split_scores(values: np.ndarray, min_segment: int = MIN_SEGMENT) -> tuple[np.ndarray, np.ndarray]:
    """(taus, Q(tau)) for every allowed split at once: block sums of the distance matrix from its 2-D
    prefix sums, so a whole segment costs one n x n matrix (the permutation test calls this hundreds of
    times)."""
    n = len(values)
    taus = np.arange(min_segment, n - min_segment + 1)
    if taus.size == 0:
        return taus, np.array([])
    distances = np.abs(values[:, None] - values[None, :])
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = distances.cumsum(0).cumsum(1)
    m, k = taus.astype(float), (n - taus).astype(float)
    between = (prefix[taus, n] - prefix[taus, taus]) / (m * k)
    within_x = prefix[taus, taus] / (m * (m - 1))
    within_y = (prefix[n, n] - prefix[taus, n] - prefix[n, taus] + prefix[taus, taus]) / (k * (k - 1))
    return taus, m * k / (m + k) * (2 * between - within_x - within_y)


def best_split(values: np.ndarray, min_segment: int = MIN_SEGMENT) -> tuple[int, float] | None:
    """The split of a segment with the largest Q, or None when the segment is too short to split."""
    taus, scores = split_scores(values, min_segment)
    if taus.size == 0:
        return None
    best = int(np.argmax(scores))
    return int(taus[best]), float(scores[best])


def permutation_p(values: np.ndarray, observed: float, permutations: int, rng: np.random.Generator) -> float:
    """How often a shuffled segment's best split scores at least `observed`: (k + 1) / (R + 1)."""
    reached = 0
    for _ in range(permutations):
        split = best_split(rng.permutation(values))
        if split is not None and split[1] >= observed:
            reached += 1
    return (reached + 1) / (permutations + 1)


def find_change_points(
    series: list[float] | np.ndarray, *, alpha: float = 0.01, permutations: int = 499, seed: int = 0
) -> list[ChangePoint]:
    """Every significant change point of the series, in order of position."""
    values = np.asarray(series, dtype=float)
    rng = np.random.default_rng(seed)
    cuts = [0, len(values)]
    p_values: dict[int, float] = {}
    while True:
        best: tuple[float, int, float] | None = None  # (p, index, score)
        for start, end in itertools.pairwise(cuts):
            segment = values[start:end]
            split = best_split(segment)
            if split is None:
                continue
            tau, score = split
            p = permutation_p(segment, score, permutations, rng)
            if p < alpha and (best is None or (p, -score) < (best[0], -best[2])):
                best = (p, start + tau, score)
        if best is None:
            break
        cuts = sorted([*cuts, best[1]])
        p_values[best[1]] = best[0]
    points = []
    for i, cut in enumerate(cuts[1:-1], start=1):
        before, after = values[cuts[i - 1] : cut], values[cut : cuts[i + 1]]
        points.append(ChangePoint(cut, float(before.mean()), float(after.mean()), p_values[cut]))
    return points
