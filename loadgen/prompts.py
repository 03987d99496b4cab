"""Prompts for load: synthetic ones of a chosen length distribution, or a JSONL file.

Synthetic prompts are random common English words; every prompt differs, so a server's prompt cache
cannot turn the run into a cache benchmark. Their length is in tokens as the server counts them
(`usage.prompt_tokens`: the chat template included for chat requests), made exact with a token counter
(loadgen.tokens), else approximate from a fit of the server's usage (`CalibratedPrompts`), else in words.
Each source says how in `length_method` (summary.json workload.prompt_length_method).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from loadgen.tokens import TokenCounter

log = logging.getLogger(__name__)

PromptDist = Literal["fixed", "uniform", "normal"]

_WORD_TEXT = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community
name president team minute idea kid body information back parent face others level office door
health person art war history party result change morning reason research girl guy moment air
teacher force education river light stone music garden paper window market table letter question
answer travel summer winter
"""
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request's input: chat messages, and a plain prompt for /v1/completions.

    With an exact length method the two are different texts, each of `target_tokens` tokens for its
    endpoint (the chat template's tokens are part of a chat prompt's count).
    """

    messages: list[dict[str, Any]]
    text: str
    target_tokens: int | None = None
    max_tokens: int | None = None
    # Multi-turn scenarios (loadgen.workloads.conversation): copied into the request's record.
    conversation_id: str | None = None
    turn_index: int | None = None


class PromptError(ValueError):
    pass


def synthetic_length(rng: random.Random, mean: int, dist: PromptDist, spread: int) -> int:
    if dist == "fixed":
        n = mean
    elif dist == "uniform":
        n = rng.randint(mean - spread, mean + spread)
    elif dist == "normal":
        n = round(rng.gauss(mean, spread))
    else:
        raise PromptError(f"unknown prompt distribution {dist!r}")
    return max(1, n)


class PromptSource(Protocol):
    """What a user draws its next prompt from: synthetic, file, calibrated, exact or a workload's."""

    def draw(self, rng: random.Random) -> Prompt: ...


@runtime_checkable
class IndexedPrompts(Protocol):
    """A source whose prompts are also addressed by line (a trace replay's schedule names the line)."""

    def at(self, index: int) -> Prompt: ...


class SyntheticPrompts:
    """N words (no tokenizer, no calibration): the length is only a word count."""

    length_method = "words"

    def __init__(self, mean_tokens: int, dist: PromptDist = "fixed", spread: int = 0) -> None:
        if mean_tokens < 1:
            raise PromptError("--prompt-tokens must be at least 1")
        self.mean_tokens, self.dist, self.spread = mean_tokens, dist, spread

    def draw(self, rng: random.Random) -> Prompt:
        n = synthetic_length(rng, self.mean_tokens, self.dist, self.spread)
        text = " ".join(rng.choices(_WORDS, k=n))
        return Prompt([{"role": "user", "content": text}], text, target_tokens=n)


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@dataclass(frozen=True, slots=True)
class _Kind:
    """One endpoint's way of counting a prompt: the full count, and its fixed tokens around the text."""

    count: Callable[[str], int]
    overhead_tokens: int


