"""Headless Locust runs in subprocesses: run folders, one event per request, workers merged, real servers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from configkit import REPO_ROOT
from orchestrate.processes import LocustProcess, locust_cmd, locust_worker_cmd, serve, start_locust
from runfolder import read_run, summarize
from runfolder.records import OUTCOMES
from server.models.embedded import build_embedded_model
from tests.support.browser import dump_dom, needs_browser, require_browser
from tests.support.fault_server import MIXED_CYCLE
from tests.support.helpers import (
    delay_server,
    free_port,
    get_json,
    locust_totals,
    mlx_lm_server,
    post,
    run_locust,
    wait_for,
)

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


@pytest.mark.slow
def test_every_fault_classified_through_locust_with_warmup(fake_url, tmp_path):
    post(fake_url + "/fake/reset")
    run_dir = tmp_path / "mixed"
    proc = run_locust(
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
    proc = run_locust(
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
        [sys.executable, "-m", "loadtest", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for option in ("--run-dir", "--arrival", "--request-timeout-s", "--slo-ttft-ms", "--prompt-file"):
        assert option in help_text
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
    # the server's /tokenize made the prompts: 16 tokens as the server counts them, template included
    assert all(r.prompt_tokens == r.prompt_tokens_target == 16 for r in run.records)
    assert run.metadata["server"]["profile"] == "v1.2.0" and run.metadata["model"]
    assert run.metadata["scenarios"] == ["ChatStreamUser"]  # the default scenario


# A v1.1.1 overlay with a tiny limit, so that a few users get both refusals within seconds.
TIGHT_V111 = """compat: v1.1.1
model_concurrency_limiter:
  enabled: true
  error_mode: {mode}
  tier_limits:  # every tier alike: whichever one the model's name or size selects
    '<3B': {{max_concurrent: 1, queue_depth: 2, queue_timeout_ms: 300}}
    '3-7B': {{max_concurrent: 1, queue_depth: 2, queue_timeout_ms: 300}}
    '7-13B': {{max_concurrent: 1, queue_depth: 2, queue_timeout_ms: 300}}
    '13-27B': {{max_concurrent: 1, queue_depth: 2, queue_timeout_ms: 300}}
    '30B+': {{max_concurrent: 1, queue_depth: 2, queue_timeout_ms: 300}}
mlx:
  concurrency_limit: 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["http", "in_stream"])
def test_reference_server_v111_limiter_refusals(tmp_path, mode, decode_tokens_per_s):
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
            # about a second of decoding each at this machine's measured speed: a queued request's 300 ms
            # run out while another is served, on a fast machine as on a slow one
            "--max-tokens", str(max(32, int(decode_tokens_per_s))), "--ignore-eos", "--prompt-tokens", "16",
            "--request-timeout-s", "120",
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
    with mlx_lm_server(str(build_embedded_model())) as url:
        run_dir = tmp_path / "peer"
        proc = run_locust(
            url, run_dir, "-u", "2", "-r", "2", "-t", "4s", "--stop-timeout", "30",
            "--max-tokens", "16", "--prompt-tokens", "16", "ChatStreamUser", "CompletionStreamUser",
        )  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["successes"] > 0 and s["errors"] == 0, s["outcome_details"]
    # mlx_lm.server has no /tokenize: lengths come from a fit of its usage on calibration requests
    assert "prompt lengths: calibrated" in proc.stderr
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
            # a long stop timeout: the requests in flight at the end finish however slow this machine is
            url, run_dir, "-u", "2", "-r", "2", "-t", "4s", "--stop-timeout", "200",
            "--model", "tiny-qwen2-vl", "--max-tokens", "16", "--ignore-eos", "--prompt-tokens", "32",
            "--image-size", "48x32", "--images-per-request", "2", "VisionChatStreamUser",
        )  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["requests"] > 0 and s["success_rate"] == 1.0
    assert {r.scenario for r in run.records} == {"vision_chat_stream"}
    # two images of a few tokens each are part of every prompt, beyond its 32 text and template tokens
    assert all(r.prompt_tokens > r.prompt_tokens_target == 32 for r in run.records)


@pytest.mark.expected_errors(r"invalid option")
def test_vision_options_are_checked(tmp_path):
    proc = run_locust("http://127.0.0.1:9", tmp_path / "x", "-t", "1s", "--image-size", "big", timeout_s=60)
    assert proc.returncode == 2 and "--image-size" in proc.stderr


# ---- issue 12: nothing dropped, known delays, distributed exactly, where users look ----------------


