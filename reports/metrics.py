"""Per-run figures from the records (with runfolder.figures, the definitions summary.json is written with)
and per-label aggregates over repeats.

A label's figure is the mean over its repeats of each run's figure; its spread is their min..max.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runfolder import figures
from runfolder.figures import PERCENTILES, Slo
from runfolder.frame import RunData, chunk_gaps
from runfolder.records import OUTCOMES

log = logging.getLogger(__name__)

LATENCIES = ("ttft", "e2e", "tpot")
# Plural counts as summary.json names them, per outcome.
COUNT_NAMES = {
    "success": "successes",
    "rejected": "rejections",
    "timeout": "timeouts",
    "error": "errors",
    "cut": "cuts",
}
RATE_NAMES = {
    "success": "success_rate",
    "rejected": "rejection_rate",
    "timeout": "timeout_rate",
    "error": "error_rate",
    "cut": "cut_rate",
}


@dataclass(frozen=True, slots=True)
class Metric:
    """How to show and judge one figure. Values are in SI units (s, fractions); `scale` is for display."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    scale: float = 1.0


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("output_tokens_per_s", "Output throughput", "tok/s", True),
        Metric("requests_per_s", "Completed requests/s", "req/s", True),
        Metric("success_rate", "Success", "%", True, 100.0),
        Metric("rejection_rate", "Rejected", "%", False, 100.0),
        Metric("timeout_rate", "Timed out", "%", False, 100.0),
        Metric("error_rate", "Errors", "%", False, 100.0),
        Metric("cut_rate", "Cut at the end", "%", False, 100.0),
        Metric("goodput_requests_per_s", "Goodput", "req/s", True),
        Metric("slo_attainment", "SLO attainment", "%", True, 100.0),
        *(
            Metric(f"{lat}_p{p}_s", f"{lat.upper()} p{p}", "ms", False, 1000.0)
            for lat in LATENCIES
            for p in PERCENTILES
        ),
    )
}


def run_slo(run: RunData, override: Slo | None) -> Slo | None:
    """The SLO given on the command line, else the one the load test used (summary.json's goodput)."""
    if override is not None and override.any():
        return override
    given = (run.summary.get("goodput") or {}).get("slo") or {}
    slo = Slo(given.get("ttft_s"), given.get("tpot_s"), given.get("e2e_s"))
    return slo if slo.any() else None


def _floats(column: pd.Series) -> np.ndarray:
    floats: np.ndarray = column.to_numpy(dtype=float, na_value=np.nan)
    return floats


def run_metrics(run: RunData, slo: Slo | None = None) -> dict[str, Any]:
    """One row of figures for one run."""
    rec = run.records
    n = len(rec)
    counts = rec["outcome"].value_counts()
    ok = rec[rec["outcome"] == "success"]
    duration = run.duration_s
    times, tokens = token_arrivals(run)
    start = run.window_start_s
    # Tokens that arrived in the window, with those of warm-up requests (summary.json; not in records.csv).
    output_tokens = figures.tokens_in_window(times, tokens, start, start + duration) + float(
        run.summary.get("warmup_output_tokens_in_window") or 0
    )
    load = run.load
    row: dict[str, Any] = {
        "label": run.label,
        "run": str(run.path),
        "profile": run.profile,
        "load_kind": load.kind,
        "load": load.value,
        "duration_s": duration,
        "requests": n,
        **{COUNT_NAMES[o]: int(counts.get(o, 0)) for o in OUTCOMES},
        **{RATE_NAMES[o]: figures.rate(int(counts.get(o, 0)), n) for o in OUTCOMES},
        "output_tokens": output_tokens,
        "output_tokens_per_s": figures.per_s(output_tokens, duration),
        "requests_per_s": figures.per_s(len(ok), duration),
    }
    columns = {lat: _floats(ok[f"{lat}_s"]) for lat in LATENCIES}
    for lat in LATENCIES:
        spread = figures.distribution(columns[lat])
        for p in PERCENTILES:
            row[f"{lat}_p{p}_s"] = spread[f"p{p}"]
    slo = run_slo(run, slo)
    good = (
        int(figures.good_mask(columns["ttft"], columns["tpot"], columns["e2e"], slo).sum()) if slo else None
    )
    row["goodput_requests_per_s"] = figures.per_s(good, duration) if good is not None else None
    row["slo_attainment"] = figures.rate(good, n) if good is not None else None
    return row