class ExactPrompts:
    """Random words that tokenize to exactly the target length, for chat and for completions.

    Tokenizers split text at spaces before merging (BPE pre-tokenization, SentencePiece's metaspace), so a
    prompt's tokens are the sum of its words' tokens: each word's cost is measured once, words are drawn
    until the costs fill the target, and (with a local tokenizer) every prompt is counted again and
    corrected. With the server's /tokenize, only the first prompts are checked (each check is a request).
    """

    MAX_FIXES = 4
    SERVER_CHECKS = 4  # prompts per endpoint verified through the server's /tokenize
    SERVER_WORDS = 48
    SERVER_CONCURRENCY = 8

    def __init__(self, counter: TokenCounter, mean_tokens: int, dist: PromptDist = "fixed", spread: int = 0):
        if mean_tokens < 1:
            raise PromptError("--prompt-tokens must be at least 1")
        self.counter, self.mean_tokens, self.dist, self.spread = counter, mean_tokens, dist, spread
        self.length_method = counter.method
        self._verify_each = counter.method == "tokenizer"
        self._checks_left = {"chat": self.SERVER_CHECKS, "completion": self.SERVER_CHECKS}
        # Each word costs two counts: through the server's /tokenize, fewer words keep that to ~100 requests,
        # sent a few at a time (threads: greenlets once Locust has patched the standard library).
        words = _WORDS if self._verify_each else _WORDS[: self.SERVER_WORDS]
        texts = [*words, *(f"{_WORDS[0]} {w}" for w in words), _WORDS[0]]
        if self._verify_each:
            counts = [counter.count_text(t) for t in texts]
        else:
            with ThreadPoolExecutor(self.SERVER_CONCURRENCY) as pool:
                counts = list(pool.map(counter.count_text, texts))
        n, base = len(words), counts[-1]
        self.first_cost = dict(zip(words, counts[:n], strict=True))
        self.next_cost = {w: c - base for w, c in zip(words, counts[n : 2 * n], strict=True)}
        self._by_cost: dict[int, list[str]] = {}
        for word, cost in self.next_cost.items():
            if cost > 0:
                self._by_cost.setdefault(cost, []).append(word)
        if 1 not in self._by_cost:
            raise PromptError("the tokenizer has no one-token words among the prompt words: cannot be exact")
        probe = " ".join(_WORDS[:4])
        probe_tokens = counter.count_text(probe)
        self.kinds = {
            "chat": _Kind(
                lambda t: counter.count_chat(_user(t)), counter.count_chat(_user(probe)) - probe_tokens
            ),
            "completion": _Kind(
                counter.count_completion_prompt, counter.count_completion_prompt(probe) - probe_tokens
            ),
        }
        smallest = max(k.overhead_tokens for k in self.kinds.values()) + 1
        if mean_tokens < smallest:
            raise PromptError(
                f"--prompt-tokens {mean_tokens} is below {smallest}: the chat template alone is "
                f"{self.kinds['chat'].overhead_tokens} tokens (the length counts the whole prompt as the "
                "server does, template included)"
            )

    def _fill(self, rng: random.Random, tokens: int) -> list[str]:
        firsts = [w for w, c in self.first_cost.items() if 0 < c <= tokens]
        words = [rng.choice(firsts)] if firsts else []
        total = self.first_cost[words[0]] if words else 0
        while total < tokens:
            room = tokens - total
            cost = rng.choice([c for c in self._by_cost if c <= room])
            words.append(rng.choice(self._by_cost[cost]))
            total += cost
        return words

    def _make(self, rng: random.Random, kind_name: str, n: int) -> tuple[str, int | None]:
        """Text of n tokens for this endpoint, and its verified count (None when not checked)."""
        kind = self.kinds[kind_name]
        words = self._fill(rng, max(1, n - kind.overhead_tokens))
        verify = self._verify_each or self._checks_left[kind_name] > 0
        if not verify:
            return " ".join(words), None
        actual = kind.count(" ".join(words))
        for _ in range(self.MAX_FIXES):
            if actual == n or (actual < n and not self._verify_each):
                break
            # Too long: drop words from the end until short enough; then top up with one-token words.
            while actual > n and len(words) > 1:
                words.pop()
                actual = kind.count(" ".join(words))
            while actual < n:
                words.append(rng.choice(self._by_cost[1]))
                actual = kind.count(" ".join(words))
        if not self._verify_each:
            self._checks_left[kind_name] -= 1
            if abs(actual - n) > 1:
                log.warning("prompt of %d tokens asked, the server counts %d (%s)", n, actual, kind_name)
        return " ".join(words), actual

    def draw(self, rng: random.Random) -> Prompt:
        n = max(
            synthetic_length(rng, self.mean_tokens, self.dist, self.spread),
            max(k.overhead_tokens for k in self.kinds.values()) + 1,
        )
        chat_text, _ = self._make(rng, "chat", n)
        completion_text, _ = self._make(rng, "completion", n)
        return Prompt(_user(chat_text), completion_text, target_tokens=n)


@dataclass(frozen=True, slots=True)
class LengthFit:
    """Prompt tokens ~ intercept + per_word * words, fitted on the server's usage.prompt_tokens."""

    intercept: float
    per_word: float

    def words_for(self, tokens: int) -> int:
        return max(1, round((tokens - self.intercept) / self.per_word))


