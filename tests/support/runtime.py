"""The text engine in-process for tests: a BatchRuntime over the tiny model, its events kept in a list."""

from __future__ import annotations

from server.ipc import RuntimeOptions
from server.worker.text_runtime import BatchRuntime


def make_runtime(tiny_llama, **options) -> tuple[BatchRuntime, list]:
    """(runtime, the events it sends): `tiny_llama` is conftest's (model, tokenizer)."""
    events: list = []
    return BatchRuntime(*tiny_llama, RuntimeOptions(**options), send=events.extend), events
