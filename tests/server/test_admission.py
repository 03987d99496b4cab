"""v1.1.1's limiter: unit semantics, tier detection, and real bursts against the real server."""

import asyncio
import contextlib
import itertools
import logging
import time

import aiohttp
import pytest
import requests

from orchestrate.processes import running_server
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
from tests.conftest import RUNTIME_CONFIG, chat_body, eventually, write_config


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

    model, _ = load(str(build_embedded_model()))
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


# -- against the real server ---------------------------------------------------------------------------
def limited_config(tmp_path, max_concurrent=1, queue_depth=2, queue_timeout_ms=1000, **extra):
    return write_config(
        tmp_path,
        compat="v1.1.1",
        model_concurrency_limiter={
            "enabled": True,
            "tier_source": "weights",  # the tiny model's 3 M parameters: <3B (its name has no size)
            "tier_limits": {
                "<3B": {
                    "max_concurrent": max_concurrent,
                    "queue_depth": queue_depth,
                    "queue_timeout_ms": queue_timeout_ms,
                }
            },
            **extra,
        },
        mlx={"concurrency_limit": 1, "force_metal_sync": True},
    )


def chat(max_tokens: int, stream: bool = False) -> dict:
    return chat_body(max_tokens, stream)


async def post(session, url, body) -> tuple[int, dict | None, float]:
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        payload = await response.json() if not body["stream"] else None
        return response.status, payload, time.monotonic()


