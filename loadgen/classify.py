"""Map what came back (HTTP status, the server's error code, the state of a stream) to an outcome.

Outcomes partition every attempted request; `outcome_detail` is a small fixed vocabulary so that
failures group cleanly (Locust groups failures by their text). The table is documented in docs/loadtest.md.
"""

from __future__ import annotations

import re

from runfolder.records import Outcome

# Error codes meaning "the server refused to take the request now" (capacity or readiness).
REJECTION_CODES = frozenset(
    {
        "concurrency_limit_exceeded",
        "server_overloaded",
        "overloaded",
        "queue_full",
        "rate_limit_exceeded",
        "too_many_requests",
        "model_not_ready",
    }
)
# Error codes meaning "the server accepted the request but gave up waiting".
TIMEOUT_CODES = frozenset({"queue_timeout", "timeout", "request_timeout", "deadline_exceeded"})
# mlx-serving v1.1.1 sent both of its limiter refusals under one code, in a 200 stream; only the message
# tells them apart ("... timed out after N ms in queue ..." vs "Concurrency limit reached ...").
SHARED_LIMIT_CODES = frozenset({"model_concurrency_error"})
_TIMEOUT_WORDS = re.compile(r"timed out|timeout", re.IGNORECASE)

# Client-side details (fixed strings).
OK = "ok"
CLIENT_DEADLINE = "client_deadline"
CONNECT_ERROR = "connect_error"
CONNECTION_RESET = "connection_reset"
PROTOCOL_ERROR = "protocol_error"
TRUNCATED_STREAM = "truncated_stream"
MISSING_FINISH_REASON = "missing_finish_reason"
EMPTY_COMPLETION = "empty_completion"  # older run folders: an empty reply was an error then
MALFORMED_CHUNK = "malformed_chunk"
MALFORMED_BODY = "malformed_body"
STREAM_ERROR = "stream_error"
BODY_ERROR = "body_error"
CLIENT_EXCEPTION = "client_exception"  # a bug in the harness; logged with its traceback
# Strict success (docs/loadtest.md, "Outcomes").
EMPTY_REPLY = "empty_reply"  # a success: ended at once with a known finish_reason and no content
SHORT_REPLY = "short_reply"  # --ignore-eos and fewer than max_tokens tokens
USAGE_ABOVE_MAX_TOKENS = "usage_above_max_tokens"
ZERO_USAGE_WITH_CONTENT = "zero_usage_with_content"
UNKNOWN_FINISH_REASON_PREFIX = "finish_reason_"

# OpenAI's finish reasons (and the legacy "function_call"); any other ends a reply in error, e.g. vLLM's
# "abort" or a server's "error"/"cancelled" followed by [DONE].
KNOWN_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_NOT_A_NAME = re.compile(r"[^a-z0-9_]+")
MAX_FINISH_NAME_CHARS = 32


def unknown_finish_reason(finish_reason: str) -> str:
    """`finish_reason_<name>`: names the reason, kept to a short identifier so failures still group."""
    name = _NOT_A_NAME.sub("_", finish_reason.lower()).strip("_")[:MAX_FINISH_NAME_CHARS]
    return UNKNOWN_FINISH_REASON_PREFIX + (name or "unnamed")


def classify_error_code(code: str | None, message: str | None = None) -> Outcome | None:
    """The outcome an error code implies, or None when the code says nothing about capacity."""
    if code in TIMEOUT_CODES:
        return "timeout"
    if code in REJECTION_CODES:
        return "rejected"
    if code in SHARED_LIMIT_CODES:
        return "timeout" if message and _TIMEOUT_WORDS.search(message) else "rejected"
    return None


def classify_http_error(status: int, code: str | None, message: str | None = None) -> tuple[Outcome, str]:
    """A non-2xx reply. A known code wins over the status; 503 without a known code is an error."""
    by_code = classify_error_code(code, message)
    if by_code is not None:
        return by_code, str(code)
    if status == 429:
        return "rejected", "http_429"
    if status in (408, 504):
        return "timeout", f"http_{status}"
    return "error", f"http_{status}"


def classify_error_event(code: str | None, message: str | None, fallback_detail: str) -> tuple[Outcome, str]:
    """An error object inside a 200 reply (an SSE data frame, or a JSON body)."""
    by_code = classify_error_code(code, message)
    if by_code is not None:
        return by_code, str(code)
    return "error", fallback_detail
