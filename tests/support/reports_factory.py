"""Synthetic run folders with known records, written through runfolder's own writer and summary.

`write_synthetic_run` can also write the summary keys newer load tests add (`cuts`, `cut_rate`,
`warning_codes`, `workload`, `arrival`) and metadata.json's recorded `options`, so that the gate's
refusals and shape checks are tested on both newer and older run folders."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from runfolder.figures import Slo
from runfolder.folder import write_run
from runfolder.records import RequestRecord
from runfolder.summary import summarize

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
    start_s: float = 0.0,
    cuts: int | None = None,
    warning_codes: list[str] | None = None,
    workload: dict[str, Any] | None = None,
    arrival: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> Path:
    """A complete run folder whose measured window is [T0 + start_s, T0 + start_s + duration_s].

    Records are shifted by `start_s` (so that runs can be given an order in time). `cuts` adds that
    many requests cut at the end of the run, counted in summary.json (`cuts`, `cut_rate`) as a newer load
    test writes them; `warning_codes`, `workload` and `arrival` go into summary.json as given;
    `options` into metadata.json (the load test's recorded options).
    """
    records = [
        replace(r, scheduled_ts_s=r.scheduled_ts_s + start_s, sent_ts_s=r.sent_ts_s + start_s,
                end_ts_s=r.end_ts_s + start_s)
        for r in records
    ]  # fmt: skip
    start = T0 + start_s
    extra: dict[str, Any] = {"label": label}
    if cuts is not None:
        attempted = len(records) + cuts
        extra.update(requests=attempted, cuts=cuts, cut_rate=cuts / attempted)
    if warning_codes is not None:
        extra["warning_codes"] = warning_codes
    if workload is not None:
        extra["workload"] = workload
    if arrival is not None:
        extra["arrival"] = arrival
    summary = summarize(records, window_start_s=start, window_end_s=start + duration_s, slo=slo, extra=extra)
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
    if options is not None:
        metadata["options"] = options
    return write_run(path, records, summary, metadata)
