"""Open-loop arrival schedules: when each request is due, independent of when answers come back."""

from __future__ import annotations

import random
from typing import Literal

ArrivalMode = Literal["constant", "poisson"]


class ArrivalSchedule:
    """Due times (epoch seconds) of one process's share of a run-wide arrival process.

    With `shards` load-generator processes, shard i of a constant schedule takes every shards-th slot of
    the run-wide grid (so the merged stream is evenly spaced); a Poisson shard runs at rate/shards, and
    independent Poisson streams superpose to the requested rate.
    """

    def __init__(
        self,
        mode: ArrivalMode,
        rate_per_s: float,
        start_ts_s: float,
        *,
        seed: int = 0,
        shard: int = 0,
        shards: int = 1,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if not 0 <= shard < shards:
            raise ValueError("shard must be in [0, shards)")
        if mode not in ("constant", "poisson"):
            raise ValueError(f"unknown arrival mode {mode!r}")
        self.mode = mode
        self.rate_per_s = rate_per_s
        self.start_ts_s = start_ts_s
        self._shard, self._shards = shard, shards
        self._rng = random.Random(f"{seed}-{shard}")
        self._count = 0
        self._next = self._constant_slot(0) if mode == "constant" else start_ts_s + self._draw()

    def _constant_slot(self, k: int) -> float:
        # Computed from the start, not by repeated addition: slot k of a long run does not drift.
        return self.start_ts_s + (self._shard + k * self._shards) / self.rate_per_s

    def _draw(self) -> float:
        return self._rng.expovariate(self.rate_per_s / self._shards)

    def next_due(self) -> float:
        """Claim the next slot; slots are handed out in order, each exactly once."""
        due = self._next
        self._count += 1
        self._next = self._constant_slot(self._count) if self.mode == "constant" else due + self._draw()
        return due

    def skip_until(self, ts_s: float) -> int:
        """Drop the slots due before `ts_s` (a worker taking over a shard late); returns how many."""
        skipped = 0
        while self._next < ts_s:
            self.next_due()
            skipped += 1
        return skipped

    @property
    def claimed(self) -> int:
        return self._count


def due_slots(
    mode: ArrivalMode,
    rate_per_s: float,
    start_ts_s: float,
    window_start_s: float,
    window_end_s: float,
    *,
    seed: int = 0,
    shards: int = 1,
) -> int:
    """How many slots of the run-wide schedule (all shards) fall due in [window_start_s, window_end_s).

    The schedules are replayed with their seeds, so this is the exact count the generator should have
    sent (constant and Poisson alike), not an expectation with an allowance for noise.
    """
    total = 0
    for shard in range(shards):
        schedule = ArrivalSchedule(mode, rate_per_s, start_ts_s, seed=seed, shard=shard, shards=shards)
        while (due := schedule.next_due()) < window_end_s:
            total += due >= window_start_s
    return total
