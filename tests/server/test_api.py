"""The HTTP API against a real server process and the real tiny model."""

import json
from typing import Any

import pytest
import requests

CHAT: dict[str, Any] = {
    "model": "tiny-llama",
    "messages": [{"role": "user", "content": "Hello there"}],
    "max_tokens": 12,
}


def sse_events(response: requests.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            payload = line[6:]
            events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return events


def test_chat_completion_shape(server_url):
    body = requests.post(f"{server_url}/v1/chat/completions", json=CHAT, timeout=30).json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "tiny-llama"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_chat_shape_with_usage(server_url):
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    with requests.post(
        f"{server_url}/v1/chat/completions", json=request, stream=True, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text


def test_stream_without_include_usage_has_no_usage_chunk(server_url):
    request = {**CHAT, "stream": True}
    with requests.post(
        f"{server_url}/v1/chat/completions", json=request, stream=True, timeout=30
    ) as response:
        events = sse_events(response)
    assert all("usage" not in e for e in events[:-1])


def test_ignore_eos_generates_exactly_max_tokens(server_url):
    request = {**CHAT, "max_tokens": 40, "ignore_eos": True}
    body = requests.post(f"{server_url}/v1/chat/completions", json=request, timeout=30).json()
    assert body["usage"]["completion_tokens"] == 40
    assert body["choices"][0]["finish_reason"] == "length"


def test_stop_string_ends_the_reply_before_it(server_url):
    free = requests.post(
        f"{server_url}/v1/chat/completions",
        json={**CHAT, "temperature": 0, "max_tokens": 30, "ignore_eos": True},
    ).json()["choices"][0]["message"]["content"]
    stop = free[5:8]
    assert len(stop) == 3
    stopped = requests.post(
        f"{server_url}/v1/chat/completions",
        json={**CHAT, "temperature": 0, "max_tokens": 30, "ignore_eos": True, "stop": [stop]},
    ).json()["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["message"]["content"] == free[: free.index(stop)]


def test_text_completions_streamed_and_not(server_url):
    request = {"model": "tiny-llama", "prompt": "Once upon a time", "max_tokens": 8, "ignore_eos": True}
    body = requests.post(f"{server_url}/v1/completions", json=request, timeout=30).json()
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] == 8
    stream_request = {**request, "stream": True}
    with requests.post(
        f"{server_url}/v1/completions", json=stream_request, stream=True, timeout=30
    ) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_models_health_and_metrics(server_url):
    models = requests.get(f"{server_url}/v1/models", timeout=10).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-llama"]
    health = requests.get(f"{server_url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["models"]["tiny-llama"]["state"] == "ready"
    requests.post(f"{server_url}/v1/chat/completions", json=CHAT, timeout=30)
    metrics = requests.get(f"{server_url}/metrics", timeout=10).text
    for name in (
        'mlxserving_requests_total{endpoint="chat",outcome="success"}',
        "mlxserving_time_to_first_token_seconds_bucket",
        "mlxserving_request_duration_seconds_bucket",
        "mlxserving_output_tokens_total",
        "mlxserving_requests_in_flight",
        "mlxserving_batch_size",
        'mlxserving_model_ready{model="tiny-llama"} 1.0',
    ):
        assert name in metrics


# (case, body: JSON or raw bytes, expected status, the `param` the error names)
BAD_REQUESTS: list[tuple[str, bytes | dict[str, Any], int, str | None]] = [
    ("malformed JSON", b"{not json", 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("missing messages", {"model": "tiny-llama"}, 400, "messages"),
    ("empty messages", {"model": "tiny-llama", "messages": []}, 400, "messages"),
    ("messages wrong type", {"model": "tiny-llama", "messages": "hi"}, 400, "messages"),
    (
        "bad role",
        {"model": "tiny-llama", "messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages.0.role",
    ),
    ("missing model", {"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ("unknown model", {**CHAT, "model": "gpt-17"}, 404, "model"),
    ("max_tokens zero", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens negative", {**CHAT, "max_tokens": -5}, 400, "max_tokens"),
    ("max_tokens over the cap", {**CHAT, "max_tokens": 10**6}, 400, "max_tokens"),
    ("max_tokens a string", {**CHAT, "max_tokens": "many"}, 400, "max_tokens"),
    ("temperature out of range", {**CHAT, "temperature": 7}, 400, "temperature"),
    ("n above 1", {**CHAT, "n": 3}, 400, "n"),
    ("stream not a bool", {**CHAT, "stream": "maybe"}, 400, "stream"),
    ("too many stop strings", {**CHAT, "stop": [str(i) for i in range(20)]}, 400, "stop"),
    (
        "image to a text-only model",
        {
            **CHAT,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ],
        },
        400,
        "messages.0.content.1",
    ),
    ("body too large", {**CHAT, "messages": [{"role": "user", "content": "x" * (9 << 20)}]}, 413, None),
    (
        "prompt too long",
        {**CHAT, "messages": [{"role": "user", "content": "word " * 20000}]},
        400,
        "messages",
    ),
]


@pytest.mark.parametrize(("case", "body", "status", "param"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_4xx_in_the_error_shape(server_url, case, body, status, param):
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = requests.post(f"{server_url}/v1/chat/completions", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param:
        assert error["param"] == param
    # ...and the server keeps serving.
    assert requests.post(f"{server_url}/v1/chat/completions", json=CHAT, timeout=30).status_code == 200


def test_unknown_route_and_method_are_errors_in_shape(server_url):
    missing = requests.get(f"{server_url}/v1/nothing", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = requests.get(f"{server_url}/v1/chat/completions", timeout=10)
    assert wrong.status_code == 405 and "error" in wrong.json()
