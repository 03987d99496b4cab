"""Headless Locust runs in subprocesses against FAKE servers: faults classified with one event per
request, two processes, open loop, known delays, the options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from configkit import REPO_ROOT
from runfolder import read_run
from server.models.embedded import build_embedded_model
from tests.loadgen.known import known
from tests.loadgen.run_checks import EXPECTED, assert_summary_matches_records, ran
from tests.support.fault_server import MIXED_CYCLE
from tests.support.helpers import (
    delay_server,
    free_port,
    get_json,
    locust_totals,
    post,
    run_locust_with_stats,
)


@pytest.mark.slow
def test_every_fault_classified_through_locust_with_warmup(fake_url, tmp_path):
    post(fake_url + "/fake/reset")
    run_dir = tmp_path / "mixed"
    proc = run_locust_with_stats(
        fake_url,
        run_dir,
        "-u", "1", "-t", "4s", "--stop-timeout", "2",
        "--model", "mixed", "--request-timeout-s", "0.4", "--warmup-s", "1", "--max-tokens", "4",
        "--tokenizer", str(build_embedded_model()),  # a local tokenizer, through Locust
    )  # fmt: skip
    ran(proc, 1)  # Locust exits 1 when any request failed
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["warmup_requests"] > 0 and s["incomplete"] == 0
    assert min(r.scheduled_ts_s for r in run.records) >= s["window_start_ts_s"]
    # one user sends in order, so record i met fault (warmup + i) of the cycle
    for i, rec in enumerate(run.records):
        fault = MIXED_CYCLE[(s["warmup_requests"] + i) % len(MIXED_CYCLE)]
        assert (rec.outcome, rec.outcome_detail) == EXPECTED[fault], (i, fault)
    assert {f for f in MIXED_CYCLE} <= {
        MIXED_CYCLE[(s["warmup_requests"] + i) % 10] for i in range(s["requests"])
    }
    # exactly one Locust event per real request, failed unless it succeeded
    locust_requests, locust_failures = locust_totals(run_dir)
    assert locust_requests == s["requests"] + s["warmup_requests"]
    assert locust_failures == locust_requests - sum(
        1 for i in range(locust_requests) if EXPECTED[MIXED_CYCLE[i % len(MIXED_CYCLE)]][0] == "success"
    )


@pytest.mark.slow
def test_two_processes_merge_records_from_both_workers(fake_url, tmp_path):
    run_dir = tmp_path / "dist"
    port = str(free_port())  # Locust's default 5557 may be taken by another run on this machine
    proc = run_locust_with_stats(
        fake_url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--processes", "2",
        "--master-port", port, "--master-bind-port", port,
        "--model", "token_ms_5", "--max-tokens", "8", "--stop-timeout", "5",
    )  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert {r.worker_id for r in run.records} == {"w0", "w1"}
    assert s["success_rate"] == 1.0 and s["incomplete"] == 0
    assert run.metadata["load"]["workers"] == 2
    locust_requests, _ = locust_totals(run_dir)
    assert locust_requests == s["requests"]


@pytest.mark.slow
def test_open_loop_constant_rate_records_schedule(fake_url, tmp_path):
    run_dir = tmp_path / "open"
    proc = run_locust_with_stats(
        fake_url, run_dir, "-u", "4", "-r", "100", "-t", "3s", "--stop-timeout", "2",
        "--arrival", "constant", "--rate", "20", "--model", "token_ms_5", "--max-tokens", "4",
    )  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    gaps = [b.scheduled_ts_s - a.scheduled_ts_s for a, b in zip(run.records, run.records[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.05, abs=3e-6) and max(gaps) == pytest.approx(0.05, abs=3e-6)
    assert s["arrival"]["requested_rate_per_s"] == 20.0
    assert s["arrival"]["achieved_rate_per_s"] == pytest.approx(20.0, rel=0.15)
    assert s["schedule_lag_s"]["count"] == s["requests"]


def test_help_lists_our_options_and_scenarios():
    help_text = subprocess.run(
        [sys.executable, "-m", "loadtest", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for option in ("--run-dir", "--arrival", "--request-timeout-s", "--slo-ttft-ms", "--prompt-file"):
        assert option in help_text
    assert "--request-timeout-s + 1, so none is cut" in " ".join(help_text.split())  # our --stop-timeout
    listing = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest", "--list"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    scenarios = {
        "ChatStreamUser",
        "ChatUser",
        "CompletionStreamUser",
        "VisionChatStreamUser",
        "MultiTurnChatUser",
    }
    assert scenarios <= set(listing.split())


@pytest.mark.expected_errors(r"invalid option")
def test_invalid_options_exit_2(tmp_path):
    proc = run_locust_with_stats(
        "http://127.0.0.1:9", tmp_path / "x", "-t", "1s", "--arrival", "poisson", timeout_s=60
    )
    assert proc.returncode == 2 and "needs --rate" in proc.stderr


def fake_delay_stats(url: str) -> list[dict]:
    return get_json(url + "/fake/stats")["timings"]


@pytest.mark.slow
def test_known_delays_closed_loop_clock_starts_at_the_send(tmp_path):
    with delay_server(50, 5) as url:
        run_dir = tmp_path / "closed"
        proc = run_locust_with_stats(url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "5",
                          "--max-tokens", "16")  # fmt: skip
        served = fake_delay_stats(url)
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    ok = read_run(run_dir).records
    assert s["success_rate"] == 1.0 and len(ok) == len(served) > 0  # the fake served exactly these
    assert all(r.schedule_lag_s == 0.0 and r.scheduled_ts_s == r.sent_ts_s for r in ok)  # closed loop
    assert all(0 < known(r.ttfb_s) <= known(r.ttft_s) < known(r.e2e_s) for r in ok)
    assert s["ttfb_s"]["count"] == len(ok)
    # The client cannot see a token before the fake wrote it: its means are at least the fake's.
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert mean([r.ttft_s for r in ok]) >= mean([t["ttft_s"] for t in served])
    assert mean([r.e2e_s for r in ok]) >= mean([t["e2e_s"] for t in served])
    assert s["workload"] == {
        "scenario": "chat_stream", "model": "fake-delays", "stream": True, "prompt_tokens_target": 64,
        "max_tokens": 16, "ignore_eos": False, "arrival": "closed", "rate_per_s": None, "users": 4,
        "prompt_length_method": s["workload"]["prompt_length_method"],
    }  # fmt: skip
    cpu = s["loadgen"]
    assert set(cpu["processes"]) == {"local"} and cpu["cpu_s"] > 0 and cpu["cpu_ms_per_request"] > 0


@pytest.mark.slow
def test_open_loop_sends_exactly_the_due_slots_and_counts_tokens_by_arrival(tmp_path):
    with delay_server(20, 10) as url:
        run_dir = tmp_path / "open"
        proc = run_locust_with_stats(url, run_dir, "-u", "8", "-r", "8", "-t", "3s", "--stop-timeout", "5",
                          "--arrival", "constant", "--rate", "10", "--max-tokens", "20",
                          "--warmup-s", "1")  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    arrival = s["arrival"]
    assert arrival["due_slots"] == arrival["sent"] == s["requests"] and arrival["missed_slots"] == 0
    run = read_run(run_dir)
    # Requests still streaming at the stop count their tokens up to it, and warm-up ones from the start.
    assert s["output_tokens_in_window"] < s["output_tokens"] + s["warmup_output_tokens_in_window"]
    assert s["output_tokens_per_s"] == pytest.approx(s["output_tokens_in_window"] / s["duration_s"])
    assert s["window_end_ts_s"] < max(r.end_ts_s for r in run.records)  # the window ends at the stop


def test_negative_schedule_lags_are_kept():
    code = (
        "import time; from loadgen.transport import _Progress, _record, RequestSpec; "
        "spec = RequestSpec('s', '/p', b'{}', False); now = time.time(); "
        "r = _record(spec, _Progress(), now + 0.5, now, 1.0, 2.0, 'w0', 0); "
        "assert abs(r.schedule_lag_s + 0.5) < 1e-9 and abs(r.e2e_s - 0.5) < 1e-9, r"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=60).returncode == 0
