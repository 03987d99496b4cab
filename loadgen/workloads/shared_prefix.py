"""Shared prefixes (--shared-prefixes K --shared-prefix-tokens L --shared-prefix-share F): a pool of K
system prompts of exactly L tokens (their text alone, as `count_text` counts it); a share F of the
requests (of the conversations, in multi-turn scenarios) begins with one of them, picked at random.

The pool is seeded by --seed alone, so every load-generator process (and every profile of a campaign)
builds the same K texts: a server's prefix cache can then hit across users and processes.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loadgen.workloads.words import OneTokenWords

if TYPE_CHECKING:  # type-only: loadgen.options imports the workloads' options
    from loadgen.options import LoadSettings
    from loadgen.tokens import TokenCounter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PrefixPool:
    texts: tuple[str, ...]
    share: float

    def pick(self, rng: random.Random) -> int | None:
        """The index of the prefix to use, or None (no shared prefix for this request)."""
        if not self.texts or rng.random() >= self.share:
            return None
        return rng.randrange(len(self.texts))

    def apply(self, body: dict[str, Any], prefix_id: int) -> dict[str, Any]:
        """The body with the prefix in front: a system message (chat) or text before the prompt."""
        text = self.texts[prefix_id]
        if "messages" in body:
            return {**body, "messages": [{"role": "system", "content": text}, *body["messages"]]}
        if isinstance(body.get("prompt"), str):
            return {**body, "prompt": f"{text} {body['prompt']}"}
        return body


def build_pool(settings: LoadSettings, prompts: object, counter: TokenCounter | None) -> PrefixPool | None:
    """K texts of L tokens; each checked with the run's token counter (K counts) when there is one."""
    k, length = settings.shared_prefixes, settings.shared_prefix_tokens
    if not k:
        return None
    words = OneTokenWords(prompts)
    rng = random.Random(f"shared-prefix-{settings.seed}")
    texts = []
    for i in range(k):
        text = " ".join(words.draw(rng, length))
        if counter is not None and words.exact_lengths:
            counted = counter.count_text(text)
            if counted != length:
                log.warning("shared prefix %d: %d tokens asked, the counter says %d", i, length, counted)
        texts.append(text)
    return PrefixPool(tuple(texts), settings.shared_prefix_share)
