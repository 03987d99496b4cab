"""Hundreds of malformed and hostile requests: every one gets a 4xx in the error shape (or a valid reply
when the mutation happens to be valid), never a 5xx, and the server keeps serving."""

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.launch import running_server
from tests.conftest import write_config

EXAMPLES = 300

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "ignore_eos",
    "max_completion_tokens",
    "seed",
]
CHAT_BASE = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
COMPLETION_BASE = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 4}


def mutated(base: dict):
    replace = st.tuples(st.sampled_from(FIELDS), json_values).map(lambda kv: {**base, kv[0]: kv[1]})
    drop = st.sampled_from(sorted(base)).map(lambda key: {k: v for k, v in base.items() if k != key})
    message = st.dictionaries(st.sampled_from(["role", "content", "name"]), json_values, max_size=3).map(
        lambda m: {**base, "messages": [m]}
    )
    parts = st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "audio", 3]), "text": json_values}
        ),
        max_size=3,
    ).map(lambda p: {**base, "messages": [{"role": "user", "content": p}]})
    return st.one_of(replace, drop, message, parts, json_values)


bodies = st.one_of(
    mutated(CHAT_BASE).map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory):
    # A low max_tokens cap keeps the valid mutations quick.
    config = write_config(
        tmp_path_factory.mktemp("fuzz"), limits={"max_tokens_cap": 16, "default_max_tokens": 8}
    )
    with running_server(config) as url:
        yield url


def check(url: str, path: str, body: bytes) -> None:
    response = requests.post(
        f"{url}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code < 500, (body, response.status_code, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    else:
        response.content  # a valid reply: read it whole  # noqa: B018


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_fuzzed_chat_requests(fuzz_url, body):
    check(fuzz_url, "/v1/chat/completions", body)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated(COMPLETION_BASE).map(lambda b: json.dumps(b).encode()))
def test_fuzzed_completion_requests(fuzz_url, body):
    check(fuzz_url, "/v1/completions", body)


@pytest.mark.slow
def test_still_serving_after_the_fuzz(fuzz_url):
    assert requests.post(f"{fuzz_url}/v1/chat/completions", json=CHAT_BASE, timeout=30).status_code == 200
