"""Headless Locust runs against real servers: ours in both profiles (and its limiter's refusals),
mlx_lm.server (no /tokenize: calibrated lengths), a vision model."""

from __future__ import annotations

import sys

import pytest

from orchestrate.processes import serve
from runfolder import read_run
from server.models.embedded import build_embedded_model
from tests.loadgen.known import known
from tests.loadgen.run_checks import assert_summary_matches_records, ran
from tests.support.helpers import (
    mlx_lm_server,
    run_locust_with_stats,
)


@pytest.mark.slow
def test_reference_server_run(tmp_path):
    cmd = [sys.executable, "-m", "server", "--config", "config/runtime.yaml", "--port", "0"]
    with serve(cmd) as url:
        run_dir = tmp_path / "ref"
        proc = run_locust_with_stats(
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
    # The server names the config file it runs (no profile overlaid): runtime.yaml -> "runtime".
    assert run.metadata["server"]["profile"] == "runtime" and run.metadata["model"]
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
        proc = run_locust_with_stats(
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
        proc = run_locust_with_stats(
            url, run_dir, "-u", "2", "-r", "2", "-t", "4s", "--stop-timeout", "30",
            "--max-tokens", "16", "--prompt-tokens", "16", "ChatStreamUser", "CompletionStreamUser",
        )  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    assert s["successes"] > 0 and s["errors"] == 0, s["outcome_details"]
    # mlx_lm.server has no /tokenize: lengths come from a fit of its usage on calibration requests
    assert "prompt lengths: calibrated" in proc.stderr
    # ... and the run folder says what that cost: requests the server counted that records.csv has not
    side = run.metadata["side_requests"]
    calibration = [r for r in side["rows"] if r["purpose"] == "calibration"]
    assert calibration and all(r["outcome"] == "http_200" for r in calibration)
    assert side["by_purpose"]["calibration"] == sum(r["count"] for r in calibration) >= 2
    assert [r["outcome"] for r in side["rows"] if r["purpose"] == "tokenize"] == ["http_404"]
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
        proc = run_locust_with_stats(
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
    assert all(known(r.prompt_tokens) > known(r.prompt_tokens_target) == 32 for r in run.records)


@pytest.mark.expected_errors(r"invalid option")
def test_vision_options_are_checked(tmp_path):
    proc = run_locust_with_stats(
        "http://127.0.0.1:9", tmp_path / "x", "-t", "1s", "--image-size", "big", timeout_s=60
    )
    assert proc.returncode == 2 and "--image-size" in proc.stderr
