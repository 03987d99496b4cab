"""testing.slowdown_pct: a server made slower on purpose (the CI gate's known regression), never by a
release profile."""

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from configkit import REPO_ROOT
from server.settings import ConfigError, load_settings
from server.worker.text_runtime import BatchRuntime
from tests.support.runtime import greedy_submit, make_runtime

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


def _runtime(slowdown_pct: float, stream: object = None) -> BatchRuntime:
    """Just what slow_down reads: the options, and the generator's stream (None: mlx-vlm's, without one)."""
    options = SimpleNamespace(slowdown_pct=slowdown_pct)
    runtime = SimpleNamespace(options=options, generator=SimpleNamespace(stream=stream))
    runtime.wait_for_engine = lambda: BatchRuntime.wait_for_engine(cast(BatchRuntime, runtime))
    return cast(BatchRuntime, runtime)


def test_the_spin_waits_for_the_generators_own_stream_first(monkeypatch):
    """mlx-lm starts the next step on its own stream before returning this one: a spin beside that
    computation would be hidden in it; and `mx.synchronize()` without a stream does not wait for it."""
    import mlx.core as mx

    generation_stream = mx.new_stream(mx.default_device())
    calls = []
    monkeypatch.setattr(mx, "synchronize", lambda *args: calls.append(args))
    BatchRuntime.slow_down(_runtime(10.0, stream=generation_stream), time.perf_counter())
    assert calls == [(generation_stream,)]
    BatchRuntime.slow_down(_runtime(0.0, stream=generation_stream), time.perf_counter())
    assert len(calls) == 1  # off: the server's overlap is untouched


def test_a_slowed_cycle_lasts_at_least_its_share_longer():
    cycle_started_s = time.perf_counter()
    time.sleep(0.02)  # the cycle's own work
    BatchRuntime.slow_down(_runtime(100.0), cycle_started_s)
    assert time.perf_counter() - cycle_started_s >= 2 * 0.02  # the spin adds at least the cycle's own time


def test_a_slowed_cycle_burns_cpu_not_sleep():
    cycle_started_s = time.perf_counter()
    time.sleep(0.02)
    cpu_before_s = time.process_time()
    BatchRuntime.slow_down(_runtime(500.0), cycle_started_s)
    # 0.1 s of spinning: even a machine that gives this process a tenth of a core shows CPU time spent
    # (a sleep would spend none), so CPU-time figures see the slowdown too.
    assert time.process_time() - cpu_before_s >= 0.01


def test_no_slowdown_returns_at_once():
    started = time.perf_counter()
    BatchRuntime.slow_down(_runtime(0.0), time.perf_counter() - 10.0)  # a long cycle, the setting off
    assert time.perf_counter() - started < 1.0


def test_device_sync_every_step_waits_for_the_generators_stream(tiny_llama, monkeypatch):
    """`mlx.device_sync_every_step` (force_sync) must wait for the stream mlx-lm computes on."""
    import mlx.core as mx

    runtime, events = make_runtime(tiny_llama, force_sync=True)
    real_synchronize = mx.synchronize
    streams: list[object] = []

    def recording_synchronize(stream: Any = None) -> None:
        streams.append(stream)
        real_synchronize(stream)

    monkeypatch.setattr(mx, "synchronize", recording_synchronize)
    messages = [{"role": "user", "content": "Hello there"}]
    runtime.send_events(runtime.handle(greedy_submit("sync-1", messages, 4)))
    while runtime.sequences:
        runtime.send_events(runtime.step())
    assert streams and all(s is runtime.generator.stream for s in streams)
    assert any(type(e).__name__ == "Finished" for e in events)
