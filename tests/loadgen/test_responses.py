"""Unit tests of reading replies: SSE streams and JSON bodies into outcomes, token checks, HTTP errors."""

from __future__ import annotations

import json

import pytest

from loadgen.classify import classify_http_error
from loadgen.responses import StreamParser, clean_text, error_info_from_bytes, judge_tokens, parse_body
from runfolder.records import Outcome
from tests.loadgen.known import known


def _chat(content=None, finish=None) -> bytes:
    delta = {} if content is None else {"content": content}
    return (
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode()
    )


USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}'


def feed(lines: list[bytes]) -> StreamParser:
    parser = StreamParser()
    for t, line in enumerate(lines):
        if parser.feed(line + b"\n", float(t)):
            break
    return parser


# ---- SSE parsing -----------------------------------------------------------------------------------


def test_complete_stream_with_comments_blank_lines_and_usage_is_success():
    lines = [b": keepalive 1/4", b"", b"", _chat(None), b"", _chat("a"), _chat("b"), b"\r", _chat("c")]
    parser = feed([*lines, _chat(None, "length"), USAGE, b"data: [DONE]", _chat("after done")])
    assert parser.outcome() == ("success", "ok")
    assert parser.content_chunks == 3
    assert parser.first_content_s == 5.0  # the role-only chunk at t=3 is not the first token
    assert parser.gaps_s == [1.0, 2.0]
    assert (parser.prompt_tokens, parser.completion_tokens, parser.finish_reason) == (7, 3, "length")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([_chat("a"), _chat(None, "stop")], ("error", "truncated_stream")),
        ([_chat("a"), b"data: [DONE]"], ("error", "missing_finish_reason")),
        ([_chat("a", "abort"), b"data: [DONE]"], ("error", "finish_reason_abort")),
        ([_chat("a", "Cancelled!"), b"data: [DONE]"], ("error", "finish_reason_cancelled")),
        ([_chat(None), b"data: [DONE]"], ("error", "missing_finish_reason")),
        ([_chat("a"), b'data: {"choices": [', b"data: [DONE]"], ("error", "malformed_chunk")),
        ([_chat("a"), b"data: [1, 2]"], ("error", "malformed_chunk")),
        ([_chat("a"), b'data: {"error": {"code": "internal_error"}}'], ("error", "stream_error")),
        (
            [b'data: {"error": {"message": "busy", "code": "concurrency_limit_exceeded"}}'],
            ("rejected", "concurrency_limit_exceeded"),
        ),
        ([_chat("a"), b'data: {"error": {"code": "queue_timeout"}}'], ("timeout", "queue_timeout")),
        ([b"event: error", b'data: {"message": "boom"}'], ("error", "stream_error")),
        ([b'{"error": "plain JSON, no SSE framing"}'], ("error", "stream_error")),
        ([b"<html>bad gateway</html>"], ("error", "malformed_chunk")),
        ([], ("error", "truncated_stream")),
    ],
)
def test_broken_streams_are_never_success(lines, expected):
    assert feed(lines).outcome() == expected


@pytest.mark.parametrize("finish", ["stop", "length", "tool_calls", "content_filter"])
def test_an_immediate_end_with_a_known_finish_reason_is_an_empty_reply(finish):
    parser = feed([_chat(None), _chat(None, finish), USAGE, b"data: [DONE]"])
    assert parser.outcome() == ("success", "empty_reply") and parser.text == ""


def test_completion_text_and_reasoning_count_as_content():
    text = b'data: {"choices": [{"text": "hi", "finish_reason": null}]}'
    reasoning = b'data: {"choices": [{"delta": {"reasoning_content": "hmm"}, "finish_reason": "stop"}]}'
    parser = feed([text, reasoning, b"data: [DONE]"])
    assert parser.outcome() == ("success", "ok")
    assert parser.content_chunks == 2


def test_error_event_keeps_code_and_message():
    parser = feed(
        [b'data: {"error": {"message": "full", "type": "x", "param": null, "code": "queue_timeout"}}']
    )
    error = known(parser.error)
    assert (error.code, error.message) == ("queue_timeout", "full")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 1},
            },
            "ok",
        ),
        ({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]}, "empty_reply"),
        ({"choices": [{"message": {"content": "hi"}}]}, "missing_finish_reason"),
        ({"choices": [{"message": {"content": "hi"}, "finish_reason": "error"}]}, "finish_reason_error"),
        ({"choices": []}, "malformed_body"),
        ({"error": {"code": "concurrency_limit_exceeded"}}, "concurrency_limit_exceeded"),
        ({"error": "no model"}, "body_error"),
    ],
)
def test_non_streamed_bodies(body, expected):
    assert parse_body(json.dumps(body).encode()).detail == expected
    assert parse_body(b"not json").detail == "malformed_body"


