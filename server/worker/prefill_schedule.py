"""Prompt scheduling: which waiting prompts go into the generator now, and when their first token is sent.

Why (docs/benchmarks.md, "Where the peer's first tokens come from"): on the CPU backend a prompt's prefill
costs about the same per prompt whether prompts are prefilled alone or together, and mlx-lm's generator
returns a group's first tokens two steps after its prefill, having prefilled the next group in between.
So when prompts arrive together, handing them all over makes every one of them wait for all their
prefills. Under `engine.prefill_schedule: split` the worker hands the generator one group at a time, the
next only once the group before has its first tokens out; a burst goes in two groups, the first just over
half of it, so that the median request of a burst waits for about half the prefills instead of all of
them. `mlx` hands everything over at once and leaves the grouping to mlx-lm (what the releases ran).

`engine.early_first_token` sends a prompt's first token at the end of the step that sampled it (the join
into the decode batch) instead of at the next decode step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from server import ipc

log = logging.getLogger(__name__)

SPLIT = "split"
MLX = "mlx"
PREFILL_SCHEDULES = (SPLIT, MLX)

# What a runtime makes of a request's prompt (token ids, or tokens with images); scheduling only counts
# its tokens.
PromptT = TypeVar("PromptT", bound=Sized)


@dataclass
class Waiting(Generic[PromptT]):
    """A request accepted by the worker, not yet in the generator."""

    sub: ipc.Submit
    tokens: PromptT
    arrived_s: float
    announced: bool = True  # its Started event has been sent


@dataclass
class StepCosts:
    """What prefill and decode cost on this machine, learnt from the generator's own counters: seconds per
    prompt token prefilled, seconds per sequence per decode step (moving averages; the priors are this
    project's 2-core CPU figures, docs/benchmarks.md, replaced from the first steps on)."""

    prefill_s_per_token: float = 2e-3
    decode_s_per_sequence: float = 3e-3
    weight: float = 0.2  # of each new reading

    def observe(self, prompt_tokens: int, prompt_s: float, sequence_steps: int, decode_s: float) -> None:
        if prompt_tokens > 0:
            self.prefill_s_per_token += self.weight * (prompt_s / prompt_tokens - self.prefill_s_per_token)
        if sequence_steps > 0:
            per_sequence = decode_s / sequence_steps
            self.decode_s_per_sequence += self.weight * (per_sequence - self.decode_s_per_sequence)


@dataclass
class PrefillScheduler:
    """Decides, between steps, how many of the waiting prompts (oldest first) join the generator.

    `max_group` bounds a group (engine.prefill_batch_size). Under `split` the state is how many prompts
    of the last burst are still to go (its tail): the next group takes them, and only them. Prompts that
    arrived after the burst was split are a burst of their own, split in turn: a tail that took them too
    made them wait for all its prefills (measured at 32 users: the second half of one returning group and
    the whole of the next went as one group of 22; docs/benchmarks.md has the profile)."""

    schedule: str = SPLIT
    max_group: int = 8
    tail_left: int = 0
    costs: StepCosts = field(default_factory=StepCosts)

    def group_size(self, waiting_tokens: list[int], room: int, in_prefill: int, running: int) -> int:
        """How many waiting prompts to insert now. `waiting_tokens`: each waiting prompt's tokens to
        prefill, oldest first; `room`: free places under the decode batch cap; `in_prefill`: sequences in
        the generator without a first token yet; `running`: sequences in the generator."""
        waiting = len(waiting_tokens)
        if waiting <= 0 or room <= 0:
            return 0
        if self.schedule == MLX:
            return min(waiting, room)  # mlx-lm groups them itself, prefill_batch_size at a time
        limit = min(room, self.max_group)
        if in_prefill:
            count = min(waiting, limit)
            if self.holds(in_prefill, sum(waiting_tokens[:count]), waiting, running):
                return 0
        elif self.tail_left:
            count = min(waiting, limit, self.tail_left)  # the oldest waiting prompts: the burst's tail
        elif waiting <= 2:
            count = min(waiting, limit)
        else:
            head = min(waiting // 2 + 1, limit)  # just over half: the median request is in the first group
            self.tail_left = waiting - head
            return head
        self.tail_left = max(0, self.tail_left - count)
        return count

    def holds(self, in_prefill: int, next_tokens: int, waiting: int, running: int) -> bool:
        """Whether the next group waits for the first tokens of the group in prefill. Inserted now, it is
        prefilled in the step that joins the group in prefill, whose first tokens then wait for that
        prefill; held, every waiting request waits one decode step of the running batch more. Hold when
        the first costs more request-seconds than the second."""
        delayed_by_inserting = in_prefill * next_tokens * self.costs.prefill_s_per_token
        delayed_by_holding = waiting * max(running, 1) * self.costs.decode_s_per_sequence
        return delayed_by_inserting > delayed_by_holding


def sampled_first_tokens(generator, uids: Iterable[int]) -> dict[int, int]:
    """The first token of each sequence that joined the decode batch in the step just run, by uid.

    mlx-lm's generator samples it in that step (in the join's forward pass) but returns it only at the
    next one; it lives in the decode batch's next-token row. Reads mlx-lm 0.32's private fields: with
    another version's layout this returns nothing and the token goes out at the next step as before."""
    uids = list(uids)
    batch = getattr(generator, "_generation_batch", None)
    next_tokens = getattr(batch, "_next_tokens", None)
    if not uids or batch is None or next_tokens is None:
        return {}
    try:
        row_by_uid = {uid: row for row, uid in enumerate(batch.uids)}
        rows = [row_by_uid[uid] for uid in uids if uid in row_by_uid]
        if not rows or len(batch.uids) != next_tokens.shape[0]:
            return {}
        tokens = next_tokens.tolist()
    except (AttributeError, TypeError, IndexError) as exc:  # another mlx-lm layout: no early tokens
        log.debug("early first tokens unavailable: %s", exc)
        return {}
    return {batch.uids[row]: int(tokens[row]) for row in rows}
