"""Workloads on the wire: headless Locust runs against the real server (tiny model) and, for the
cached-token report the server does not make yet, the FAKE fault server."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from orchestrate.processes import REPO, serve
from runfolder import read_run
from tests.loadgen.known import known
from tests.support.fault_server import FAKE_CACHED_TOKENS
from tests.support.helpers import fault_server, run_locust_with_stats
from tests.support.server_logs import problems

pytestmark = pytest.mark.slow


def ran_clean(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not problems(proc.stderr), problems(proc.stderr)


@pytest.fixture(scope="module")
def server_url():
    cmd = [sys.executable, "-m", "server", "--config", "config/runtime.yaml", "--port", "0"]
    with serve(cmd) as url:
        yield url


def test_multi_turn_conversations_with_shared_prefixes(server_url, tmp_path):
    run_dir = tmp_path / "mt"
    proc = run_locust_with_stats(
        server_url, run_dir, "-u", "2", "-r", "2", "-t", "6s", "--stop-timeout", "30",
        "--max-tokens", "8", "--ignore-eos", "--prompt-tokens", "20", "--turns", "3",
        "--think-time-s", "0.05", "--shared-prefixes", "2", "--shared-prefix-tokens", "24",
        "--shared-prefix-share", "0.5", "--seed", "2", "MultiTurnChatUser",
    )  # fmt: skip
    ran_clean(proc)
    run = read_run(run_dir)
    assert run.records
    assert all(r.outcome == "success" and r.scenario == "multi_turn_chat" for r in run.records)
    convs = defaultdict(list)
    for r in sorted(run.records, key=lambda r: r.sent_ts_s):
        convs[r.conversation_id].append(r)
    assert len(convs) >= 2
    first_turn_tokens = set()
    for turns in convs.values():
        assert [r.turn_index for r in turns] == list(range(1, len(turns) + 1)) and len(turns) <= 3
        assert len({r.shared_prefix_id for r in turns}) == 1  # a conversation keeps its system prompt
        assert len({r.user_id for r in turns}) == 1
        for before, after in itertools.pairwise(turns):
            # the history: the last prompt, its reply, and a new user turn of 20 tokens (template included)
            assert known(after.prompt_tokens) > known(before.prompt_tokens) + known(before.output_tokens)
        first_turn_tokens.add((turns[0].shared_prefix_id is None, turns[0].prompt_tokens))
    # exact lengths: 20 tokens without a prefix; with one, 24 more plus the template's system wrapping
    assert (True, 20) in first_turn_tokens and len({t for p, t in first_turn_tokens if not p}) == 1
    # the server does not report cached tokens (yet): missing, not 0
    assert all(r.cached_tokens is None for r in run.records) or all(
        isinstance(r.cached_tokens, int) for r in run.records
    )
    w = run.summary["workloads"]
    assert w["conversations"] == len(convs)
    assert w["ttft_s_by_turn"]["1"]["count"] == len(convs)
    assert set(w["ttft_s_by_shared_prefix"]) == {"with", "without"}
    assert run.summary["workload"]["turns"] == 3 and run.summary["workload"]["shared_prefixes"] == 2
    assert "TTFT by turn" in proc.stderr and "TTFT by shared prefix" in proc.stderr


def test_trace_replay_sends_each_line_on_time_with_its_lengths(server_url, tmp_path):
    trace = tmp_path / "trace.jsonl"
    subprocess.run(
        [sys.executable, "scripts/make_trace.py", str(trace), "--requests", "8", "--gap-ms", "400"],
        cwd=REPO,
        check=True,
    )
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    run_dir = tmp_path / "trace"
    proc = run_locust_with_stats(
        server_url, run_dir, "-u", "6", "-r", "6", "-t", "4s", "--stop-timeout", "30",
        "--arrival", "trace", "--trace", str(trace), "--trace-time-scale", "0.5",
        "--trace-block-tokens", "16",
    )  # fmt: skip
    ran_clean(proc)
    run = read_run(run_dir)
    assert len(run.records) == len(lines) and all(r.outcome == "success" for r in run.records)
    start = run.summary["window_start_ts_s"]
    for r, line in zip(run.records, lines, strict=True):
        assert r.scheduled_ts_s - start == pytest.approx(line["timestamp"] / 1000 * 0.5, abs=1e-6)
        assert r.prompt_tokens == r.prompt_tokens_target == line["input_length"]  # the server's own count
        assert r.max_tokens == line["output_length"]
    arrival = run.summary["arrival"]
    assert arrival["due_slots"] == len(lines) and arrival["missed_slots"] == 0
    assert run.summary["workload"]["arrival"] == "trace" and run.summary["workload"]["trace"] == "trace.jsonl"


SHAREGPT = [
    {"conversations": [
        {"from": "human", "value": "Tell me about rivers."},
        {"from": "gpt", "value": "Rivers run to the sea."},
        {"from": "human", "value": "And lakes?"}, {"from": "gpt", "value": "Lakes hold still water."},
    ]},
]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "scenario"), [("first-turn", "ChatStreamUser"), ("conversation", "MultiTurnChatUser")]
)
def test_dataset_conversations_with_lengths_from_the_data(server_url, tmp_path, mode, scenario):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(SHAREGPT))
    run_dir = tmp_path / mode
    proc = run_locust_with_stats(
        server_url, run_dir, "-u", "1", "-r", "1", "-t", "3s", "--stop-timeout", "30",
        "--dataset", str(path), "--dataset-mode", mode, scenario,
    )  # fmt: skip
    ran_clean(proc)
    run = read_run(run_dir)
    assert run.records and all(r.outcome == "success" for r in run.records)
    count = run.summary["workload"]["prompt_length_method"]
    assert count == "server_tokenize"
    tokenize = {}
    for text in ("Rivers run to the sea.", "Lakes hold still water."):
        tokenize[text] = _count(run.metadata["target_url"], text)
    if mode == "first-turn":
        assert {r.max_tokens for r in run.records} == {tokenize["Rivers run to the sea."]}
        assert all(r.prompt_tokens == r.prompt_tokens_target for r in run.records)
    else:
        by_turn = {r.turn_index: r.max_tokens for r in run.records}
        assert by_turn[1] == tokenize["Rivers run to the sea."]
        assert by_turn.get(2, tokenize["Lakes hold still water."]) == tokenize["Lakes hold still water."]


def _count(url: str, text: str) -> int:
    import urllib.request

    req = urllib.request.Request(
        url + "/tokenize",
        data=json.dumps({"prompt": text, "add_special_tokens": False}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["count"]


def test_cached_tokens_are_recorded_and_summed(tmp_path):
    """FAKE: the fault server's `ok_cached` model reports cached_tokens; ours has no prefix cache yet."""
    with fault_server() as url:
        run_dir = tmp_path / "cached"
        proc = run_locust_with_stats(
            url, run_dir, "-u", "2", "-r", "2", "-t", "2s", "--stop-timeout", "10",
            "--model", "ok_cached", "--max-tokens", "4",
        )  # fmt: skip
    ran_clean(proc)
    run = read_run(run_dir)
    n = len(run.records)
    assert n and all(r.cached_tokens == FAKE_CACHED_TOKENS for r in run.records)
    cached = run.summary["workloads"]["cached_tokens"]
    assert cached["cached_tokens"] == FAKE_CACHED_TOKENS * n and cached["records_with_cached_tokens"] == n
    assert f"{FAKE_CACHED_TOKENS * n}" in proc.stderr  # the console table's line


