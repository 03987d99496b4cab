"""Prompts for load: synthetic ones of a chosen length distribution, or a JSONL file.

Synthetic prompts are random common English words (about one token each with BPE tokenizers); every
prompt differs, so a server's prompt cache cannot turn the run into a cache benchmark.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
    """One request's input: chat messages and the same text as a plain prompt for /v1/completions."""

    messages: list[dict[str, Any]]
    text: str
    target_tokens: int | None = None
    max_tokens: int | None = None


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


class SyntheticPrompts:
    def __init__(self, mean_tokens: int, dist: PromptDist = "fixed", spread: int = 0) -> None:
        if mean_tokens < 1:
            raise PromptError("--prompt-tokens must be at least 1")
        self.mean_tokens, self.dist, self.spread = mean_tokens, dist, spread

    def draw(self, rng: random.Random) -> Prompt:
        n = synthetic_length(rng, self.mean_tokens, self.dist, self.spread)
        text = " ".join(rng.choices(_WORDS, k=n))
        return Prompt([{"role": "user", "content": text}], text, target_tokens=n)


class FilePrompts:
    """JSONL: one object per line with "prompt" (text) or "messages" (chat), and optional "max_tokens"."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.prompts = [self._parse(line_no, line) for line_no, line in self._lines()]
        if not self.prompts:
            raise PromptError(f"{self.path}: no prompts")

    def _lines(self):
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PromptError(f"{self.path}: {exc.strerror}") from None
        return [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]

    def _parse(self, line_no: int, line: str) -> Prompt:
        where = f"{self.path}:{line_no}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise PromptError(f"{where}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise PromptError(f"{where}: expected an object")
        max_tokens = obj.get("max_tokens")
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
