"""A prefix cache of KV states across requests, for the text runtime (docs/operations.md, "Prefix cache").

Each entry is the KV cache of one finished (or fully prefilled) sequence, keyed by its tokens. A new prompt
reuses the entry sharing its longest common prefix: the generator is given a view of that entry cut to the
prefix and prefills only the rest. Like mlx_lm.server's LRUPromptCache, a longer entry serves any shorter
prefix of it (plain KV caches trim), so an entry whose tokens are a prefix of a new one is dropped as
redundant. Bounded by entries and bytes, least recently used out first.

Pure bookkeeping plus two helpers that touch mlx-lm cache objects (`reusable`, `view`); no mlx import at
module level, so the data structure is testable on its own.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.ipc import PrefixCacheStats, RuntimeOptions

log = logging.getLogger(__name__)


@dataclass
class Entry:
    tokens: tuple[int, ...]
    kv: list[Any]  # one mlx-lm KVCache per layer, holding exactly len(tokens) positions
    nbytes: int


@dataclass
class Reuse:
    """What a lookup found: `kv` covers the first `cached_tokens` tokens of the prompt."""

    kv: list[Any]
    cached_tokens: int


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix, by bisection over slice comparisons (C speed, not a loop)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class PrefixCache:
    """LRU store of KV caches keyed by token sequences; `lookup` finds the longest reusable prefix."""

    def __init__(self, max_entries: int, max_bytes: int, min_tokens: int = 1):
        if max_entries < 1 or max_bytes < 1 or min_tokens < 1:
            raise ValueError("max_entries, max_bytes and min_tokens must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self.entries: OrderedDict[tuple[int, ...], Entry] = OrderedDict()  # least recently used first
        self.nbytes = 0
        self.hits = self.misses = self.tokens_saved = 0

    def __len__(self) -> int:
        return len(self.entries)

    def stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(self.hits, self.misses, self.tokens_saved, len(self.entries), self.nbytes)

    def lookup(self, tokens: Sequence[int]) -> Reuse | None:
        """The longest cached prefix of `tokens`, at most len(tokens) - 1 long (the generator needs one
        token to compute the first logits from); None, counted as a miss, when under min_tokens."""
        prompt = tuple(tokens)
        best, best_length = None, 0
        for entry in self.entries.values():
            length = common_prefix_length(entry.tokens, prompt)
            if length > best_length:
                best, best_length = entry, length
        best_length = min(best_length, len(prompt) - 1)
        if best is None or best_length < self.min_tokens:
            self.misses += 1
            return None
        self.entries.move_to_end(best.tokens)
        self.hits += 1
        self.tokens_saved += best_length
        return Reuse(view(best.kv, best_length), best_length)

    def store(self, tokens: Sequence[int], kv: list[Any]) -> bool:
        """Keep `kv` (covering exactly `tokens`); returns whether it was kept. Entries that are a prefix
        of it go (it serves them); it is not kept when an entry already extends it or it is too large."""
        key = tuple(tokens)
        nbytes = sum(layer.nbytes for layer in kv)
        if len(key) < self.min_tokens or nbytes > self.max_bytes:
            return False
        for other in list(self.entries):
            if len(other) >= len(key) and other[: len(key)] == key:
                self.entries.move_to_end(other)
                return False
            if other == key[: len(other)]:
                self.drop(other)
        self.entries[key] = Entry(key, kv, nbytes)
        self.nbytes += nbytes
        while len(self.entries) > self.max_entries or self.nbytes > self.max_bytes:
            self.drop(next(iter(self.entries)))
        return True

    def drop(self, key: tuple[int, ...]) -> None:
        self.nbytes -= self.entries.pop(key).nbytes

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0


def reusable(kv: list[Any]) -> bool:
    """Only plain KV caches can be cut to a prefix without copying (rotating or quantized ones cannot)."""
    from mlx_lm.models.cache import KVCache

    return bool(kv) and all(type(layer) is KVCache and layer.keys is not None for layer in kv)


def view(kv: list[Any], length: int) -> list[Any]:
    """New KVCache objects over the same arrays, cut to the first `length` positions. Safe to hand to the
    generator: merging caches into its batch copies them (BatchKVCache.merge), it never writes into them."""
    from mlx_lm.models.cache import KVCache

    out = []
    for layer in kv:
        cut = KVCache()
        cut.keys, cut.values, cut.offset = layer.keys, layer.values, length
        out.append(cut)
    return out


def prefix_cache_for(options: RuntimeOptions) -> PrefixCache | None:
    """The cache the options ask for, or None (off, or engine.max_kv_size set)."""
    if options.prefix_cache_entries <= 0:
        return None
    if options.max_kv_size is not None:
        log.warning("prefix_cache is off: engine.max_kv_size makes rotating KV caches, which cannot be cut")
        return None
    return PrefixCache(
        options.prefix_cache_entries, options.prefix_cache_bytes, options.prefix_cache_min_tokens
    )


def keep_prefixes(cache: PrefixCache, generator, prompt_responses, responses) -> None:
    """Store the KV of each prompt just prefilled (so that requests arriving while it decodes can share
    it) and of each finished sequence (prompt and reply: the next turn's history)."""
    import mlx.core as mx

    prefilled = [r.uid for r in prompt_responses if r.end_of_prompt]
    kept = [(tokens, kv) for kv, tokens in generator.extract_cache(prefilled).values()]
    kept += [(r.all_tokens, r.prompt_cache) for r in responses if r.prompt_cache is not None]
    for tokens, kv in kept:
        if reusable(kv):
            # Copied now, in the background (no sync point in the step): a lazy slice would keep the
            # whole batch's KV buffers alive for as long as the entry lives.
            mx.async_eval([(layer.keys, layer.values) for layer in kv])
            cache.store(tokens, kv)
