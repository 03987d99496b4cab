"""API keys, through the real app factory in-process (pytest-aiohttp, port 0)."""

import pytest

KEY = "s3cret-key"
CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
async def client(app_client):
    return await app_client({"server": {"api_key": KEY}})


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
