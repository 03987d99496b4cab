"""ShareGPT-style dataset files (--dataset FILE --dataset-mode first-turn|conversation).

The file is one JSON array of conversations, each {"conversations": [{"from": "human"|"gpt"|"system",
"value": "..."}]} (ShareGPT) or {"messages": [{"role": "user"|"assistant"|"system", "content": "..."}]}.
Lengths come from the data: a request's max_tokens is the token count of the data's reply to its last user
turn (counted by the run's token counter; words without one), its prompt_tokens_target the chat count of
what is sent. `first-turn`: the first user message alone. `conversation`: with MultiTurnChatUser, the
data's user turns one by one (the history holds the server's replies); with a single-request scenario,
the whole conversation up to its last user turn in one request. Conversations without a user turn are
skipped; --dataset-limit keeps the first N usable ones (each costs token counts before the clock).
"""

from __future__ import annotations

import json
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.prompts import Prompt, PromptError
from loadgen.tokens import TokenCounter

log = logging.getLogger(__name__)

MODES = ("first-turn", "conversation")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
          "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}  # fmt: skip
COUNT_CONCURRENCY = 8  # token counts in flight through a server's /tokenize


@dataclass(frozen=True, slots=True)
class DataConversation:
    system: tuple[dict[str, str], ...]
    turns: tuple[tuple[str, int | None], ...]  # (user message, tokens of the data's reply or None)
    replies: tuple[str | None, ...] = ()  # the data's reply texts (a single request's history)


def _messages(where: str, item: Any) -> list[dict[str, str]]:
    if not isinstance(item, dict):
        raise PromptError(f'{where}: expected an object with "conversations" or "messages"')
    if isinstance(item.get("conversations"), list):
        raw, role_key, text_key = item["conversations"], "from", "value"
    elif isinstance(item.get("messages"), list):
        raw, role_key, text_key = item["messages"], "role", "content"
    else:
        raise PromptError(f'{where}: needs a "conversations" (ShareGPT) or "messages" list')
    out = []
    for j, turn in enumerate(raw):
        if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str):
            raise PromptError(f"{where}: turn {j}: needs {role_key!r} and a string {text_key!r}")
        role = _ROLES.get(str(turn.get(role_key)).lower())
        if role is None:
            raise PromptError(f"{where}: turn {j}: unknown {role_key} {turn.get(role_key)!r}")
        out.append({"role": role, "content": turn[text_key]})
    return out


def read_dataset(path: Path) -> list[list[dict[str, str]]]:
    """Every conversation as chat messages; PromptError naming the file and the entry when malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptError(f"--dataset {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PromptError(f"--dataset {path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise PromptError(f"--dataset {path}: expected a JSON array of conversations")
    return [_messages(f"--dataset {path}: entry {i}", item) for i, item in enumerate(data)]


def _split(messages: list[dict[str, str]]) -> DataConversation | None:
    """System messages, then (user message, the reply's text or None) pairs; None without a user turn."""
    system = tuple(m for m in messages if m["role"] == "system")
    turns: list[tuple[str, str | None]] = []
    for m in messages:
        if m["role"] == "user":
            turns.append((m["content"], None))
        elif m["role"] == "assistant" and turns and turns[-1][1] is None:
            turns[-1] = (turns[-1][0], m["content"])
    if not turns:
        return None
    return DataConversation(system, tuple(turns), tuple(r for _, r in turns))  # type: ignore[arg-type]


class DatasetPrompts:
    """Prompts (and, for multi-turn users, conversations) from a ShareGPT-style file."""

    def __init__(
        self, path: Path, mode: str, counter: TokenCounter | None = None, limit: int | None = None
    ) -> None:
        if mode not in MODES:
            raise PromptError(f"--dataset-mode {mode!r}: expected one of {', '.join(MODES)}")
        self.path, self.mode, self.counter = Path(path), mode, counter
        self.length_method = counter.method if counter is not None else "words"
        split = [c for c in map(_split, read_dataset(self.path)) if c is not None]
        if not split:
            raise PromptError(f"--dataset {self.path}: no conversation with a user turn")
        self.conversations = self._measured(split[:limit] if limit else split)
        with ThreadPoolExecutor(COUNT_CONCURRENCY) as pool:
            self.prompts = list(pool.map(self._request, self.conversations))

    def _count(self, text: str | None) -> int | None:
        if text is None:
            return None
        n = self.counter.count_text(text) if self.counter is not None else len(text.split())
        return max(1, n)  # an empty reply still asks for one token

    def _measured(self, convs: list[DataConversation]) -> list[DataConversation]:
        replies = [reply for c in convs for _, reply in c.turns]
        with ThreadPoolExecutor(COUNT_CONCURRENCY) as pool:
            counts = iter(list(pool.map(self._count, replies)))
        return [
            DataConversation(c.system, tuple((u, next(counts)) for u, _ in c.turns), c.replies) for c in convs
        ]

    def _request(self, conv: DataConversation) -> Prompt:
        """The single request of a conversation: its first user turn, or all of it up to the last one."""
        turns = conv.turns[:1] if self.mode == "first-turn" else conv.turns
        messages: list[dict[str, Any]] = list(conv.system)
        for i, (user, _) in enumerate(turns):
            messages.append({"role": "user", "content": user})
            if i < len(turns) - 1:  # the data's earlier replies are part of the history sent
                messages.append({"role": "assistant", "content": conv.replies[i] or ""})
        target = None
        if self.counter is not None:
            try:
                target = self.counter.count_chat(messages)
            except ValueError as exc:
                raise PromptError(f"--dataset {self.path}: {exc}") from None
        text = "\n".join(m["content"] for m in messages)
        return Prompt(messages, text, target_tokens=target, max_tokens=turns[-1][1])

    def draw(self, rng: random.Random) -> Prompt:
        return rng.choice(self.prompts)

    def conversation(self, rng: random.Random) -> DataConversation | None:
        """A whole conversation for MultiTurnChatUser in conversation mode; None in first-turn mode (each
        turn is then a first user message drawn from the data)."""
        return rng.choice(self.conversations) if self.mode == "conversation" else None
