"""v1.1.1's limiter, unit by unit: tier detection, profiles, the stream cap and the queue (no server).
The same limiter against the real server: test_admission_server.py."""

import asyncio
import logging

import pytest

from server.admission import (
    V111_CODE_DEFAULT_TABLE,
    V111_TIER_TABLE,
    ConcurrencyLimiter,
    QueueFull,
    QueueTimeout,
    RefusalStyle,
    StreamCap,
    TierLimits,
    admission_for,
    billions_in_name,
    detect_tier,
)
from server.app import runtime_options
from server.settings import Settings, load_settings
from tests.conftest import RUNTIME_CONFIG, eventually


# -- units ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("mlx-community/Llama-3.2-3B-Instruct-4bit", 3.0),
        ("Qwen2.5-0.5b", 0.5),
        ("Qwen3-30B-A3B", 30.0),
        ("mistral-7b-v0.3", 7.0),
        ("phi-4bit", 4.0),  # v1.1.1's pattern reads a quantization suffix as a size
        ("Qwen-1.5B-bytes", 1.5),
        ("tiny-llama", None),
    ],
)
def test_size_from_name(name, billions):
    assert billions_in_name(name) == billions


@pytest.mark.parametrize(
    ("parameters", "tier"),
    [
        (70e9, "30B+"),
        (30e9, "30B+"),
        (29.9e9, "13-27B"),
        (13e9, "13-27B"),
        (8e9, "7-13B"),
        (3e9, "3-7B"),
        (2.9e9, "<3B"),
        (3e6, "<3B"),
    ],
)
def test_tier_from_weights(parameters, tier):
    assert detect_tier(int(parameters), "Some-70B-name", source="weights") == (tier, "weights")


def test_tier_precedence_override_then_weights_then_name_then_fallback():
    assert detect_tier(int(3e6), "x-30B", override="13-27B") == ("13-27B", "config")
    assert detect_tier(int(3e6), "x-30B", source="weights") == ("<3B", "weights")
    assert detect_tier(None, "x-30B", source="weights") == ("30B+", "name")  # no count: the name
    assert detect_tier(None, "mystery") == ("7-13B", "fallback")


def test_tier_comes_from_the_name_by_default_as_in_v111(caplog):
    # v1.1.1 never looked at the weights: a 3 M-parameter model named "x-30B" is 30B+, and a name without a
    # size is 7-13B with a warning.
    assert detect_tier(int(3e6), "x-30B") == ("30B+", "name")
    with caplog.at_level(logging.WARNING, logger="server.admission"):
        assert detect_tier(int(3e6), "embedded:tiny-llama") == ("7-13B", "fallback")
    assert "cannot detect the size of model embedded:tiny-llama" in caplog.text


def profile_settings(name: str, **overrides) -> Settings:
    return load_settings(RUNTIME_CONFIG, overrides=overrides, profile=name, warn=lambda line: None)


def test_v111_profile_uses_the_code_defaults_for_the_tier_from_the_name():
    settings = profile_settings("v1.1.1")
    limiter = admission_for(settings, settings.served_models[0], "tiny-llama", int(3e6))
    assert isinstance(limiter, ConcurrencyLimiter) and not isinstance(limiter, StreamCap)
    assert (limiter.tier, limiter.limits) == ("7-13B", TierLimits(6, 30, 30000))
    assert limiter.style.error_mode == "http"
    weights = profile_settings(
        "v1.1.1", model_concurrency_limiter={"tier_source": "weights", "tier_table": "runtime_yaml"}
    )
    limiter = admission_for(weights, weights.served_models[0], "tiny-llama", int(3e6))
    assert (limiter.tier, limiter.limits) == ("<3B", V111_TIER_TABLE["<3B"])
    assert V111_CODE_DEFAULT_TABLE["<3B"] == TierLimits(10, 50, 30000)


def test_queue_scale_shrinks_depth_and_timeout_together_and_keeps_the_active_limit():
    settings = profile_settings("v1.1.1", model_concurrency_limiter={"queue_scale": 0.2})
    limiter = admission_for(settings, settings.served_models[0], "tiny-llama", int(3e6))
    # 6 active / 30 queued / 30 s -> 6 / 6 / 6 s: the timeout is still the time 30 queued requests take
    # at one per second, so overload shares keep v1.1.1's proportions and the queue fills 5x sooner
    assert limiter.limits == TierLimits(6, 6, 6000)