@pytest.mark.expected_errors(r"invalid option")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arrival", "trace"], "--arrival trace needs --trace FILE"),
        (["--arrival", "trace", "--trace", "BAD"], "--trace BAD:1: not JSON"),
        (["--dataset", "BAD"], "--dataset BAD: not JSON"),
        (["--arrival", "constant", "--rate", "1", "MultiTurnChatUser"], "MultiTurnChatUser runs closed loop"),
        (["--shared-prefix-share", "2"], "--shared-prefix-share must be in [0, 1]"),
    ],
)
def test_bad_workload_options_and_files_exit_2_naming_the_problem(tmp_path, args, message):
    bad = tmp_path / "bad.txt"
    bad.write_text("not json\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    proc = run_locust_with_stats("http://127.0.0.1:9", tmp_path / "x", "-t", "1s", *args, timeout_s=60)
    assert proc.returncode == 2 and message.replace("BAD", str(bad)) in proc.stderr, proc.stderr[-2000:]


def test_help_lists_the_workload_options():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest", "--help"], cwd=REPO, capture_output=True, text=True
    )
    for option in ("--turns", "--shared-prefixes", "--trace-time-scale", "--dataset-mode"):
        assert option in proc.stdout
    assert Path(REPO / "loadtest" / "multi_turn_chat.py").is_file()


