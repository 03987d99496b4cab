"""Texts of an exact token count made of one-token words, for blocks that must concatenate exactly.

Tokenizers split at spaces before merging, so words that cost one token after a space keep that cost in
any text: n such words are n tokens alone (when the first also costs one token at the start) and add n
tokens when appended to other text. Shared prefixes and trace blocks rely on that (see ExactPrompts).
"""

from __future__ import annotations

import random

from loadgen.prompts import _WORDS, ExactPrompts


class OneTokenWords:
    """Draws words of one token each; exact with ExactPrompts' measured costs, else plain words."""

    def __init__(self, prompts: object) -> None:
        self.exact = prompts if isinstance(prompts, ExactPrompts) else None
        if self.exact is not None:
            ones = self.exact._by_cost[1]
            self.words = tuple(ones)
            self.firsts = tuple(w for w in ones if self.exact.first_cost[w] == 1) or self.words
        else:
            self.words = self.firsts = _WORDS
        # The chat template's own tokens around a single user message (0 when unknown).
        self.chat_overhead_tokens = self.exact.kinds["chat"].overhead_tokens if self.exact else 0

    @property
    def exact_lengths(self) -> bool:
        return self.exact is not None

    def draw(self, rng: random.Random, n: int, *, first: bool = True) -> list[str]:
        """n words; `first`: the text may start a message (its first word then costs one token too)."""
        if n <= 0:
            return []
        head = rng.choice(self.firsts if first else self.words)
        return [head, *rng.choices(self.words, k=n - 1)]