@pytest.mark.slow
def test_requests_cut_by_the_end_of_the_run_are_counted(fake_url, tmp_path):
    # 20 tokens 400 ms apart: every request is still streaming when the 2 s run ends (--stop-timeout 0).
    run_dir = tmp_path / "cut"
    proc = run_locust(fake_url, run_dir, "-u", "2", "-r", "2", "-t", "2s", "--model", "token_ms_400",
                      "--max-tokens", "20")  # fmt: skip
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


def fake_delay_stats(url: str) -> list[dict]:
    return get_json(url + "/fake/stats")["timings"]


@pytest.mark.slow
def test_known_delays_closed_loop_clock_starts_at_the_send(tmp_path):
    with delay_server(50, 5) as url:
        run_dir = tmp_path / "closed"
        proc = run_locust(url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "5",
                          "--max-tokens", "16")  # fmt: skip
        served = fake_delay_stats(url)
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    ok = read_run(run_dir).records
    assert s["success_rate"] == 1.0 and len(ok) == len(served) > 0  # the fake served exactly these
    assert all(r.schedule_lag_s == 0.0 and r.scheduled_ts_s == r.sent_ts_s for r in ok)  # closed loop
    assert all(0 < r.ttfb_s <= r.ttft_s < r.e2e_s for r in ok)
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
        proc = run_locust(url, run_dir, "-u", "8", "-r", "8", "-t", "3s", "--stop-timeout", "5",
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


def start_workers(master_port: int, count: int) -> list[LocustProcess]:
    return [start_locust(locust_worker_cmd(master_port)) for _ in range(count)]


def stop_all(procs: list[LocustProcess]) -> None:
    for p in procs:
        p.stop()


def run_master(url: str, run_dir: Path, master_port: int, *args: str) -> LocustProcess:
    stats = str(run_dir.parent / f"{run_dir.name}-locust")
    cmd = locust_cmd(url, run_dir, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                     str(master_port), "--json-file", stats, *args)  # fmt: skip
    return start_locust(cmd)


def distributed_run(url: str, run_dir: Path, workers: int, *args: str, meanwhile=None):
    """A master and `workers` worker processes against the fake at `url` (its counters reset first);
    `meanwhile(started, master_port)` runs while the master does (it may kill workers or start more into
    `started`). Every process is stopped at the end; returns the master's CompletedProcess."""
    post(url + "/fake/reset")
    port = free_port()
    master = run_master(url, run_dir, port, *args)
    started = start_workers(port, workers)
    try:
        if meanwhile is not None:
            meanwhile(started, port)
        return master.wait(120)
    finally:
        stop_all([master, *started])


@pytest.mark.slow
def test_master_and_two_worker_processes_record_exactly_what_the_fake_served(fake_url, tmp_path):
    run_dir = tmp_path / "dist"
    done = distributed_run(fake_url, run_dir, 2, "--expect-workers", "2", "-u", "6", "-r", "6", "-t", "4s",
                           "--stop-timeout", "5", "--arrival", "constant", "--rate", "20",
                           "--model", "token_ms_5", "--max-tokens", "8")  # fmt: skip
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err[-4000:]
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    served = get_json(fake_url + "/fake/stats")
    # every request the fake received is a record (measured, warm-up or after the stop: none here)
    assert s["requests"] + s["warmup_requests"] + s["after_stop_requests"] == served["received"]["token_ms_5"]
    assert s["successes"] == served["completed"]["token_ms_5"] and s["success_rate"] == 1.0
    assert {r.worker_id for r in run.records} == {"w0", "w1"}
    scheduled = [r.scheduled_ts_s for r in run.records]
    assert len(set(scheduled)) == len(scheduled)  # no slot sent twice: each worker held its own shard
    assert s["arrival"]["due_slots"] == s["arrival"]["sent"] == s["requests"]
    workers_meta = run.metadata["workers"]
    assert sorted(w["shard"] for w in workers_meta.values()) == [0, 1]
    for w in workers_meta.values():
        # one host: the true offset is 0, and an NTP-style estimate is off by at most half the round trip
        assert abs(w["clock_offset_s"]) <= w["rtt_s"] / 2 + 1e-6
    assert set(s["loadgen"]["processes"]) == {"master", "w0", "w1"}
    assert "Serving Benchmark Result" in out + err


@pytest.mark.slow
def test_a_worker_whose_final_records_never_arrive_is_a_warning(fake_url, tmp_path):
    run_dir = tmp_path / "lost"

    def lose_one(started: list[LocustProcess], _port: int) -> None:
        wait_for(lambda: get_json(fake_url + "/fake/stats")["received"].get("token_ms_5", 0) >= 10, 60)
        started[1].kill()  # no final batch from this one

    done = distributed_run(fake_url, run_dir, 2, "--expect-workers", "2", "-u", "4", "-r", "4", "-t", "4s",
                           "--stop-timeout", "1", "--model", "token_ms_5", "--max-tokens", "8",
                           meanwhile=lose_one)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-4000:]
    s = read_run(run_dir).summary
    assert "missing_worker_records" in s["warning_codes"]
    assert any("no final records from 1 worker" in w for w in s["warnings"])


