"""Each fault of the fake server is classified correctly by one request exchange (no Locust involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from configkit import REPO_ROOT
from tests.support.helpers import fault_server

DRIVER = REPO_ROOT / "tests" / "support" / "exchange_driver.py"
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"

# (fault, path, stream) or (fault, path, stream, ignore_eos) -> (outcome, detail)
CASES = {
    ("ok", CHAT, True): ("success", "ok"),
    ("ok", CHAT, False): ("success", "ok"),
    ("ok", COMPLETIONS, True): ("success", "ok"),
    ("ok_no_usage", CHAT, True): ("success", "ok"),
    ("http_429", CHAT, True): ("rejected", "concurrency_limit_exceeded"),
    ("queue_timeout", CHAT, True): ("timeout", "queue_timeout"),
    ("overloaded", CHAT, False): ("rejected", "server_overloaded"),
    ("http_503_nocode", CHAT, True): ("error", "http_503"),
    ("http_504", CHAT, True): ("timeout", "http_504"),
    ("http_500", CHAT, True): ("error", "http_500"),
    ("html_502", CHAT, True): ("error", "http_502"),
    ("stream_error", CHAT, True): ("error", "stream_error"),
    ("stream_rejected", CHAT, True): ("rejected", "concurrency_limit_exceeded"),
    ("stream_queue_timeout", COMPLETIONS, True): ("timeout", "queue_timeout"),
    ("cut", CHAT, True): ("error", "truncated_stream"),
    ("reset", CHAT, True): ("error", "truncated_stream"),
    ("stall", CHAT, True): ("timeout", "client_deadline"),
    ("malformed", CHAT, True): ("error", "malformed_chunk"),
    ("no_finish", CHAT, True): ("error", "missing_finish_reason"),
    # strict success (docs/loadtest.md, "Outcomes")
    ("empty", CHAT, True): ("success", "empty_reply"),
    ("empty", CHAT, False): ("success", "empty_reply"),
    ("empty", CHAT, True, True): ("error", "short_reply"),
    ("finish_abort", CHAT, True): ("error", "finish_reason_abort"),
    ("finish_abort", COMPLETIONS, False): ("error", "finish_reason_abort"),
    ("body_no_finish", CHAT, False): ("error", "missing_finish_reason"),
    ("ok", CHAT, True, True): ("success", "ok"),
    ("ok", CHAT, False, True): ("success", "ok"),
    ("short", CHAT, True): ("success", "ok"),
    ("short", CHAT, True, True): ("error", "short_reply"),
    ("short", CHAT, False, True): ("error", "short_reply"),
    ("ok_no_usage", CHAT, True, True): ("success", "ok"),  # no usage: finish_reason "length" is the check
    ("over_usage", CHAT, True): ("error", "usage_above_max_tokens"),
    ("over_usage", CHAT, False): ("error", "usage_above_max_tokens"),
    ("zero_usage", CHAT, True): ("error", "zero_usage_with_content"),
}
DEADLINE_S = 0.5


def _arg(case) -> str:
    fault, path, stream, *ignore_eos = case
    return f"{fault}:{path}:{int(stream)}" + (":1" if ignore_eos == [True] else "")


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    from server.models.embedded import build_embedded_model

    return str(build_embedded_model())


@pytest.fixture(scope="module")
def records(tokenizer_dir) -> dict[tuple, dict]:
    cases = list(CASES)
    with fault_server() as url:
        out = subprocess.run(
            [sys.executable, str(DRIVER), url, str(DEADLINE_S), *map(_arg, cases)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env={**os.environ, "EXCHANGE_TOKENIZER": tokenizer_dir},
        )
    sys.stderr.write(out.stderr)  # checked for ERROR records (tests/support/server_logs.py)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == len(cases)
    return dict(zip(cases, rows, strict=True))


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: _arg(c).replace("/v1/", "").replace(":", "-"))
def test_fault_is_classified(records, case):
    rec = records[case]
    assert (rec["outcome"], rec["outcome_detail"]) == CASES[case]


def test_successes_carry_timings_and_token_counts(records, tokenizer_dir):
    from loadgen.tokens import LocalTokenizer

    tokenizer = LocalTokenizer(tokenizer_dir)
    streamed = records[("ok", CHAT, True)]
    assert 0 < streamed["ttft_s"] <= streamed["e2e_s"]
    assert streamed["usage_source"] == "server" and streamed["output_tokens"] == 4
    assert streamed["output_chunks"] == 4 and len(streamed["itl_s"]) == 3
    # the local tokenizer re-counts every reply: tokens against tokens, not chunks
    assert streamed["output_tokens_counted"] == tokenizer.count_text("t0 t1 t2 t3 ")
    assert streamed["tpot_s"] == pytest.approx((streamed["e2e_s"] - streamed["ttft_s"]) / 3)
    # without usage, output tokens are the tokenizer's count of the text, never the chunk count
    counted = records[("ok_no_usage", CHAT, True)]
    assert counted["usage_source"] == "tokenizer" and counted["output_chunks"] == 4
    assert counted["output_tokens"] == tokenizer.count_text("t0 t1 t2 t3 ") != 4
    body = records[("ok", CHAT, False)]
    assert body["ttft_s"] is None and body["usage_source"] == "server" and body["http_status"] == 200
    assert body["output_chunks"] is None


def test_empty_reply_is_a_success_with_zero_output_tokens(records):
    for case in (("empty", CHAT, True), ("empty", CHAT, False)):
        rec = records[case]
        assert rec["output_tokens"] == 0 and rec["tpot_s"] is None and rec["finish_reason"] == "length"


def test_unknown_finish_reason_is_named(records):
    rec = records[("finish_abort", CHAT, True)]
    assert rec["finish_reason"] == "abort" and rec["outcome"] == "error"


def test_client_deadline_covers_the_whole_stream(records):
    stalled = records[("stall", CHAT, True)]
    assert stalled["ttft_s"] is not None  # tokens arrived, then the stream stalled
    assert DEADLINE_S <= stalled["e2e_s"] < DEADLINE_S + 0.3


def test_http_errors_keep_status_and_code(records):
    rejected = records[("http_429", CHAT, True)]
    assert (rejected["http_status"], rejected["error_code"]) == (429, "concurrency_limit_exceeded")
    assert rejected["error_message"] == "fake failure"
    assert records[("stream_rejected", CHAT, True)]["http_status"] == 200
    html = records[("html_502", CHAT, True)]
    assert html["http_status"] == 502 and "\n" in html["error_message"]
    assert '"Bad Gateway"' in html["error_message"]
    assert "\ufffd" in html["error_message"]  # the bytes that were not UTF-8
