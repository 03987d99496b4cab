"""The worker's scheduling (docs/operations.md, "Scheduling"): the decode batch cap, FIFO admission of the
requests beyond it, arrivals collected into one prefill, the calibration rule, and the knobs' validation.

Runtime tests drive `BatchRuntime` in-process on the real embedded tiny model, step by step, so they count
steps and sequences, never seconds; one test goes through the real server."""

from __future__ import annotations

import asyncio
import weakref

import aiohttp
import pytest

from orchestrate.processes import running_server
from server import ipc
from server.settings import ConfigError, build_settings
from server.worker.decode_cap import calibrate_decode_cap, calibration_sizes, choose_decode_cap
from server.worker.text_runtime import BatchRuntime
from tests.conftest import chat_body, eventually, server_cli, write_config
from tests.support.runtime import greedy_submit, make_runtime


def submit(request_id: str, max_tokens: int = 6) -> ipc.Submit:
    return greedy_submit(
        request_id, [{"role": "user", "content": f"Request {request_id}, please."}], max_tokens
    )


def run_until_idle(runtime: BatchRuntime, max_steps: int = 2000) -> list[int]:
    """Step until nothing runs or waits; returns the number of sequences in the batch at each step."""
    in_batch: list[int] = []
    for _ in range(max_steps):
        note_admitted(runtime)
        if not (runtime.sequences or runtime.held):
            return in_batch
        runtime.send_events(runtime.admit_held())
        note_admitted(runtime)
        in_batch.append(len(runtime.sequences))
        runtime.send_events(runtime.step())
    raise AssertionError(f"still busy after {max_steps} steps")


# Each runtime's requests in the order they entered the generator (uid_by_request forgets finished ones).
ADMITTED_ORDER: weakref.WeakKeyDictionary[BatchRuntime, list[str]] = weakref.WeakKeyDictionary()


def note_admitted(runtime: BatchRuntime) -> None:
    """Record, in order, each request that entered the generator (uid_by_request keeps insertion order)."""
    order = ADMITTED_ORDER.setdefault(runtime, [])
    order += [request_id for request_id in runtime.uid_by_request if request_id not in order]


def admitted(runtime: BatchRuntime) -> list[str]:
    note_admitted(runtime)
    return ADMITTED_ORDER[runtime]


def started(events: list) -> list[str]:
    return [e.request_id for e in events if isinstance(e, ipc.Started)]


def finished(events: list) -> dict[str, int]:
    return {e.request_id: e.completion_tokens for e in events if isinstance(e, ipc.Finished)}


def test_cap_respected_and_queued_requests_served_in_arrival_order(tiny_llama):
    # mlx-lm's grouping (the releases'), so that both first arrivals join at once (split: one prefill
    # group at a time, tests/server/test_prefill_schedule.py).
    runtime, events = make_runtime(tiny_llama, decode_batch_cap=2, prefill_schedule="mlx")
    ids = [f"r{i}" for i in range(7)]
    for request_id in ids:
        runtime.send_events(runtime.handle(submit(request_id)))
    assert admitted(runtime) == ids[:2] and len(runtime.held) == 5
    assert started(events) == ids  # every one accepted (tokenized, checked) at once
    in_batch = run_until_idle(runtime)
    assert max(in_batch) == 2
    assert admitted(runtime) == ids  # FIFO: nobody overtakes
    assert finished(events) == dict.fromkeys(ids, 6)
    stats = [e for e in events if isinstance(e, ipc.BatchStats)]
    assert max(e.decoding for e in stats) == 2
    assert max(e.waiting for e in stats) >= 5 and max(e.held for e in stats) == 0  # queued, not v1.1.1-held


def test_a_cancelled_waiting_request_never_starts(tiny_llama):
    runtime, events = make_runtime(tiny_llama, decode_batch_cap=1)
    for request_id in "abc":
        runtime.send_events(runtime.handle(submit(request_id)))
    runtime.handle(ipc.Cancel("b"))
    run_until_idle(runtime)
    assert admitted(runtime) == ["a", "c"]
    assert set(finished(events)) == {"a", "c"}


def test_concurrency_limit_still_serializes_under_a_larger_cap(tiny_llama):
    runtime, events = make_runtime(tiny_llama, decode_batch_cap=8, concurrency_limit=1)
    assert runtime.decode_cap == 1
    for request_id in "abcd":
        runtime.send_events(runtime.handle(submit(request_id)))
    assert started(events) == ["a"]  # v1.1.1: a held request is announced when it starts
    assert max(run_until_idle(runtime)) == 1
    assert started(events) == admitted(runtime) == list("abcd") and len(finished(events)) == 4


