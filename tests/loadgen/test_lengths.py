"""Exact prompt lengths against the reference server with the embedded tiny model:
made by the server's POST /tokenize, or by a local tokenizer, for chat and completion requests alike."""

from __future__ import annotations

import pytest

from runfolder import read_run
from server.models.embedded import build_embedded_model
from tests.support.helpers import run_locust_with_stats

SCENARIOS = ("ChatStreamUser", "ChatUser", "CompletionStreamUser")


def _run(url, run_dir, *args):
    proc = run_locust_with_stats(
        url, run_dir, "-u", "3", "-r", "3", "-t", "4s", "--stop-timeout", "30", "--max-tokens", "8",
        *args, *SCENARIOS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, read_run(run_dir)


def _assert_exact(run) -> None:
    assert {r.scenario for r in run.records} == {"chat_stream", "chat", "completion_stream"}
    assert run.records and all(r.outcome == "success" for r in run.records)
    off = [(r.scenario, r.prompt_tokens_target, r.prompt_tokens) for r in run.records]
    assert all(abs(actual - target) <= 1 for _, target, actual in off), off


@pytest.mark.slow
def test_server_tokenize_makes_exact_prompts(server_url, tmp_path):
    proc, run = _run(server_url, tmp_path / "server", "--prompt-tokens", "40", "--seed", "3")
    _assert_exact(run)
    assert "prompt lengths: server_tokenize" in proc.stderr
    assert {r.prompt_tokens_target for r in run.records} == {40}


@pytest.mark.slow
def test_local_tokenizer_makes_exact_prompts_of_a_distribution(server_url, tmp_path):
    proc, run = _run(
        server_url, tmp_path / "local", "--tokenizer", str(build_embedded_model()),
        "--prompt-tokens", "64", "--prompt-dist", "uniform", "--prompt-tokens-spread", "30",
    )  # fmt: skip
    _assert_exact(run)
    assert "prompt lengths: tokenizer" in proc.stderr
    # loading the tokenizer before the run must not eat into the run time (-t 4s)
    assert run.summary["duration_s"] >= 3.0
    assert len({r.prompt_tokens_target for r in run.records}) > 1  # the lengths vary
    # the local tokenizer re-counts every reply beside the server's usage: tokens against tokens
    tokens = run.summary["tokens"]
    assert tokens["records_with_usage_and_count"] == len(run.records)
    assert tokens["tokenizer_output_tokens"] > 0 and tokens["tokenizer_vs_usage"] is not None


@pytest.mark.expected_errors(r"chat template alone is")
def test_a_prompt_shorter_than_the_chat_template_exits_2(server_url, tmp_path):
    proc = run_locust_with_stats(
        server_url, tmp_path / "short", "-t", "2s", "--prompt-tokens", "3", timeout_s=60
    )
    assert proc.returncode == 2 and "chat template alone is" in proc.stderr


@pytest.mark.expected_errors(r"exceeds the model's context")
def test_prompt_and_max_tokens_beyond_the_context_exit_2(server_url, tmp_path):
    args = ("-t", "2s", "--prompt-tokens", "4000", "--max-tokens", "200")
    proc = run_locust_with_stats(server_url, tmp_path / "long", *args, timeout_s=60)
    assert proc.returncode == 2 and "exceeds the model's context of 4096 tokens" in proc.stderr
