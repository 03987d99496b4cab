"""The prompt schedule (server/worker/prefill_schedule.py, docs/operations.md "Scheduling"): which waiting
prompts are prefilled together, and at which step a prompt's first token is sent.

The policy's rule is tested as a plain function; the runtime tests drive `BatchRuntime` in-process on the
real embedded tiny model step by step, so they count steps and groups, never seconds."""

from __future__ import annotations

import dataclasses

import pytest

from configkit import REPO_ROOT
from server import ipc
from server.settings import ConfigError, build_settings, load_settings
from server.worker.prefill_schedule import MLX, SPLIT, PrefillScheduler, StepCosts
from server.worker.text_runtime import BatchRuntime
from tests.conftest import server_cli, write_config
from tests.support.runtime import greedy_submit, make_runtime

RUNTIME = REPO_ROOT / "config" / "runtime.yaml"


def submit(request_id: str, max_tokens: int = 6) -> ipc.Submit:
    return greedy_submit(
        request_id, [{"role": "user", "content": f"Request {request_id}, please."}], max_tokens
    )


# -- the rule ----------------------------------------------------------------------------------------------
# Costs fixed as measured on this project's CPU (docs/benchmarks.md): a prompt token costs about as much to
# prefill as a sequence's decode step; prompts of 40 tokens.
COSTS = StepCosts(prefill_s_per_token=2e-3, decode_s_per_sequence=3e-3, weight=0.0)


def prompts(count: int, tokens: int = 40) -> list[int]:
    return [tokens] * count


def scheduler(schedule: str = SPLIT, max_group: int = 32) -> PrefillScheduler:
    return PrefillScheduler(schedule, max_group, costs=dataclasses.replace(COSTS))


def test_a_burst_goes_in_two_groups_the_first_just_over_half():
    policy = scheduler()
    assert policy.group_size(prompts(16), room=32, in_prefill=0, running=0) == 9  # the median is in it
    # The rest waits for the first group's first tokens (inserted now, it would be prefilled before them)...
    assert policy.group_size(prompts(7), room=23, in_prefill=9, running=9) == 0
    assert policy.group_size(prompts(7), room=23, in_prefill=0, running=9) == 7  # ...then goes at once
    assert scheduler().group_size(prompts(48), room=32, in_prefill=0, running=0) == 25


def test_prompts_that_arrive_after_a_burst_is_split_are_a_burst_of_their_own():
    policy = scheduler()
    assert policy.group_size(prompts(16), room=32, in_prefill=0, running=15) == 9
    # 15 more arrive (the next returning group) before the first group's first tokens: the tail is the
    # 7 left of the first burst, not all 22 waiting...
    assert policy.group_size(prompts(22), room=23, in_prefill=0, running=24) == 7
    # ...and the 15 are split in turn, just over half first.
    assert policy.group_size(prompts(15), room=16, in_prefill=0, running=16) == 8
    assert policy.group_size(prompts(7), room=8, in_prefill=0, running=24) == 7


def test_a_waiting_prompt_is_held_only_when_that_costs_less_than_it_saves():
    policy = scheduler()
    # One prompt in prefill, one waiting, a small batch: holding costs one cheap decode step; inserting
    # would delay the first token by a whole prefill. Held.
    assert policy.group_size(prompts(1), room=30, in_prefill=1, running=2) == 0
    # A full batch makes the decode step cost more than a 40-token prefill: inserted at once.
    assert policy.group_size(prompts(1), room=1, in_prefill=1, running=31) == 1
    # Many waiting behind a small group in prefill: each held request pays the step; inserted at once.
    assert policy.group_size(prompts(12, 10), room=20, in_prefill=1, running=12) == 12


def test_lone_and_paired_arrivals_go_at_once():
    policy = scheduler()
    assert policy.group_size(prompts(1), room=32, in_prefill=0, running=0) == 1
    assert policy.group_size(prompts(2), room=32, in_prefill=0, running=5) == 2
    assert policy.group_size([], room=32, in_prefill=0, running=0) == 0


