"""The official openai client against the real server."""

import openai
import pytest


@pytest.fixture
def client(server_url):
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=30)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}]


def test_non_streaming(client):
    reply = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=10)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 10


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=MESSAGES,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage.completion_tokens == 16
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_legacy_completions(client):
    reply = client.completions.create(model="tiny-llama", prompt="The sea", max_tokens=5)
    assert reply.object == "text_completion"


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["tiny-llama"]


def test_errors_raise_the_matching_exception_class(client):
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=10**7)
    assert bad.value.param == "max_tokens"
