"""testing.slowdown_pct: a server made slower on purpose (the CI gate's known regression), never by a
release profile."""

import time
from types import SimpleNamespace
from typing import cast

import pytest

from configkit import REPO_ROOT
from server.settings import ConfigError, load_settings
from server.worker.text_runtime import BatchRuntime

RUNTIME = REPO_ROOT / "config" / "runtime.yaml"


def test_off_by_default():
    assert load_settings(RUNTIME).testing.slowdown_pct == 0


def test_testing_overlay_sets_it():
    settings = load_settings(RUNTIME, profile=str(REPO_ROOT / "config/testing/slowdown-10.yaml"))
    assert settings.testing.slowdown_pct == 10
    assert settings.profile == "slowdown-10"  # what /health and the run folders will name


@pytest.mark.parametrize("release", ["v1.1.1", "v1.2.0", "guide-promise"])
def test_release_profiles_refuse_it(release):
    with pytest.raises(ConfigError, match=f"release profile {release} refuses"):
        load_settings(RUNTIME, overrides={"testing": {"slowdown_pct": 10}}, profile=release)


def test_negative_slowdown_is_a_config_error():
    with pytest.raises(ConfigError, match="slowdown_pct"):
        load_settings(RUNTIME, overrides={"testing": {"slowdown_pct": -5}})


def _runtime(slowdown_pct: float, runs_mlx_lm: bool = False) -> BatchRuntime:
    """Just what slow_down reads: the options, and whether mlx-lm's generator runs (steps in flight)."""
    options = SimpleNamespace(slowdown_pct=slowdown_pct)
    return cast(BatchRuntime, SimpleNamespace(options=options, runs_mlx_lm=runs_mlx_lm))


def test_the_spin_waits_for_the_step_in_flight_first(monkeypatch):
    """mlx-lm starts the next step before returning this one: its CPU belongs to the cycle."""
    import mlx.core as mx

    calls = []
    monkeypatch.setattr(mx, "synchronize", lambda *a: calls.append(time.perf_counter()))
    BatchRuntime.slow_down(_runtime(10.0, runs_mlx_lm=True), time.process_time())
    assert len(calls) == 1
    BatchRuntime.slow_down(_runtime(0.0, runs_mlx_lm=True), time.process_time())
    assert len(calls) == 1  # off: the server's overlap is untouched


def _burn_cpu_s(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_a_slowed_cycle_costs_its_share_more_cpu():
    cycle_cpu_started_s = time.process_time()
    _burn_cpu_s(0.02)  # the cycle's own work
    spent_s = time.process_time() - cycle_cpu_started_s
    BatchRuntime.slow_down(_runtime(100.0), cycle_cpu_started_s)
    assert time.process_time() - cycle_cpu_started_s >= 2 * spent_s  # the spin doubled the cycle's CPU


def test_a_cycle_that_waited_is_not_slowed_by_its_wait():
    """The share is of CPU spent, not of wall time: a cycle that mostly waited gets little added."""
    cycle_cpu_started_s = time.process_time()
    time.sleep(0.2)  # waiting costs no CPU
    started = time.perf_counter()
    BatchRuntime.slow_down(_runtime(100.0), cycle_cpu_started_s)
    assert time.perf_counter() - started < 0.15  # a wall-time share would have spun 0.2 s


def test_no_slowdown_returns_at_once():
    started = time.perf_counter()
    BatchRuntime.slow_down(_runtime(0.0), time.process_time() - 10.0)  # with the setting off: nothing
    assert time.perf_counter() - started < 1.0
