"""The prefix cache (server/worker/prefix_cache.py, docs/operations.md "Prefix cache"): the store's
lookup, bounds and eviction; greedy outputs identical with the cache on and off on multi-turn prompts, one at
a time and batched; the off switch; usage.prompt_tokens_details.cached_tokens and /metrics through the real
server; bad config values named with exit code 2.

Runtime tests drive `BatchRuntime` in-process on the real embedded tiny model, step by step."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from configkit import REPO_ROOT
from orchestrate.processes import running_server
from server import ipc
from server.settings import ConfigError, build_settings
from server.worker.prefix_cache import PrefixCache, common_prefix_length
from server.worker.text_runtime import BatchRuntime
from tests.conftest import server_cli, write_config
from tests.support.runtime import greedy_submit, make_runtime

REPO = REPO_ROOT
SYSTEM = "You answer in long sentences about rivers, cities, music and the people who live by the water."


# -- the store --------------------------------------------------------------------------------------------
@dataclass
class FakeLayer:
    """Stands for a KVCache in the store's bookkeeping, which reads `nbytes` (and `keys` in a view)."""

    nbytes: int
    keys: object = None
    values: object = None


def fake_kv(nbytes: int = 100) -> list:
    return [FakeLayer(nbytes)]


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([5], [6]) == 0


def reused_tokens(cache: PrefixCache, tokens: list[int]) -> int:
    reuse = cache.lookup(tokens)
    assert reuse is not None, f"no reuse for {tokens}"
    return reuse.cached_tokens


def test_lookup_reuses_the_longest_prefix_and_leaves_one_token_to_prefill():
    cache = PrefixCache(max_entries=8, max_bytes=10_000, min_tokens=2)
    cache.store(list(range(10)), fake_kv())
    cache.store([0, 1, 2, 7, 7, 7], fake_kv())
    assert reused_tokens(cache, [0, 1, 2, 3, 4, 99]) == 5
    assert reused_tokens(cache, [0, 1, 2, 7, 8]) == 4
    # A prompt the cache holds whole still leaves its last token to compute the first logits from.
    assert reused_tokens(cache, list(range(10))) == 9
    assert cache.lookup([0, 9]) is None  # 1 token in common, under min_tokens
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.tokens_saved) == (3, 1, 18)


def test_an_entry_that_is_a_prefix_of_a_new_one_is_dropped_and_a_covered_one_not_stored():
    cache = PrefixCache(max_entries=8, max_bytes=10_000)
    cache.store([1, 2, 3], fake_kv())
    cache.store([1, 2, 3, 4, 5], fake_kv())
    assert list(cache.entries) == [(1, 2, 3, 4, 5)]
    assert not cache.store([1, 2, 3, 4], fake_kv())  # the longer entry serves it
    assert len(cache) == 1 and cache.nbytes == 100


def test_bounded_by_entries_least_recently_used_out_first():
    cache = PrefixCache(max_entries=2, max_bytes=10_000)
    cache.store([1, 1], fake_kv())
    cache.store([2, 2], fake_kv())
    cache.lookup([1, 1, 5])  # touches [1, 1]: [2, 2] is now the oldest
    cache.store([3, 3], fake_kv())
    assert set(cache.entries) == {(1, 1), (3, 3)}


def test_bounded_by_bytes_and_an_entry_larger_than_the_bound_is_not_kept():
    cache = PrefixCache(max_entries=10, max_bytes=250)
    for first in range(3):
        cache.store([first, 0], fake_kv(100))
    assert set(cache.entries) == {(1, 0), (2, 0)} and cache.nbytes == 200
    assert not cache.store([9, 9], fake_kv(251))
    assert cache.stats().entries == 2 and cache.stats().bytes == 200


# -- the runtime -------------------------------------------------------------------------------------------
def submit(request_id: str, messages: list[dict], max_tokens: int = 12) -> ipc.Submit:
    return greedy_submit(request_id, messages, max_tokens)


