"""The server under faults: a killed worker, shutdown with streams in flight, overload, deadlines, storms."""

import asyncio
import json
import os
import signal
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil
import pytest
import requests

from orchestrate.processes import running_server
from tests.conftest import chat_body, eventually, write_config


def chat(max_tokens: int, stream: bool = True) -> dict:
    return chat_body(max_tokens, stream)


@dataclass
class StreamOutcome:
    """What a client saw of one chat stream."""

    status: int
    done: bool = False  # [DONE] came
    error: dict[str, Any] | None = None  # the error body or error event, if one came
    chunks: int = 0

    @property
    def error_code(self) -> str | None:
        return self.error["code"] if self.error is not None else None


async def read_stream(
    session: aiohttp.ClientSession, url: str, body: dict, first_text: asyncio.Event | None = None
) -> StreamOutcome:
    """Status, whether [DONE] came, and the error event if one came; sets `first_text` once text came."""
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        result = StreamOutcome(response.status)
        if response.status != 200:
            result.error = (await response.json())["error"]
            return result
        async for raw in response.content:
            line = raw.strip()
            if line == b"data: [DONE]":
                result.done = True
            elif line.startswith(b"data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    result.error = event["error"]
                else:
                    result.chunks += 1
                    if first_text is not None and event["choices"][0]["delta"].get("content"):
                        first_text.set()
    return result


def endless(decode_tokens_per_s: float, seconds: float) -> int:
    """A max_tokens that this machine cannot finish within `seconds`, with a 10x margin."""
    return max(3000, int(10 * decode_tokens_per_s * seconds))


# Streams longer than the default cap: limits.max_tokens_cap is raised in these tests' configs.
NO_CAP = {"max_tokens_cap": 10**7}


def worker_pids(server_url: str) -> list[int]:
    port = int(server_url.rsplit(":", 1)[1])
    server = next(p for p in psutil.process_iter(["pid"]) if any(c.laddr.port == port for c in _listening(p)))
    return [child.pid for child in server.children(recursive=True)]


def _listening(process: psutil.Process) -> list:
    try:
        return [c for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return []


def health(url: str) -> tuple[int, dict]:
    response = requests.get(f"{url}/health", timeout=10)
    return response.status_code, response.json()


@pytest.mark.slow
@pytest.mark.expected_errors(r"worker exited unexpectedly")
async def test_worker_killed_under_load_fails_in_flight_requests_then_recovers(tmp_path, decode_tokens_per_s):
    tokens = endless(decode_tokens_per_s, 30)  # still running when the kill comes
    with running_server(write_config(tmp_path, limits=NO_CAP)) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            streams = [asyncio.create_task(read_stream(session, url, chat(tokens))) for _ in range(4)]
            assert await eventually(lambda: health(url)[1]["models"]["tiny-llama"]["engine_sequences"] == 4)
            (worker,) = [
                pid for pid in worker_pids(url) if "spawn_main" in " ".join(psutil.Process(pid).cmdline())
            ]
            os.kill(worker, signal.SIGKILL)
            results = await asyncio.gather(*streams)
        for result in results:
            assert result.status == 200 and not result.done
            assert result.error_code == "worker_crashed"
        assert await eventually(lambda: health(url)[0] == 200, timeout_s=60)
        model = health(url)[1]["models"]["tiny-llama"]
        assert model["restarts_total"] == 1 and model["last_recovery_s"] > 0
        reply = requests.post(f"{url}/v1/chat/completions", json=chat(8, stream=False), timeout=30)
        assert reply.status_code == 200
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'mlxserving_worker_restarts_total{model="tiny-llama"} 1.0' in metrics


def accepting(url: str) -> bool:
    try:
        requests.get(f"{url}/health", timeout=2)
    except requests.ConnectionError:
        return False
    return True


@pytest.mark.slow
async def test_sigterm_lets_short_streams_finish_and_ends_long_ones_with_an_error(
    tmp_path, decode_tokens_per_s
):
    # Sized from this machine's measured speed: the short stream needs a tenth of the grace period, the
    # long one ten times it.
    short_tokens = 64
    grace_s = max(2.0, 10 * short_tokens / decode_tokens_per_s)
    config = write_config(tmp_path, server={"shutdown_grace_s": grace_s}, limits=NO_CAP)
    # Not entered with `with`: this test sends the SIGTERM itself and judges the exit code.
    server = running_server(config)
    process, url = server.process, server.url
    assert url is not None  # known once the server is ready
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            running = [asyncio.Event(), asyncio.Event()]
            short = asyncio.create_task(read_stream(session, url, chat(short_tokens), running[0]))
            long_body = chat(endless(decode_tokens_per_s, grace_s))
            long = asyncio.create_task(read_stream(session, url, long_body, running[1]))
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in running)), 120)
            process.send_signal(signal.SIGTERM)
            assert await eventually(lambda: not accepting(url), 30)
            short_result, long_result = await asyncio.gather(short, long)
        assert short_result.done and short_result.error is None
        assert not long_result.done and long_result.error_code == "server_shutting_down"
        assert process.wait(30) == 0
    finally:
        server.stop()


@pytest.mark.slow
async def test_bounded_admission_and_request_deadline(tmp_path, decode_tokens_per_s):
    deadline_s = 1.0
    tokens = endless(decode_tokens_per_s, deadline_s)
    config = write_config(
        tmp_path,
        engine={"max_batch_size": 1, "prefill_batch_size": 1},
        limits={"max_waiting_requests": 1, "request_timeout_s": deadline_s, **NO_CAP},
    )
    with running_server(config) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            results = await asyncio.gather(*(read_stream(session, url, chat(tokens)) for _ in range(3)))
            refused = [r for r in results if r.status == 429]
            assert len(refused) == 1 and refused[0].error_code == "server_overloaded"
            timed_out = [r for r in results if r.status == 200]
            assert len(timed_out) == 2
            assert all(r.error_code == "request_timeout" and not r.done for r in timed_out)
            async with session.post(
                f"{url}/v1/chat/completions", json=chat(tokens, stream=False)
            ) as response:
                assert response.status == 504
                assert (await response.json())["error"]["code"] == "request_timeout"
        assert await eventually(lambda: health(url)[1]["models"]["tiny-llama"]["engine_sequences"] == 0)


@pytest.mark.slow
async def test_disconnect_storm_leaves_no_sequence_behind(server_url):
    clients, at_once = 200, 50
    gate = asyncio.Semaphore(at_once)

    async def connect_and_drop(session: aiohttp.ClientSession) -> None:
        async with gate:
            response = await session.post(f"{server_url}/v1/chat/completions", json=chat(2000))
            await response.content.readline()
            response.close()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(connect_and_drop(session) for _ in range(clients)))
    assert await eventually(lambda: health(server_url)[1]["models"]["tiny-llama"]["engine_sequences"] == 0)
    assert requests.post(f"{server_url}/v1/chat/completions", json=chat(4, stream=False), timeout=30).ok
