"""Multi-turn conversations (MultiTurnChatUser): a user holds one conversation at a time, of --turns N
(+/- --turns-spread) turns. Each turn sends the whole history plus a new user message and appends the
reply it received; the user thinks (--think-time-s) between turns and keeps its slot meanwhile (closed
loop). A turn that fails ends its conversation: the next request starts a new one.

New user messages come from the run's prompt source (a synthetic prompt of --prompt-tokens, or a
--prompt-file entry), or, with a --dataset in `conversation` mode, from the data's own user turns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type-only: the run state and the options import the workloads
    from loadgen.options import LoadSettings
    from loadgen.runstate import RunState
    from runfolder.records import RequestRecord

from loadgen.prompts import Prompt


@dataclass(frozen=True, slots=True)
class TurnSpec:
    """How long conversations are: `turns` +/- `spread` (uniform), at least 1."""

    turns: int
    spread: int = 0

    def draw(self, rng: random.Random) -> int:
        return max(1, rng.randint(self.turns - self.spread, self.turns + self.spread))


def user_text(prompt: Prompt) -> str:
    """The new user message a prompt source made (its last message's text)."""
    last = prompt.messages[-1].get("content") if prompt.messages else None
    return last if isinstance(last, str) else prompt.text


@dataclass
class Conversation:
    """One user's conversation in progress."""

    conversation_id: str
    length: int  # planned turns
    # Dataset conversations: the data's user turns and their reply lengths; None: drawn per turn.
    script: list[tuple[str, int | None]] | None = None
    system: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    turn: int = 0  # turns sent so far
    pending: dict[str, Any] | None = None  # the user message of the turn in flight

    @property
    def over(self) -> bool:
        return self.turn >= self.length


class Conversations:
    """The conversations of one simulated user, one after the other."""

    def __init__(self, user_key: str, turns: TurnSpec) -> None:
        self.user_key, self.turns = user_key, turns
        self.count = 0
        self.current: Conversation | None = None

    def next_prompt(self, rng: random.Random, source: Any) -> Prompt:
        """The next turn's prompt: the history so far plus a new user message."""
        conv = self.current
        if conv is None or conv.over:
            conv = self.current = self._start(rng, source)
        max_tokens = None
        if conv.script is not None:
            text, max_tokens = conv.script[conv.turn]
            first = None
        else:
            first = source.draw(rng)
            text, max_tokens = user_text(first), first.max_tokens
        conv.pending = {"role": "user", "content": text}
        conv.turn += 1
        messages = [*conv.system, *conv.history, conv.pending]
        # The target is known for a first turn of synthetic prompts only (the history is what came back).
        target = first.target_tokens if first is not None and conv.turn == 1 and not conv.system else None
        return Prompt(
            messages,
            "\n".join(str(m["content"]) for m in messages),
            target_tokens=target,
            max_tokens=max_tokens,
            conversation_id=conv.conversation_id,
            turn_index=conv.turn,
        )

    def _start(self, rng: random.Random, source: Any) -> Conversation:
        self.count += 1
        conv_id = f"{self.user_key}-c{self.count}"
        conversation = getattr(source, "conversation", None)
        data = conversation(rng) if conversation is not None else None
        if data is not None:  # a dataset in conversation mode: the data's turns, in its order
            return Conversation(conv_id, len(data.turns), script=list(data.turns), system=list(data.system))
        return Conversation(conv_id, self.turns.draw(rng))

    def on_reply(self, ok: bool, reply_text: str) -> None:
        """Append the turn and its reply; a failed turn ends the conversation."""
        conv = self.current
        if conv is None or conv.pending is None:
            return
        if ok:
            conv.history += [conv.pending, {"role": "assistant", "content": reply_text}]
        else:
            conv.turn = conv.length
        conv.pending = None


class MultiTurnMixin:
    """For an OpenAIUser subclass: prompts from the user's conversation, replies appended to it.

    Closed loop only: in open loop a slot would have to wait for the previous turn's reply (the schedule
    is not the user's to keep), so the option check refuses it (exit 2)."""

    multi_turn = True
    # Set by OpenAIUser.__init__ (loadgen.user), which this mixes into.
    _run: RunState
    _user_id: int
    _rng: random.Random
    _conversations: Conversations | None

    @classmethod
    def option_problems(cls, settings: LoadSettings) -> list[str]:
        if settings.arrival != "closed":
            return [f"{cls.__name__} runs closed loop: --arrival {settings.arrival} is not supported"]
        return []

    def next_prompt(self, slot: int | None) -> Prompt:
        run = self._run
        conversations = getattr(self, "_conversations", None)
        if conversations is None:
            key = f"{run.worker_id}-u{self._user_id}"
            conversations = Conversations(key, TurnSpec(run.settings.turns, run.settings.turns_spread))
            self._conversations = conversations
        return conversations.next_prompt(self._rng, run.prompts)

    def on_reply(self, rec: RequestRecord, reply_text: str) -> None:
        if self._conversations is not None:  # set by the first next_prompt, which comes first
            self._conversations.on_reply(rec.outcome == "success", reply_text)
