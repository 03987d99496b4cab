"""/metrics under load, parsed with prometheus_client's own text parser: every engine series moves."""

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrate.processes import running_server
from tests.conftest import chat_body, write_config

TIERS = ("30B+", "13-27B", "7-13B", "3-7B", "<3B")
ENGINE_SERIES = (
    "mlxserving_sequences_running",
    "mlxserving_sequences_waiting",
    "mlxserving_sequences_held",
    "mlxserving_batch_size",
    "mlxserving_decode_steps_total",
)
LIMITER_SERIES = ("mlxserving_limiter_active", "mlxserving_limiter_queued")


def samples(text: str) -> dict[str, float]:
    """Every sample of the exposition by name (one model, so one sample per name here)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model", "tiny-llama") == "tiny-llama":
                out[sample.name] = sample.value
    return out


async def watch_while(url: str, requests_: list[dict], names: tuple[str, ...]) -> tuple[dict, dict]:
    """Send the requests at once and scrape /metrics until all have finished: (max seen, last seen)."""
    peak = dict.fromkeys(names, 0.0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def post(body: dict) -> int:
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.read()
                return response.status

        tasks = [asyncio.create_task(post(body)) for body in requests_]
        while not all(t.done() for t in tasks):
            async with session.get(f"{url}/metrics") as response:
                seen = samples(await response.text())
            for name in names:
                peak[name] = max(peak[name], seen.get(name, 0.0))
            await asyncio.sleep(0.02)
        assert [t.result() for t in tasks] == [200] * len(tasks)
        # The worker reports its batch after the last step; give that report a moment to arrive.
        deadline = time.monotonic() + 30
        while True:
            async with session.get(f"{url}/metrics") as response:
                last = samples(await response.text())
            if last.get("mlxserving_sequences_running") == 0 or time.monotonic() > deadline:
                return peak, last
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_batch_series_move_under_continuous_batching(tmp_path):
    # A batch of 2 for 5 long requests: 2 decode, 3 wait for a slot in the engine.
    config = write_config(tmp_path, engine={"max_batch_size": 2})
    with running_server(config) as url:
        peak, last = await watch_while(url, [chat_body(400) for _ in range(5)], ENGINE_SERIES)
    assert peak["mlxserving_sequences_running"] == 2
    assert peak["mlxserving_batch_size"] == 2
    assert peak["mlxserving_sequences_waiting"] >= 1
    assert peak["mlxserving_sequences_held"] == 0  # nothing serializes generation here
    assert last["mlxserving_decode_steps_total"] >= 5 * 400 / 2
    for name in ("mlxserving_sequences_running", "mlxserving_sequences_waiting", "mlxserving_batch_size"):
        assert last[name] == 0, name


@pytest.mark.slow
async def test_limiter_and_serialization_series_move_under_v111(tmp_path):
    # 3 limiter slots, a patient queue, and one generation at a time: 1 runs, 2 held in the engine,
    # 2 queued in the limiter. The same limits for every tier, whichever the model's name selects.
    limits = {"max_concurrent": 3, "queue_depth": 4, "queue_timeout_ms": 600_000}
    config = write_config(
        tmp_path,
        compat="v1.1.1",
        model_concurrency_limiter={"enabled": True, "tier_limits": dict.fromkeys(TIERS, limits)},
        mlx={"concurrency_limit": 1},
    )
    with running_server(config) as url:
        names = ENGINE_SERIES + LIMITER_SERIES
        peak, last = await watch_while(url, [chat_body(150) for _ in range(5)], names)
    assert peak["mlxserving_limiter_active"] == 3
    assert peak["mlxserving_limiter_queued"] == 2
    assert peak["mlxserving_sequences_running"] == 1
    assert peak["mlxserving_batch_size"] == 1
    assert peak["mlxserving_sequences_held"] == 2
    assert peak["mlxserving_sequences_waiting"] >= 2
    for name in ("mlxserving_limiter_active", "mlxserving_limiter_queued", "mlxserving_sequences_held"):
        assert last[name] == 0, name
