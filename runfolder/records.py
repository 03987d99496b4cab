"""One typed record per attempted request: what the load generator measured, with units in the names."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

# "cut": still in flight when the run ended (Locust stopped the user); counted, never dropped.
Outcome = Literal["success", "rejected", "timeout", "error", "cut"]
OUTCOMES: tuple[Outcome, ...] = ("success", "rejected", "timeout", "error", "cut")
CUT_DETAIL = "run_ended"
# How output_tokens is known: the server's usage, the run's tokenizer on the reply's text, or not at all.
# ("counted", in run folders written before the tokenizer count, meant content chunks.)
UsageSource = Literal["server", "tokenizer", "none", "counted"]


@dataclass(slots=True)
class RequestRecord:
    """The result of one real request. Durations are measured from `scheduled_ts_s` (see docs/loadtest.md)."""

    scenario: str
    stream: bool
    # Wall-clock epoch seconds: when the request was due, when it went out, when its outcome was known.
    scheduled_ts_s: float
    sent_ts_s: float
    end_ts_s: float
    schedule_lag_s: float
    e2e_s: float
    outcome: Outcome
    outcome_detail: str
    ttft_s: float | None = None
    tpot_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    prompt_tokens_target: int | None = None
    max_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_counted: int | None = None
    usage_source: UsageSource = "none"
    finish_reason: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    response_bytes: int = 0
    worker_id: str = "local"
    user_id: int = 0
    # ---- timing additions ----
    # schedule -> first byte of the response (headers), beside TTFT (first content chunk).
    ttfb_s: float | None = None
    # ---- token-count additions ----
    # Content chunks of a stream (a server may pack several tokens into one); output_tokens_counted is the
    # reply's text re-tokenized by the run's tokenizer.
    output_chunks: int | None = None
    # ---- workload additions ----
    # Multi-turn scenarios: which conversation (unique within the run) and which turn of it (1 = first).
    conversation_id: str | None = None
    turn_index: int | None = None
    # Index of the shared system prompt the request began with (--shared-prefixes), None without one.
    shared_prefix_id: int | None = None
    # Prompt tokens the server served from its cache (usage.prompt_tokens_details.cached_tokens);
    # None when the server did not report it (not the same as 0).
    cached_tokens: int | None = None
    # ---- output checks (--check-outputs; loadgen/output_check.py) ----
    # Which check prompt was sent; the verdict on a success against that prompt's reply alone (identical,
    # diverged, empty, truncated, overlong, foreign; None: not checked); where the reply first differs,
    # in characters and (with a local tokenizer, both texts re-tokenized) in tokens.
    output_check_prompt: int | None = None
    output_check: str | None = None
    output_first_diff_chars: int | None = None
    output_first_diff_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        # Unknown keys are ignored so that a newer writer's extra fields do not break an older reader.
        return cls(**{name: data[name] for name in FIELD_NAMES if name in data})


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
