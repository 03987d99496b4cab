"""Run-level figures from per-request records: counts, rates, throughput, latency percentiles, goodput."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from runfolder.figures import Slo, distribution, good_mask, per_s, rate, token_arrivals
from runfolder.figures import tokens_in_window as window_tokens
from runfolder.output_figures import output_figures, output_warnings
from runfolder.records import OUTCOMES, RequestRecord
from runfolder.workload_figures import workload_figures

SCHEMA_VERSION = 1
# The generator is "behind" when requests leave this much later than scheduled (p95), or when fewer
# requests went out than the schedule had slots due in the window.
BEHIND_LAG_P95_S = 0.05
# A Python load-generator process runs on one core: at this share of it, the client is the limit.
CPU_LIMIT_SHARE = 0.9
# Warning codes (summary.json "warning_codes"; the gate refuses runs by code).
CUT_REQUESTS = "cut_requests"
GENERATOR_BEHIND = "generator_behind"
MISSING_WORKER_RECORDS = "missing_worker_records"
SERVER_SATURATED = "server_saturated"
APPROXIMATE_PROMPT_LENGTHS = "approximate_prompt_lengths"


def _column(records: Sequence[RequestRecord], name: str) -> np.ndarray:
    """One field of the records as a float column, None as NaN."""
    return np.array([getattr(r, name) for r in records], dtype=float)


def _arrivals(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray]:
    """figures.token_arrivals over the successful records."""
    ok = [r for r in records if r.outcome == "success"]
    return token_arrivals(
        _column(ok, "output_tokens"),
        _column(ok, "scheduled_ts_s"),
        _column(ok, "ttft_s"),
        _column(ok, "end_ts_s"),
        np.array([len(r.itl_s) for r in ok], dtype=int),
        np.array([gap for r in ok for gap in r.itl_s], dtype=float),
    )


def add_warning(summary: dict[str, Any], code: str, text: str) -> None:
    """A human sentence in `warnings` and its machine-readable code in `warning_codes` (once per code)."""
    summary.setdefault("warnings", []).append(text)
    codes = summary.setdefault("warning_codes", [])
    if code not in codes:
        codes.append(code)


def chunk_arrivals(rec: RequestRecord) -> tuple[list[float], float]:
    """Epoch times at which one request's output arrived, and the tokens each arrival carried."""
    times, tokens = token_arrivals(
        np.array([rec.output_tokens or 0], dtype=float),
        np.array([rec.scheduled_ts_s]),
        np.array([np.nan if rec.ttft_s is None else rec.ttft_s]),
        np.array([rec.end_ts_s]),
        np.array([len(rec.itl_s)]),
        np.array(rec.itl_s, dtype=float),
    )
    return times.tolist(), float(tokens[0])


def tokens_in_window(records: Sequence[RequestRecord], start_s: float, end_s: float) -> float:
    """Output tokens of successful requests that arrived in [start_s, end_s)."""
    return window_tokens(*_arrivals(records), start_s, end_s)


def peak_in_flight(records: Sequence[RequestRecord]) -> int:
    """The largest number of requests that were out at the same moment (sent, no outcome yet)."""
    events = sorted([(r.sent_ts_s, 1) for r in records] + [(r.end_ts_s, -1) for r in records])
    peak = now = 0
    for _, step in events:  # ends sort before sends at the same instant: a reused user is not counted twice
        now += step
        peak = max(peak, now)
    return peak


def cpu_figures(processes: dict[str, dict[str, float]], requests: int) -> dict[str, Any]:
    """Load-generator CPU per process ({id: {cpu_s, wall_s}}): share of one core, and CPU per request."""
    out: dict[str, Any] = {}
    for pid, p in processes.items():
        wall = p.get("wall_s") or 0.0
        out[pid] = {**p, "cpu_share_of_core": p["cpu_s"] / wall if wall > 0 else None}
    total = sum(p["cpu_s"] for p in processes.values())
    return {
        "processes": out,
        "cpu_s": total,
        "cpu_ms_per_request": 1000 * total / requests if requests else None,
        "max_cpu_share_of_core": max((p["cpu_share_of_core"] or 0.0 for p in out.values()), default=None),
    }