def runs_frame(runs: list[RunData], slo: Slo | None = None) -> pd.DataFrame:
    """One row per run, in the order given."""
    return pd.DataFrame([run_metrics(r, slo) for r in runs])


def label_order(runs: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(runs["label"]))


def label_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per label: mean, min, max, std and n of every metric over its repeats (columns: metric, stat)."""
    keys = [k for k in METRICS if k in runs and runs[k].notna().any()]
    numeric = runs[["label", *keys]].copy()
    numeric[keys] = numeric[keys].astype(float)
    stats = numeric.groupby("label", sort=False)[keys].agg(["mean", "min", "max", "std", "count"])
    return stats.loc[label_order(runs)]


def token_arrivals(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    """(epoch time, tokens) of every chunk of output of successful requests (runfolder.figures)."""
    rec = run.records
    ok = (rec["outcome"] == "success").to_numpy()
    if not ok.any():
        return np.empty(0), np.empty(0)
    counts, gaps = chunk_gaps(run, ok)
    return figures.token_arrivals(
        _floats(rec["output_tokens"])[ok],
        _floats(rec["scheduled_ts_s"])[ok],
        _floats(rec["ttft_s"])[ok],
        _floats(rec["end_ts_s"])[ok],
        counts,
        gaps,
    )


def timeline(run: RunData, bin_s: float) -> pd.DataFrame:
    """Per time bin from the window start: output tok/s by token arrival, outcomes in req/s by request end
    (requests that ended after the window are left out of those bars)."""
    rec = run.records
    n_bins = max(int(np.ceil(run.duration_s / bin_s)), 1)

    def bins(epoch: np.ndarray) -> np.ndarray:
        index: np.ndarray = np.clip(((epoch - run.window_start_s) // bin_s).astype(int), 0, n_bins - 1)
        return index

    ends = rec["end_ts_s"].to_numpy(dtype=float)
    # Requests that ended after the window (finished during --stop-timeout) are not drawn: piled into the
    # last bin they would look like a burst.
    ended_inside = (ends >= run.window_start_s) & (ends < run.window_start_s + run.duration_s)
    idx = bins(ends[ended_inside])
    outcome_codes = rec["outcome"].cat.codes.to_numpy()[ended_inside]
    times, tokens = token_arrivals(run)
    inside = (times >= run.window_start_s) & (times < run.window_start_s + run.duration_s)
    starts = np.arange(n_bins) * bin_s
    # The last bin may be cut short by the end of the window: divide by its real width.
    widths = np.clip(np.minimum(starts + bin_s, max(run.duration_s, bin_s)) - starts, 1e-9, bin_s)
    frame = pd.DataFrame({"t_s": starts})
    arrived = np.bincount(bins(times[inside]), weights=tokens[inside], minlength=n_bins)
    frame["output_tokens_per_s"] = arrived / widths
    for code, outcome in enumerate(OUTCOMES):
        frame[outcome] = np.bincount(idx[outcome_codes == code], minlength=n_bins) / widths
    return frame


def label_timeline(runs: list[RunData], bin_s: float) -> pd.DataFrame:
    """Mean timeline over the repeats of one label (repeats aligned on their window start)."""
    frames = [timeline(r, bin_s) for r in runs]
    return pd.concat(frames).groupby("t_s", as_index=False).mean()


def bin_width(duration_s: float, target_bins: int = 60) -> float:
    """A round bin width giving about `target_bins` bins."""
    raw = max(duration_s / target_bins, 1e-3)
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if step >= raw:
            return float(step)
    return float(np.ceil(raw / 600) * 600)


def cdf_points(values: np.ndarray, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(x, F(x)) of an empirical CDF, at most `max_points` quantiles so that a million values plot fast."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return values, values
    probs = np.linspace(0.0, 1.0, min(values.size, max_points))
    return np.quantile(values, probs), probs
