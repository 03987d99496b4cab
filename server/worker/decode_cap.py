"""engine.decode_batch_cap: auto: decode throughput timed at start per batch size, and the cap chosen from it.

Runs once, when the worker starts, on the model it serves; vision models are not calibrated."""

from __future__ import annotations

import time
from dataclasses import dataclass

from server.ipc import RuntimeOptions

# Batch sizes tried by engine.decode_batch_cap: auto (up to max_batch_size, which is always tried).
CALIBRATION_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Sizes whose decode throughput is within this fraction of the best count as equally good; the smallest
# of them is the cap: more sequences in the batch would add no throughput, only time per token for every
# one of them. Past capacity that is what lets admitted requests finish before their clients give up
# (measured: README "Benchmark", the decode batch cap past capacity).
CALIBRATION_TOLERANCE = 0.05
# Each size decodes for at least this long (and at least CALIBRATION_MIN_STEPS steps) to be timed.
CALIBRATION_WINDOW_S = 0.15
CALIBRATION_MIN_STEPS = 4
CALIBRATION_PROMPT = "Calibrate decoding."


@dataclass
class Calibration:
    """Decode throughput measured at start, per batch size, and the cap chosen from it."""

    tok_s_by_size: dict[int, float]
    cap: int

    def describe(self) -> str:
        sizes = ", ".join(f"{size}: {tok_s:.0f}" for size, tok_s in self.tok_s_by_size.items())
        return f"decode tok/s by batch size {{{sizes}}}"


def choose_decode_cap(tok_s_by_size: dict[int, float], tolerance: float = CALIBRATION_TOLERANCE) -> int:
    """The smallest batch size whose decode throughput is within `tolerance` of the best one measured."""
    best = max(tok_s_by_size.values())
    return min(size for size, tok_s in tok_s_by_size.items() if tok_s >= (1.0 - tolerance) * best)


def calibration_sizes(max_batch_size: int) -> list[int]:
    return sorted({size for size in CALIBRATION_SIZES if size < max_batch_size} | {max_batch_size})


def measure_decode_tok_s(
    model, prompt: list[int], sizes: list[int], prefill_batch_size: int
) -> dict[int, float]:
    """Steady decode throughput at each batch size, prefill excluded: one generator, grown size by size,
    so that each prompt is prefilled once."""
    from mlx_lm.generate import BatchGenerator

    generator = BatchGenerator(
        model, completion_batch_size=max(sizes), prefill_batch_size=min(max(sizes), prefill_batch_size)
    )
    measured: dict[int, float] = {}
    running = 0
    try:
        for size in sizes:
            generator.insert([prompt] * (size - running), max_tokens=[1 << 20] * (size - running))
            running = size
            for _ in range(4 * size + 8):  # bounded: joining takes ceil(new / prefill_batch_size) + 2 steps
                if len(generator.next()[1]) == size:
                    break
            started, steps, tokens = time.perf_counter(), 0, 0
            while steps < CALIBRATION_MIN_STEPS or time.perf_counter() - started < CALIBRATION_WINDOW_S:
                tokens += len(generator.next()[1])
                steps += 1
            measured[size] = tokens / (time.perf_counter() - started)
    finally:
        generator.close()
    return measured


def calibrate_decode_cap(model, tokenizer, options: RuntimeOptions) -> Calibration:
    """Time decode steps at each batch size up to max_batch_size on this machine, now (about a second
    or two for the tiny model). Text models only: mlx-lm's generator does the timing."""
    prompt = list(tokenizer.encode(CALIBRATION_PROMPT))
    sizes = calibration_sizes(options.max_batch_size)
    measured = measure_decode_tok_s(model, prompt, sizes, options.prefill_batch_size)
    return Calibration(measured, choose_decode_cap(measured))