def run(runtime: BatchRuntime, events: list, subs: list[ipc.Submit]) -> dict[str, tuple[str, ipc.Finished]]:
    """Submit together, step until all finish; each request's text and Finished event."""
    for sub in subs:
        runtime.send_events(runtime.submit(sub))
    for _ in range(2000):
        if not (runtime.sequences or runtime.held):
            break
        runtime.send_events(runtime.admit_held())
        runtime.send_events(runtime.step())
    texts = {sub.request_id: "" for sub in subs}
    finished = {}
    for event in events:
        if isinstance(event, ipc.Tokens) and event.request_id in texts:
            texts[event.request_id] += event.text
        elif isinstance(event, ipc.Finished) and event.request_id in texts:
            finished[event.request_id] = event
    events.clear()
    assert set(finished) == set(texts), "every request finishes"
    return {rid: (texts[rid], finished[rid]) for rid in texts}


def conversations(tiny_llama, users: int, turns: int, **options) -> tuple[list[list[str]], list[list[int]]]:
    """`users` conversations of `turns` turns, the users' turns batched together, each turn sending the
    history (system prompt, earlier turns and the replies received) plus a new question."""
    runtime, events = make_runtime(tiny_llama, **options)
    histories = [[{"role": "system", "content": SYSTEM}] for _ in range(users)]
    replies: list[list[str]] = [[] for _ in range(users)]
    cached: list[list[int]] = [[] for _ in range(users)]
    for turn in range(turns):
        for user, history in enumerate(histories):
            history.append({"role": "user", "content": f"User {user} asks question {turn} about the river."})
        subs = [submit(f"u{user}t{turn}", list(history)) for user, history in enumerate(histories)]
        results = run(runtime, events, subs)
        for user, history in enumerate(histories):
            text, finished = results[f"u{user}t{turn}"]
            history.append({"role": "assistant", "content": text})
            replies[user].append(text)
            cached[user].append(finished.cached_tokens)
    return replies, cached


def test_greedy_outputs_are_identical_with_the_cache_on_and_off_one_conversation(tiny_llama):
    off, cached_off = conversations(tiny_llama, users=1, turns=4)
    on, cached_on = conversations(
        tiny_llama, users=1, turns=4, prefix_cache_entries=16, prefix_cache_min_tokens=8
    )
    assert on == off
    assert cached_off == [[0, 0, 0, 0]]
    assert cached_on[0][0] == 0 and all(n > 0 for n in cached_on[0][1:]), cached_on


def test_greedy_outputs_are_identical_with_the_cache_on_and_off_in_a_continuous_batch(tiny_llama):
    off, _ = conversations(tiny_llama, users=3, turns=3)
    on, cached = conversations(
        tiny_llama, users=3, turns=3, prefix_cache_entries=16, prefix_cache_min_tokens=8
    )
    assert on == off
    # Turn 0: users arrive one after the other and share the system prompt. The first goes into the
    # generator alone and finds nothing cached; the others wait for its first token
    # (engine.prefill_schedule: split), by then its prompt is cached: they reuse the system prompt.
    assert cached[0][0] == 0 and cached[1][0] > 0 and cached[2][0] > 0, cached
    assert all(n > 0 for turns in cached for n in turns[1:])


def test_each_turn_reuses_at_least_the_previous_prompt(tiny_llama):
    runtime, events = make_runtime(tiny_llama, prefix_cache_entries=8, prefix_cache_min_tokens=8)
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "First question."}]
    text, first = run(runtime, events, [submit("a", list(history))])["a"]
    history += [{"role": "assistant", "content": text}, {"role": "user", "content": "Second question."}]
    _, second = run(runtime, events, [submit("b", list(history))])["b"]
    assert first.cached_tokens == 0 and first.prompt_tokens <= second.cached_tokens < second.prompt_tokens
    stats = runtime.stats().prefix_cache
    assert stats is not None
    assert (stats.hits, stats.misses, stats.tokens_saved) == (1, 1, second.cached_tokens)
    assert 1 <= stats.entries <= 8 and stats.bytes > 0


