"""The end of a run: requests in flight finish by default (bounded by the request deadline); an
explicit `--stop-timeout 0` cuts them, and cut requests stay counted."""

from __future__ import annotations

import pytest

from runfolder import read_run
from tests.loadgen.run_checks import assert_summary_matches_records, ran
from tests.support.helpers import (
    locust_totals,
    run_locust_with_stats,
)


@pytest.mark.slow
def test_requests_cut_by_the_end_of_the_run_are_counted(fake_url, tmp_path):
    # 20 tokens 400 ms apart: every request is still streaming when the 2 s run ends; a hard stop asked for.
    run_dir = tmp_path / "cut"
    args = (
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "2s",
        "--model",
        "token_ms_400",
        "--max-tokens",
        "20",
        "--stop-timeout",
        "0",
    )
    proc = run_locust_with_stats(fake_url, run_dir, *args)
    ran(proc, 1)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["requests"] == s["cuts"] == 2 and s["cut_rate"] == 1.0 and s["success_rate"] == 0.0
    assert {(r.outcome, r.outcome_detail) for r in run.records} == {("cut", "run_ended")}
    assert all(r.end_ts_s >= s["window_end_ts_s"] for r in run.records)  # cut when the run ended
    assert "cut_requests" in s["warning_codes"] and s["incomplete"] == 2
    assert locust_totals(run_dir) == (2, 2)  # one Locust event each, failed
    console = proc.stdout + proc.stderr  # Locust sends its console table (and ours) to stderr when captured
    assert "Cut by the end of the run:" in console and "Serving Benchmark Result" in console


@pytest.mark.slow
def test_requests_in_flight_at_the_end_finish_by_default(server_url, tmp_path):
    """A newcomer's first run against the default server: no --stop-timeout, closed loop, so users are
    mid-request when the time is up. Nothing is cut, Locust shows no failure and exits 0."""
    run_dir = tmp_path / "first"
    proc = run_locust_with_stats(server_url, run_dir, "-u", "4", "-r", "4", "-t", "5s", "ChatStreamUser")
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["cuts"] == 0 and s["success_rate"] == 1.0, s["outcome_details"]
    assert any(r.end_ts_s > s["window_end_ts_s"] for r in run.records)  # in flight at the end, finished
    requests, failures = locust_totals(run_dir)
    assert requests == s["requests"] and failures == 0
    # the bound: the request deadline (default 60 s) and a second for it to fire first
    assert run.metadata["load"]["stop_timeout_s"] == 61.0


@pytest.mark.slow
def test_stop_timeout_default_follows_the_request_deadline(fake_url, tmp_path):
    run_dir = tmp_path / "bound"
    proc = run_locust_with_stats(fake_url, run_dir, "-u", "1", "-r", "1", "-t", "1s", "--model", "instant",
                      "--request-timeout-s", "7.5")  # fmt: skip
    ran(proc, 0)
    assert read_run(run_dir).metadata["load"]["stop_timeout_s"] == 8.5
