"""testing.slowdown_pct: a server made slower on purpose (the CI gate's known regression), never by a
release profile."""

import time
from types import SimpleNamespace

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


def _runtime(slowdown_pct: float, step_s: float) -> SimpleNamespace:
    def step():
        time.sleep(step_s)
        return ["event"]

    return SimpleNamespace(options=SimpleNamespace(slowdown_pct=slowdown_pct), step=step)


def test_a_slowed_step_lasts_at_least_its_share_longer():
    runtime = _runtime(100.0, 0.02)
    started = time.perf_counter()
    events = BatchRuntime.timed_step(runtime)
    assert events == ["event"]  # the step's own events pass through
    assert time.perf_counter() - started >= 2 * 0.02  # the spin adds at least the step's own time


def test_a_slowed_step_burns_cpu_not_sleep():
    runtime = _runtime(500.0, 0.02)
    cpu_before = time.process_time()
    BatchRuntime.timed_step(runtime)
    # 0.1 s of spinning: even a machine that gives this process a tenth of a core shows CPU time spent
    # (a sleep would spend none), so CPU-time figures see the slowdown too.
    assert time.process_time() - cpu_before >= 0.01