class CalibratedPrompts:
    """Words, as many as a fit of the server's own counts says make the target: approximate lengths."""

    length_method = "calibrated"

    def __init__(
        self,
        fits: dict[str, LengthFit],
        mean_tokens: int,
        dist: PromptDist = "fixed",
        spread: int = 0,
    ) -> None:
        if mean_tokens < 1:
            raise PromptError("--prompt-tokens must be at least 1")
        self.fits, self.mean_tokens, self.dist, self.spread = fits, mean_tokens, dist, spread

    def draw(self, rng: random.Random) -> Prompt:
        n = synthetic_length(rng, self.mean_tokens, self.dist, self.spread)
        chat = " ".join(rng.choices(_WORDS, k=self.fits["chat"].words_for(n)))
        completion = " ".join(rng.choices(_WORDS, k=self.fits["completion"].words_for(n)))
        return Prompt(_user(chat), completion, target_tokens=n)


def calibration_texts(rng: random.Random, mean_tokens: int) -> list[str]:
    """Two prompts of different word counts: enough to fit an intercept (the template) and a slope."""
    return [" ".join(rng.choices(_WORDS, k=k)) for k in (max(2, mean_tokens // 2), max(4, mean_tokens))]


def fit_lengths(samples: list[tuple[int, int]]) -> LengthFit:
    """Least squares on (words, tokens); one distinct word count gives a ratio through the origin."""
    (w0, t0), (w1, t1) = samples[0], samples[-1]
    if w1 == w0:
        return LengthFit(0.0, max(t1 / w1, 1e-3))
    per_word = (t1 - t0) / (w1 - w0)
    if per_word <= 0:
        return LengthFit(0.0, max(t1 / w1, 1e-3))
    return LengthFit(t0 - per_word * w0, per_word)


class FilePrompts:
    """JSONL: one object per line with "prompt" (text) or "messages" (chat), and optional "max_tokens".

    With a token counter each prompt's length is measured (`target_tokens`: the chat count, template
    included); without one it is unknown.
    """

    length_method = "words"  # no token counter: the lengths are not measured

    def __init__(self, path: Path, counter: TokenCounter | None = None) -> None:
        self.path = Path(path)
        self.prompts = [self._parse(line_no, line) for line_no, line in self._lines()]
        if not self.prompts:
            raise PromptError(f"{self.path}: no prompts")
        if counter is not None:
            self.length_method = counter.method
            self.prompts = [self._measured(i, p, counter) for i, p in enumerate(self.prompts, start=1)]

    def _measured(self, number: int, prompt: Prompt, counter: TokenCounter) -> Prompt:
        try:
            n = counter.count_chat(prompt.messages)
        except ValueError as exc:
            raise PromptError(f"{self.path}: prompt {number}: {exc}") from None
        return Prompt(prompt.messages, prompt.text, target_tokens=n, max_tokens=prompt.max_tokens)

    def _lines(self) -> list[tuple[int, str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PromptError(f"{self.path}: {exc.strerror}") from None
        return [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]

    def _parse(self, line_no: int, line: str) -> Prompt:
        where = f"{self.path}:{line_no}"
        obj = json_object(where, line)
        max_tokens = obj.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
            raise PromptError(f'{where}: "max_tokens" must be an integer')
        if max_tokens is not None and max_tokens < 1:
            raise PromptError(f'{where}: "max_tokens" must be at least 1')
        if "messages" in obj:
            messages = obj["messages"]
            if not isinstance(messages, list) or not messages:
                raise PromptError(f'{where}: "messages" must be a non-empty list')
            text = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
            return Prompt(messages, text, max_tokens=max_tokens)
        if isinstance(obj.get("prompt"), str):
            text = obj["prompt"]
            return Prompt([{"role": "user", "content": text}], text, max_tokens=max_tokens)
        raise PromptError(f'{where}: needs "prompt" (string) or "messages" (list)')

    def draw(self, rng: random.Random) -> Prompt:
        return rng.choice(self.prompts)


def json_object(where: str, line: str) -> dict[str, Any]:
    """One JSON-lines line as an object; PromptError naming `where` (file:line) otherwise."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise PromptError(f"{where}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PromptError(f"{where}: expected an object")
    return obj
