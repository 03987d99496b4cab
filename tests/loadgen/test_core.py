"""Unit tests of loadgen and runfolder: summary math, run folders, arrival schedules, prompts, options."""

from __future__ import annotations

import ast
import json
import random
import re
import subprocess
import sys

import pytest

from configkit import REPO_ROOT
from loadgen.arrival_schedule import ArrivalSchedule
from loadgen.options import LoadSettings
from loadgen.prompts import FilePrompts, PromptError, SyntheticPrompts
from loadgen.responses import error_info_from_bytes
from runfolder import RequestRecord, RunFolderError, Slo, read_run, summarize, write_run
from runfolder.folder import RECORDS_FILE, SUMMARY_FILE
from runfolder.frame import read_records_frame
from tests.loadgen.known import known

# ---- summary math ----------------------------------------------------------------------------------


def rec(outcome="success", *, t=0.0, ttft=0.1, e2e=1.0, tokens=10, detail="ok", **kw) -> RequestRecord:
    tpot = (e2e - ttft) / (tokens - 1) if outcome == "success" and tokens > 1 else None
    fields = dict(
        scenario="chat_stream",
        stream=True,
        scheduled_ts_s=t,
        sent_ts_s=t,
        end_ts_s=t + e2e,
        schedule_lag_s=0.0,
        e2e_s=e2e,
        outcome=outcome,
        outcome_detail=detail,
        ttft_s=ttft if outcome == "success" else None,
        tpot_s=tpot,
        itl_s=[0.1] * (tokens - 1) if outcome == "success" else [],
        output_tokens=tokens if outcome == "success" else None,
        output_tokens_counted=tokens if outcome == "success" else None,
        usage_source="server" if outcome == "success" else "none",
    )
    fields.update(kw)
    return RequestRecord(**fields)


def known_records() -> list[RequestRecord]:
    ok = [rec(t=i, ttft=0.1 * (i + 1), e2e=1.0 + i, tokens=11) for i in range(5)]
    return [
        *ok,
        rec("rejected", t=1, e2e=0.01, detail="http_429", http_status=429),
        rec("rejected", t=2, e2e=0.01, detail="concurrency_limit_exceeded"),
        rec("timeout", t=3, e2e=0.5, detail="queue_timeout"),
        rec("error", t=4, e2e=0.2, detail="truncated_stream"),
        rec("error", t=4, e2e=0.2, detail="truncated_stream"),
    ]


def test_summary_counts_rates_and_throughput():
    s = summarize(known_records(), window_start_s=0.0, window_end_s=10.0)
    assert (s["requests"], s["successes"], s["rejections"], s["timeouts"], s["errors"]) == (10, 5, 2, 1, 2)
    assert (s["success_rate"], s["rejection_rate"], s["timeout_rate"], s["error_rate"]) == (
        0.5,
        0.2,
        0.1,
        0.2,
    )
    assert s["success_rate"] + s["rejection_rate"] + s["timeout_rate"] + s["error_rate"] == pytest.approx(1.0)
    assert s["duration_s"] == 10.0
    assert s["output_tokens"] == 55
    assert s["output_tokens_per_s"] == pytest.approx(5.5)
    assert s["requests_per_s"] == pytest.approx(0.5)
    assert s["attempted_requests_per_s"] == pytest.approx(1.0)
    assert s["outcome_details"]["rejected"] == {"concurrency_limit_exceeded": 1, "http_429": 1}
    assert s["outcome_details"]["error"] == {"truncated_stream": 2}


def test_summary_percentiles_are_over_successes_only():
    s = summarize(known_records(), window_start_s=0.0, window_end_s=10.0)
    # successful TTFTs are 0.1 .. 0.5, e2e 1 .. 5: numpy's linear interpolation
    assert s["ttft_s"]["p50"] == pytest.approx(0.3)
    assert s["ttft_s"]["p90"] == pytest.approx(0.46)
    assert s["ttft_s"]["p95"] == pytest.approx(0.48)
    assert s["ttft_s"]["p99"] == pytest.approx(0.496)
    assert s["ttft_s"]["max"] == pytest.approx(0.5)
    assert s["e2e_s"]["mean"] == pytest.approx(3.0)
    assert s["e2e_s"]["count"] == 5
    assert s["tpot_s"]["p50"] == pytest.approx((3.0 - 0.3) / 10)
    assert s["itl_s"]["count"] == 50


def test_goodput_counts_requests_meeting_every_slo():
    s = summarize(known_records(), window_start_s=0.0, window_end_s=10.0, slo=Slo(ttft_s=0.35, e2e_s=2.5))
    # TTFT <= 0.35 keeps 3 of 5 successes; e2e <= 2.5 keeps 2 of those
    assert s["goodput"]["good_requests"] == 2
    assert s["goodput"]["requests_per_s"] == pytest.approx(0.2)
    assert s["goodput"]["attainment"] == pytest.approx(0.2)
    assert "goodput" not in summarize(known_records())


def test_empty_run_has_no_rates():
    s = summarize([], window_start_s=0.0, window_end_s=5.0)
    assert s["requests"] == 0 and s["success_rate"] is None and s["ttft_s"]["p95"] is None
    assert s["output_tokens_per_s"] == 0.0


