"""POST /tokenize on the reference server (vLLM-compatible): counts equal the usage of the
same request, bad bodies get OpenAI-shaped 4xx errors."""

from __future__ import annotations

import aiohttp
import pytest

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the water of the city"}]


async def _post(url: str, path: str, body) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as response:
        return response.status, await response.json()


async def test_chat_count_equals_the_chat_requests_prompt_usage(server_url):
    status, tokenized = await _post(server_url, "/tokenize", {"model": "tiny-llama", "messages": MESSAGES})
    assert status == 200 and tokenized["count"] == len(tokenized["tokens"]) > 0
    assert tokenized["max_model_len"] == 4096
    body = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 1}
    status, reply = await _post(server_url, "/v1/chat/completions", body)
    assert status == 200 and reply["usage"]["prompt_tokens"] == tokenized["count"]


async def test_prompt_count_equals_the_completion_requests_prompt_usage(server_url):
    status, tokenized = await _post(server_url, "/tokenize", {"prompt": "the water of the city"})  # one model
    assert status == 200
    body = {"model": "tiny-llama", "prompt": "the water of the city", "max_tokens": 1}
    status, reply = await _post(server_url, "/v1/completions", body)
    assert reply["usage"]["prompt_tokens"] == tokenized["count"]
    # without the generation prompt, the chat count is smaller
    no_generation = {"messages": MESSAGES, "add_generation_prompt": False}
    status, bare = await _post(server_url, "/tokenize", no_generation)
    status2, full = await _post(server_url, "/tokenize", {"messages": MESSAGES})
    assert status == status2 == 200 and bare["count"] < full["count"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "tiny-llama"}, 400, "invalid_value", None),
        ({"prompt": "x", "messages": MESSAGES}, 400, "invalid_value", None),
        ({"prompt": 5}, 400, "invalid_type", "prompt"),
        ({"messages": []}, 400, "invalid_value", "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_value", "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            400,
            "invalid_value",
            "messages.0.content",
        ),
        ({"model": "nope", "prompt": "x"}, 404, "model_not_found", "model"),
        ([1, 2], 400, "invalid_json", None),
    ],
)
async def test_bad_bodies_get_openai_errors(server_url, body, status, code, param):
    got_status, doc = await _post(server_url, "/tokenize", body)
    assert got_status == status
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["code"] == code and doc["error"]["param"] == param
