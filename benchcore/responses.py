"""Parse OpenAI-compatible replies (SSE streams and JSON bodies) into counts, timings and an outcome.

Pure code: the caller reads bytes from the network and passes each line with its arrival time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from benchcore import classify
from benchcore.records import Outcome

MAX_ERROR_MESSAGE_CHARS = 200


@dataclass(slots=True)
class ErrorInfo:
    code: str | None
    message: str | None


def error_info(obj: Any) -> ErrorInfo:
    """The code and message of an error object: OpenAI's {"error": {...}}, or a bare string."""
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict):
        code = err.get("code")
        message = err.get("message")
        return ErrorInfo(None if code is None else str(code), _clip(message))
    return ErrorInfo(None, _clip(err))


def error_info_from_bytes(body: bytes) -> ErrorInfo:
    try:
        return error_info(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return ErrorInfo(None, _clip(body.decode("utf-8", "replace")))


def _clip(message: Any) -> str | None:
    if message is None:
        return None
    return str(message)[:MAX_ERROR_MESSAGE_CHARS]


def _has_content(choice: dict[str, Any]) -> bool:
    """Generated output in a choice: chat delta/message content, reasoning, tool calls, or completion text."""
    if choice.get("text"):
        return True
    part = choice.get("delta") or choice.get("message") or {}
    if not isinstance(part, dict):
        return False
    return bool(
        part.get("content")
        or part.get("reasoning_content")
        or part.get("reasoning")
        or part.get("tool_calls")
    )


@dataclass(slots=True)
class StreamParser:
    """Consumes SSE lines of a streamed completion. `feed` returns True once the stream is over."""

    content_chunks: int = 0
    first_content_s: float | None = None
    last_content_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: ErrorInfo | None = None
    done: bool = False
    malformed: bool = False
    _event: bytes = b""

    def feed(self, line: bytes, now_s: float) -> bool:
        line = line.rstrip(b"\r\n")
        if not line:
            self._event = b""  # a blank line ends an SSE event
            return False
        if line[:1] == b":":
            return False  # SSE comment, e.g. ": keepalive"
        name, sep, value = line.partition(b":")
        if not sep or line[:1] in (b"{", b"["):
            return self._data(line, now_s)  # not SSE at all: judged as a payload (error object or malformed)
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            return self._data(value, now_s)
        if name == b"event":
            self._event = value
        return False  # id:, retry: and unknown fields carry nothing we measure

    def _data(self, payload: bytes, now_s: float) -> bool:
        if payload == b"[DONE]":
            self.done = True
            return True
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            self.malformed = True
            return True
        if "error" in obj or self._event == b"error":
            self.error = error_info(obj)
            return True
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
        content = False
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            content = content or _has_content(choice)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if content:
            self._content_at(now_s)
        return False

    def _content_at(self, now_s: float) -> None:
        if self.first_content_s is None:
            self.first_content_s = now_s
        else:
            self.gaps_s.append(now_s - self.last_content_s)
        self.last_content_s = now_s
        self.content_chunks += 1

    def outcome(self) -> tuple[Outcome, str]:
        """The verdict on a stream that ended (by [DONE], an error event, a bad chunk, or end of body)."""
        if self.error is not None:
            return classify.classify_error_event(self.error.code, self.error.message, classify.STREAM_ERROR)
        if self.malformed:
            return "error", classify.MALFORMED_CHUNK
        if not self.done:
            return "error", classify.TRUNCATED_STREAM
        if self.finish_reason is None:
            return "error", classify.MISSING_FINISH_REASON
        if self.content_chunks == 0:
            return "error", classify.EMPTY_COMPLETION
        return "success", classify.OK


@dataclass(slots=True)
class BodyResult:
    """A parsed non-streamed 200 reply."""

    outcome: Outcome
    detail: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: ErrorInfo | None = None


def parse_body(body: bytes) -> BodyResult:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return BodyResult("error", classify.MALFORMED_BODY)
    if not isinstance(obj, dict):
        return BodyResult("error", classify.MALFORMED_BODY)
    if "error" in obj:
        info = error_info(obj)
        outcome, detail = classify.classify_error_event(info.code, info.message, classify.BODY_ERROR)
        return BodyResult(outcome, detail, error=info)
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    choices = [c for c in obj.get("choices") or () if isinstance(c, dict)]
    result = BodyResult(
        "success",
        classify.OK,
        finish_reason=next((c["finish_reason"] for c in choices if c.get("finish_reason")), None),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )
    if not choices:
        result.outcome, result.detail = "error", classify.MALFORMED_BODY
    elif not any(_has_content(c) for c in choices):
        result.outcome, result.detail = "error", classify.EMPTY_COMPLETION
    return result