def test_open_loop_arrival_check_flags_a_generator_that_fell_behind():
    late = [rec(t=i * 0.1, schedule_lag_s=0.2) for i in range(10)]
    s = summarize(late, window_start_s=0.0, window_end_s=1.0, requested_rate_per_s=10.0)
    assert s["arrival"]["behind"] is True and s["warnings"]
    on_time = [rec(t=i * 0.1, schedule_lag_s=0.001) for i in range(10)]
    s = summarize(on_time, window_start_s=0.0, window_end_s=1.0, requested_rate_per_s=10.0)
    arrival = s["arrival"]
    assert (arrival["requested_rate_per_s"], arrival["achieved_rate_per_s"], arrival["behind"]) == (
        10.0,
        10.0,
        False,
    )


def test_achieved_arrivals_are_compared_with_the_exact_due_slots():
    # A seeded Poisson draw of 150 slots in the window, all sent on time, is not behind; 100 of 150 is.
    for count, behind in ((150, False), (100, True)):
        records = [rec(t=i * 65 / count, e2e=0.1, schedule_lag_s=0.001) for i in range(count)]
        s = summarize(records, window_start_s=0.0, window_end_s=65.0, requested_rate_per_s=2.5, due_slots=150)
        assert s["arrival"]["behind"] is behind, count
        assert s["arrival"]["missed_slots"] == 150 - count


# ---- run folder ------------------------------------------------------------------------------------


def test_run_folder_round_trip(tmp_path):
    records = known_records()
    summary = summarize(records, window_start_s=0.0, window_end_s=10.0)
    write_run(tmp_path / "run", records, summary, {"label": "x", "target_url": "http://127.0.0.1:1"})
    run = read_run(tmp_path / "run")
    assert run.summary == json.loads(json.dumps(summary))
    assert run.metadata["label"] == "x" and run.metadata["schema_version"] == 1
    assert [r.outcome for r in run.records] == [r.outcome for r in records]
    assert run.records[0].itl_s == pytest.approx(records[0].itl_s)
    assert run.records[5].ttft_s is None and run.records[5].stream is True
    again = summarize(run.records, window_start_s=0.0, window_end_s=10.0)
    assert again["ttft_s"] == pytest.approx(summary["ttft_s"])
    frame = read_records_frame(tmp_path / "run")
    assert len(frame) == 10 and frame["outcome"].value_counts()["success"] == 5


def test_run_folder_errors_name_the_file(tmp_path):
    with pytest.raises(RunFolderError, match="no such directory"):
        read_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match=f"{SUMMARY_FILE}: missing"):
        read_run(tmp_path / "empty")
    write_run(tmp_path / "r", [], summarize([]), {})
    (tmp_path / "r" / SUMMARY_FILE).write_text('{"schema_version": 99}')
    with pytest.raises(RunFolderError, match="schema_version 99"):
        read_run(tmp_path / "r")
    write_run(tmp_path / "r2", [], summarize([]), {})
    (tmp_path / "r2" / RECORDS_FILE).write_text("a,b\n1,2\n")
    with pytest.raises(RunFolderError, match="missing columns"):
        read_run(tmp_path / "r2")


# ---- arrivals, prompts, options -------------------------------------------------------------------


def test_constant_arrivals_interleave_across_shards():
    shards = [ArrivalSchedule("constant", 10.0, 100.0, shard=i, shards=2) for i in range(2)]
    merged = sorted(s.next_due() for s in shards for _ in range(5))
    assert merged == pytest.approx([100.0 + k / 10 for k in range(10)])


def test_poisson_arrivals_are_seeded_and_reach_the_rate():
    a = ArrivalSchedule("poisson", 50.0, 0.0, seed=3)
    b = ArrivalSchedule("poisson", 50.0, 0.0, seed=3)
    due_a = [a.next_due() for _ in range(2000)]
    assert due_a == [b.next_due() for _ in range(2000)]
    assert 2000 / due_a[-1] == pytest.approx(50.0, rel=0.1)
    assert due_a == sorted(due_a)


def test_synthetic_prompts_follow_the_distribution():
    rng = random.Random(1)
    fixed = SyntheticPrompts(20).draw(rng)
    assert fixed.target_tokens == 20 and len(fixed.text.split()) == 20
    lengths = [known(SyntheticPrompts(50, "uniform", 10).draw(rng).target_tokens) for _ in range(200)]
    assert min(lengths) >= 40 and max(lengths) <= 60 and len(set(lengths)) > 10


def test_prompt_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "hello", "max_tokens": 5}\n\n{"messages": [{"role": "user", "content": "x"}]}\n'
    )
    prompts = FilePrompts(path).prompts
    assert prompts[0].messages == [{"role": "user", "content": "hello"}] and prompts[0].max_tokens == 5
    assert prompts[1].text == "x"
    path.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(PromptError, match=r"p.jsonl:2"):
        FilePrompts(path)


