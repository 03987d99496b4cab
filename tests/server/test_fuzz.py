"""Hundreds of malformed and hostile requests: every one gets a 4xx in the error shape (or a valid reply
when the mutation happens to be valid), never a 5xx, and the server keeps serving."""

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrate.processes import running_server
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


# -- type confusion: OpenAI's API refuses a value of the wrong JSON type; so do we, naming it -------------
# Every request field with the JSON types it accepts ("integer" is also a valid "number").
CHAT_FIELDS = {
    "model": {"string"},
    "messages": {"array"},
    "max_tokens": {"integer"},
    "max_completion_tokens": {"integer"},
    "temperature": {"number", "integer"},
    "top_p": {"number", "integer"},
    "n": {"integer"},
    "seed": {"integer"},
    "stream": {"boolean"},
    "stream_options": {"object"},
    "stop": {"string", "array"},
    "ignore_eos": {"boolean"},
}
COMPLETION_FIELDS = {
    **{k: v for k, v in CHAT_FIELDS.items() if k not in ("messages", "max_completion_tokens")},
    "prompt": {"string", "array"},
}
# Nested fields: (body built around the value, the param the error must name, accepted types).
TEXT_PART = {"type": "text", "text": "hi"}
IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
NESTED = {
    "message": (lambda v: {**CHAT_BASE, "messages": [v]}, "messages.0", {"object"}),
    "role": (
        lambda v: {**CHAT_BASE, "messages": [{"role": v, "content": "x"}]},
        "messages.0.role",
        {"string"},
    ),
    "content": (
        lambda v: {**CHAT_BASE, "messages": [{"role": "user", "content": v}]},
        "messages.0.content",
        {"string", "array", "null"},
    ),
    "part": (
        lambda v: {**CHAT_BASE, "messages": [{"role": "user", "content": [v]}]},
        "messages.0.content",
        {"object"},
    ),
    "part.text": (
        lambda v: {**CHAT_BASE, "messages": [{"role": "user", "content": [{**TEXT_PART, "text": v}]}]},
        "messages.0.content",
        {"string"},
    ),
    "part.image_url": (
        lambda v: {**CHAT_BASE, "messages": [{"role": "user", "content": [{**IMAGE_PART, "image_url": v}]}]},
        "messages.0.content",
        {"object"},
    ),
    "part.image_url.url": (
        lambda v: {
            **CHAT_BASE,
            "messages": [{"role": "user", "content": [{**IMAGE_PART, "image_url": {"url": v}}]}],
        },
        "messages.0.content",
        {"string"},
    ),
    "stream_options.include_usage": (
        lambda v: {**CHAT_BASE, "stream": True, "stream_options": {"include_usage": v}},
        "stream_options.include_usage",
        {"boolean"},
    ),
    "stop item": (lambda v: {**CHAT_BASE, "stop": [v]}, "stop", {"string"}),
    "prompt item": (lambda v: {**COMPLETION_BASE, "prompt": [v]}, "prompt", {"integer", "string"}),
}
# One value of each JSON type, chosen to be "almost right": what a coercing server would accept.
CONFUSING = {
    "string": "1",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "null": None,
    "array": [1],
    "object": {"a": 1},
}


def wrong_types(accepted: set[str]) -> list[str]:
    # null is how a client says "default" for an optional OpenAI field: not a type error there.
    return [t for t in CONFUSING if t not in accepted and t != "null"]


def confusion_cases():
    for path, fields, base in (
        ("/v1/chat/completions", CHAT_FIELDS, CHAT_BASE),
        ("/v1/completions", COMPLETION_FIELDS, COMPLETION_BASE),
    ):
        for field, accepted in fields.items():
            for kind in wrong_types(accepted):
                yield pytest.param(path, {**base, field: CONFUSING[kind]}, field, id=f"{path}:{field}={kind}")
    for name, (build, param, accepted) in NESTED.items():
        path = "/v1/completions" if name.startswith("prompt") else "/v1/chat/completions"
        for kind in wrong_types(accepted):
            yield pytest.param(path, build(CONFUSING[kind]), param, id=f"{path}:{name}={kind}")


def assert_type_error(url: str, path: str, body: dict, param: str) -> None:
    response = requests.post(f"{url}{path}", json=body, timeout=30)
    assert response.status_code == 400, (body, response.status_code, response.text)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param or error["param"].startswith(param + "."), (body, error)


@pytest.mark.parametrize(("path", "body", "param"), list(confusion_cases()))
def test_a_value_of_the_wrong_json_type_is_a_400_naming_it(fuzz_url, path, body, param):
    assert_type_error(fuzz_url, path, body, param)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_type_confusion_in_every_field(fuzz_url, data):
    chat = data.draw(st.booleans())
    fields, base = (CHAT_FIELDS, CHAT_BASE) if chat else (COMPLETION_FIELDS, COMPLETION_BASE)
    field = data.draw(st.sampled_from(sorted(fields)))
    kind = data.draw(st.sampled_from(wrong_types(fields[field])))
    value = data.draw(
        {
            "string": st.text(max_size=8),
            "integer": st.integers(),
            "number": st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
            "boolean": st.booleans(),
            "array": st.lists(json_values, max_size=3),
            "object": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        }[kind]
    )
    path = "/v1/chat/completions" if chat else "/v1/completions"
    assert_type_error(fuzz_url, path, {**base, field: value}, field)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # Past the interpreter's recursion limit: json.loads itself gives up.
        (b'{"model": "tiny-llama", "messages": ' + nested(100_000).encode() + b"}", "json_too_deep"),
        # Past our documented limit (limits.max_json_depth, 32) but parseable.
        (b'{"model": "tiny-llama", "messages": ' + nested(40).encode() + b"}", "json_too_deep"),
        # More values than limits.max_json_elements (100,000), in a body under the size limit.
        (json.dumps({**CHAT_BASE, "stop": [0] * 150_000}).encode(), "json_too_many_elements"),
    ],
    ids=["beyond recursion", "beyond max_json_depth", "beyond max_json_elements"],
)
def test_bodies_too_deep_or_too_large_in_values_are_400(fuzz_url, body, code):
    response = requests.post(
        f"{fuzz_url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
