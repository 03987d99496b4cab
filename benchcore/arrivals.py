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
        self.mode = mode
        self.rate_per_s = rate_per_s
        self._shards = shards
        self._rng = random.Random(f"{seed}-{shard}")
        self._count = 0
        if mode == "constant":
            self._next = start_ts_s + shard / rate_per_s
        elif mode == "poisson":
            self._next = start_ts_s + self._rng.expovariate(rate_per_s / shards)
        else:
            raise ValueError(f"unknown arrival mode {mode!r}")

    def next_due(self) -> float:
        """Claim the next slot; slots are handed out in order, each exactly once."""
        due = self._next
        self._count += 1
        if self.mode == "constant":
            self._next += self._shards / self.rate_per_s
        else:
            self._next += self._rng.expovariate(self.rate_per_s / self._shards)
        return due

    @property
    def claimed(self) -> int:
        return self._count