def summarize(
    records: Sequence[RequestRecord],
    *,
    window_start_s: float | None = None,
    window_end_s: float | None = None,
    slo: Slo | None = None,
    requested_rate_per_s: float | None = None,
    due_slots: int | None = None,
    users: int | None = None,
    warmup_records: Sequence[RequestRecord] = (),
    loadgen_processes: dict[str, dict[str, float]] | None = None,
    extra: dict[str, Any] | None = None,
    output_references: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarize the measured records of a run.

    `output_references`: the --check-outputs reference requests (loadgen/output_check.py); with them, or
    with checked records, the summary gets `output_check` (runfolder/output_figures.py).
    The window defaults to [first scheduled send, last end]. Rates are fractions of attempted requests;
    output throughput counts the tokens that *arrived* inside the window (from the measured requests and
    from warm-up requests still streaming into it), divided by its duration; latencies are over successes.
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
    in_window = tokens_in_window(records, start, end)
    warmup_in_window = tokens_in_window(warmup_records, start, end)
    ttft, tpot, e2e = (_column(ok, name) for name in ("ttft_s", "tpot_s", "e2e_s"))
    tokens_arrived = in_window + warmup_in_window
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "requests": n,
        "successes": counts["success"],
        "rejections": counts["rejected"],
        "timeouts": counts["timeout"],
        "errors": counts["error"],
        "cuts": counts["cut"],
        "success_rate": rate(counts["success"], n),
        "rejection_rate": rate(counts["rejected"], n),
        "timeout_rate": rate(counts["timeout"], n),
        "error_rate": rate(counts["error"], n),
        "cut_rate": rate(counts["cut"], n),
        "outcome_details": _details(records),
        "window_start_ts_s": start,
        "window_end_ts_s": end,
        "duration_s": duration,
        "requests_per_s": per_s(counts["success"], duration),
        "attempted_requests_per_s": per_s(n, duration),
        "output_tokens": sum(r.output_tokens or 0 for r in ok),
        "output_tokens_in_window": tokens_arrived,
        "warmup_output_tokens_in_window": warmup_in_window,
        "output_tokens_per_s": per_s(tokens_arrived, duration),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "tokens": _token_sources(ok),
        **_empty_replies(ok, n),
        "ttft_s": distribution(ttft),
        "ttfb_s": distribution(_column(ok, "ttfb_s")),
        "e2e_s": distribution(e2e),
        "tpot_s": distribution(tpot),
        "itl_s": distribution(np.array([gap for r in ok for gap in r.itl_s], dtype=float)),
        "schedule_lag_s": distribution(_column(records, "schedule_lag_s")),
        "peak_in_flight": peak_in_flight(records),
        # workloads: cached prompt tokens, TTFT by turn and by shared prefix (see docs/loadtest.md)
        "workloads": workload_figures(records),
        "warnings": [],
        "warning_codes": [],
    }
    if slo is not None and slo.any():
        good = int(good_mask(ttft, tpot, e2e, slo).sum())
        summary["goodput"] = {
            "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "e2e_s": slo.e2e_s},
            "good_requests": good,
            "requests_per_s": per_s(good, duration),
            "attainment": rate(good, n),
        }
    cpu = cpu_figures(loadgen_processes, n) if loadgen_processes else None
    if cpu is not None:
        summary["loadgen"] = cpu
    if counts["cut"]:
        add_warning(
            summary,
            CUT_REQUESTS,
            f"{counts['cut']} request(s) were still in flight when the run ended (outcome 'cut'); they count "
            "as attempted and not successful: the server had not answered them within the run and its "
            "stop timeout (a server past capacity does this; --stop-timeout up to --request-timeout-s "
            "lets them end)",
        )
    if requested_rate_per_s:
        summary["arrival"] = _arrival_check(summary, records, requested_rate_per_s, due_slots, users, cpu)
    elif cpu is not None and (cpu["max_cpu_share_of_core"] or 0) >= CPU_LIMIT_SHARE:
        add_warning(summary, GENERATOR_BEHIND, _cpu_text(cpu) + "; latencies include the client's own delay")
    checks = output_figures(records, output_references)
    if checks is not None:
        summary["output_check"] = checks
        for code, text in output_warnings(checks):
            add_warning(summary, code, text)
    if extra:
        summary.update(extra)
    _prompt_length_warning(summary)
    return summary


