"""One sweep point's figures, each with its 95 % interval, over the point's steady window only.

Steady state: MSER-5 on each request's time in the system (schedule to outcome, in send order) finds
where a filling queue stops trending. A cut past the middle counts as a trend only if the halves' means
differ (MSER-5 alone flags some short stationary runs). The kept part must itself be steady: its halves
alike, and its departure rate's interval holding the offered load (flow balance); otherwise the point
did not settle. The window starts at the next whole segment of the exact schedule
(loadgen.arrival_schedule.EXACT_SEGMENT_S), so the load it offered is the planned rate to within one arrival.

Methods (reports.intervals): outcome shares and SLO attainment, Wilson on the effective sample size
(batch means of the 0/1 series: requests close in time share a queue); served rate, goodput and output
tok/s, batch means over ten sub-windows with a t interval; TTFT and E2E percentiles, a moving-block
bootstrap in send order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from reports.intervals import (
    CONFIDENCE,
    Interval,
    SteadyState,
    mser5,
    quantile_interval,
    rate_interval,
    share_interval,
)
from reports.metrics import token_arrivals
from runfolder.figures import Slo, good_mask
from runfolder.frame import RunData

log = logging.getLogger(__name__)

SEGMENT_S = 5.0  # loadgen.arrival_schedule.EXACT_SEGMENT_S (reports/ does not import loadgen/)
# "timeout" is the server's (v1.1.1's queue timeout, a 503/504): what the guide counted. "deadline" is the
# client giving up (loadgen's client_deadline), beside it: a different failure, and never the guide's.
SHARES = ("success", "rejected", "timeout", "deadline", "error", "cut")
CLIENT_DEADLINE = "client_deadline"  # loadgen.classify.CLIENT_DEADLINE


@dataclass(frozen=True, slots=True)
class PointFigures:
    """A profile at one offered load, over its steady window."""

    offered_per_s: float  # arrivals scheduled in the window / its length (exact by construction)
    planned_per_s: float | None
    window_start_s: float  # epoch
    window_s: float
    run_s: float  # the whole run, of which the window is the steady tail
    requests: int  # scheduled in the window
    steady: SteadyState
    settled: bool
    shares: dict[str, Interval]  # outcome -> share of the window's requests
    slo_attainment: Interval  # successes within the SLO / requests
    # The knee's verdicts are one-sided questions ("at least 90 % served?"): 90 % two-sided intervals,
    # whose ends are one-sided 95 % bounds (reports.knee).
    success_verdict: Interval
    slo_verdict: Interval
    served_per_s: Interval  # successful completions per second
    goodput_per_s: Interval  # completions within the SLO per second
    output_tokens_per_s: Interval  # by token arrival
    ttft_p50_s: Interval
    ttft_p99_s: Interval
    e2e_p50_s: Interval
    e2e_p99_s: Interval
    generator_behind: bool
    schedule_lag_p95_s: float | None

    def figure(self, name: str) -> Interval:
        """A figure by its table name (`success_rate`, `ttft_p50_s`, ...)."""
        share = {f"{k}_rate": v for k, v in self.shares.items()}
        share["rejection_rate"] = self.shares["rejected"]
        share["cut_rate"] = self.shares["cut"]
        share["deadline_rate"] = self.shares["deadline"]
        return share.get(name) or getattr(self, name)


def trend_between_halves(series: np.ndarray) -> bool:
    """Do the two halves' means differ, both clearly (Welch t on batch means of 5, |t| > 2.5) and by more
    than 10 % of the level? MSER-5 on a short stationary series sometimes cuts past the middle by chance
    (a quiet tail), and keeps a part that still moves when a run ends before its queue settles."""
    k = len(series) // 5
    if k < 4:
        return False  # too short to tell either way
    means = series[: 5 * k].reshape(k, 5).mean(axis=1)
    first, second = means[: k // 2], means[k // 2 :]
    gap = abs(second.mean() - first.mean())
    if gap <= 0.1 * abs(means.mean()):
        return False
    spread = math.sqrt(first.var(ddof=1) / len(first) + second.var(ddof=1) / len(second))
    return spread == 0 or gap / spread > 2.5


def steady_window(run: RunData) -> tuple[SteadyState, float]:
    """MSER-5's truncation on the time in system, and the window start it gives (a segment boundary)."""
    rec = run.records.sort_values("scheduled_ts_s", kind="stable")
    in_system_s = (rec["end_ts_s"] - rec["scheduled_ts_s"]).to_numpy(dtype=float)
    scheduled_s = rec["scheduled_ts_s"].to_numpy(dtype=float)
    steady = mser5(in_system_s)
    if not steady.settled and len(in_system_s) >= 20 and not trend_between_halves(in_system_s):
        steady = SteadyState(0, steady.n, True, "MSER-5, overruled: no trend between the halves")
    start_s = run.window_start_s
    if steady.truncate > 0 and len(rec):
        first_kept_s = float(scheduled_s[min(steady.truncate, len(rec) - 1)])
        segments = math.ceil((first_kept_s - start_s) / SEGMENT_S - 1e-9)
        start_s += SEGMENT_S * max(segments, 0)
    if steady.settled and trend_between_halves(in_system_s[scheduled_s >= start_s]):
        # What is kept still moves: e.g. an unlimited server's queue still filling, or draining once
        # arrivals stopped at the run's end (its last requests then finish faster than in steady state).
        steady = SteadyState(steady.truncate, steady.n, False, "MSER-5; the kept part still trends")
    return steady, start_s


