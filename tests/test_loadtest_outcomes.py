"""Each fault of the fake server is classified correctly by one request exchange (no Locust involved)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchcore.launch import REPO
from tests.loadtest_fixtures.helpers import fault_server

DRIVER = REPO / "tests" / "loadtest_fixtures" / "exchange_driver.py"
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"

# (fault, path, stream) -> (outcome, detail)
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
    ("stream_error", CHAT, True): ("error", "stream_error"),
    ("stream_rejected", CHAT, True): ("rejected", "concurrency_limit_exceeded"),
    ("stream_queue_timeout", COMPLETIONS, True): ("timeout", "queue_timeout"),
    ("cut", CHAT, True): ("error", "truncated_stream"),
    ("reset", CHAT, True): ("error", "truncated_stream"),
    ("stall", CHAT, True): ("timeout", "client_deadline"),
    ("empty", CHAT, True): ("error", "empty_completion"),
    ("empty", CHAT, False): ("error", "empty_completion"),
    ("malformed", CHAT, True): ("error", "malformed_chunk"),
    ("no_finish", CHAT, True): ("error", "missing_finish_reason"),
}
DEADLINE_S = 0.5


@pytest.fixture(scope="module")
def records() -> dict[tuple[str, str, bool], dict]:
    cases = list(CASES)
    with fault_server() as url:
        args = [f"{fault}:{path}:{int(stream)}" for fault, path, stream in cases]
        out = subprocess.run(
            [sys.executable, str(DRIVER), url, str(DEADLINE_S), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    sys.stderr.write(out.stderr)  # checked for ERROR records (tests/server_logs.py)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == len(cases)
    return dict(zip(cases, rows, strict=True))


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: f"{c[0]}-{c[1].rsplit('/', 1)[1]}-{int(c[2])}")
def test_fault_is_classified(records, case):
    rec = records[case]
    assert (rec["outcome"], rec["outcome_detail"]) == CASES[case]


def test_successes_carry_timings_and_token_counts(records):
    streamed = records[("ok", CHAT, True)]
    assert 0 < streamed["ttft_s"] <= streamed["e2e_s"]
    assert streamed["usage_source"] == "server" and streamed["output_tokens"] == 4
    assert streamed["output_tokens_counted"] == 4 and len(streamed["itl_s"]) == 3
    assert streamed["tpot_s"] == pytest.approx((streamed["e2e_s"] - streamed["ttft_s"]) / 3)
    counted = records[("ok_no_usage", CHAT, True)]
    assert counted["usage_source"] == "counted" and counted["output_tokens"] == 4
    body = records[("ok", CHAT, False)]
    assert body["ttft_s"] is None and body["usage_source"] == "server" and body["http_status"] == 200


def test_client_deadline_covers_the_whole_stream(records):
    stalled = records[("stall", CHAT, True)]
    assert stalled["ttft_s"] is not None  # tokens arrived, then the stream stalled
    assert DEADLINE_S <= stalled["e2e_s"] < DEADLINE_S + 0.3


def test_http_errors_keep_status_and_code(records):
    rejected = records[("http_429", CHAT, True)]
    assert (rejected["http_status"], rejected["error_code"]) == (429, "concurrency_limit_exceeded")
    assert rejected["error_message"] == "fake failure"
    assert records[("stream_rejected", CHAT, True)]["http_status"] == 200