@pytest.mark.slow
def test_a_late_joiner_gets_no_share_while_every_shard_is_held(fake_url, tmp_path):
    run_dir = tmp_path / "late"

    def join_late(started: list[LocustProcess], port: int) -> None:
        wait_for(lambda: get_json(fake_url + "/fake/stats")["received"].get("token_ms_5", 0) >= 5, 60)
        started.extend(start_workers(port, 1))

    done = distributed_run(fake_url, run_dir, 1, "--expect-workers", "1", "-u", "8", "-r", "8", "-t", "5s",
                           "--stop-timeout", "5", "--arrival", "constant", "--rate", "10",
                           "--model", "token_ms_5", "--max-tokens", "8", meanwhile=join_late)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    run = read_run(run_dir)
    scheduled = [r.scheduled_ts_s for r in run.records]
    assert len(set(scheduled)) == len(scheduled)  # the late joiner did not replay the first worker's slots
    # a joiner that never got its config before the end has no shard either
    shards = {name: w.get("shard") for name, w in run.metadata["workers"].items()}
    assert shards.get("w0") == 0
    if "w1" in shards:  # it joined while the test ran
        assert shards["w1"] is None and all(r.worker_id == "w0" for r in run.records)


def test_negative_schedule_lags_are_kept():
    code = (
        "import time; from loadgen.transport import _Progress, _record, RequestSpec; "
        "spec = RequestSpec('s', '/p', b'{}', False); now = time.time(); "
        "r = _record(spec, _Progress(), now + 0.5, now, 1.0, 2.0, 'w0', 0); "
        "assert abs(r.schedule_lag_s + 0.5) < 1e-9 and abs(r.e2e_s - 0.5) < 1e-9, r"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=60).returncode == 0


def dom_cells(dom: str) -> dict[str, str]:
    """Metric -> value of the LLM tab's table."""
    return dict(re.findall(r"<td[^>]*>([^<]+)</td><td[^>]*>([^<]+)</td>", dom))


@pytest.mark.slow
@needs_browser  # CI (.ci/run) requires it
def test_web_ui_tab_shows_live_llm_metrics(fake_url, tmp_path):
    require_browser()
    port = free_port()
    run_dir = tmp_path / "webui"
    cmd = locust_cmd(fake_url, run_dir, "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart",
                     "-u", "2", "-r", "2", "--model", "token_ms_5", "--max-tokens", "8",
                     headless=False)  # fmt: skip
    ui = f"http://127.0.0.1:{port}"
    with start_locust(cmd):
        wait_for(lambda: _llm_requests(ui) >= 5, 60)
        cells = dom_cells(dump_dom(f"{ui}/?tab=llm", tmp_path))
        after = get_json(f"{ui}/llm/stats")
        post(f"{ui}/stop")
        wait_for(lambda: (run_dir / "summary.json").exists(), 60)
    assert {"TTFT p50 (ms)", "TTFT p99 (ms)", "Output tok/s (since start)", "Successful requests",
            "Cut by the end of the run"} <= set(cells), cells  # fmt: skip
    assert 0 < float(cells["TTFT p50 (ms)"]) <= float(cells["TTFT p99 (ms)"])
    assert float(cells["Output tok/s (since start)"]) > 0
    shown = int(cells["Successful requests"].split()[0])
    assert 0 < shown <= after["outcomes"]["success"] <= read_run(run_dir).summary["successes"]
    assert cells["Failed requests"] == "0 (0.0 %)"


def _llm_requests(ui: str) -> int:
    try:
        return get_json(f"{ui}/llm/stats")["requests"]
    except OSError:
        return 0  # the web UI is not up yet


@pytest.mark.slow
def test_a_server_that_saturates_is_named_as_such(fake_url, tmp_path):
    # The fake serves one request at a time, 100 ms each (10/s at most); 20/s are asked with 4 users.
    run_dir = tmp_path / "saturated"
    proc = run_locust(fake_url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "5",
                      "--arrival", "constant", "--rate", "20", "--model", "serial_ms_100",
                      "--max-tokens", "4")  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    assert s["arrival"]["behind"] and s["arrival"]["limit"] == "server", s["arrival"]
    assert "server_saturated" in s["warning_codes"] and "generator_behind" not in s["warning_codes"]
    assert any("the server is saturated: all 4 users were waiting on replies" in w for w in s["warnings"])
    assert s["arrival"]["due_slots"] > s["arrival"]["sent"]
