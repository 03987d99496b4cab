"""Parse OpenAI-compatible replies (SSE streams and JSON bodies) into counts, timings and an outcome.

Pure code: the caller reads bytes from the network and passes each line with its arrival time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from loadgen import classify
from runfolder.records import Outcome

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
        return ErrorInfo(None if code is None else _clip(code), _clip(message))
    return ErrorInfo(None, _clip(err))


def error_info_from_bytes(body: bytes) -> ErrorInfo:
    try:
        return error_info(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return ErrorInfo(None, _clip(body.decode("utf-8", "replace")))


def _clip(message: Any) -> str | None:
    if message is None:
        return None
    return clean_text(str(message))[:MAX_ERROR_MESSAGE_CHARS]


def clean_text(text: str) -> str:
    """Text that any UTF-8 writer accepts: JSON's "\\udcff" escapes decode to lone surrogates, which
    cannot be encoded and would make the run folder unwritable; each becomes U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _content_text(choice: dict[str, Any]) -> str:
    """Generated output in a choice: chat delta/message content, reasoning, tool calls, or completion text.

    Tool calls count by their name and argument text (what a tokenizer would see)."""
    parts: list[str] = []
    if isinstance(choice.get("text"), str):
        parts.append(choice["text"])
    part = choice.get("delta") or choice.get("message") or {}
    if isinstance(part, dict):
        for key in ("reasoning_content", "reasoning", "content"):
            if isinstance(part.get(key), str):
                parts.append(part[key])
        for call in part.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                parts.extend(str(function.get(k) or "") for k in ("name", "arguments"))
    return "".join(parts)


def _finish_reason(value: Any) -> str | None:
    return None if value is None or value == "" else _clip(value)


def judge_end(finish_reason: str | None, has_content: bool) -> tuple[Outcome, str]:
    """A reply that ended normally ([DONE], or a whole body): a known finish_reason, then content.

    An immediate end with a known finish_reason is a valid answer with zero output tokens (a model may
    emit EOS first): a success of its own detail, `empty_reply`, counted apart in the summary.
    """
    if finish_reason is None:
        return "error", classify.MISSING_FINISH_REASON
    if finish_reason not in classify.KNOWN_FINISH_REASONS:
        return "error", classify.unknown_finish_reason(finish_reason)
    if not has_content:
        return "success", classify.EMPTY_REPLY
    return "success", classify.OK


@dataclass(slots=True)
class StreamParser:
    """Consumes SSE lines of a streamed completion. `feed` returns True once the stream is over."""

    content_chunks: int = 0
    text_parts: list[str] = field(default_factory=list)
    first_content_s: float | None = None
    last_content_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
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
            self.cached_tokens = cached_tokens(usage, self.cached_tokens)
        content = False
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            text = _content_text(choice)
            if text:
                content = True
                self.text_parts.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = _finish_reason(choice["finish_reason"])
        if content:
            self._content_at(now_s)
        return False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def _content_at(self, now_s: float) -> None:
        if self.first_content_s is None:
            self.first_content_s = now_s
        elif self.last_content_s is not None:
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
        return judge_end(self.finish_reason, self.content_chunks > 0)


@dataclass(slots=True)
class BodyResult:
    """A parsed non-streamed 200 reply, held to the same rules as a stream."""

    outcome: Outcome
    detail: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: ErrorInfo | None = None
    text: str = ""
    cached_tokens: int | None = None


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
    raw_usage = obj.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    choices = [c for c in obj.get("choices") or () if isinstance(c, dict)]
    if not choices:
        return BodyResult("error", classify.MALFORMED_BODY)
    finish = next((c["finish_reason"] for c in choices if c.get("finish_reason")), None)
    text = "".join(_content_text(c) for c in choices)
    outcome, detail = judge_end(_finish_reason(finish), bool(text))
    return BodyResult(
        outcome,
        detail,
        finish_reason=_finish_reason(finish),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        text=text,
        cached_tokens=cached_tokens(usage),
    )


def cached_tokens(usage: dict[str, Any], default: int | None = None) -> int | None:
    """usage.prompt_tokens_details.cached_tokens (OpenAI's, mlx_lm.server's); `default` when absent,
    so a server without a prefix cache reads as "not reported", never as 0."""
    details = usage.get("prompt_tokens_details")
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def judge_tokens(
    outcome: Outcome,
    detail: str,
    *,
    output_tokens: int | None,
    from_server: bool,
    has_content: bool,
    finish_reason: str | None,
    max_tokens: int | None,
    ignore_eos: bool,
) -> tuple[Outcome, str]:
    """The token checks on a reply that passed `judge_end` (see docs/loadtest.md, "Outcomes").

    The server's usage is held exactly to max_tokens; a count made by re-tokenizing the text is not
    (a model's token sequence need not be the one its tokenizer makes of the same text), so without usage
    only the finish_reason can say a fixed-length reply ended early.
    """
    if outcome != "success":
        return outcome, detail
    if from_server and output_tokens is not None:
        if max_tokens is not None and output_tokens > max_tokens:
            return "error", classify.USAGE_ABOVE_MAX_TOKENS
        if output_tokens == 0 and has_content:
            return "error", classify.ZERO_USAGE_WITH_CONTENT
    if ignore_eos and max_tokens is not None:
        if from_server and output_tokens is not None:
            short = output_tokens < max_tokens
        else:
            short = finish_reason != "length"
        if short or not has_content:
            return "error", classify.SHORT_REPLY
    return outcome, detail
