"""Synthetic run folders with known records, written through benchcore's own writer and summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchcore.records import RequestRecord
from benchcore.rundir import write_run
from benchcore.summary import Slo, summarize

T0 = 1_700_000_000.0  # a fixed epoch so that files are reproducible


def record(
    outcome: str = "success",
    *,
    at_s: float = 0.0,
    e2e_s: float = 1.0,
    ttft_s: float | None = 0.1,
    output_tokens: int | None = 100,
) -> RequestRecord:
    """One request scheduled `at_s` seconds into the run; failures carry no latency or tokens."""
    ok = outcome == "success"
    tpot = (e2e_s - ttft_s) / (output_tokens - 1) if ok and ttft_s is not None and output_tokens else None
    detail = {"success": "ok", "rejected": "http_429", "timeout": "queue_timeout", "error": "http_500"}[
        outcome
    ]
    return RequestRecord(
        scenario="chat_stream",
        stream=True,
        scheduled_ts_s=T0 + at_s,
        sent_ts_s=T0 + at_s,
        end_ts_s=T0 + at_s + e2e_s,
        schedule_lag_s=0.0,
        e2e_s=e2e_s,
        outcome=outcome,  # type: ignore[arg-type]
        outcome_detail=detail,
        ttft_s=ttft_s if ok else None,
        tpot_s=tpot,
        itl_s=[tpot] * 3 if tpot else [],
        output_tokens=output_tokens if ok else None,
        usage_source="server" if ok else "none",
        http_status={"success": 200, "rejected": 429, "timeout": 503, "error": 500}[outcome],
    )


def outcome_mix(
    successes: int,
    rejected: int = 0,
    timeouts: int = 0,
    errors: int = 0,
    *,
    duration_s: float = 10.0,
    **kw: Any,
) -> list[RequestRecord]:
    """Requests spread evenly over the first half of the window; every success has the same figures."""
    outcomes = ["success"] * successes + ["rejected"] * rejected + ["timeout"] * timeouts + ["error"] * errors
    step = duration_s / 2 / max(len(outcomes), 1)
    return [record(o, at_s=i * step, **kw) for i, o in enumerate(outcomes)]


def write_synthetic_run(
    path: Path,
    records: list[RequestRecord],
    *,
    label: str,
    duration_s: float = 10.0,
    users: int | None = 4,
    rate: float | None = None,
    profile: str | None = None,
    slo: Slo | None = None,
) -> Path:
    """A complete run folder whose measured window is [T0, T0 + duration_s]."""
    summary = summarize(
        records, window_start_s=T0, window_end_s=T0 + duration_s, slo=slo, extra={"label": label}
    )
    metadata = {
        "label": label,
        "server": {"profile": profile, "models": ["tiny-llama"]},
        "model": "tiny-llama",
        "load": {
            "arrival": "constant" if rate else "closed",
            "rate_per_s": rate,
            "users": users,
            "run_time_s": duration_s,
        },
    }
    return write_run(path, records, summary, metadata)
