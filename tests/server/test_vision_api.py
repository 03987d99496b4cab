"""Image chat over the HTTP API: two models in one server, each in its own worker, routed by name."""

import asyncio
import base64
import io

import aiohttp
import openai
import pytest
import requests
from PIL import Image

from orchestrate.processes import running_server
from tests.conftest import write_config

MODELS = [{"path": "embedded:tiny-llama"}, {"path": "embedded:tiny-qwen2-vl"}]


def image_url(color, size=(64, 64)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_chat(url: str, max_tokens: int = 24, **extra) -> dict:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {
        "model": "tiny-qwen2-vl",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        **extra,
    }


@pytest.fixture(scope="module")
def two_model_url(tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("vision"), models=MODELS)
    with running_server(config) as url:
        yield url


def test_both_models_are_listed_and_ready(two_model_url):
    ids = [m["id"] for m in requests.get(f"{two_model_url}/v1/models", timeout=10).json()["data"]]
    assert ids == ["tiny-llama", "tiny-qwen2-vl"]
    models = requests.get(f"{two_model_url}/health", timeout=10).json()["models"]
    assert {name: m["kind"] for name, m in models.items()} == {
        "tiny-llama": "text",
        "tiny-qwen2-vl": "vision",
    }


def test_the_image_reaches_the_model(two_model_url):
    def reply(color) -> str:
        body = requests.post(
            f"{two_model_url}/v1/chat/completions", json=image_chat(image_url(color)), timeout=60
        )
        assert body.status_code == 200, body.text
        return body.json()["choices"][0]["message"]["content"]

    red, blue = reply((255, 0, 0)), reply((0, 0, 255))
    assert red == reply((255, 0, 0))  # greedy: the same image gives the same words
    assert red != blue


def test_the_openai_client_sends_an_image(two_model_url):
    client = openai.OpenAI(base_url=f"{two_model_url}/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model="tiny-qwen2-vl",
        messages=image_chat(image_url((0, 255, 0)))["messages"],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    usage = list(stream)[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens > 10  # the image's tokens are in the prompt


BAD_IMAGES = [
    ("not an image", "data:image/png;base64," + base64.b64encode(b"hello world").decode(), "invalid_image"),
    ("truncated", image_url((1, 2, 3))[:120], "invalid_image"),
    ("bad base64", "data:image/png;base64,@@@@", "invalid_image"),
    ("remote url", "http://127.0.0.1:9/cat.png", "invalid_image"),
    ("local path", "/etc/hostname", "invalid_image"),
    ("too many pixels", image_url((0, 0, 0), (5000, 4000)), "invalid_image"),
]


@pytest.mark.parametrize(("case", "url", "code"), BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_images_get_400(two_model_url, case, url, code):
    response = requests.post(f"{two_model_url}/v1/chat/completions", json=image_chat(url), timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == "messages.0.content.1"


def test_too_many_images_get_400(two_model_url):
    body = image_chat(image_url((9, 9, 9)))
    body["messages"][0]["content"] += [body["messages"][0]["content"][1]] * 4
    response = requests.post(f"{two_model_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_images"


async def test_concurrent_image_and_text_requests_all_succeed(two_model_url):
    text = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 48,
        "ignore_eos": True,
    }
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 0)]
    sizes = [(32, 32), (64, 48), (112, 112), (56, 80)]
    bodies = [image_chat(image_url(c, s), max_tokens=48) for c, s in zip(colors, sizes, strict=True)] + [
        text
    ] * 4

    async def post(session, body):
        async with session.post(f"{two_model_url}/v1/chat/completions", json=body) as response:
            return response.status, await response.json()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        results = await asyncio.gather(*(post(session, b) for b in bodies))
    assert [status for status, _ in results] == [200] * 8
    assert all(body["usage"]["completion_tokens"] == 48 for _, body in results)


@pytest.mark.slow
def test_per_request_loading_gives_the_same_answer(two_model_url, tmp_path):
    persistent = requests.post(
        f"{two_model_url}/v1/chat/completions", json=image_chat(image_url((255, 0, 0))), timeout=60
    ).json()["choices"][0]["message"]["content"]
    config = write_config(tmp_path, models=[MODELS[1]], engine={"persistent": False})
    with running_server(config) as url:
        reloaded = requests.post(
            f"{url}/v1/chat/completions", json=image_chat(image_url((255, 0, 0))), timeout=60
        )
    assert reloaded.status_code == 200
    assert reloaded.json()["choices"][0]["message"]["content"] == persistent