def test_cap_defaults_to_max_batch_size(tiny_llama):
    runtime, _ = make_runtime(tiny_llama, max_batch_size=5)
    assert runtime.decode_cap == 5


def test_arrivals_wait_for_company_while_others_decode(tiny_llama):
    # 1000 ms is the longest wait allowed; each check below runs microseconds after the arrival.
    runtime, events = make_runtime(
        tiny_llama, prefill_wait_ms=1000, prefill_batch_size=2, prefill_schedule="mlx"
    )
    runtime.send_events(runtime.handle(submit("first", max_tokens=40)))
    assert admitted(runtime) == ["first"]  # nothing was decoding: no wait
    runtime.send_events(runtime.step())
    runtime.send_events(runtime.handle(submit("second")))
    assert admitted(runtime) == ["first"] and len(runtime.held) == 1
    runtime.send_events(runtime.handle(submit("third")))
    assert admitted(runtime) == ["first", "second", "third"]  # a full prefill batch goes at once
    run_until_idle(runtime)
    assert set(finished(events)) == {"first", "second", "third"}


def test_the_cap_is_the_smallest_size_within_tolerance_of_the_best():
    # More sequences than the smallest size at peak throughput add only time per token (README).
    assert choose_decode_cap({1: 100, 2: 180, 4: 300, 8: 400, 16: 390, 32: 300}) == 8
    assert choose_decode_cap({1: 100, 2: 180, 4: 300, 8: 370, 16: 390, 32: 400}) == 16
    assert choose_decode_cap({1: 100, 2: 180, 4: 300, 8: 300, 16: 300, 32: 400}) == 32
    assert choose_decode_cap({1: 250, 2: 200}) == 1
    assert calibration_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert calibration_sizes(12) == [1, 2, 4, 8, 12]
    assert calibration_sizes(1) == [1]


def test_auto_measures_every_size_and_picks_one_of_them(tiny_llama, caplog):
    runtime, _ = make_runtime(tiny_llama, max_batch_size=4)
    calibration = calibrate_decode_cap(runtime.model, runtime.tokenizer, runtime.options)
    assert list(calibration.tok_s_by_size) == [1, 2, 4]
    assert all(tok_s > 0 for tok_s in calibration.tok_s_by_size.values())
    assert calibration.cap == choose_decode_cap(calibration.tok_s_by_size)
    with caplog.at_level("INFO", logger="server.worker.batch_loop"):
        auto, _ = make_runtime(tiny_llama, max_batch_size=2, decode_batch_cap="auto")
    assert auto.decode_cap in (1, 2)
    assert "engine.decode_batch_cap: auto" in caplog.text


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"decode_batch_cap": 0}, "engine.decode_batch_cap"),
        ({"decode_batch_cap": "fast"}, "engine.decode_batch_cap"),
        ({"decode_batch_cap": True}, "engine.decode_batch_cap"),
        ({"decode_batch_cap": 64, "max_batch_size": 32}, "engine.decode_batch_cap"),
        ({"prefill_wait_ms": -1}, "engine.prefill_wait_ms"),
        ({"prefill_wait_ms": "soon"}, "engine.prefill_wait_ms"),
    ],
)
def test_bad_scheduling_values_name_the_key(engine, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build_settings({"engine": engine}, warn=lambda line: None)


def test_good_scheduling_values_are_kept():
    settings = build_settings({"engine": {"decode_batch_cap": "auto", "prefill_wait_ms": 5}})
    assert settings.engine.decode_batch_cap == "auto" and settings.engine.prefill_wait_ms == 5
    assert build_settings({}).engine.decode_batch_cap is None


def test_cli_exits_2_naming_a_bad_scheduling_key(tmp_path):
    config = write_config(tmp_path, engine={"decode_batch_cap": "lots"})
    result = server_cli(config)
    assert result.returncode == 2 and "engine.decode_batch_cap" in result.stderr


@pytest.mark.slow
async def test_server_queues_beyond_the_cap_and_serves_everyone(tmp_path):
    config = write_config(tmp_path, engine={"decode_batch_cap": 2})
    with running_server(config, log_file=tmp_path / "server.log") as url:
        seen: list[int] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:

            async def one() -> dict:
                async with session.post(f"{url}/v1/chat/completions", json=chat_body(24)) as response:
                    assert response.status == 200
                    return await response.json()

            async def watch() -> None:
                while True:
                    async with session.get(f"{url}/health") as response:
                        seen.append((await response.json())["models"]["tiny-llama"]["batch_size"])
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            replies = await asyncio.gather(*(one() for _ in range(6)))
            assert await eventually(lambda: len(seen) > 0, 30)
            watcher.cancel()
    assert [r["usage"]["completion_tokens"] for r in replies] == [24] * 6
    assert max(seen) <= 2
