"""A short soak: the same script as benchmarks/soak.py, a few seconds long."""

import pytest

from benchmarks.soak import run
from tests.conftest import RUNTIME_CONFIG


@pytest.mark.slow
def test_short_soak_succeeds_fully_and_memory_stays_bounded():
    result = run(minutes=0.2, streams=8, max_tokens=32, config=RUNTIME_CONFIG)
    assert result.requests > 20
    assert result.success_rate == 1.0, result.failures
    # Loose on purpose: 12 s is no leak test (the 10-minute soak is); this catches a runaway.
    assert result.memory_growth_mib(0) < 200