def test_groups_stay_within_the_prefill_batch_size_and_the_decode_cap():
    policy = scheduler(max_group=8)
    assert policy.group_size(prompts(30), room=32, in_prefill=0, running=0) == 8
    assert policy.group_size(prompts(22), room=32, in_prefill=0, running=8) == 8  # the tail, capped too
    assert scheduler().group_size(prompts(30), room=4, in_prefill=0, running=28) == 4
    assert scheduler().group_size(prompts(5), room=0, in_prefill=0, running=32) == 0


def test_mlx_schedule_hands_over_everything_that_fits():
    policy = scheduler(MLX, max_group=8)
    assert policy.group_size(prompts(16), room=32, in_prefill=16, running=16) == 16  # mlx-lm groups them
    assert policy.group_size(prompts(16), room=5, in_prefill=0, running=27) == 5


def test_costs_follow_the_generator_counters():
    costs = StepCosts(prefill_s_per_token=1.0, decode_s_per_sequence=1.0, weight=0.5)
    costs.observe(prompt_tokens=100, prompt_s=0.2, sequence_steps=8, decode_s=0.024)
    assert costs.prefill_s_per_token == pytest.approx(0.501) and costs.decode_s_per_sequence == pytest.approx(
        0.5015
    )
    costs.observe(prompt_tokens=0, prompt_s=0.0, sequence_steps=0, decode_s=0.0)  # nothing done: unchanged
    assert costs.prefill_s_per_token == pytest.approx(0.501)


# -- the runtime -------------------------------------------------------------------------------------------
def drive(runtime: BatchRuntime, events: list, max_steps: int = 500) -> dict[str, int]:
    """Step until idle; returns the step (1-based) at which each request's first Tokens event was sent."""
    first_step: dict[str, int] = {}
    for step in range(1, max_steps + 1):
        if not (runtime.sequences or runtime.held):
            return first_step
        runtime.send_events(runtime.admit_held())
        runtime.send_events(runtime.step())
        for event in events:
            if isinstance(event, ipc.Tokens):
                first_step.setdefault(event.request_id, step)
    raise AssertionError(f"still busy after {max_steps} steps")


def groups_inserted(runtime: BatchRuntime) -> list[list[str]]:
    """Wraps `insert` to record which requests entered the generator together (between two steps)."""
    groups: list[list[str]] = []
    insert, step = runtime.insert, runtime.step
    fresh = [True]

    def recording_insert(sub, tokens):
        if fresh[0]:
            groups.append([])
            fresh[0] = False
        groups[-1].append(sub.request_id)
        return insert(sub, tokens)

    def recording_step():
        fresh[0] = True
        return step()

    # Instance attributes over the methods: the test records what the runtime inserts and when it steps.
    runtime.insert, runtime.step = recording_insert, recording_step  # type: ignore[method-assign]
    return groups


def texts(events: list) -> dict[str, str]:
    out: dict[str, str] = {}
    for event in events:
        if isinstance(event, ipc.Tokens):
            out[event.request_id] = out.get(event.request_id, "") + event.text
    return out


def test_waiting_prompts_join_in_groups_after_the_previous_groups_first_token(tiny_llama):
    runtime, events = make_runtime(tiny_llama, prefill_batch_size=32)
    runtime.scheduler.costs = dataclasses.replace(COSTS)  # decisions from fixed costs, not this run's timings
    groups = groups_inserted(runtime)
    for request_id in ["a", "b", "c", "d", "e"]:
        runtime.send_events(runtime.handle(submit(request_id)))
    # "a" found the generator idle and went alone; the others wait for its first token.
    assert groups == [["a"]] and len(runtime.held) == 4
    first_step = drive(runtime, events)
    assert groups == [["a"], ["b", "c", "d"], ["e"]]  # then 4 waiting: 3 (just over half), then 1
    # Each group's prefill starts only once the group before it has its first token out.
    assert first_step["a"] < first_step["b"] == first_step["c"] == first_step["d"] < first_step["e"]


