"""A client that stops reading: the server drops it after limits.write_timeout_s and frees its sequence.

Loopback socket buffers would take a whole tiny-model stream without blocking, so the blocked write is
simulated: after a few chunks, writes to the client never complete, as when its window is full.
"""

import asyncio

from aiohttp import web

from server.appkeys import METRICS, WORKER_HANDLES
from tests.conftest import chat_body, eventually


async def test_a_reader_that_stops_reading_is_dropped(app_client, monkeypatch):
    client = await app_client(
        {"limits": {"write_timeout_s": 0.3}, "streaming": {"batch_tokens": 1, "flush_ms": 0}}
    )
    handle = client.app[WORKER_HANDLES]["tiny-llama"]

    real_write = web.StreamResponse.write
    writes = {"n": 0}

    async def write_then_block(self, data):
        writes["n"] += 1
        if writes["n"] > 3:
            await asyncio.sleep(3600)  # the client's window is full: this write never completes
        return await real_write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write_then_block)
    response = await client.post("/v1/chat/completions", json=chat_body(4000, stream=True))
    await response.content.readline()

    requests_total = client.app[METRICS].requests
    assert await eventually(lambda: requests_total.labels("chat", "slow_reader")._value.get() == 1, 10)
    assert await eventually(lambda: handle.stats.sequences == 0 and handle.active_requests == 0, 10)
    response.close()
