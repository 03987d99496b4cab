"""Workload generators: trace -> prompts and schedule, dataset parsing, shared prefixes,
conversations, cached_tokens parsing and the workload figures. The real tiny model's tokenizer counts."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadgen.options import LoadSettings
from loadgen.prompts import ExactPrompts, PromptError, SyntheticPrompts
from loadgen.responses import StreamParser, parse_body
from loadgen.tokens import LocalTokenizer
from loadgen.workloads.conversation import Conversations, TurnSpec
from loadgen.workloads.dataset import DatasetPrompts, read_dataset
from loadgen.workloads.shared_prefix import build_pool
from loadgen.workloads.trace import (
    TracePrompts,
    TraceSchedule,
    read_trace,
    trace_due_slots,
    trace_rate_per_s,
)
from runfolder.records import RequestRecord
from runfolder.summary import summarize
from runfolder.workload_figures import workload_figures
from tests.loadgen.known import known

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer() -> LocalTokenizer:
    from server.models.embedded import build_embedded_model

    return LocalTokenizer(str(build_embedded_model()))


@pytest.fixture(scope="module")
def exact(tokenizer) -> ExactPrompts:
    return ExactPrompts(tokenizer, 32)


def make_trace(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "trace.jsonl"
    subprocess.run([sys.executable, "scripts/make_trace.py", str(out), *args], cwd=REPO, check=True)
    return out


# ---- trace ----------------------------------------------------------------------------------------------


def test_the_generated_trace_becomes_exact_prompts_with_shared_blocks(tmp_path, tokenizer, exact):
    path = make_trace(tmp_path, "--requests", "9", "--sessions", "3", "--block-tokens", "16")
    entries = read_trace(path)
    prompts = TracePrompts(entries, exact, seed=1, block_tokens=16)
    built = [prompts.at(i) for i in range(len(entries))]
    for entry, prompt in zip(entries, built, strict=True):
        assert tokenizer.count_chat(prompt.messages) == entry.input_length == prompt.target_tokens
        assert prompt.max_tokens == entry.output_length
    overhead = exact.kinds["chat"].overhead_tokens
    for i, a in enumerate(entries):
        for j, b in enumerate(entries[:i]):
            shared = 0
            while shared < min(len(a.hash_ids), len(b.hash_ids)) and a.hash_ids[shared] == b.hash_ids[shared]:
                shared += 1
            ta, tb = built[i].text.split(), built[j].text.split()  # one-token words: a word is a token
            common = next(
                (k for k, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb))
            )
            want = min(shared * 16, a.input_length - overhead, b.input_length - overhead)
            assert common >= want, (i, j)  # equal hash ids: equal blocks
            if shared == 0:
                assert common < 3  # a different first block: the texts part at once (or by chance soon)


def test_trace_shards_split_the_lines_and_count_due_slots(tmp_path):
    entries = read_trace(make_trace(tmp_path, "--requests", "10", "--gap-ms", "100"))
    shards = [TraceSchedule(entries, 1000.0, 0.5, shard=s, shards=3) for s in range(3)]
    dues = sorted(d for sch in shards for d in (sch.next_due() for _ in range(4)) if d != float("inf"))
    assert dues == pytest.approx([1000.0 + 0.05 * i for i in range(10)])
    assert (
        shards[1].entry_index(0) == 1 and shards[1].entry_index(2) == 7 and shards[1].entry_index(3) is None
    )
    assert trace_due_slots(entries, 1000.0, 0.5, 1000.1, 1000.3) == 4
    assert trace_rate_per_s(entries, 0.5) == pytest.approx(20.0)
    late = TraceSchedule(entries, 1000.0, 1.0)
    assert late.skip_until(1000.35) == 4 and late.next_due() == pytest.approx(1000.4)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", ": no requests"),
        ("not json\n", ":1: not JSON"),
        ('{"timestamp": 0, "output_length": 4, "hash_ids": []}\n', ':1: "input_length" must be an integer'),
        ('{"timestamp": -1, "input_length": 4, "output_length": 4}\n', ':1: "timestamp" must be'),
        ('{"timestamp": 0, "input_length": 4, "output_length": 4, "hash_ids": "x"}\n', ':1: "hash_ids"'),
        ('{"timestamp": 5, "input_length": 4, "output_length": 4}\n{"timestamp": 1, "input_length": 4, '
         '"output_length": 4}\n', ":2: timestamp goes back"),
    ],
)  # fmt: skip
def test_a_bad_trace_names_its_line_and_problem(tmp_path, text, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(PromptError) as info:
        read_trace(path)
    assert str(info.value).startswith(f"--trace {path}{problem}")


# ---- dataset --------------------------------------------------------------------------------------------

SHAREGPT = [
    {"id": "a", "conversations": [
        {"from": "human", "value": "Tell me about rivers."},
        {"from": "gpt", "value": "Rivers run to the sea."},
        {"from": "human", "value": "And lakes?"},
        {"from": "gpt", "value": "Lakes hold still water for years."},
    ]},
    {"id": "b", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is music?"},
        {"role": "assistant", "content": "Sound in time."},
    ]},
    {"id": "empty", "conversations": []},
]  # fmt: skip


def test_dataset_lengths_come_from_the_data(tmp_path, tokenizer):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(SHAREGPT))
    first = DatasetPrompts(path, "first-turn", tokenizer)
    assert len(first.prompts) == 2  # the conversation without a user turn is skipped
    a, b = first.prompts
    assert a.messages == [{"role": "user", "content": "Tell me about rivers."}]
    assert a.max_tokens == tokenizer.count_text("Rivers run to the sea.")
    assert a.target_tokens == tokenizer.count_chat(a.messages)
    assert b.messages[0] == {"role": "system", "content": "Be brief."}
    whole = DatasetPrompts(path, "conversation", tokenizer)
    assert [m["role"] for m in whole.prompts[0].messages] == ["user", "assistant", "user"]
    assert whole.prompts[0].max_tokens == tokenizer.count_text("Lakes hold still water for years.")
    conv = whole.conversation(random.Random(0))
    assert conv is not None and all(isinstance(n, int) for _, n in conv.turns)
    assert first.conversation(random.Random(0)) is None  # first-turn: multi-turn users draw first turns
    assert DatasetPrompts(path, "first-turn", None).prompts[0].max_tokens == 5  # words without a counter


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"conversations": []}', "expected a JSON array"),
        ('[{"text": "x"}]', 'entry 0: needs a "conversations"'),
        ('[{"conversations": [{"from": "human"}]}]', "entry 0: turn 0: needs 'from' and a string 'value'"),
        ('[{"conversations": [{"from": "robot", "value": "x"}]}]', "entry 0: turn 0: unknown from 'robot'"),
        ('[{"conversations": [{"from": "gpt", "value": "x"}]}]', "no conversation with a user turn"),
    ],
)
def test_a_bad_dataset_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PromptError, match=f"--dataset {path}") as info:
        DatasetPrompts(path, "first-turn")
    assert problem in str(info.value)
    with pytest.raises(PromptError, match=r"(?i)no such file"):
        read_dataset(tmp_path / "missing.json")


# ---- shared prefixes ------------------------------------------------------------------------------------


_SETTINGS = LoadSettings(seed=3, shared_prefixes=4, shared_prefix_tokens=48, shared_prefix_share=0.5)


def test_shared_prefixes_are_exact_distinct_and_the_same_in_every_process(tokenizer, exact):
    pool = build_pool(_SETTINGS, exact, tokenizer)
    assert pool is not None and len(set(pool.texts)) == 4
    assert all(tokenizer.count_text(t) == 48 for t in pool.texts)
    assert known(build_pool(_SETTINGS, ExactPrompts(tokenizer, 32), tokenizer)).texts == pool.texts  # seeded
    rng = random.Random(0)
    picks = [pool.pick(rng) for _ in range(2000)]
    assert 0.45 < sum(p is not None for p in picks) / 2000 < 0.55
    assert {p for p in picks if p is not None} == {0, 1, 2, 3}
    chat = pool.apply({"messages": [{"role": "user", "content": "hi"}]}, 2)
    assert chat["messages"][0] == {"role": "system", "content": pool.texts[2]}
    assert pool.apply({"prompt": "hi"}, 1)["prompt"] == f"{pool.texts[1]} hi"


# ---- conversations --------------------------------------------------------------------------------------


def test_a_conversation_sends_its_history_and_a_failed_turn_ends_it():
    convs = Conversations("w0-u1", TurnSpec(3))
    rng, source = random.Random(0), SyntheticPrompts(8)
    p1 = convs.next_prompt(rng, source)
    assert (p1.conversation_id, p1.turn_index, len(p1.messages)) == ("w0-u1-c1", 1, 1)
    assert p1.target_tokens == 8
    convs.on_reply(True, "first reply")
    p2 = convs.next_prompt(rng, source)
    assert p2.turn_index == 2 and p2.target_tokens is None
    assert p2.messages[:2] == [p1.messages[0], {"role": "assistant", "content": "first reply"}]
    convs.on_reply(False, "")  # the turn failed: the conversation is over
    p3 = convs.next_prompt(rng, source)
    assert (p3.conversation_id, p3.turn_index, len(p3.messages)) == ("w0-u1-c2", 1, 1)
    lengths = {TurnSpec(4, 2).draw(rng) for _ in range(200)}
    assert lengths == {2, 3, 4, 5, 6}


def test_a_dataset_conversation_replays_the_data_user_turns(tmp_path, tokenizer):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(SHAREGPT[:1]))
    source = DatasetPrompts(path, "conversation", tokenizer)
    convs = Conversations("local-u0", TurnSpec(9))  # the data's 2 turns, not --turns
    rng = random.Random(0)
    p1 = convs.next_prompt(rng, source)
    convs.on_reply(True, "ours")
    p2 = convs.next_prompt(rng, source)
    assert p1.messages == [{"role": "user", "content": "Tell me about rivers."}]
    assert p2.messages[-1] == {"role": "user", "content": "And lakes?"}
    assert p2.messages[1] == {"role": "assistant", "content": "ours"}  # the server's reply, not the data's
    assert p2.max_tokens == tokenizer.count_text("Lakes hold still water for years.")
    convs.on_reply(True, "ours again")
    assert convs.next_prompt(rng, source).conversation_id == "local-u0-c2"


# ---- cached tokens and the figures ----------------------------------------------------------------------


def test_cached_tokens_are_read_from_usage_and_missing_is_not_zero():
    usage = {"prompt_tokens": 40, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 32}}
    parser = StreamParser()
    lines = [
        {"choices": [{"delta": {"content": "hi"}, "finish_reason": "length"}]},
        {"choices": [], "usage": usage},
    ]
    for obj in lines:
        parser.feed(b"data: " + json.dumps(obj).encode(), 0.0)
    assert parser.cached_tokens == 32
    body: dict[str, Any] = {
        "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": usage,
    }
    assert parse_body(json.dumps(body).encode()).cached_tokens == 32
    del body["usage"]["prompt_tokens_details"]
    assert parse_body(json.dumps(body).encode()).cached_tokens is None
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 0}
    assert parse_body(json.dumps(body).encode()).cached_tokens == 0


def _rec(**kw) -> RequestRecord:
    base = dict(scenario="multi_turn_chat", stream=True, scheduled_ts_s=0.0, sent_ts_s=0.0,
                end_ts_s=1.0, schedule_lag_s=0.0, e2e_s=1.0, outcome="success", outcome_detail="ok",
                prompt_tokens=10)  # fmt: skip
    return RequestRecord(**{**base, **kw})


def test_workload_figures_split_ttft_by_turn_and_by_shared_prefix():
    records = [
        _rec(conversation_id="a", turn_index=1, ttft_s=0.1, shared_prefix_id=0, cached_tokens=0),
        _rec(conversation_id="a", turn_index=2, ttft_s=0.3, shared_prefix_id=0, cached_tokens=8),
        _rec(conversation_id="b", turn_index=1, ttft_s=0.2, cached_tokens=2),
        _rec(conversation_id="b", turn_index=2, ttft_s=9.0, outcome="error", outcome_detail="x"),
    ]
    w = workload_figures(records)
    assert w["conversations"] == 2
    assert w["ttft_s_by_turn"]["1"]["p50"] == pytest.approx(0.15) and w["ttft_s_by_turn"]["2"]["count"] == 1
    assert w["ttft_s_by_shared_prefix"]["with"]["count"] == 2
    assert w["ttft_s_by_shared_prefix"]["without"]["p50"] == pytest.approx(0.2)
    cached = w["cached_tokens"]
    assert (cached["records_with_cached_tokens"], cached["cached_tokens"]) == (3, 10)
    assert cached["cached_share_of_prompt_tokens"] == pytest.approx(1 / 3)
    plain = summarize([_rec(ttft_s=0.1)])["workloads"]
    assert plain == {"cached_tokens": {"records_with_cached_tokens": 0, "cached_tokens": None,
                                       "cached_share_of_prompt_tokens": None}}  # fmt: skip


def test_the_report_shows_ttft_by_turn_by_prefix_and_cached_tokens(tmp_path):
    from dataclasses import replace

    from reports.report import build
    from reports.runs import load_runs
    from tests.support.reports_factory import record, write_synthetic_run

    base = record(ttft_s=0.1)
    records = [
        replace(base, turn_index=1, conversation_id="c1", shared_prefix_id=0, cached_tokens=0,
                prompt_tokens=40),
        replace(base, turn_index=2, conversation_id="c1", shared_prefix_id=0, ttft_s=0.3, cached_tokens=30,
                prompt_tokens=80),
        replace(base, turn_index=1, conversation_id="c2", ttft_s=0.2, cached_tokens=0, prompt_tokens=40),
    ]  # fmt: skip
    run = write_synthetic_run(tmp_path / "a", records, label="v1.2.0")
    report = build(load_runs([run]), tmp_path / "report")
    text = report.markdown_path.read_text()
    assert "## TTFT by conversation turn" in text and "| v1.2.0 | 150.0 (n=2) | 300.0 (n=1) |" in text
    assert "## TTFT by shared prefix" in text and "| v1.2.0 | 200.0 (n=2) | 200.0 (n=1) |" in text
    assert "## Cached prompt tokens" in text and "| v1.2.0 | 3 | 30 | 18.8 % |" in text
    plain = build(load_runs([write_synthetic_run(tmp_path / "b", [base], label="x")]), tmp_path / "r2")
    assert "TTFT by conversation turn" not in plain.markdown_path.read_text()
