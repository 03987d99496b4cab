"""From generated tokens to reply text: each sequence's detokenizer, stop strings and buffering.

Text goes back to the HTTP process in buffers (first token at once, then every `batch_tokens` tokens or
`flush_ms`), so IPC costs a message per buffer instead of a message per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from server import ipc


class StopStringMatcher:
    """Finds stop strings in streamed text, holding back just enough text to never leak a partial one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold_chars = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; returns (text safe to send, whether a stop string was found)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        cut = max(len(self.pending) - self.hold_chars, 0)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class Sequence:
    """A request in the generator: what its reply has produced and sent so far."""

    request_id: str
    uid: int
    prompt_tokens: int
    detokenizer: Any
    stops: StopStringMatcher
    ignore_eos: bool = False
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache
    completion_tokens: int = 0
    buffered_text: str = ""
    buffered_tokens: int = 0
    sent_first: bool = False
    last_flush_s: float = field(default_factory=time.perf_counter)
    # The first token, taken when the prompt's prefill ended (engine.early_first_token); the generator
    # returns it once more at its next step, where it is not counted again.
    early_token: int | None = None

    @property
    def has_first_token(self) -> bool:
        return self.completion_tokens > 0


class ReplyStreaming:
    """The part of the runtime that turns each sequence's tokens into `Tokens` and `Finished` events.

    Needs from the runtime: `options` (batch_tokens, flush_ms), `eos_ids`, `generator`, `sequences`
    and `uid_by_request`."""

    options: Any
    eos_ids: set[int]
    generator: Any
    sequences: dict[int, Sequence]
    uid_by_request: dict[str, int]

    def advance(self, seq: Sequence, token: int, finish_reason: str | None, now: float, events: list) -> None:
        repeated = seq.early_token is not None  # this token went out already, when the prefill ended
        seq.early_token = None
        if repeated and finish_reason is None:
            return
        stopped = False
        # The EOS token ends the sequence but is not text: it never reaches the detokenizer.
        if not repeated and not (finish_reason == "stop" and token in self.eos_ids):
            seq.completion_tokens += 1
            seq.buffered_tokens += 1
            seq.detokenizer.add_token(token)
            stopped = self.take_text(seq, seq.detokenizer.last_segment)
        if stopped and finish_reason is None:
            self.generator.remove([seq.uid])
            finish_reason = "stop"
        if finish_reason is None:
            due = (now - seq.last_flush_s) * 1000.0 >= self.options.flush_ms
            if not seq.sent_first or seq.buffered_tokens >= self.options.batch_tokens or due:
                self.flush(seq, now, events)
            return
        if not stopped:
            seq.detokenizer.finalize()
            if not self.take_text(seq, seq.detokenizer.last_segment):
                seq.buffered_text += seq.stops.flush()
        self.flush(seq, now, events)
        events.append(
            ipc.Finished(
                seq.request_id, finish_reason, seq.prompt_tokens, seq.completion_tokens, seq.cached_tokens
            )
        )
        self.sequences.pop(seq.uid, None)
        self.uid_by_request.pop(seq.request_id, None)

    @staticmethod
    def take_text(seq: Sequence, text: str) -> bool:
        """Buffer new text up to any stop string; returns whether a stop string was found."""
        safe, stopped = seq.stops.feed(text)
        seq.buffered_text += safe
        return stopped

    def flush(self, seq: Sequence, now: float, events: list) -> None:
        if seq.buffered_tokens or seq.buffered_text:
            events.append(ipc.Tokens(seq.request_id, seq.buffered_text, seq.buffered_tokens))
            seq.sent_first = True
        seq.buffered_text, seq.buffered_tokens, seq.last_flush_s = "", 0, now
