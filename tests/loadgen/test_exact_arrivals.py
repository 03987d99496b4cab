"""poisson-exact: the planned number of arrivals in every segment, at random times, the same across shards."""

import numpy as np
import pytest

from loadgen.arrival_schedule import EXACT_SEGMENT_S, ArrivalSchedule, due_slots


def times(rate: float, until_s: float, *, seed: int = 0, shards: int = 1) -> list[float]:
    out = []
    for shard in range(shards):
        schedule = ArrivalSchedule("poisson-exact", rate, 0.0, seed=seed, shard=shard, shards=shards)
        while (due := schedule.next_due()) < until_s:
            out.append(due)
    return sorted(out)


@pytest.mark.parametrize("rate", [0.37, 1.3, 2.51, 17.0])
def test_every_whole_segment_holds_the_planned_count(rate):
    due = np.array(times(rate, 120.0, seed=3))
    for k in range(1, 25):
        end_s = k * EXACT_SEGMENT_S
        assert abs((due < end_s).sum() - rate * end_s) <= 0.5  # exact up to rounding, never drifting
    # a window of whole segments offers the planned rate: the label of a sweep point is true
    inside = ((due >= 20.0) & (due < 80.0)).sum()
    assert abs(inside / 60.0 - rate) <= 1 / 60.0


def test_times_are_random_inside_segments_and_seeded():
    a, b, c = times(2.0, 60.0, seed=1), times(2.0, 60.0, seed=1), times(2.0, 60.0, seed=2)
    assert a == b and a != c
    gaps = np.diff(a)
    # exponential-like gaps (coefficient of variation near 1), not an even grid (0)
    assert 0.6 < gaps.std() / gaps.mean() < 1.4


def test_shards_split_one_run_wide_sequence():
    assert times(3.0, 60.0, seed=5, shards=3) == times(3.0, 60.0, seed=5, shards=1)
    assert due_slots("poisson-exact", 3.0, 0.0, 10.0, 40.0, seed=5, shards=3) == 90
