"""The capacity probe's rules on fake measurements (no server): it runs to the throughput plateau, judged
within each step's interval, not to a latency threshold."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrate import campaign as camp
from orchestrate.probe import ProbeResult, ProfileProbe, StepResult, probe_profile, steady_tokens_per_s

DEFAULT = camp.load_campaign(camp.find("default"))


def step(concurrency: int, rps: float, e2e_s: float = 1.0, rejections: int = 0, noise: float = 0.02):
    """A step of 128-token replies at `rps`, its tok/s interval +-`noise` (relative)."""
    tok = 128 * rps
    return StepResult(
        concurrency,
        10,
        10,
        rps,
        tok,
        0.1,
        e2e_s,
        10.0,
        "run",
        rejections,
        128.0,
        tok * (1 - noise),
        tok * (1 + noise),
    )


def fake_runner(capacity_rps: float, per_stream_rps: float, noise: float = 0.02):
    calls = []

    def run(name, concurrency, warmup_s, window_s):
        calls.append((concurrency, warmup_s, window_s))
        rps = min(capacity_rps, per_stream_rps * concurrency)
        return step(concurrency, rps, e2e_s=concurrency / rps, noise=noise)

    return run, calls


def test_probe_doubles_until_throughput_stops_rising():
    run, calls = fake_runner(capacity_rps=6.0, per_stream_rps=1.0)
    result = probe_profile("batching", DEFAULT.probe_spec, run, lambda _: None)
    # 8 reaches 6 req/s; 16, 32 and 64 add nothing: three flat steps, saturated
    assert [c for c, _, _ in calls] == [1, 2, 4, 8, 16, 32, 64]
    assert result.capacity_rps == 6.0 and result.best is not None and result.best.concurrency == 8
    low, high = result.capacity_interval_rps()
    assert low == pytest.approx(6.0 * 0.98) and high == pytest.approx(6.0 * 1.02)


def test_probe_runs_past_growing_latency_to_the_plateau():
    # E2E grows with concurrency in any closed loop (E2E ~ users / throughput): no latency rule stops a
    # batching server that still gains throughput at 32 streams.
    rps = {1: 1.0, 2: 1.8, 4: 2.6, 8: 3.2, 16: 3.6, 32: 3.9, 64: 3.9}
    calls = []

    def run(name, concurrency, warmup_s, window_s):
        calls.append(concurrency)
        return step(concurrency, rps[concurrency], e2e_s=concurrency / rps[concurrency])

    result = probe_profile("batching", DEFAULT.probe_spec, run, lambda _: None)
    assert calls == [1, 2, 4, 8, 16, 32, 64] and result.capacity_rps == 3.9


def test_a_rise_inside_the_noise_is_flat():
    # +8 % per doubling, but each step's interval is +-10 %: never shown to rise, so flat after three steps.
    rps = {1: 1.0, 2: 1.08, 4: 1.17, 8: 1.26, 16: 1.36}

    def run(name, concurrency, warmup_s, window_s):
        return step(concurrency, rps[concurrency], noise=0.10)

    result = probe_profile("noisy", DEFAULT.probe_spec, run, lambda _: None)
    assert [s.concurrency for s in result.steps] == [1, 2, 4, 8]


def test_probe_of_a_serialized_server_stops_at_three_flat_steps():
    run, calls = fake_runner(capacity_rps=1.0, per_stream_rps=1.0)
    result = probe_profile("serial", DEFAULT.probe_spec, run, lambda _: None)
    assert [c for c, _, _ in calls] == [1, 2, 4, 8] and result.capacity_rps == 1.0


def test_probe_stops_at_the_servers_admission_limit():
    def run(name, concurrency, warmup_s, window_s):
        rps = min(1.0 * concurrency, 6.0)
        return step(concurrency, rps, e2e_s=concurrency / rps, rejections=max(0, concurrency - 10) * 50)

    result = probe_profile("capped", DEFAULT.probe_spec, run, lambda _: None)
    assert [s.concurrency for s in result.steps] == [1, 2, 4, 8, 16]


def test_quick_probe_grows_by_four():
    quick = DEFAULT.quick_form().probe_spec
    run, calls = fake_runner(capacity_rps=1.0, per_stream_rps=1.0)
    probe_profile("serial", quick, run, lambda _: None)
    assert [c for c, _, _ in calls] == [1, 4]


def test_probe_repeats_a_first_step_with_too_few_replies():
    windows = []

    def run(name, concurrency, warmup_s, window_s):
        windows.append(window_s)
        few = len(windows) == 1
        s = step(concurrency, 0.1 if few else 1.0)
        return dataclasses.replace(s, successes=1) if few else s

    probe_profile("slow", DEFAULT.probe_spec, run, lambda _: None)
    wanted_s = 1.5 * DEFAULT.probe_spec.min_first_step_requests * 1.0
    assert windows[:2] == [
        DEFAULT.probe_spec.first_step_s,
        max(2 * DEFAULT.probe_spec.first_step_s, wanted_s),
    ]


def test_capacity_is_the_token_rate_over_the_reply_length():
    probe = ProfileProbe("p", [StepResult(4, 5, 5, 1.25, 145.0, 0.1, 2.7, 4.0, "run", 0, 100.0)])
    assert probe.capacity_rps == pytest.approx(1.45)
    assert probe.capacity_interval_rps() == (None, None)  # no interval recorded (older probe.json)


def test_quantities_come_from_the_probe():
    probe = ProbeResult(
        [ProfileProbe(n, [step(1, 1.0, e2e_s=0.8), step(2, c)]) for n, c in (("a", 1.0), ("b", 3.0))]
    )
    q = probe.quantities()
    assert q["single_e2e_s"] == 0.8 and q["min_capacity_rps"] == 1.0 and q["max_capacity_rps"] == 3.0
    assert "capacity_low_rps" in probe.to_json()["profiles"][0]


def test_step_throughput_counts_from_the_first_token():
    import numpy as np

    times = 1.5 + np.arange(250) / 100
    assert steady_tokens_per_s(times, np.ones(250), 0.0, 4.0) == pytest.approx(100, rel=0.01)
