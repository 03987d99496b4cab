"""Outputs checked under concurrency (`--check-outputs`): each greedy reply under load against the reply
the same prompt got alone, before the clock (the reference; loadgen/output_refs.py records it).

Pure code, no Locust or gevent: the prompts and references, the verdict on one reply, and their wire form
for a distributed run's workers. Verdicts (records.csv `output_check`):

- `identical`: the reference's text.
- `diverged`: the same start, then other text. Greedy decoding in a batch sums floats in another order
  than alone, and an argmax between near-equal logits can flip: expected under continuous batching. An
  EOS chosen earlier or later than alone is such a flip too (finish_reason "stop", without --ignore-eos).
- `empty`: no text where the reference had some.
- `truncated`: a strict prefix of the reference that did not end at EOS (finish_reason "length", or any
  end with --ignore-eos): fewer tokens than the same request gets alone, same max_tokens.
- `overlong`: the reference and then more, where the reference ended at max_tokens.
- `foreign`: from its first difference on, the text is another prompt's reference (a reply sent to the
  wrong request, or streams mixed).
The last four are wrong in a way numerical divergence does not explain.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen.prompts import Prompt
from runfolder.output_figures import DIVERGED, EMPTY, FOREIGN, IDENTICAL, OVERLONG, TRUNCATED
from runfolder.records import RequestRecord

# A foreign reply is told by the text from its first difference on, found in another prompt's reference:
# a window long enough that random agreement is out of the question, and no verdict on fewer characters.
FOREIGN_WINDOW_CHARS = 32
FOREIGN_MIN_CHARS = 12
DRAWS_PER_PROMPT = 4  # drawing distinct prompts from a random source: give up after this many tries each

Encoder = Callable[[str], list[int]]


@dataclass(frozen=True, slots=True)
class Reference:
    """One prompt's reply alone (one scenario's request body), before the clock."""

    scenario: str
    prompt_index: int
    outcome: str
    outcome_detail: str
    text: str
    finish_reason: str | None
    output_tokens: int | None = None
    e2e_s: float | None = None

    @property
    def usable(self) -> bool:
        return self.outcome == "success"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str
    first_diff_chars: int | None = None
    first_diff_tokens: int | None = None


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items (characters or token ids) two sequences share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _foreign(rest: str, own: str, others: Sequence[str]) -> bool:
    """`rest` (the reply from its first difference on) comes from another prompt's reference."""
    window = rest[:FOREIGN_WINDOW_CHARS]
    if len(window) < FOREIGN_MIN_CHARS or window in own:
        return False
    return any(window in other for other in others)


def judge(
    reply: str, finish_reason: str | None, own: Reference, others: Sequence[str], *, ignore_eos: bool
) -> tuple[str, int | None]:
    """(verdict, first differing character) of a reply against its prompt's reference; `others`: the
    references of the other prompts (same scenario)."""
    ref = own.text
    if reply == ref:
        return IDENTICAL, None
    if not reply:
        return EMPTY, 0
    first = common_prefix(reply, ref)
    if _foreign(reply[first:], ref, others):
        return FOREIGN, first
    if first == len(reply):  # a strict prefix: an early EOS is a flip, any other early end is not
        return (DIVERGED if finish_reason == "stop" and not ignore_eos else TRUNCATED), first
    if first == len(ref):  # the reference, then more: past a reference's EOS is a flip, past max_tokens not
        return (DIVERGED if own.finish_reason == "stop" and not ignore_eos else OVERLONG), first
    return DIVERGED, first


def _key(prompt: Prompt) -> str:
    return json.dumps([prompt.messages, prompt.text, prompt.max_tokens], sort_keys=True)


def choose_prompts(source: Any, n: int, seed: int) -> list[Prompt]:
    """The run's first n distinct prompts: a file's (or data set's) first n, else n seeded draws."""
    listed = getattr(source, "prompts", None)
    rng = random.Random(f"check-outputs-{seed}")
    candidates = iter(listed) if isinstance(listed, list) else (source.draw(rng) for _ in itertools.count())
    chosen: dict[str, Prompt] = {}
    for prompt in itertools.islice(candidates, DRAWS_PER_PROMPT * n):
        chosen.setdefault(_key(prompt), prompt)
        if len(chosen) == n:
            break
    return list(chosen.values())


