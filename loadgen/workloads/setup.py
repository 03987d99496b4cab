"""Where the workloads plug into the load generator: file checks at start-up, prompt sources and the
shared-prefix pool before the clock, and the trace's schedule, due slots and rate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.prompts import PromptError, PromptSource
from loadgen.workloads.dataset import DatasetPrompts, read_dataset
from loadgen.workloads.shared_prefix import PrefixPool, build_pool
from loadgen.workloads.trace import (
    TraceEntry,
    TracePrompts,
    TraceSchedule,
    read_trace,
    trace_due_slots,
    trace_rate_per_s,
)

if TYPE_CHECKING:  # type-only: loadgen.options imports the workloads' options
    from loadgen.options import LoadSettings
    from loadgen.tokens import TokenCounter


log = logging.getLogger(__name__)


def check_files(settings: LoadSettings) -> None:
    """Parse --trace and --dataset at start-up, so that a bad file exits 2 before anything is sent."""
    if settings.trace:
        read_trace(settings.trace)
    if settings.dataset:
        read_dataset(Path(settings.dataset))


def class_problems(user_classes: list[type], settings: LoadSettings) -> list[str]:
    """What the selected scenarios say about the options (a class's `option_problems(settings)`)."""
    out: list[str] = []
    for cls in user_classes:
        check = getattr(cls, "option_problems", None)
        if check is not None:
            out += check(settings)
    return out


def build(
    settings: LoadSettings, counter: TokenCounter | None, prompts: PromptSource
) -> tuple[PromptSource, PrefixPool | None]:
    """The run's prompt source (a dataset or a trace replaces the synthetic one) and the prefix pool."""
    limit = getattr(counter, "max_model_len", None)
    base = prompts  # the synthetic source: its measured word costs make the exact blocks and prefixes
    if settings.dataset:
        dataset = DatasetPrompts(
            Path(settings.dataset), settings.dataset_mode, counter, settings.dataset_limit
        )
        _fit_dataset(dataset, limit, settings.max_tokens)
        prompts = dataset
    elif settings.trace:
        entries = read_trace(settings.trace)
        worst = max(entries, key=lambda e: e.input_length + e.output_length)
        if limit and worst.input_length + worst.output_length > limit:
            raise PromptError(
                f"--trace {settings.trace}: a request of {worst.input_length} + {worst.output_length} tokens "
                f"exceeds the model's context of {limit} tokens (max_model_len)"
            )
        prompts = TracePrompts(entries, prompts, seed=settings.seed, block_tokens=settings.trace_block_tokens)
    return prompts, build_pool(settings, base, counter)


def _fit_dataset(prompts: DatasetPrompts, limit: int | None, default_max_tokens: int) -> None:
    """Drop the requests longer than the model's context (as vLLM's dataset loaders do); none left: exit 2."""
    if not limit:
        return
    fits = [
        p for p in prompts.prompts if (p.target_tokens or 0) + (p.max_tokens or default_max_tokens) <= limit
    ]
    if len(fits) < len(prompts.prompts):
        log.warning(
            "--dataset %s: %d of %d requests exceed the model's context of %d tokens and are left out",
            prompts.path, len(prompts.prompts) - len(fits), len(prompts.prompts), limit,
        )  # fmt: skip
    if not fits:
        raise PromptError(f"--dataset {prompts.path}: no request fits the model's context of {limit} tokens")
    prompts.prompts = fits


def _trace_entries(settings: LoadSettings) -> list[TraceEntry]:
    """The --trace file's lines; the trace functions below are called only when --trace is set."""
    if not settings.trace:
        raise PromptError("--trace is not set")
    return read_trace(settings.trace)


def schedule(settings: LoadSettings, start_ts_s: float, shard: int, shards: int) -> TraceSchedule:
    return TraceSchedule(
        _trace_entries(settings), start_ts_s, settings.trace_time_scale, shard=shard, shards=shards
    )


def due_slots(settings: LoadSettings, start_ts_s: float, window_start_s: float, window_end_s: float) -> int:
    entries = _trace_entries(settings)
    return trace_due_slots(entries, start_ts_s, settings.trace_time_scale, window_start_s, window_end_s)


def rate_per_s(settings: LoadSettings) -> float | None:
    return trace_rate_per_s(_trace_entries(settings), settings.trace_time_scale)
