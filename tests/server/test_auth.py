"""API keys, through the real app factory in-process (pytest-aiohttp, port 0)."""

import pytest

from server.app import create_app
from server.appkeys import ENGINES
from server.settings import build_settings

KEY = "s3cret-key"
CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
async def client(aiohttp_client):
    client = await aiohttp_client(create_app(build_settings({"server": {"api_key": KEY}})))
    for engine in client.app[ENGINES].values():
        await engine.wait_ready(60)
    return client


async def test_requests_without_the_key_are_refused(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_api_key"


async def test_the_key_opens_the_api_and_probes_stay_open(client):
    response = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status == 200
    assert (await client.get("/health")).status == 200
    assert (await client.get("/metrics")).status == 200
