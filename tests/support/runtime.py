"""The text engine in-process for tests: a BatchRuntime over the tiny model, its events kept in a list."""

from __future__ import annotations

from typing import Any

from server import ipc
from server.ipc import RuntimeOptions
from server.worker.text_runtime import BatchRuntime


def make_runtime(tiny_llama: tuple[Any, Any], **options: Any) -> tuple[BatchRuntime, list[Any]]:
    """(runtime, the events it sends): `tiny_llama` is conftest's (model, tokenizer)."""
    events: list[Any] = []
    model, tokenizer = tiny_llama
    return BatchRuntime(model, tokenizer, RuntimeOptions(**options), send=events.extend), events


def greedy_submit(request_id: str, messages: list[dict], max_tokens: int) -> ipc.Submit:
    """A fixed-length greedy request (temperature 0, ignore_eos): the same prompt gives the same tokens."""
    return ipc.Submit(
        request_id=request_id,
        messages=messages,
        prompt=None,
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        stop=[],
        ignore_eos=True,
        max_prompt_tokens=4096,
    )