def latency_interval(values: np.ndarray, q: float, confidence: float) -> Interval:
    """Blocks of sqrt(n) requests in send order: latencies near saturation are correlated over many
    requests, and n^(1/3) blocks covered a queue's median only 56-64 % of the time against 67-80 % for
    sqrt(n) (benchmarks/interval_coverage.py); still short of 95 %, which docs/reproduce.md states."""
    n = int(np.sum(~np.isnan(values)))
    return quantile_interval(values, q, confidence=confidence, block=max(1, round(math.sqrt(n))))


def point_figures(run: RunData, slo: Slo, confidence: float = CONFIDENCE) -> PointFigures:
    steady, start_s = steady_window(run)
    end_s = run.window_start_s + run.duration_s
    settled = steady.settled and end_s - start_s >= 2 * SEGMENT_S - 1e-9
    if end_s - start_s < 2 * SEGMENT_S:  # nothing steady is left: keep the last two segments, unsettled
        start_s = max(run.window_start_s, end_s - 2 * SEGMENT_S)
    window_s = end_s - start_s
    rec = run.records.sort_values("scheduled_ts_s", kind="stable")
    rec = rec[(rec["scheduled_ts_s"] >= start_s) & (rec["scheduled_ts_s"] < end_s)]
    outcome = rec["outcome"].to_numpy()
    ok = outcome == "success"
    ttft = rec["ttft_s"].to_numpy(dtype=float)
    e2e = rec["e2e_s"].to_numpy(dtype=float)
    tpot = rec["tpot_s"].to_numpy(dtype=float) if "tpot_s" in rec else np.full(len(rec), np.nan)
    good = ok & good_mask(ttft, tpot, e2e, slo)
    deadline = (outcome == "timeout") & (rec["outcome_detail"].to_numpy() == CLIENT_DEADLINE)
    kinds = np.where(deadline, "deadline", outcome)
    shares = {name: share_interval(kinds == name, confidence=confidence) for name in SHARES}
    ends = run.records["end_ts_s"].to_numpy(dtype=float)
    all_ok = (run.records["outcome"] == "success").to_numpy()
    all_good = all_ok & good_mask(
        run.records["ttft_s"].to_numpy(dtype=float),
        run.records["tpot_s"].to_numpy(dtype=float)
        if "tpot_s" in run.records
        else np.full(len(run.records), np.nan),
        run.records["e2e_s"].to_numpy(dtype=float),
        slo,
    )
    # Flow balance: in steady state requests leave (with any outcome) as fast as they arrive. Offered load
    # outside the departure rate's interval means a backlog still growing (or draining): not settled.
    departures = rate_interval(ends, None, start_s, end_s, confidence=confidence)
    if not departures.contains(len(rec) / window_s):
        settled = False
    times_s, tokens = token_arrivals(run)
    lag = (run.summary.get("schedule_lag_s") or {}).get("p95")
    codes = run.summary.get("warning_codes") or []
    return PointFigures(
        offered_per_s=len(rec) / window_s,
        planned_per_s=(run.summary.get("arrival") or {}).get("requested_rate_per_s"),
        window_start_s=start_s,
        window_s=window_s,
        run_s=run.duration_s,
        requests=len(rec),
        steady=steady,
        settled=settled,
        shares=shares,
        slo_attainment=share_interval(good, confidence=confidence),
        success_verdict=share_interval(ok, confidence=1 - 2 * (1 - confidence)),
        slo_verdict=share_interval(good, confidence=1 - 2 * (1 - confidence)),
        served_per_s=rate_interval(ends[all_ok], None, start_s, end_s, confidence=confidence),
        goodput_per_s=rate_interval(ends[all_good], None, start_s, end_s, confidence=confidence),
        output_tokens_per_s=rate_interval(times_s, tokens, start_s, end_s, confidence=confidence),
        ttft_p50_s=latency_interval(ttft[ok], 0.50, confidence),
        ttft_p99_s=latency_interval(ttft[ok], 0.99, confidence),
        e2e_p50_s=latency_interval(e2e[ok], 0.50, confidence),
        e2e_p99_s=latency_interval(e2e[ok], 0.99, confidence),
        generator_behind="generator_behind" in codes,
        schedule_lag_p95_s=lag,
    )
