"""Measure how often reports.intervals' 95 % intervals cover a known true value, for the docs to quote.

    python benchmarks/interval_coverage.py [--replications 500] [--seed 0]

Prints one table row per case: the case, the interval method, the sample size, the replications and the
measured coverage (the share of replications whose interval contains the true value; nominal 0.95) with
its binomial standard error, and the median half-width relative to the true value. Cases: Wilson on
Bernoulli counts; shares of independent and of bunched (two-state Markov chain) 0/1 series, plain Wilson
against Wilson on the effective sample size; the median, p90 and p99 of exponential(1) samples; rates of a
Poisson process, counted and token-weighted; and the median and p90 of the latency of an M/M/1 queue at
utilisation 0.8 (Lindley's recursion: strongly correlated in send order), iid bootstrap against block
bootstrap. A second table gives MSER-5's "settled" share and median truncation on stationary, warm-up and
trending series, with the default candidate range and the textbook one. All seeded: the same numbers each
run. About a minute with the defaults.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reports.intervals import (  # noqa: E402
    Interval,
    mser5,
    quantile_interval,
    rate_interval,
    share_interval,
    wilson,
)
from tests.support.synthetic_series import ar1, markov_flags  # noqa: E402

BOOTSTRAP_RESAMPLES = 500  # per interval; 1000 (the default) moves coverages by less than their error here
QUEUE_UTILISATION = 0.8


@dataclass(frozen=True, slots=True)
class Row:
    case: str
    method: str
    n: int
    replications: int
    coverage: float
    relative_half_width: float  # median half-width / true value

    def line(self) -> str:
        se = math.sqrt(self.coverage * (1 - self.coverage) / self.replications)
        return (
            f"{self.case:<34} {self.method:<22} {self.n:>5} {self.replications:>5} "
            f"{self.coverage:>8.3f} {se:>6.3f} {self.relative_half_width:>8.3f}"
        )


HEADER = f"{'case':<34} {'interval':<22} {'n':>5} {'reps':>5} {'coverage':>8} {'±se':>6} {'hw/true':>8}"


def measure(case: str, method: str, true: float, intervals: list[Interval], n: int) -> Row:
    covered = np.mean([ci.contains(true) for ci in intervals])
    half = np.nanmedian([ci.half_width for ci in intervals]) / true
    return Row(case, method, n, len(intervals), float(covered), float(half))


def mm1_latencies_s(rng: np.random.Generator, replications: int, n: int, rho: float) -> np.ndarray:
    """(replications, n) sojourn times (wait + service) of consecutive customers of an M/M/1 queue with
    service rate 1 and arrival rate rho, by Lindley's recursion from the stationary start: the sojourn time
    is then exponential with rate 1 - rho, and neighbours share most of their wait."""
    service_s = rng.exponential(1.0, size=(replications, n))
    gap_s = rng.exponential(1 / rho, size=(replications, n))
    # Stationary wait: 0 with probability 1 - rho, else exponential(1 - rho).
    wait_s = np.where(rng.random(replications) < rho, rng.exponential(1 / (1 - rho), replications), 0.0)
    latency_s = np.empty((replications, n))
    for i in range(n):
        latency_s[:, i] = wait_s + service_s[:, i]
        wait_s = np.maximum(0.0, latency_s[:, i] - gap_s[:, i])
    return latency_s


def wilson_rows(rng: np.random.Generator, replications: int) -> list[Row]:
    rows = []
    for p in (0.05, 0.3, 0.5, 0.9):
        for n in (20, 60, 200):
            cis = [wilson(s, n) for s in rng.binomial(n, p, size=replications)]
            rows.append(measure(f"Bernoulli p={p}", "wilson", p, cis, n))
    return rows


def share_rows(rng: np.random.Generator, replications: int) -> list[Row]:
    rows = []
    iid = (rng.random((replications, 400)) < 0.3).astype(float)
    rows.append(measure("independent flags p=0.3", "wilson", 0.3, [wilson(f.sum(), 400) for f in iid], 400))
    rows.append(
        measure("independent flags p=0.3", "wilson(n_eff)", 0.3, [share_interval(f) for f in iid], 400)
    )
    for steps, stay in ((400, 0.9), (800, 0.9), (400, 0.95), (800, 0.95)):
        flags = markov_flags(rng, replications, steps, stay)
        case = f"Markov flags stay={stay}"
        rows.append(measure(case, "wilson", 0.5, [wilson(f.sum(), steps) for f in flags], steps))
        rows.append(measure(case, "wilson(n_eff)", 0.5, [share_interval(f) for f in flags], steps))
    return rows


def quantile_rows(
    case: str,
    draw: Callable[[int], np.ndarray],
    q: float,
    true: float,
    n: int,
    replications: int,
    blocks: tuple[int | None, ...] = (None,),
) -> list[Row]:
    samples = draw(n)
    rows = []
    for block in blocks:
        cis = [
            quantile_interval(x, q, resamples=BOOTSTRAP_RESAMPLES, block=block, seed=i)
            for i, x in enumerate(samples)
        ]
        length = cis[0].method.rsplit("block ", 1)[1].rstrip(")")
        method = "iid bootstrap" if length == "1" else f"block bootstrap ({length})"
        rows.append(measure(case, method, true, cis, n))
    return rows


def exponential_rows(rng: np.random.Generator, replications: int) -> list[Row]:
    def draw(n: int) -> np.ndarray:
        return rng.exponential(size=(replications, n))

    rows = []
    for q, n in ((0.5, 200), (0.9, 200), (0.99, 50), (0.99, 200), (0.99, 1000)):
        rows += quantile_rows(f"exponential(1) p{round(100 * q)}", draw, q, -math.log(1 - q), n, replications)
    return rows


def queue_rows(rng: np.random.Generator, replications: int) -> list[Row]:
    rho = QUEUE_UTILISATION

    def draw(n: int) -> np.ndarray:
        return mm1_latencies_s(rng, replications, n, rho)

    rows = []
    for q in (0.5, 0.9):
        true_s = -math.log(1 - q) / (1 - rho)  # sojourn time ~ exponential(1 - rho)
        for n in (200, 1000):
            blocks = (1, None, round(n**0.5))
            rows += quantile_rows(
                f"M/M/1 rho={rho} latency p{round(100 * q)}", draw, q, true_s, n, replications, blocks
            )
    return rows


def rate_rows(rng: np.random.Generator, replications: int) -> list[Row]:
    rate_per_s, window_s = 2.0, 60.0
    counted, weighted = [], []
    for _ in range(replications):
        times_s = np.sort(rng.uniform(0, window_s, rng.poisson(rate_per_s * window_s)))
        tokens = rng.integers(50, 151, size=len(times_s))
        counted.append(rate_interval(times_s, None, 0.0, window_s))
        weighted.append(rate_interval(times_s, tokens, 0.0, window_s))
    return [
        measure("Poisson 2/s over 60 s, req/s", "batch means (10, t)", rate_per_s, counted, 10),
        measure("Poisson 2/s, tokens 50-150, tok/s", "batch means (10, t)", rate_per_s * 100, weighted, 10),
    ]


def mser_lines(rng: np.random.Generator, replications: int) -> list[str]:
    title = "series (AR(1) noise, phi 0.7)"
    lines = [f"{title:<34} {'search':<22} {'n':>5} {'reps':>5} {'settled':>8} {'trunc/n':>8}"]
    for n in (200, 500):
        shapes = {
            "stationary": np.zeros(n),
            "ramp 10 -> 0 over first 30 %": np.concatenate(
                [np.linspace(10, 0, int(0.3 * n)), np.zeros(n - int(0.3 * n))]
            ),
            "linear rise 0 -> 10 throughout": np.linspace(0, 10, n),
        }
        for name, shape in shapes.items():
            series = [shape + ar1(rng, n) for _ in range(replications)]
            for search, tail in (("default", None), ("textbook (to k - 2)", 2)):
                states = [mser5(x, min_tail_batches=tail) for x in series]
                settled = np.mean([s.settled for s in states])
                truncated = np.median([s.truncate / n for s in states])
                lines.append(
                    f"{name:<34} {search:<22} {n:>5} {replications:>5} {settled:>8.3f} {truncated:>8.3f}"
                )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replications", type=int, default=500, help="per case (Wilson: 5x, it is cheap)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    reps = args.replications
    print(f"Coverage of 95 % intervals (bootstrap: {BOOTSTRAP_RESAMPLES} resamples; seed {args.seed})")
    print(HEADER)
    for rows in (
        wilson_rows(rng, 5 * reps),
        share_rows(rng, reps),
        exponential_rows(rng, reps),
        queue_rows(rng, reps),
        rate_rows(rng, reps),
    ):
        for row in rows:
            print(row.line())
        print()
    print("MSER-5")
    print("\n".join(mser_lines(rng, reps)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