async def burst(url: str, n: int, max_tokens: int) -> list[tuple[int, dict | None, float]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        return await asyncio.gather(*(post(session, url, chat(max_tokens)) for _ in range(n)))


def statuses(results) -> dict[int, int]:
    counts: dict[int, int] = {}
    for status, _, _ in results:
        counts[status] = counts.get(status, 0) + 1
    return counts


def health(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=10).json()["models"]["tiny-llama"]


@pytest.mark.slow
async def test_burst_with_queue_timeouts_gives_exact_counts(tmp_path):
    # 1 runs (~2 s of tokens), 2 queue and time out after 1 s, 3 find the queue full.
    with running_server(limited_config(tmp_path)) as url:
        results = await burst(url, 6, max_tokens=800)
        assert statuses(results) == {200: 1, 503: 2, 429: 3}
        for status, body, _ in results:
            if status == 429:
                assert body["error"]["code"] == "concurrency_limit_exceeded"
                assert "tier: <3B" in body["error"]["message"] and "queued: 2/2" in body["error"]["message"]
            if status == 503:
                assert body["error"]["code"] == "queue_timeout"
        limiter = health(url)["limiter"]
        assert (limiter["tier"], limiter["rejections_total"], limiter["queue_timeouts_total"]) == (
            "<3B",
            3,
            2,
        )
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'mlxserving_limiter_rejections_total{model="tiny-llama",tier="<3B"} 3.0' in metrics
        assert 'mlxserving_limiter_queue_timeouts_total{model="tiny-llama",tier="<3B"} 2.0' in metrics


@pytest.mark.slow
async def test_burst_with_patient_queue_and_fifo_order(tmp_path):
    with running_server(limited_config(tmp_path, queue_timeout_ms=30000)) as url:
        results = await burst(url, 6, max_tokens=200)
        assert statuses(results) == {200: 3, 429: 3}
        response = requests.post(f"{url}/v1/chat/completions", json=chat(4), timeout=30)
        assert response.status_code == 200  # and the queue drained

        # FIFO: with one slot, requests finish in the order they arrived.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            tasks = []
            for i in range(3):
                tasks.append(asyncio.create_task(post(session, url, chat(150 if i == 0 else 20))))
                await asyncio.sleep(0.1)
            done = await asyncio.gather(*tasks)
        finish_times = [finished for _, _, finished in done]
        assert finish_times == sorted(finish_times)


@pytest.mark.slow
async def test_v120_answers_the_same_burst_with_full_success():
    from tests.conftest import RUNTIME_CONFIG

    with running_server(RUNTIME_CONFIG) as url:
        results = await burst(url, 6, max_tokens=800)
    assert statuses(results) == {200: 6}


@pytest.mark.slow
async def test_disconnect_while_queued_frees_the_place(tmp_path):
    with running_server(limited_config(tmp_path, queue_depth=1, queue_timeout_ms=30000)) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            holder = await session.post(f"{url}/v1/chat/completions", json=chat(4000, stream=True))
            await holder.content.readline()
            queued = asyncio.create_task(post(session, url, chat(4)))
            assert await eventually(lambda: health(url)["limiter"]["queued"] == 1)
            queued.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queued
            assert await eventually(lambda: health(url)["limiter"]["queued"] == 0)
            # The freed place takes a newcomer instead of a 429.
            newcomer = asyncio.create_task(post(session, url, chat(4)))
            assert await eventually(lambda: health(url)["limiter"]["queued"] == 1)
            holder.close()
            status, body, _ = await newcomer
            assert status == 200 and body["choices"]


@pytest.mark.slow
async def test_in_stream_error_mode_reproduces_the_original_reply(tmp_path):
    config = limited_config(tmp_path, queue_depth=0, error_mode="in_stream")
    with running_server(config) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            holder = await session.post(f"{url}/v1/chat/completions", json=chat(4000, stream=True))
            await holder.content.readline()
            async with session.post(f"{url}/v1/chat/completions", json=chat(4, stream=True)) as refused:
                assert refused.status == 200
                text = await refused.text()
            holder.close()
    assert '"code":"model_concurrency_error"' in text.replace(" ", "")
    assert "[DONE]" not in text


@pytest.mark.slow
async def test_concurrency_limit_one_serializes_generation(tmp_path):
    config = limited_config(tmp_path, max_concurrent=8, queue_depth=8, queue_timeout_ms=30000)
    with running_server(config) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            spans = await asyncio.gather(*(text_span(session, url) for _ in range(3)))
    spans.sort()
    # One sequence at a time: each stream's first text comes after the previous stream ended.
    assert all(later[0] >= earlier[1] - 0.05 for earlier, later in itertools.pairwise(spans))


# -- the v1.2.0 profile as shipped, against the real server --------------------------------------------
def shipped_config(tmp_path, **stream_registry):
    """config/runtime.yaml with the v1.2.0 profile's keys (and overrides), as one config file."""
    return write_config(
        tmp_path,
        python_runtime={"concurrency_limit": 1},
        stream_registry={"max_active_streams": 10, "error_mode": "in_stream", **stream_registry},
    )


@pytest.mark.slow
async def test_v120_profile_refuses_the_eleventh_stream_as_v120_did(tmp_path):
    with running_server(shipped_config(tmp_path)) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            # Generation is serial: nine of the ten wait inside the worker (no headers yet), all hold a slot.
            holders = [
                asyncio.create_task(session.post(f"{url}/v1/chat/completions", json=chat(4000, stream=True)))
                for _ in range(10)
            ]
            assert await eventually(lambda: health(url)["limiter"]["active"] == 10)
            async with session.post(f"{url}/v1/chat/completions", json=chat(4, stream=True)) as refused:
                assert refused.status == 200  # the refusal travels inside the reply, as in v1.2.0
                text = await refused.text()
            for holder in holders:
                holder.cancel()
            for response in await asyncio.gather(*holders, return_exceptions=True):
                if isinstance(response, aiohttp.ClientResponse):
                    response.close()  # the one that was generating
            limiter = health(url)["limiter"]
            assert (limiter["tier"], limiter["rejections_total"]) == ("stream-registry", 1)
            # Once the streams are gone, a new one is served.
            assert await eventually(lambda: health(url)["limiter"]["active"] == 0)
            status, body, _ = await post(session, url, chat(4))
            assert status == 200 and body["choices"]
    assert '"code":"model_concurrency_error"' in text.replace(" ", "")
    assert "Max active streams (10) exceeded" in text and "[DONE]" not in text


@pytest.mark.slow
async def test_v120_profile_http_mode_answers_429(tmp_path):
    with running_server(shipped_config(tmp_path, max_active_streams=1, error_mode="http")) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            holder = await session.post(f"{url}/v1/chat/completions", json=chat(4000, stream=True))
            await holder.content.readline()
            status, body, _ = await post(session, url, chat(4))
            holder.close()
    assert status == 429 and body["error"]["code"] == "max_active_streams_exceeded"


@pytest.mark.slow
async def test_v120_profile_still_serializes_generation(tmp_path):
    with running_server(shipped_config(tmp_path)) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            spans = await asyncio.gather(*(text_span(session, url) for _ in range(3)))
    spans.sort()
    assert all(later[0] >= earlier[1] - 0.05 for earlier, later in itertools.pairwise(spans))


async def text_span(session, url) -> tuple[float, float]:
    """(first text, end) of one 60-token stream, in monotonic time."""
    start = None
    async with session.post(f"{url}/v1/chat/completions", json=chat(60, stream=True)) as response:
        async for line in response.content:
            if b'"content":"' in line and b'"content":""' not in line and start is None:
                start = time.monotonic()
    return start, time.monotonic()
