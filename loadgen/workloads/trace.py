"""Mooncake trace replay (--arrival trace --trace FILE [--trace-time-scale X] [--trace-block-tokens B]).

A trace is JSONL, one request per line: {"timestamp": ms since the trace's start, "input_length": prompt
tokens, "output_length": reply tokens, "hash_ids": [block ids]} (Mooncake's format, also read by AIPerf
and GuideLLM). Replayed open loop: line i is due at start + (timestamp_i - timestamp_0) / 1000 x scale
(scale 0.5 replays twice as fast). Each hash id stands for one block of B prompt tokens (Mooncake: 512):
equal ids become equal word blocks, so two requests share exactly the prefix the trace says they share
and a prefix cache hits where the trace had hits. The last block is cut to the prompt's length; blocks
missing from hash_ids are filled with words unique to the line. With an exact counter the prompt counts
`input_length` tokens as the server counts a chat prompt (template included); max_tokens is output_length.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.prompts import Prompt, PromptError, json_object
from loadgen.workloads.words import OneTokenWords

DEFAULT_BLOCK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class TraceEntry:
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def _int(where: str, obj: dict[str, Any], key: str, minimum: int) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PromptError(f'{where}: "{key}" must be an integer >= {minimum}')
    return value


def _entry(where: str, line: str) -> TraceEntry:
    obj = json_object(where, line)
    ts = obj.get("timestamp")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts) or ts < 0:
        raise PromptError(f'{where}: "timestamp" must be a number of milliseconds >= 0')
    hash_ids = obj.get("hash_ids", [])
    if not isinstance(hash_ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in hash_ids
    ):
        raise PromptError(f'{where}: "hash_ids" must be a list of integers')
    return TraceEntry(
        float(ts), _int(where, obj, "input_length", 1), _int(where, obj, "output_length", 1), tuple(hash_ids)
    )


def read_trace(path: str | Path) -> list[TraceEntry]:
    """Every line of a trace, in file order; timestamps must not go back (a replay is in order)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"--trace {path}: {exc.strerror}") from None
    entries: list[TraceEntry] = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        entry = _entry(f"--trace {path}:{no}", line)
        if entries and entry.timestamp_ms < entries[-1].timestamp_ms:
            raise PromptError(f"--trace {path}:{no}: timestamp goes back in time (the file must be in order)")
        entries.append(entry)
    if not entries:
        raise PromptError(f"--trace {path}: no requests")
    return entries


def due_times(entries: list[TraceEntry], start_ts_s: float, time_scale: float) -> list[float]:
    t0 = entries[0].timestamp_ms
    return [start_ts_s + (e.timestamp_ms - t0) / 1000 * time_scale for e in entries]


def trace_rate_per_s(entries: list[TraceEntry], time_scale: float) -> float | None:
    """The trace's mean arrival rate as replayed (lines per second of its span), None for one line."""
    span_s = (entries[-1].timestamp_ms - entries[0].timestamp_ms) / 1000 * time_scale
    return (len(entries) - 1) / span_s if span_s > 0 else None


class TraceSchedule:
    """The due times of one process's share of the trace: lines shard, shard + shards, ..."""

    def __init__(
        self,
        entries: list[TraceEntry],
        start_ts_s: float,
        time_scale: float,
        *,
        shard: int = 0,
        shards: int = 1,
    ) -> None:
        self._times = due_times(entries, start_ts_s, time_scale)
        self._indices = list(range(shard, len(entries), shards))
        self._count = 0

    def next_due(self) -> float:
        """The next line's due time; after the last one, never (the user then waits for the stop)."""
        k = self._count
        self._count += 1
        return self._times[self._indices[k]] if k < len(self._indices) else math.inf

    def entry_index(self, claimed: int) -> int | None:
        """The trace line of this process's slot number `claimed` (0-based), None past the end."""
        return self._indices[claimed] if claimed < len(self._indices) else None

    def skip_until(self, ts_s: float) -> int:
        skipped = 0
        while self._count < len(self._indices) and self._times[self._indices[self._count]] < ts_s:
            self._count += 1
            skipped += 1
        return skipped

    @property
    def claimed(self) -> int:
        return self._count


def trace_due_slots(
    entries: list[TraceEntry],
    start_ts_s: float,
    time_scale: float,
    window_start_s: float,
    window_end_s: float,
) -> int:
    return sum(1 for t in due_times(entries, start_ts_s, time_scale) if window_start_s <= t < window_end_s)


class TracePrompts:
    """The prompt of each trace line, built from its blocks when first asked for (no I/O: no yield)."""

    def __init__(
        self, entries: list[TraceEntry], prompts: object, *, seed: int = 0, block_tokens: int
    ) -> None:
        if block_tokens < 1:
            raise PromptError("--trace-block-tokens must be at least 1")
        self.entries, self.block_tokens, self.seed = entries, block_tokens, seed
        self.words = OneTokenWords(prompts)
        self.length_method = getattr(prompts, "length_method", "words")
        self._blocks: dict[int, list[str]] = {}
        self._built: dict[int, Prompt] = {}

    def _block(self, hash_id: int, first: bool) -> list[str]:
        key = hash_id if not first else -1 - hash_id  # a first block must start with a first-position word
        if key not in self._blocks:
            rng = random.Random(f"trace-{self.seed}-block-{hash_id}")
            self._blocks[key] = self.words.draw(rng, self.block_tokens, first=first)
        return self._blocks[key]

    def at(self, index: int) -> Prompt:
        if index not in self._built:
            self._built[index] = self._make(index)
        return self._built[index]

    def _make(self, index: int) -> Prompt:
        entry = self.entries[index]
        # Tokens of the message text: the server's count of the chat prompt minus the template's own.
        tokens = max(1, entry.input_length - self.words.chat_overhead_tokens)
        words: list[str] = []
        for b in range(math.ceil(tokens / self.block_tokens)):
            need = min(self.block_tokens, tokens - b * self.block_tokens)
            if b < len(entry.hash_ids):
                words += self._block(entry.hash_ids[b], first=b == 0)[:need]
            else:  # no hash id for this block: words of this line alone, shared with no other request
                rng = random.Random(f"trace-{self.seed}-line-{index}-block-{b}")
                words += self.words.draw(rng, need, first=b == 0)
        text = " ".join(words)
        return Prompt(
            [{"role": "user", "content": text}],
            text,
            target_tokens=entry.input_length,
            max_tokens=entry.output_length,
        )

    def draw(self, rng: random.Random) -> Prompt:
        """Outside a replay (a slot without a line): a line at random."""
        return self.at(rng.randrange(len(self.entries)))