def test_profiles_reach_the_worker_as_released():
    old, shipped, promise = (profile_settings(p) for p in ("v1.1.1", "v1.2.0", "guide-promise"))
    # v1.1.1: serialized; force_metal_sync: true is accepted and does nothing (no per-step sync).
    assert old.mlx.force_metal_sync is True
    assert (runtime_options(old).concurrency_limit, runtime_options(old).force_sync) == (1, False)
    # v1.2.0 as shipped: still serialized, no limiter, a 10-stream cap refusing in the stream.
    assert (runtime_options(shipped).concurrency_limit, runtime_options(shipped).force_sync) == (1, False)
    cap = admission_for(shipped, shipped.served_models[0], "tiny-llama", int(3e6))
    assert isinstance(cap, StreamCap) and cap.limits.max_concurrent == 10
    assert cap.style.error_mode == "in_stream"
    # The guide's promise: nothing in front of the continuous batch.
    assert runtime_options(promise).concurrency_limit is None
    assert admission_for(promise, promise.served_models[0], "tiny-llama", None) is None
    # The per-step sync is its own knob.
    synced = profile_settings("v1.1.1", mlx={"device_sync_every_step": True})
    assert runtime_options(synced).force_sync is True


async def test_stream_cap_refuses_the_eleventh_at_once_and_frees_on_release():
    cap = StreamCap("m", 10, RefusalStyle("http", 1, "max_active_streams_exceeded"))
    release = asyncio.Event()
    entered = 0

    async def hold():
        nonlocal entered
        async with cap.slot():
            entered += 1
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(10)]
    assert await eventually(lambda: entered == 10)
    with pytest.raises(QueueFull, match=r"Max active streams \(10\) exceeded") as refused:
        async with cap.slot():
            pass
    assert refused.value.style.rejection_code == "max_active_streams_exceeded"
    assert (cap.active, cap.queued, cap.rejections_total) == (10, 0, 1)
    release.set()
    await asyncio.gather(*holders)
    async with cap.slot():
        assert cap.active == 1
    assert cap.active == 0


def test_parameter_count_from_weights_survives_quantization():
    import mlx.nn as nn
    from mlx_lm import load

    from server.models.embedded import build_embedded_model
    from server.worker.describe import count_parameters

    model = load(str(build_embedded_model()))[0]
    dense = count_parameters(model, None)
    assert 1e6 < dense < 1e7
    # (The tiny MLP's 688-wide input does not divide into groups of 64: quantize the rest.)
    nn.quantize(
        model, 64, 4, class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % 64 == 0
    )
    assert count_parameters(model, 4) == dense


async def test_fifo_full_queue_timeout_and_cancel_while_queued():
    limiter = ConcurrencyLimiter(
        "m", "<3B", TierLimits(max_concurrent=1, queue_depth=2, queue_timeout_ms=300)
    )
    order: list[str] = []
    release = asyncio.Event()

    async def use(name: str, hold: bool = False):
        async with limiter.slot(name):
            order.append(name)
            if hold:
                await release.wait()

    first = asyncio.create_task(use("a", hold=True))
    await asyncio.sleep(0)
    second, third = asyncio.create_task(use("b")), asyncio.create_task(use("c"))
    await asyncio.sleep(0.01)
    assert (limiter.active, limiter.queued) == (1, 2)
    with pytest.raises(QueueFull, match="active: 1/1, queued: 2/2"):
        await use("d")
    second.cancel()  # a queued client goes away: its place is freed at once
    await asyncio.sleep(0.01)
    assert limiter.queued == 1
    release.set()
    await asyncio.gather(first, third)
    assert order == ["a", "c"] and (limiter.active, limiter.queued) == (0, 0)

    release.clear()
    holder = asyncio.create_task(use("e", hold=True))
    await asyncio.sleep(0)
    with pytest.raises(QueueTimeout, match="timed out after 300 ms"):
        await use("f")
    release.set()
    await holder
    assert (limiter.rejections_total, limiter.queue_timeouts_total, limiter.active) == (1, 1, 0)
