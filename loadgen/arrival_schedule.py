"""Open-loop arrival schedules: when each request is due, independent of when answers come back."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal

ArrivalMode = Literal["constant", "poisson", "poisson-exact"]
OPEN_LOOP_MODES: tuple[str, ...] = ("constant", "poisson", "poisson-exact")
# poisson-exact: the arrivals due by the end of segment k are exactly round(rate x (k+1) x SEGMENT_S).
# Short enough that any measured window made of whole segments offers the planned rate to within one
# arrival; long enough to hold several arrivals at the sweep's lowest rates, so the times stay random.
EXACT_SEGMENT_S = 5.0


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
        if mode not in OPEN_LOOP_MODES:
            raise ValueError(f"unknown arrival mode {mode!r}")
        self.mode = mode
        self.rate_per_s = rate_per_s
        self.start_ts_s = start_ts_s
        self._shard, self._shards = shard, shards
        # poisson-exact draws the run-wide sequence in every shard: one seed for all of them.
        self._rng = random.Random(f"{seed}-exact" if mode == "poisson-exact" else f"{seed}-{shard}")
        self._count = 0
        self._exact = self._exact_times() if mode == "poisson-exact" else None
        self._next = self._first()

    def _first(self) -> float:
        if self.mode == "constant":
            return self._constant_slot(0)
        if self._exact is not None:
            for _ in range(self._shard):
                next(self._exact)
            return next(self._exact)
        return self.start_ts_s + self._draw()

    def _exact_times(self) -> Iterator[float]:
        """The run-wide poisson-exact due times, in order, segment by segment."""
        k = 0
        while True:
            count = round(self.rate_per_s * (k + 1) * EXACT_SEGMENT_S) - round(
                self.rate_per_s * k * EXACT_SEGMENT_S
            )
            begin = self.start_ts_s + k * EXACT_SEGMENT_S
            yield from sorted(begin + EXACT_SEGMENT_S * self._rng.random() for _ in range(count))
            k += 1

    def _constant_slot(self, k: int) -> float:
        # Computed from the start, not by repeated addition: slot k of a long run does not drift.
        return self.start_ts_s + (self._shard + k * self._shards) / self.rate_per_s

    def _draw(self) -> float:
        draw: float = self._rng.expovariate(self.rate_per_s / self._shards)
        return draw

    def next_due(self) -> float:
        """Claim the next slot; slots are handed out in order, each exactly once."""
        due = self._next
        self._count += 1
        if self.mode == "constant":
            self._next = self._constant_slot(self._count)
        elif self._exact is not None:
            for _ in range(self._shards - 1):  # the other shards' arrivals
                next(self._exact)
            self._next = next(self._exact)
        else:
            self._next = due + self._draw()
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
