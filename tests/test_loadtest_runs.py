"""Headless Locust runs in subprocesses: run folders, one event per request, workers merged, real servers."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchcore import read_run, summarize
from benchcore.launch import REPO, serve
from benchcore.records import OUTCOMES
from tests.loadtest_fixtures.fault_server import MIXED_CYCLE
from tests.loadtest_fixtures.helpers import fault_server, free_port, locust_totals, post, run_locust

# fault -> the outcome and detail it must produce ("ok" is the only success)
EXPECTED = {
    "ok": ("success", "ok"),
    "http_429": ("rejected", "concurrency_limit_exceeded"),
    "queue_timeout": ("timeout", "queue_timeout"),
    "stream_error": ("error", "stream_error"),
    "cut": ("error", "truncated_stream"),
    "stall": ("timeout", "client_deadline"),
    "empty": ("error", "empty_completion"),
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
    "success_rate",
    "rejection_rate",
    "timeout_rate",
    "error_rate",
    "output_tokens",
    "output_tokens_per_s",
    "requests_per_s",
    "ttft_s",
    "e2e_s",
    "tpot_s",
    "itl_s",
)


def assert_summary_matches_records(run_dir: Path) -> dict:
    """summary.json is what benchcore computes from records.csv over the same window."""
    run = read_run(run_dir)
    s = run.summary
    again = summarize(run.records, window_start_s=s["window_start_ts_s"], window_end_s=s["window_end_ts_s"])
    for key in SUMMARY_KEYS_FROM_RECORDS:
        assert again[key] == pytest.approx(s[key], rel=1e-4, abs=1e-5), key
    assert (
        s["requests"] == len(run.records) == sum(Counter(r.outcome for r in run.records)[o] for o in OUTCOMES)
    )
    for key in ("p50", "p90", "p95", "p99", "mean", "max"):
        assert key in s["ttft_s"]
    return s


def ran(proc: subprocess.CompletedProcess, *codes: int) -> None:
    assert proc.returncode in codes, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def fake_url():
    with fault_server() as url:
        yield url


@pytest.mark.slow
def test_every_fault_classified_through_locust_with_warmup(fake_url, tmp_path):
    post(fake_url + "/fake/reset")
    run_dir = tmp_path / "mixed"
    proc = run_locust(
        fake_url,
        run_dir,
        "-u", "1", "-t", "4s", "--stop-timeout", "2",
        "--model", "mixed", "--request-timeout-s", "0.4", "--warmup-s", "1", "--max-tokens", "4",
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
        1 for i in range(locust_requests) if MIXED_CYCLE[i % len(MIXED_CYCLE)] == "ok"
    )


@pytest.mark.slow
def test_two_processes_merge_records_from_both_workers(fake_url, tmp_path):
    run_dir = tmp_path / "dist"
    proc = run_locust(
        fake_url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--processes", "2",
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
    proc = run_locust(
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
        [sys.executable, "-m", "loadtest", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    for option in ("--run-dir", "--arrival", "--request-timeout-s", "--slo-ttft-ms", "--prompt-file"):
        assert option in help_text
    listing = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest", "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert {"ChatStreamUser", "ChatUser", "CompletionUser", "VisionChatUser"} <= set(listing.split())


@pytest.mark.expected_errors(r"invalid option")
def test_invalid_options_exit_2(tmp_path):
    proc = run_locust("http://127.0.0.1:9", tmp_path / "x", "-t", "1s", "--arrival", "poisson", timeout_s=60)
    assert proc.returncode == 2 and "needs --rate" in proc.stderr


# ---- real servers ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_reference_server_run(tmp_path):
    cmd = [sys.executable, "-m", "server", "--config", "config/runtime.yaml", "--port", "0"]
    with serve(cmd) as url:
        run_dir = tmp_path / "ref"
        proc = run_locust(
            url, run_dir, "-u", "2", "-r", "2", "-t", "4s", "--stop-timeout", "30",
            "--max-tokens", "16", "--ignore-eos", "--prompt-tokens", "16", "--label", "v1.2.0",
        )  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["requests"] > 0 and s["success_rate"] == 1.0 and s["label"] == "v1.2.0"
    assert all(r.usage_source == "server" and r.output_tokens == 16 for r in run.records)
    assert run.metadata["server"]["profile"] == "v1.2.0" and run.metadata["model"]
    assert run.metadata["scenarios"] == ["ChatStreamUser"]  # the default scenario


# A v1.1.1 overlay with a tiny limit, so that a few users get both refusals within seconds.
TIGHT_V111 = """compat: v1.1.1
model_concurrency_limiter:
  enabled: true
  error_mode: {mode}
  tier_limits:
    '<3B': {{max_concurrent: 1, queue_depth: 2, queue_timeout_ms: 300}}
