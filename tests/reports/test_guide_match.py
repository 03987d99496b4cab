"""Locating the guide's 70/12/18: the distance between mixes and the search's next load."""

from __future__ import annotations

import pytest

from reports.guide_match import mix_distance, next_guide_rate
from reports.sweep_folder import GuideMix

GUIDE = GuideMix(success_rate=0.70, rejection_rate=0.12, timeout_rate=0.18)


def test_distance_is_the_share_of_requests_that_would_change_outcome():
    assert mix_distance({"success": 0.70, "rejected": 0.12, "timeout": 0.18}, GUIDE) == pytest.approx(0)
    assert mix_distance({"success": 0.70, "rejected": 0.30, "timeout": 0.0}, GUIDE) == pytest.approx(0.18)
    assert mix_distance({"success": 1.0}, GUIDE) == pytest.approx(0.30)
    # errors, cut requests and the client's deadline count as the guide's "other" (0 %)
    assert mix_distance(
        {"success": 0.7, "rejected": 0.12, "timeout": 0.08, "cut": 0.1}, GUIDE
    ) == pytest.approx(0.1)
    assert mix_distance({"success": 1.0}, GuideMix(success_rate=1.0)) is None  # no full mix given


def fluid_success(rate: float, capacity: float = 1.0) -> float:
    """A server that serves `capacity` req/s past it: success = min(1, capacity / load)."""
    return min(1.0, capacity / rate)


def test_search_converges_on_the_target_success_share():
    points = [(r, fluid_success(r)) for r in (0.5, 0.9, 1.7, 3.2)]
    for _ in range(4):
        rate = next_guide_rate(points, 0.70)
        points.append((rate, fluid_success(rate)))
    assert fluid_success(points[-1][0]) == pytest.approx(0.70, abs=0.02)  # 1 / 0.7 = 1.43 req/s


def test_search_extrapolates_outside_the_sweep():
    assert next_guide_rate([(0.5, 1.0), (1.0, 1.0)], 0.7) > 1.0  # all served: go higher
    assert next_guide_rate([(2.0, 0.5), (4.0, 0.25)], 0.7) < 2.0  # all below the target: go lower
