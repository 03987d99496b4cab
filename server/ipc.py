"""Messages between the HTTP process and a model worker process.

NamedTuples because they pickle small and fast: each crosses a process boundary.
"""

from __future__ import annotations

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