@dataclass
class OutputCheck:
    """The check prompts, their references by (scenario, prompt), and the comparison of each reply."""

    prompts: list[Prompt]
    references: list[Reference]
    ignore_eos: bool
    encode: Encoder | None = None  # a local tokenizer's text -> token ids; None: characters only
    _by_key: dict[tuple[str, int], Reference] = field(init=False, repr=False)
    _tokens: dict[tuple[str, int], list[int]] = field(init=False, repr=False, default_factory=dict)
    _turn: itertools.count[int] = field(init=False, repr=False, default_factory=itertools.count)

    def __post_init__(self) -> None:
        self._by_key = {(r.scenario, r.prompt_index): r for r in self.references}

    @property
    def compared_by(self) -> str:
        return "tokens" if self.encode is not None else "characters"

    def next_prompt(self) -> tuple[int, Prompt]:
        """The check prompts in turn (this process's own turn; the order does not matter)."""
        index = next(self._turn) % len(self.prompts)
        return index, self.prompts[index]

    def verdict(self, scenario: str, index: int, reply: str, finish_reason: str | None) -> Verdict | None:
        """None when the prompt has no usable reference (its request alone failed)."""
        own = self._by_key.get((scenario, index))
        if own is None or not own.usable:
            return None
        others = [
            r.text for r in self.references if r.scenario == scenario and r.prompt_index != index and r.usable
        ]
        kind, first = judge(reply, finish_reason, own, others, ignore_eos=self.ignore_eos)
        tokens = None
        if kind != IDENTICAL and self.encode is not None:
            if (scenario, index) not in self._tokens:
                self._tokens[(scenario, index)] = self.encode(own.text)
            tokens = common_prefix(self.encode(reply), self._tokens[(scenario, index)])
        return Verdict(kind, first, tokens)

    def apply(self, rec: RequestRecord, index: int, reply: str) -> None:
        """Write the check into a request's record: which prompt, and the verdict on a success."""
        rec.output_check_prompt = index
        if rec.outcome != "success":
            return
        found = self.verdict(rec.scenario, index, reply, rec.finish_reason)
        if found is not None:
            rec.output_check = found.kind
            rec.output_first_diff_chars = found.first_diff_chars
            rec.output_first_diff_tokens = found.first_diff_tokens

    def reference_counts(self) -> dict[str, Any]:
        """The reference requests (traffic the server saw before the clock), for summary.json."""
        outcomes: dict[str, int] = {}
        for ref in self.references:
            outcomes[ref.outcome] = outcomes.get(ref.outcome, 0) + 1
        return {
            "prompts": len(self.prompts),
            "compared_by": self.compared_by,
            "reference_requests": len(self.references),
            "reference_outcomes": outcomes,
        }

    def metadata(self) -> dict[str, Any]:
        """metadata.json `output_check`: the counts and every reference (its text included)."""
        return {**self.reference_counts(), "references": [asdict(r) for r in self.references]}

    def to_wire(self) -> dict[str, Any]:
        """For the master's configuration message: the prompts and references, plain data."""
        prompts = [asdict(p) for p in self.prompts]
        return {"prompts": prompts, "references": [asdict(r) for r in self.references]}

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, ignore_eos: bool, encode: Encoder | None) -> OutputCheck:
        prompts = [Prompt(**p) for p in data["prompts"]]
        return cls(prompts, [Reference(**r) for r in data["references"]], ignore_eos, encode)


def class_problems(user_classes: Sequence[type], settings: Any) -> list[str]:
    """Scenarios whose request is not a function of its prompt alone cannot be checked."""
    if not settings.check_outputs:
        return []
    return [
        f"--check-outputs: {cls.__name__} cannot be checked (its request is not a function of its prompt "
        "alone); use ChatStreamUser, ChatUser or CompletionStreamUser"
        for cls in user_classes
        if not getattr(cls, "checks_outputs", False)
    ]