def test_settings_validation():
    assert LoadSettings().problems() == []
    assert LoadSettings(arrival="poisson").problems() == ["--arrival poisson needs --rate > 0"]
    assert "api_key" not in LoadSettings(api_key="secret").public()


def test_command_line_in_metadata_hides_the_api_key():
    from loadgen.runstate import _scrubbed

    assert _scrubbed(["locust", "--api-key", "k", "-u", "2", "--api-key=k2"]) == [
        "locust", "--api-key", "***", "-u", "2", "--api-key=***",
    ]  # fmt: skip


def test_runfolder_and_loadgen_options_stay_free_of_locust_and_gevent():
    code = (
        "import sys, runfolder, loadgen.options, loadgen.runstate; "
        "sys.exit(bool({'locust', 'gevent'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# ---- strict success and token figures in the summary -------------------------------------------------


def test_empty_replies_are_successes_in_a_share_of_their_own():
    records = [*known_records(), rec(t=5, tokens=0, detail="empty_reply", ttft=None, itl_s=[])]
    s = summarize(records, window_start_s=0.0, window_end_s=10.0)
    assert s["successes"] == 6 and s["empty_replies"] == 1
    assert s["empty_reply_rate"] == pytest.approx(1 / 11)
    assert summarize([])["empty_reply_rate"] is None


def test_tokenizer_is_compared_with_usage_in_tokens_not_chunks():
    records = [rec(t=i, tokens=10, output_tokens_counted=12, output_chunks=3) for i in range(4)]
    records.append(rec(t=5, tokens=7, usage_source="tokenizer", output_tokens_counted=7, output_chunks=2))
    tokens = summarize(records)["tokens"]
    assert tokens["usage_source"] == {"server": 4, "tokenizer": 1}
    assert tokens["records_with_usage_and_count"] == 4
    assert (tokens["usage_output_tokens"], tokens["tokenizer_output_tokens"]) == (40, 48)
    assert tokens["tokenizer_vs_usage"] == pytest.approx(0.2)
    assert tokens["output_chunks"] == 14


@pytest.mark.parametrize(("method", "warned"), [("calibrated", True), ("words", True), ("tokenizer", False)])
def test_approximate_prompt_lengths_carry_a_warning_code(method, warned):
    s = summarize(known_records(), extra={"workload": {"prompt_length_method": method}})
    assert ("approximate_prompt_lengths" in s.get("warning_codes", [])) is warned
    assert any("approximate" in w for w in s["warnings"]) is warned


# ---- run folders that round-trip hostile error text ---------------------------------------------------

HOSTILE_MESSAGES = [
    '<html>\r\n<h1>502 "Bad Gateway"</h1>\n<p>it said, "no", twice</p>\n</html>\n',
    'quotes "" and, commas\n\n\nand blank lines',
    "bytes that were not UTF-8: \ufffd\ufffd, a NUL \x00 and a tab \t",
    "\n",
]


def test_run_folder_round_trips_error_text_with_newlines_quotes_and_bad_bytes(tmp_path):
    # Enough rows that pyarrow's 1 MB blocks end inside multi-line values (its default reader fails there).
    records = []
    for i in range(12000):
        message = HOSTILE_MESSAGES[i % len(HOSTILE_MESSAGES)] + " " + "x\n" * (i % 50)
        records.append(rec("error", t=i * 0.01, detail="http_502", http_status=502, error_message=message))
    records.append(rec(t=61.0, finish_reason='"stop"\n'))
    summary = summarize(records)
    write_run(tmp_path / "run", records, summary, {"label": "hostile"})
    assert (tmp_path / "run" / RECORDS_FILE).stat().st_size > 2 * 2**20
    run = read_run(tmp_path / "run")
    assert [r.error_message for r in run.records] == [r.error_message for r in records]
    assert run.records[-1].finish_reason == '"stop"\n'
    frame = read_records_frame(tmp_path / "run")
    assert len(frame) == len(records)
    assert frame["outcome"].value_counts()["error"] == 12000
    assert frame["e2e_s"].notna().all()


def test_error_text_from_a_server_is_writable_after_cleaning(tmp_path):
    info = error_info_from_bytes(b'{"error": {"message": "lone \\udcff surrogate\\n"}}')
    record = rec("error", detail="http_500", error_message=info.message)
    write_run(tmp_path / "r", [record], summarize([record]), {})
    assert read_run(tmp_path / "r").records[0].error_message == "lone \ufffd surrogate\n"


def test_every_scenario_has_one_name():
    """The file, the records' `scenario` and the class agree: ChatStreamUser, chat_stream.py, chat_stream."""
    names = []
    for path in sorted((REPO_ROOT / "loadtest").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("User"):
                scenario = next(
                    stmt.value.value
                    for stmt in node.body
                    if isinstance(stmt, ast.Assign)
                    and isinstance(stmt.value, ast.Constant)
                    and getattr(stmt.targets[0], "id", None) == "scenario"
                )
                snake = re.sub(r"(?<!^)(?=[A-Z])", "_", node.name.removesuffix("User")).lower()
                names.append((node.name, path.stem, scenario, snake))
    assert len(names) == 5
    assert all(stem == scenario == snake for _cls, stem, scenario, snake in names), names
