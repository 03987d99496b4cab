"""What the headless-run tests check on every run folder: the summary is the records' figures."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from runfolder import read_run, summarize
from runfolder.records import OUTCOMES

# fault -> the outcome and detail it must produce ("ok" is the only success)


# fault -> the outcome and detail it must produce ("ok" is the only success)
EXPECTED = {
    "ok": ("success", "ok"),
    "http_429": ("rejected", "concurrency_limit_exceeded"),
    "queue_timeout": ("timeout", "queue_timeout"),
    "stream_error": ("error", "stream_error"),
    "cut": ("error", "truncated_stream"),
    "stall": ("timeout", "client_deadline"),
    "empty": ("success", "empty_reply"),  # a known finish_reason at once: a valid, empty answer
    "malformed": ("error", "malformed_chunk"),
    "stream_rejected": ("rejected", "concurrency_limit_exceeded"),
    "no_finish": ("error", "missing_finish_reason"),
}


SUMMARY_KEYS_FROM_RECORDS = (
    "requests",
    "successes",
    "rejections",
    "timeouts",
    "errors",
    "cuts",
    "success_rate",
    "rejection_rate",
    "timeout_rate",
    "error_rate",
    "cut_rate",
    "output_tokens",
    "output_tokens_in_window",
    "output_tokens_per_s",
    "requests_per_s",
    "ttft_s",
    "e2e_s",
    "tpot_s",
    "itl_s",
    "ttfb_s",
    "peak_in_flight",
)


def assert_close(value, expected, key: str) -> None:
    if isinstance(expected, dict):
        for name, item in expected.items():
            assert_close(value[name], item, f"{key}.{name}")
    elif expected is None or value is None:
        assert value == expected, key
    else:
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-5), key


def assert_summary_matches_records(run_dir: Path) -> dict:
    """summary.json is what runfolder computes from records.csv over the same window."""
    run = read_run(run_dir)
    s = run.summary
    again = summarize(run.records, window_start_s=s["window_start_ts_s"], window_end_s=s["window_end_ts_s"])
    # Tokens of warm-up requests that arrived inside the window are in summary.json, not in records.csv.
    warmup_tokens = s["warmup_output_tokens_in_window"]
    again["output_tokens_in_window"] += warmup_tokens
    again["output_tokens_per_s"] = (
        again["output_tokens_in_window"] / s["duration_s"] if s["duration_s"] else None
    )
    for key in SUMMARY_KEYS_FROM_RECORDS:
        assert_close(again[key], s[key], key)
    assert (
        s["requests"] == len(run.records) == sum(Counter(r.outcome for r in run.records)[o] for o in OUTCOMES)
    )
    for key in ("p50", "p90", "p95", "p99", "mean", "max"):
        assert key in s["ttft_s"]
    return s


def ran(proc: subprocess.CompletedProcess, *codes: int) -> None:
    assert proc.returncode in codes, proc.stderr[-4000:]
