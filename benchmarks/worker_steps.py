"""Where a worker step's time goes: the worker's `BatchRuntime` in this process, on the embedded tiny model,
with every phase timed: mlx-lm's decode step and prompt prefill (from `BatchGenerator.stats()`), the rest
of `generator.next()` (joining prefilled prompts to the batch: a KV-cache merge and a first forward pass),
our per-token work (detokenizer, stop strings, buffering), and pickling the events (the IPC payload);
and each stream's first token: the median and slowest, in ms and in steps from the submit.

    python benchmarks/worker_steps.py [--streams 1 8 32] [--tokens 128] [--config config/runtime.yaml]
        [--prefill-groups 1 2 4 8 16]

`--prefill-groups` first times prefilling a group of that many prompts at once (mlx-lm's generator, one
`next()` call, the median of `--group-repeats` calls): the cost per prompt shows whether grouping pays.

All prompts arrive at once (as the benchmark's closed loop at that many users); figures are per step,
averaged over the run. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from configkit import REPO_ROOT
from server import ipc
from server.ipc import RuntimeOptions
from server.models.embedded import build_embedded_model
from server.settings import load_settings
from server.worker.main import load_text
from server.worker.text_runtime import BatchRuntime

if TYPE_CHECKING:
    import mlx.nn as nn
    from mlx_lm.tokenizer_utils import TokenizerWrapper


@dataclass
class StepTimes:
    steps: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    next_s: float = 0.0
    decode_s: float = 0.0
    prefill_s: float = 0.0
    per_token_s: float = 0.0
    pickle_s: float = 0.0
    payload_bytes: int = 0
    messages: int = 0
    ends: dict = field(default_factory=dict)
    first_token: dict = field(default_factory=dict)  # request id -> (seconds, steps) from the start
    started_s: float = 0.0


def submit(i: int, tokens: int) -> ipc.Submit:
    return ipc.Submit(
        request_id=f"r{i}",
        messages=[{"role": "user", "content": f"Story number {i}. Tell me about a river city at night."}],
        prompt=None,
        max_tokens=tokens,
        temperature=0.0,
        top_p=1.0,
        stop=[],
        ignore_eos=True,
        max_prompt_tokens=4096,
    )


def profile(
    loaded: tuple[nn.Module, TokenizerWrapper], options: RuntimeOptions, streams: int, tokens: int
) -> StepTimes:
    times = StepTimes()

    def send(events: list) -> None:
        started = time.perf_counter()
        payload = pickle.dumps(events)
        times.pickle_s += time.perf_counter() - started
        times.payload_bytes += len(payload)
        times.messages += sum(isinstance(e, ipc.Tokens) for e in events)
        for event in events:
            if isinstance(event, ipc.Tokens) and event.request_id not in times.first_token:
                times.first_token[event.request_id] = (time.perf_counter() - times.started_s, times.steps + 1)

    runtime = BatchRuntime(*loaded, options, send=send)
    generator_next = runtime.generator.next

    def timed_next():
        started = time.perf_counter()
        with runtime.generator.stats() as stats:
            result = generator_next()
        times.next_s += time.perf_counter() - started
        times.decode_s += stats.decode_time
        times.prefill_s += stats.prompt_time
        return result

    runtime.generator.next = timed_next
    started = times.started_s = time.perf_counter()
    for i in range(streams):
        runtime.send_events(runtime.handle(submit(i, tokens)))
    while runtime.sequences or runtime.held:
        step_started = time.perf_counter()
        runtime.send_events(runtime.step())
        times.steps += 1
        times.per_token_s += time.perf_counter() - step_started
    times.wall_s = time.perf_counter() - started
    times.per_token_s -= times.next_s + times.pickle_s  # step() minus next() minus pickling
    times.tokens = streams * tokens
    runtime.generator.close()
    return times


def prefill_ms(model, prompts: list[list[int]], repeats: int) -> float:
    """The median time of the one generator step that prefills all `prompts` together (all but each
    prompt's last token, as mlx-lm's generator does)."""
    from mlx_lm.generate import BatchGenerator

    times = []
    for _ in range(repeats):
        generator = BatchGenerator(model, completion_batch_size=len(prompts), prefill_batch_size=len(prompts))
        generator.insert(prompts, max_tokens=[1] * len(prompts))
        started = time.perf_counter()
        generator.next()
        times.append(time.perf_counter() - started)
        generator.close()
    return 1000 * statistics.median(times)


def print_prefill_groups(loaded: tuple[nn.Module, TokenizerWrapper], sizes: list[int], repeats: int) -> None:
    model, tokenizer = loaded
    prompts = [runtime_tokens(tokenizer, submit(i, 1)) for i in range(max(sizes))]
    tokens = len(prompts[0])
    print(f"\nPrefill of a group of prompts in one step, median of {repeats} ({tokens}-token prompts)\n")
    print("| prompts | ms | ms per prompt |\n|---|---|---|")
    for size in sizes:
        ms = prefill_ms(model, prompts[:size], repeats)
        print(f"| {size} | {ms:.0f} | {ms / size:.0f} |")


def runtime_tokens(tokenizer, sub: ipc.Submit) -> list[int]:
    text = tokenizer.apply_chat_template(sub.messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))


def first_tokens(t: StepTimes) -> str:
    ordered = sorted(t.first_token.values())
    (mid_s, mid_steps), (last_s, last_steps) = ordered[(len(ordered) - 1) // 2], ordered[-1]
    return f"{1000 * mid_s:.0f} ({mid_steps}) / {1000 * last_s:.0f} ({last_steps})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "config" / "runtime.yaml")
    parser.add_argument("--prefill-groups", type=int, nargs="*", default=[], help="group sizes to time")
    parser.add_argument("--group-repeats", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings(args.config, warn=lambda line: None)
    engine = settings.engine
    options = RuntimeOptions(
        max_batch_size=engine.max_batch_size,
        prefill_batch_size=engine.prefill_batch_size,
        prefill_step_size=engine.prefill_step_size,
        decode_batch_cap=engine.decode_batch_cap,
        prefill_wait_ms=engine.prefill_wait_ms,
        prefill_schedule=engine.prefill_schedule,
        early_first_token=engine.early_first_token,
        batch_tokens=settings.streaming.batch_tokens,
        flush_ms=settings.streaming.flush_ms,
    )
    loaded = load_text(str(build_embedded_model()))
    profile(loaded, options, 2, 8)  # warm up
    if args.prefill_groups:
        print_prefill_groups(loaded, args.prefill_groups, args.group_repeats)
    print(f"\n{args.tokens} tokens per stream, all prompts at once; ms per step (share of wall time)\n")
    print(
        "| streams | steps | tok/s | wall ms/step | decode | prefill | join (rest of next) | "
        "per-token Python | pickling | other | Tokens msgs/step | first token p50 / max ms (steps) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for streams in args.streams:
        t = profile(loaded, options, streams, args.tokens)
        join_s = t.next_s - t.decode_s - t.prefill_s
        other_s = t.wall_s - t.next_s - t.per_token_s - t.pickle_s

        def cell(seconds: float, t=t) -> str:
            return f"{1000 * seconds / t.steps:.2f} ({100 * seconds / t.wall_s:.0f}%)"

        print(
            f"| {streams} | {t.steps} | {t.tokens / t.wall_s:.0f} | {1000 * t.wall_s / t.steps:.2f} | "
            f"{cell(t.decode_s)} | {cell(t.prefill_s)} | {cell(join_s)} | {cell(t.per_token_s)} | "
            f"{cell(t.pickle_s)} | {cell(other_s)} | {t.messages / t.steps:.1f} | {first_tokens(t)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
