"""The one definition of each run figure, computed over columns (numpy arrays, one entry per request).

Used by `runfolder.summary` to write summary.json and by the reports to recompute figures from records.csv,
so the two cannot drift apart. Missing values are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True)
class Slo:
    """Service-level objectives for goodput; a None field is not checked."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))


def rate(part: float, whole: float) -> float | None:
    """A fraction of attempted requests; None when nothing was attempted."""
    return part / whole if whole else None


def per_s(amount: float, duration_s: float) -> float | None:
    return amount / duration_s if duration_s > 0 else None


def distribution(values: np.ndarray) -> dict[str, float | int | None]:
    """count, mean, min, max and p50/p90/p95/p99 (linear interpolation as numpy, vLLM); NaN left out."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    if arr.size == 0:
        out.update({"mean": None, "min": None, "max": None, **{f"p{p}": None for p in PERCENTILES}})
        return out
    out.update({"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())})
    for p, q in zip(PERCENTILES, np.percentile(arr, PERCENTILES), strict=True):
        out[f"p{p}"] = float(q)
    return out


def good_mask(ttft_s: np.ndarray, tpot_s: np.ndarray, e2e_s: np.ndarray, slo: Slo) -> np.ndarray:
    """Which requests meet every objective (give it the successes only)."""
    good = np.ones(len(ttft_s), dtype=bool)
    for column, limit in ((ttft_s, slo.ttft_s), (tpot_s, slo.tpot_s), (e2e_s, slo.e2e_s)):
        if limit is not None:
            # A request without the measured value (a one-token reply has no TPOT) passes that check.
            good &= ~(np.asarray(column, dtype=float) > limit)
    return good


def token_arrivals(
    output_tokens: np.ndarray,
    scheduled_ts_s: np.ndarray,
    ttft_s: np.ndarray,
    end_ts_s: np.ndarray,
    gap_counts: np.ndarray,
    gaps_s: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(epoch time, tokens) of every chunk of output of the given (successful) requests.

    A stream's content chunks arrive at schedule + TTFT, then after each ITL gap (`gaps_s` holds every
    request's gaps one after another, `gap_counts` how many each has); the request's output tokens are
    spread evenly over its chunks (a server may pack several tokens into one chunk). Without a TTFT
    (non-streamed replies) every token arrives when the reply was read.
    """
    tokens = np.nan_to_num(np.asarray(output_tokens, dtype=float))
    ttft = np.asarray(ttft_s, dtype=float)
    if tokens.size == 0:
        return np.empty(0), np.empty(0)
    streamed = ~np.isnan(ttft)
    first = np.where(streamed, np.asarray(scheduled_ts_s, dtype=float) + np.nan_to_num(ttft), end_ts_s)
    counts = np.asarray(gap_counts, dtype=int)
    gaps = np.asarray(gaps_s, dtype=float)[np.repeat(streamed, counts)]  # no chunk times without a first
    counts = np.where(streamed, counts, 0)
    row = np.repeat(np.arange(tokens.size), counts)
    cum = np.cumsum(gaps)
    before = np.concatenate([[0.0], cum])[np.cumsum(counts) - counts]  # sum of the gaps of earlier rows
    later_times = first[row] + cum - before[row]
    per_chunk = tokens / (counts + 1)
    return np.concatenate([first, later_times]), np.concatenate([per_chunk, per_chunk[row]])


def tokens_in_window(times: np.ndarray, tokens: np.ndarray, start_s: float, end_s: float) -> float:
    """Output tokens that arrived in [start_s, end_s)."""
    inside = (times >= start_s) & (times < end_s)
    return float(tokens[inside].sum())
