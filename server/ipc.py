"""Messages between the HTTP process and a model worker process.

NamedTuples because they pickle small and fast: each crosses a process boundary. RuntimeOptions, sent
once when the worker starts, is a dataclass with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Submit(NamedTuple):
    request_id: str
    # Either chat `messages` (the worker applies the model's chat template) or a raw `prompt`.
    messages: list[dict[str, Any]] | None
    prompt: str | list[int] | None
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    ignore_eos: bool
    max_prompt_tokens: int
    # Encoded image bytes, validated by the HTTP process; one per {"type": "image"} part, in order.
    images: tuple[bytes, ...] = ()


class Cancel(NamedTuple):
    request_id: str


class Shutdown(NamedTuple):
    pass


class Ready(NamedTuple):
    model_path: str
    parameter_count: int
    context_length: int | None


class Started(NamedTuple):
    """The prompt is tokenized and accepted into the batch."""

    request_id: str
    prompt_tokens: int


class Tokens(NamedTuple):
    request_id: str
    text: str
    token_count: int


class Finished(NamedTuple):
    request_id: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (not prefilled)


class Failed(NamedTuple):
    request_id: str
    status: int
    code: str
    message: str
    param: str | None = None


class PrefixCacheStats(NamedTuple):
    """The worker's prefix cache: counters since it started, and its current size."""

    hits: int = 0  # lookups that reused at least prefix_cache.min_tokens tokens
    misses: int = 0
    tokens_saved: int = 0  # prompt tokens not prefilled thanks to hits
    entries: int = 0
    bytes: int = 0


class BatchStats(NamedTuple):
    sequences: int  # in the generator: decoding, prefilling or waiting for a batch slot
    decoding: int  # decoded in the latest decode step (the batch size of that step)
    held: int  # admitted but held back by `mlx.concurrency_limit` (serialized generation)
    decode_steps: int
    waiting: int = 0  # without a first token yet (prefilling, or queued for a slot under the decode cap)
    prefix_cache: PrefixCacheStats | None = None  # None: no prefix cache in this worker


class WorkerError(NamedTuple):
    """The worker could not start (bad model, load failure); the server reports it and exits."""

    message: str


Event = Started | Tokens | Finished | Failed


@dataclass
class RuntimeOptions:
    """What the worker needs from the settings (a plain record: it crosses the process boundary)."""

    max_batch_size: int = 32
    prefill_batch_size: int = 32
    prefill_step_size: int = 2048
    max_kv_size: int | None = None
    batch_tokens: int = 16
    flush_ms: float = 20.0
    # Scheduling (docs/operations.md, "Scheduling"): at most `decode_batch_cap` sequences in the generator
    # (None: max_batch_size); "auto" measures the throughput-optimal size at start. The rest wait in the
    # worker's FIFO. While others decode, arrivals are held up to `prefill_wait_ms` to prefill together.
    decode_batch_cap: int | str | None = None
    prefill_wait_ms: float = 0.0
    # "split": one prompt group in prefill at a time, a burst in two groups; "mlx": mlx-lm's own grouping.
    prefill_schedule: str = "split"
    # A prompt's first token sent at the end of the step that finished its prefill, not a step later.
    early_first_token: bool = True
    # v1.1.1 behaviours, off by default: at most N sequences generating at once; a device sync per step.
    concurrency_limit: int | None = None
    force_sync: bool = False
    # False reproduces mlx-engine as the guide describes it (a process per request): the model is loaded
    # when a request starts with nothing running and dropped once nothing runs, so each request pays a load.
    persistent: bool = True
    # Prefix cache (docs/operations.md, "Prefix cache"): 0 entries turns it off.
    prefix_cache_entries: int = 0
    prefix_cache_bytes: int = 256 << 20
    prefix_cache_min_tokens: int = 4
    # testing.slowdown_pct: each engine step made this much longer on purpose (0: off).
    slowdown_pct: float = 0.0
