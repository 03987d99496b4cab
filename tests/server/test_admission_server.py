"""v1.1.1's limiter against the real server (tiny model): real bursts, exact counts, the shipped v1.2.0
profile. Its units alone: test_admission.py."""

import asyncio
import contextlib
import itertools
import time
from typing import Any

import aiohttp
import pytest
import requests

from orchestrate.processes import running_server
from tests.conftest import RUNTIME_CONFIG, chat_body, eventually, write_config


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


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], float]:
    """(status, JSON body, when it ended); a stream's body is not read as JSON: {}."""
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        payload = await response.json() if not body["stream"] else {}
        return response.status, payload, time.monotonic()


async def burst(url: str, n: int, max_tokens: int) -> list[tuple[int, dict[str, Any], float]]:
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

    # Six at once, as above; shorter replies, since v1.2.0 has no queue timeout for their length to reach.
    with running_server(RUNTIME_CONFIG) as url:
        results = await burst(url, 6, max_tokens=200)
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


async def text_span(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """(first text, end) of one 60-token stream, in monotonic time."""
    start: float | None = None
    async with session.post(f"{url}/v1/chat/completions", json=chat(60, stream=True)) as response:
        async for line in response.content:
            if b'"content":"' in line and b'"content":""' not in line and start is None:
                start = time.monotonic()
    assert start is not None, "the stream carried no text"
    return start, time.monotonic()