def test_mlx_schedule_hands_every_waiting_prompt_to_the_generator(tiny_llama):
    runtime, events = make_runtime(tiny_llama, prefill_schedule="mlx", prefill_batch_size=8)
    groups = groups_inserted(runtime)
    for request_id in ["a", "b", "c", "d", "e"]:
        runtime.send_events(runtime.handle(submit(request_id)))
    assert groups == [["a", "b", "c", "d", "e"]] and not runtime.held
    drive(runtime, events)


@pytest.mark.parametrize(("early", "step"), [(True, 2), (False, 3)])
def test_first_token_is_sent_at_the_end_of_the_step_that_ends_the_prefill(tiny_llama, early, step):
    # Step 1 prefills the prompt (all but its last token), step 2 joins it to the decode batch, sampling
    # its first token; mlx-lm returns that token only at step 3.
    runtime, events = make_runtime(tiny_llama, early_first_token=early)
    runtime.send_events(runtime.handle(submit("a")))
    assert drive(runtime, events)["a"] == step


@pytest.mark.parametrize("max_tokens", [1, 2, 7])
def test_an_early_first_token_is_neither_lost_nor_counted_twice(tiny_llama, max_tokens):
    replies = {}
    for early in (True, False):
        runtime, events = make_runtime(tiny_llama, early_first_token=early)
        for request_id in ["a", "b", "c"]:
            runtime.send_events(runtime.handle(submit(request_id, max_tokens)))
        drive(runtime, events)
        ends = {e.request_id: e.completion_tokens for e in events if isinstance(e, ipc.Finished)}
        assert ends == dict.fromkeys("abc", max_tokens)
        tokens: dict[str, int] = {}
        for event in events:
            if isinstance(event, ipc.Tokens):
                tokens[event.request_id] = tokens.get(event.request_id, 0) + event.token_count
        assert tokens == ends  # every token reported once
        replies[early] = texts(events)
    assert replies[True] == replies[False]  # the same greedy text either way


def test_a_stop_string_in_the_first_token_ends_the_reply_at_once(tiny_llama):
    runtime, events = make_runtime(tiny_llama)
    runtime.send_events(runtime.handle(submit("probe", 1)))
    drive(runtime, events)
    first_text = texts(events)["probe"]
    events.clear()
    assert first_text, "the tiny model's first token here is text"
    stop = submit("probe", 8)._replace(request_id="a", stop=[first_text])
    runtime.send_events(runtime.handle(stop))
    drive(runtime, events)
    (end,) = [e for e in events if isinstance(e, ipc.Finished)]
    assert end.finish_reason == "stop" and end.completion_tokens == 1
    assert not runtime.sequences and not runtime.uid_by_request


# -- the settings ------------------------------------------------------------------------------------------
def test_on_by_default_and_pinned_off_by_every_release_profile():
    engine = load_settings(RUNTIME).engine
    assert (engine.prefill_schedule, engine.early_first_token, engine.prefill_batch_size) == (
        "split",
        True,
        32,
    )
    for release in ("v1.1.1", "v1.2.0", "guide-promise"):
        engine = load_settings(RUNTIME, profile=release, warn=lambda line: None).engine
        # What the releases ran: mlx-lm's own grouping, 8 prompts at a time, first tokens as it returns them.
        assert (engine.prefill_schedule, engine.early_first_token, engine.prefill_batch_size) == (
            "mlx",
            False,
            8,
        )


@pytest.mark.parametrize(
    ("engine", "key"),
    [
        ({"prefill_schedule": "fifo"}, "engine.prefill_schedule"),
        ({"early_first_token": "soon"}, "engine.early_first_token"),
    ],
)
def test_bad_schedule_values_name_the_key(engine, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_settings({"engine": engine}, warn=lambda line: None)


def test_cli_exits_2_naming_a_bad_schedule(tmp_path):
    result = server_cli(write_config(tmp_path, engine={"prefill_schedule": "fastest"}))
    assert result.returncode == 2 and "engine.prefill_schedule" in result.stderr