def test_a_shared_system_prompt_is_reused_by_requests_that_arrive_while_the_first_decodes(tiny_llama):
    runtime, events = make_runtime(tiny_llama, prefix_cache_entries=8, prefix_cache_min_tokens=8)
    first = submit("first", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "One."}], 40)
    runtime.send_events(runtime.submit(first))
    for _ in range(3):  # prefilled and decoding: its prompt's KV is stored already
        runtime.send_events(runtime.step())
    later = submit("later", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Two."}])
    results = run(runtime, events, [later])
    assert results["later"][1].cached_tokens >= len(runtime.tokenizer.encode(SYSTEM)) // 2


def test_the_cache_stays_within_its_entries(tiny_llama):
    runtime, events = make_runtime(tiny_llama, prefix_cache_entries=2, prefix_cache_min_tokens=4)
    for i in range(4):
        run(runtime, events, [submit(f"r{i}", [{"role": "user", "content": f"Topic {i} " * 8}])])
    stats = runtime.stats().prefix_cache
    assert stats is not None and stats.entries == 2


def test_off_switch_and_rotating_kv_leave_no_cache(tiny_llama, caplog):
    runtime, _ = make_runtime(tiny_llama)  # prefix_cache_entries: 0
    assert runtime.prefix_cache is None and runtime.stats().prefix_cache is None
    runtime, _ = make_runtime(tiny_llama, prefix_cache_entries=4, max_kv_size=64)
    assert runtime.prefix_cache is None and "max_kv_size" in caplog.text


# -- settings ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"max_entries": 0}, "prefix_cache.max_entries"),
        ({"max_bytes": 1000}, "prefix_cache.max_bytes"),
        ({"min_tokens": 0}, "prefix_cache.min_tokens"),
        ({"enabled": "sometimes"}, "prefix_cache.enabled"),
        ({"size": 3}, "prefix_cache.size"),
    ],
)
def test_bad_prefix_cache_values_name_the_key(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_settings({"prefix_cache": section})


def test_cli_exits_2_naming_a_bad_prefix_cache_key(tmp_path):
    config = write_config(tmp_path, prefix_cache={"max_entries": -1})
    result = server_cli(config)
    assert result.returncode == 2 and "prefix_cache.max_entries" in result.stderr


# -- through the real server -------------------------------------------------------------------------------
def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="tiny-llama"}} '):
            return float(line.split()[-1])
    return None


def present_metric(text: str, name: str) -> float:
    value = metric(text, name)
    assert value is not None, f"{name} is missing"
    return value


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        return response.read().decode()


def two_turns(client: openai.OpenAI, stream: bool) -> list:
    """Two turns of a conversation; the usage of each."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Tell me more."},
    ]
    usages = []
    for _ in range(2):
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="tiny-llama",
                    messages=messages,
                    max_tokens=8,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            text: str | None = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usages.append(chunks[-1].usage)
        else:
            reply = client.chat.completions.create(
                model="tiny-llama", messages=messages, max_tokens=8, temperature=0
            )
            text, usage = reply.choices[0].message.content, reply.usage
            usages.append(usage)
        messages = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": "And?"}]
    return usages


def test_server_reports_cached_tokens_and_metrics(tmp_path):
    config = write_config(tmp_path, prefix_cache={"max_entries": 8, "min_tokens": 8})
    with running_server(config, log_file=tmp_path / "server.log") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        first, second = two_turns(client, stream=False)
        assert first.prompt_tokens_details.cached_tokens == 0
        assert 0 < second.prompt_tokens_details.cached_tokens < second.prompt_tokens
        # The same conversation again, streamed: its first turn is cached now too.
        streamed = two_turns(client, stream=True)
        assert all(0 < u.prompt_tokens_details.cached_tokens < u.prompt_tokens for u in streamed)
        saved = sum(u.prompt_tokens_details.cached_tokens for u in [first, second, *streamed])
        text = scrape(url)
    assert present_metric(text, "mlxserving_prefix_cache_hits_total") >= 3
    assert present_metric(text, "mlxserving_prefix_cache_misses_total") >= 1
    assert present_metric(text, "mlxserving_prefix_cache_saved_tokens_total") == saved
    assert present_metric(text, "mlxserving_prefix_cache_entries") >= 1
    assert present_metric(text, "mlxserving_prefix_cache_bytes") > 0


def test_server_with_the_cache_off_reports_zero_cached_tokens_and_no_cache_metrics(tmp_path):
    config = write_config(tmp_path, prefix_cache={"enabled": False})
    with running_server(config, log_file=tmp_path / "server.log") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        usages = two_turns(client, stream=False)
        text = scrape(url)
    assert [u.prompt_tokens_details.cached_tokens for u in usages] == [0, 0]
    assert metric(text, "mlxserving_prefix_cache_hits_total") is None