def test_trace_replay_over_two_processes_sends_every_line_once(tmp_path):
    """FAKE server (instant replies): the lines are split between the processes, none lost or doubled."""
    trace = tmp_path / "trace.jsonl"
    subprocess.run(
        [sys.executable, "scripts/make_trace.py", str(trace), "--requests", "20", "--gap-ms", "100"],
        cwd=REPO,
        check=True,
    )
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    with fault_server() as url:
        run_dir = tmp_path / "trace2"
        proc = run_locust_with_stats(
            url, run_dir, "-u", "4", "-r", "4", "-t", "4s", "--stop-timeout", "10", "--processes", "2",
            "--model", "ok", "--arrival", "trace", "--trace", str(trace), "--trace-block-tokens", "16",
        )  # fmt: skip
    ran_clean(proc)
    run = read_run(run_dir)
    start = run.summary["window_start_ts_s"]
    offsets = sorted(round(r.scheduled_ts_s - start, 3) for r in run.records)
    assert offsets == [round(line["timestamp"] / 1000, 3) for line in lines]
    assert {r.worker_id for r in run.records} == {"w0", "w1"}
    assert sorted(known(r.prompt_tokens_target) for r in run.records) == sorted(
        x["input_length"] for x in lines
    )
    assert run.summary["arrival"]["due_slots"] == len(lines)


# mlx_lm.server logs a traceback for GET /v1/models when no Hugging Face cache folder exists (its bug).
@pytest.mark.expected_errors(r"CacheNotFound")
def test_mlx_lm_server_reports_cached_tokens_for_histories_and_shared_prefixes(tmp_path):
    """The peer with a prompt cache: its usage.prompt_tokens_details.cached_tokens lands in the records."""
    from server.models.embedded import build_embedded_model
    from tests.support.helpers import mlx_lm_server

    model = str(build_embedded_model())
    with mlx_lm_server(model) as url:
        run_dir = tmp_path / "peer"
        proc = run_locust_with_stats(
            url, run_dir, "-u", "1", "-r", "1", "-t", "4s", "--stop-timeout", "30", "--max-tokens", "8",
            "--tokenizer", model, "--prompt-tokens", "24", "--turns", "3", "--shared-prefixes", "1",
            "--shared-prefix-tokens", "32", "MultiTurnChatUser",
        )  # fmt: skip
    ran_clean(proc)
    run = read_run(run_dir)
    ok = [r for r in run.records if r.outcome == "success"]
    assert len({r.conversation_id for r in ok}) >= 2
    assert all(isinstance(r.cached_tokens, int) for r in ok)
    # later turns reuse the history; a later conversation's first turn reuses the shared prefix
    assert all(known(r.cached_tokens) > 0 for r in ok if known(r.turn_index) > 1)
    later_firsts = [r for r in ok if r.turn_index == 1 and not known(r.conversation_id).endswith("-c1")]
    assert later_firsts and all(known(r.cached_tokens) >= 32 for r in later_firsts)
    cached = run.summary["workloads"]["cached_tokens"]
    assert cached["cached_tokens"] == sum(known(r.cached_tokens) for r in ok) > 0
