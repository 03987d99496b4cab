"""--check-outputs through headless Locust runs (subprocesses): the real server with the real tiny model,
the FAKE swap server (tests/support/swap_server.py) in one and two load-generator processes, and options
refused before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from runfolder import read_run
from server.models.embedded import build_embedded_model
from tests.support.helpers import run_locust_with_stats, swap_server

CHECK = ("--check-outputs", "--check-outputs-prompts", "4")
WRONG = ("empty", "truncated", "overlong", "foreign")


def ran(proc, *codes: int) -> None:
    assert proc.returncode in codes, proc.stderr[-4000:]


@pytest.mark.slow
def test_our_server_under_load_gives_no_wrong_outputs(server_url, tmp_path: Path):
    run_dir = tmp_path / "ours"
    proc = run_locust_with_stats(
        server_url, run_dir, "-u", "3", "-r", "3", "-t", "4s", "--stop-timeout", "30",
        "--max-tokens", "16", "--ignore-eos", "--prompt-tokens", "16", *CHECK,
        "--tokenizer", str(build_embedded_model()),
    )  # fmt: skip
    ran(proc, 0)
    run = read_run(run_dir)
    out = run.summary["output_check"]
    # four reference requests, alone, before the clock: counted apart, all answered
    assert out["reference_requests"] == 4 and out["reference_outcomes"] == {"success": 4}
    refs = run.metadata["output_check"]["references"]
    assert len(refs) == 4 and all(r["output_tokens"] == 16 and r["finish_reason"] == "length" for r in refs)
    assert out["compared_by"] == "tokens"
    # every reply under load was checked; divergence may happen, nothing else may
    ok = [r for r in run.records if r.outcome == "success"]
    assert ok and all(r.output_check is not None for r in ok)
    assert out["checked"] == len(ok) == run.summary["successes"]
    assert all(out["counts"][kind] == 0 for kind in WRONG), out["counts"]
    assert out["wrong_output_rate"] == 0.0
    assert {r.output_check_prompt for r in run.records} == {0, 1, 2, 3}


@pytest.mark.slow
def test_replies_swapped_between_concurrent_requests_are_foreign(tmp_path: Path):
    with swap_server() as url:
        run_dir = tmp_path / "swap"
        proc = run_locust_with_stats(
            url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "10", "--max-tokens", "8",
            "--model", "swap", *CHECK,
        )  # fmt: skip
    ran(proc, 0)  # every request succeeded: only the check sees that the texts are someone else's
    run = read_run(run_dir)
    out = run.summary["output_check"]
    assert out["reference_outcomes"] == {"success": 4}  # alone, the fake answers right
    assert out["compared_by"] == "characters"
    assert out["counts"]["foreign"] > 0 and out["wrong_output_rate"] > 0
    assert "wrong_outputs" in run.summary["warning_codes"]
    assert out["checked"] == run.summary["successes"]


@pytest.mark.slow
def test_workers_compare_with_the_masters_references(tmp_path: Path):
    with swap_server() as url:
        run_dir = tmp_path / "two"
        proc = run_locust_with_stats(
            url, run_dir, "-u", "4", "-r", "4", "-t", "4s", "--stop-timeout", "10", "--max-tokens", "8",
            "--processes", "2", "--model", "swap", *CHECK,
        )  # fmt: skip
    ran(proc, 0)
    run = read_run(run_dir)
    out = run.summary["output_check"]
    assert out["reference_requests"] == 4  # once, by the master: not once per worker
    assert {r.worker_id for r in run.records} == {"w0", "w1"}
    assert out["checked"] == run.summary["successes"] > 0 and out["counts"]["foreign"] > 0


@pytest.mark.slow
@pytest.mark.expected_errors(r"invalid option")
def test_a_check_that_cannot_hold_exits_2_before_any_request(tmp_path: Path):
    proc = run_locust_with_stats(
        "http://127.0.0.1:9", tmp_path / "bad", "-u", "1", "-t", "1s", *CHECK, "--temperature", "0.7",
    )  # fmt: skip
    assert proc.returncode == 2 and "--temperature 0.7 contradicts it" in proc.stderr
    proc = run_locust_with_stats(
        "http://127.0.0.1:9", tmp_path / "bad2", "-u", "1", "-t", "1s", *CHECK, "VisionChatStreamUser"
    )
    assert proc.returncode == 2 and "VisionChatStreamUser cannot be checked" in proc.stderr