mlx:
  concurrency_limit: 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["http", "in_stream"])
def test_reference_server_v111_limiter_refusals(tmp_path, mode):
    overlay = tmp_path / "tight.yaml"
    overlay.write_text(TIGHT_V111.format(mode=mode))
    cmd = [
        sys.executable,
        "-m",
        "server",
        "--config",
        "config/runtime.yaml",
        "--profile",
        str(overlay),
        "--port",
        "0",
    ]
    with serve(cmd) as url:
        run_dir = tmp_path / f"v111-{mode}"
        proc = run_locust(
            url, run_dir, "-u", "6", "-r", "6", "-t", "3s", "--stop-timeout", "30", "--think-time-s", "0.05",
            "--max-tokens", "32", "--ignore-eos", "--prompt-tokens", "16", "--request-timeout-s", "25",
        )  # fmt: skip
    ran(proc, 1)
    s = assert_summary_matches_records(run_dir)
    # the limiter refuses or times out; neither may show up as a broken request or a success
    assert s["errors"] == 0, s["outcome_details"]
    assert s["successes"] > 0 and s["rejections"] > 0 and s["timeouts"] > 0, s["outcome_details"]
    expected_code = {"http": ("concurrency_limit_exceeded", "queue_timeout")}.get(
        mode, ("model_concurrency_error",) * 2
    )
    assert set(s["outcome_details"]["rejected"]) == {expected_code[0]}
    assert set(s["outcome_details"]["timeout"]) == {expected_code[1]}


@pytest.mark.slow
# mlx_lm.server logs a traceback for GET /v1/models when no Hugging Face cache folder exists (its bug).
@pytest.mark.expected_errors(r"CacheNotFound")
def test_peer_mlx_lm_server_run(tmp_path):
    from server.models import build_embedded_model

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlx_lm.server",
        "--model",
        str(build_embedded_model()),
        "--host",
        "127.0.0.1",
    ]
    with serve([*cmd, "--port", str(port)], url=f"http://127.0.0.1:{port}") as url:
        run_dir = tmp_path / "peer"
        proc = run_locust(
            url, run_dir, "-u", "2", "-r", "2", "-t", "4s", "--stop-timeout", "30",
            "--max-tokens", "16", "--prompt-tokens", "16", "ChatStreamUser", "CompletionUser",
        )  # fmt: skip
    ran(proc, 0, 1)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["successes"] > 0
    # random weights may emit EOS first: an empty reply is an error, and the only one allowed here
    assert set(s["outcome_details"]["error"]) <= {"empty_completion"}
    assert {r.scenario for r in run.records} == {"chat_stream", "completion_stream"}
    assert all(r.usage_source == "server" for r in run.records if r.outcome == "success")


VISION_CONFIG = """compat: v1.2.0
models:
  - path: embedded:tiny-llama
  - path: embedded:tiny-qwen2-vl
"""


@pytest.mark.slow
def test_vision_scenario_against_a_vision_model(tmp_path):
    config = tmp_path / "vision.yaml"
    config.write_text(VISION_CONFIG)
    cmd = [sys.executable, "-m", "server", "--config", str(config), "--port", "0"]
    with serve(cmd) as url:
        run_dir = tmp_path / "vision"
        proc = run_locust(
            url, run_dir, "-u", "2", "-r", "2", "-t", "4s", "--stop-timeout", "30",
            "--model", "tiny-qwen2-vl", "--max-tokens", "16", "--ignore-eos", "--prompt-tokens", "8",
            "--image-size", "48x32", "--images-per-request", "2", "VisionChatUser",
        )  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["requests"] > 0 and s["success_rate"] == 1.0
    assert {r.scenario for r in run.records} == {"vision_chat_stream"}
    # two images of a few tokens each are part of every prompt
    assert min(r.prompt_tokens for r in run.records) > 8


@pytest.mark.expected_errors(r"invalid option")
def test_vision_options_are_checked(tmp_path):
    proc = run_locust("http://127.0.0.1:9", tmp_path / "x", "-t", "1s", "--image-size", "big", timeout_s=60)
    assert proc.returncode == 2 and "--image-size" in proc.stderr
