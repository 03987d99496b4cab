"""Run-level figures from per-request records: counts, rates, throughput, latency percentiles, goodput."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchcore.records import OUTCOMES, RequestRecord

SCHEMA_VERSION = 1
PERCENTILES = (50, 90, 95, 99)
# The generator is "behind" when requests leave this much later than scheduled (p95), or when it achieves
# less than this share of the requested rate.
BEHIND_LAG_P95_S = 0.05
BEHIND_RATE_SHARE = 0.95


@dataclass(frozen=True, slots=True)
class Slo:
    """Service-level objectives for goodput; a None field is not checked."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))

    def met_by(self, rec: RequestRecord) -> bool:
        return (
            rec.outcome == "success"
            and _within(rec.ttft_s, self.ttft_s)
            and _within(rec.tpot_s, self.tpot_s)
            and _within(rec.e2e_s, self.e2e_s)
        )


def _within(value: float | None, limit: float | None) -> bool:
    # A request without the measured value (a one-token reply has no TPOT) passes that check.
    return limit is None or value is None or value <= limit


def distribution(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, min, max and p50/p90/p95/p99 (linear interpolation, as numpy and vLLM do)."""
    arr = np.fromiter((v for v in values if v is not None), dtype=float)
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    if arr.size == 0:
        out.update({"mean": None, "min": None, "max": None, **{f"p{p}": None for p in PERCENTILES}})
        return out
    out.update({"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())})
    for p, q in zip(PERCENTILES, np.percentile(arr, PERCENTILES), strict=True):
        out[f"p{p}"] = float(q)
    return out


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarize(
    records: Sequence[RequestRecord],
    *,
    window_start_s: float | None = None,
    window_end_s: float | None = None,
    slo: Slo | None = None,
    requested_rate_per_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarize the measured records of a run.

    The window defaults to [first scheduled send, last end]. Rates are fractions of attempted requests;
    throughputs divide by the window's duration; latencies are over successful requests.
    """
    start = (
        window_start_s
        if window_start_s is not None
        else min((r.scheduled_ts_s for r in records), default=0.0)
    )
    end = window_end_s if window_end_s is not None else max((r.end_ts_s for r in records), default=start)
    duration = max(end - start, 0.0)
    counts = Counter(r.outcome for r in records)
    ok = [r for r in records if r.outcome == "success"]
    n = len(records)
    output_tokens = sum(r.output_tokens or 0 for r in ok)
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "requests": n,
        "successes": counts["success"],
        "rejections": counts["rejected"],
        "timeouts": counts["timeout"],
        "errors": counts["error"],
        "success_rate": _rate(counts["success"], n),
        "rejection_rate": _rate(counts["rejected"], n),
        "timeout_rate": _rate(counts["timeout"], n),
        "error_rate": _rate(counts["error"], n),
        "outcome_details": _details(records),
        "window_start_ts_s": start,
        "window_end_ts_s": end,
        "duration_s": duration,
        "requests_per_s": counts["success"] / duration if duration else None,
        "attempted_requests_per_s": n / duration if duration else None,
        "output_tokens": output_tokens,
        "output_tokens_per_s": output_tokens / duration if duration else None,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "tokens": _token_sources(ok),
        **_empty_replies(ok, n),
        "ttft_s": distribution(r.ttft_s for r in ok),
        "e2e_s": distribution(r.e2e_s for r in ok),
        "tpot_s": distribution(r.tpot_s for r in ok),
        "itl_s": distribution(gap for r in ok for gap in r.itl_s),
        "schedule_lag_s": distribution(r.schedule_lag_s for r in records),
        "warnings": [],
    }
    if slo is not None and slo.any():
        good = sum(1 for r in ok if slo.met_by(r))
        summary["goodput"] = {
            "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "e2e_s": slo.e2e_s},
            "good_requests": good,
            "requests_per_s": good / duration if duration else None,
            "attainment": _rate(good, n),
        }
    if requested_rate_per_s:
        summary["arrival"] = _arrival_check(summary, requested_rate_per_s)
    if extra:
        summary.update(extra)
    _prompt_length_warning(summary)
    return summary


def _details(records: Sequence[RequestRecord]) -> dict[str, dict[str, int]]:
    by_outcome: dict[str, dict[str, int]] = {o: {} for o in OUTCOMES}
    for (outcome, detail), count in sorted(Counter((r.outcome, r.outcome_detail) for r in records).items()):
        by_outcome[outcome][detail] = count
    return by_outcome


def _token_sources(ok: Sequence[RequestRecord]) -> dict[str, Any]:
    """How output tokens were known, and how far the run's tokenizer differs from the server's usage.

    Tokens against tokens: `tokenizer_output_tokens` re-tokenizes the same replies the server counted in
    `usage_output_tokens`; content chunks are a separate figure (one chunk may carry many tokens).
    """
    both = [r for r in ok if r.usage_source == "server" and r.output_tokens_counted is not None]
    usage = sum(r.output_tokens or 0 for r in both)
    counted = sum(r.output_tokens_counted or 0 for r in both)
    return {
        "usage_source": dict(Counter(r.usage_source for r in ok)),
        "records_with_usage_and_count": len(both),
        "usage_output_tokens": usage,
        "tokenizer_output_tokens": counted,
        "tokenizer_vs_usage": (counted - usage) / usage if usage else None,
        "output_chunks": sum(r.output_chunks or 0 for r in ok),
    }


def _empty_replies(ok: Sequence[RequestRecord], n: int) -> dict[str, Any]:
    """Successes with no output (a known finish_reason at once): valid answers, in a share of their own."""
    empty = sum(1 for r in ok if r.outcome_detail == "empty_reply" or r.output_tokens == 0)
    return {"empty_replies": empty, "empty_reply_rate": _rate(empty, n)}


def _prompt_length_warning(summary: dict[str, Any]) -> None:
    """Calibrated (or word-count) prompt lengths are approximate: say so, with the contract's code."""
    method = (summary.get("workload") or {}).get("prompt_length_method")
    if method not in ("calibrated", "words"):
        return
    how = "fitted on the server's usage" if method == "calibrated" else "counted in words"
    summary.setdefault("warnings", []).append(
        f"prompt lengths are approximate ({how}); give --tokenizer, or a server with POST /tokenize, "
        "for exact lengths"
    )
    codes = summary.setdefault("warning_codes", [])
    if "approximate_prompt_lengths" not in codes:
        codes.append("approximate_prompt_lengths")


def _arrival_check(summary: dict[str, Any], requested: float) -> dict[str, Any]:
    achieved = summary["attempted_requests_per_s"]
    lag_p95 = summary["schedule_lag_s"]["p95"]
    # Poisson arrivals in a window of T seconds vary by sqrt(rate * T) requests: allow three of those, so
    # that a seeded draw with fewer arrivals is not taken for a generator that fell behind.
    duration_s = summary.get("duration_s") or 0.0
    noise = 3 * math.sqrt(requested * duration_s) / duration_s if duration_s > 0 else 0.0
    floor = min(BEHIND_RATE_SHARE * requested, requested - noise)
    behind = (achieved is not None and achieved < floor) or (
        lag_p95 is not None and lag_p95 > BEHIND_LAG_P95_S
    )
    if behind:
        summary["warnings"].append(
            f"load generator fell behind: achieved {achieved or 0:.2f} of {requested:.2f} req/s, "
            f"p95 schedule lag {lag_p95 or 0:.3f} s; add users (-u) or processes"
        )
    return {"requested_rate_per_s": requested, "achieved_rate_per_s": achieved, "behind": behind}