def _details(records: Sequence[RequestRecord]) -> dict[str, dict[str, int]]:
    by_outcome: dict[str, dict[str, int]] = {o: {} for o in OUTCOMES}
    for (outcome, detail), count in sorted(Counter((r.outcome, r.outcome_detail) for r in records).items()):
        by_outcome.setdefault(outcome, {})[detail] = count
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
    return {"empty_replies": empty, "empty_reply_rate": rate(empty, n)}


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


def _cpu_text(cpu: dict[str, Any]) -> str:
    pid, share = max(
        ((k, v["cpu_share_of_core"] or 0.0) for k, v in cpu["processes"].items()), key=lambda kv: kv[1]
    )
    return (
        f"the load generator could not keep up: its process {pid} used {100 * share:.0f}% of a CPU core; "
        "add --processes"
    )


def _arrival_check(
    summary: dict[str, Any],
    records: Sequence[RequestRecord],
    requested: float,
    due: int | None,
    users: int | None,
    cpu: dict[str, Any] | None,
) -> dict[str, Any]:
    """Requested against achieved: the exact count of due slots, the lag, and who was the limit."""
    achieved = summary["attempted_requests_per_s"]
    lag_p95 = summary["schedule_lag_s"]["p95"]
    sent = summary["requests"]
    missed = (due - sent) if due is not None else None
    late = lag_p95 is not None and lag_p95 > BEHIND_LAG_P95_S
    behind = late or (missed is not None and missed > 0)
    out: dict[str, Any] = {
        "requested_rate_per_s": requested,
        "achieved_rate_per_s": achieved,
        "due_slots": due,
        "sent": sent,
        "missed_slots": missed,
        "users": users,
        "peak_in_flight": summary["peak_in_flight"],
        "behind": behind,
        "limit": None,
    }
    if not behind:
        return out
    what = (
        f"achieved {achieved or 0:.2f} of {requested:.2f} req/s ({sent} sent of {due} due), "
        f"p95 schedule lag {lag_p95 or 0:.3f} s"
        if due is not None
        else f"achieved {achieved or 0:.2f} of {requested:.2f} req/s, p95 schedule lag {lag_p95 or 0:.3f} s"
    )
    waiting = all_users_waiting(records, users)
    out["all_users_waiting"] = waiting
    if cpu is not None and (cpu["max_cpu_share_of_core"] or 0) >= CPU_LIMIT_SHARE:
        out["limit"] = "cpu"
        add_warning(summary, GENERATOR_BEHIND, f"{_cpu_text(cpu)} ({what})")
    elif not waiting:
        out["limit"] = "users"
        add_warning(
            summary,
            GENERATOR_BEHIND,
            f"the load generator could not keep up: requests left late while not all of its "
            f"{users if users is not None else ''} users had a request out (users still spawning, or "
            f"busy in the client) ({what}); spawn users at once (-r = -u) or add --processes",
        )
    else:
        out["limit"] = "server"
        e2e = summary["e2e_s"]["mean"]
        carry = f"; at E2E {e2e:.3f} s, {users} users carry at most {users / e2e:.2f} req/s" if e2e else ""
        add_warning(
            summary,
            SERVER_SATURATED,
            f"the server is saturated: all {users} users were waiting on replies ({what}){carry}",
        )
    return out


def all_users_waiting(records: Sequence[RequestRecord], users: int | None) -> bool:
    """Whether, when most late requests fell due, every user already had a request out."""
    if not users:
        return False
    late = [r.scheduled_ts_s for r in records if r.schedule_lag_s > BEHIND_LAG_P95_S]
    if not late:
        return False
    sends = sorted(r.sent_ts_s for r in records)
    ends = sorted(r.end_ts_s for r in records)
    full = sum(1 for t in late if bisect_right(sends, t) - bisect_right(ends, t) >= users)
    return full >= len(late) / 2