def test_stream_keeps_the_text_for_the_tokenizer():
    tool = {"choices": [{"delta": {"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}}]}
    parser = feed([_chat("a "), _chat("b"), b"data: " + json.dumps(tool).encode(), _chat(None, "stop")])
    assert parser.text == "a bf{}" and parser.content_chunks == 3


def judge(
    outcome: Outcome = "success",
    detail: str = "ok",
    *,
    output_tokens: int | None = 8,
    from_server: bool = True,
    has_content: bool = True,
    finish_reason: str | None = "length",
    max_tokens: int | None = 8,
    ignore_eos: bool = False,
) -> tuple[Outcome, str]:
    return judge_tokens(
        outcome,
        detail,
        output_tokens=output_tokens,
        from_server=from_server,
        has_content=has_content,
        finish_reason=finish_reason,
        max_tokens=max_tokens,
        ignore_eos=ignore_eos,
    )


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, ("success", "ok")),
        ({"output_tokens": 9}, ("error", "usage_above_max_tokens")),
        ({"output_tokens": 0}, ("error", "zero_usage_with_content")),
        ({"output_tokens": 7, "finish_reason": "stop"}, ("success", "ok")),
        ({"output_tokens": 7, "ignore_eos": True}, ("error", "short_reply")),
        ({"output_tokens": 8, "ignore_eos": True}, ("success", "ok")),
        ({"output_tokens": 0, "has_content": False, "ignore_eos": True}, ("error", "short_reply")),
        # a tokenizer's re-count is not held to max_tokens; the finish_reason says whether it stopped early
        ({"output_tokens": 11, "from_server": False}, ("success", "ok")),
        ({"output_tokens": 7, "from_server": False, "ignore_eos": True}, ("success", "ok")),
        ({"from_server": False, "ignore_eos": True, "finish_reason": "stop"}, ("error", "short_reply")),
        ({"output_tokens": None, "from_server": False, "ignore_eos": True}, ("success", "ok")),
    ],
)
def test_token_checks_on_a_success(kw, expected):
    assert judge(**kw) == expected


def test_token_checks_leave_failures_alone():
    assert judge("timeout", "client_deadline", output_tokens=99) == ("timeout", "client_deadline")


def test_error_text_that_utf8_cannot_encode_is_cleaned():
    info = error_info_from_bytes(b'{"error": {"message": "bad \\udcff byte", "code": "x\\ud800"}}')
    assert info.message == "bad \ufffd byte" and info.code == "x\ufffd"
    assert error_info_from_bytes(b"<p>\xff</p>").message == "<p>\ufffd</p>"
    assert clean_text("plain") == "plain"


# ---- classification of HTTP errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, "concurrency_limit_exceeded", ("rejected", "concurrency_limit_exceeded")),
        (429, None, ("rejected", "http_429")),
        (503, "queue_timeout", ("timeout", "queue_timeout")),
        (503, "server_overloaded", ("rejected", "server_overloaded")),
        (503, "model_not_ready", ("rejected", "model_not_ready")),
        (503, None, ("error", "http_503")),
        (504, None, ("timeout", "http_504")),
        (408, "whatever", ("timeout", "http_408")),
        (500, "internal_error", ("error", "http_500")),
        (400, "invalid_request", ("error", "http_400")),
    ],
)
def test_http_error_classification(status, code, expected):
    assert classify_http_error(status, code) == expected


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        (
            "Concurrency limit reached for m (tier: <3B, active: 25/25, queued: 120/120). Please retry.",
            "rejected",
        ),
        ("Request r1 timed out after 30000 ms in queue waiting for concurrency slot (model: m)", "timeout"),
    ],
)
def test_v111_shared_in_stream_code_is_split_by_its_message(message, outcome):
    err = {
        "error": {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": "model_concurrency_error",
        }
    }
    parser = feed([b"data: " + json.dumps(err).encode()])
    assert parser.outcome() == (outcome, "model_concurrency_error")
