"""The one fixture set: the real server as a subprocess on a free port with the real tiny model, the FAKE
fault server, and the shared request helpers. Fake servers and other helpers live in tests/support/.

Every test also fails when anything it ran logged an unexpected ERROR or traceback
(tests/support/server_logs.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from configkit import REPO_ROOT, RUNTIME_CONFIG, merge
from orchestrate.processes import running_server

pytest_plugins = ["tests.support.server_logs", "pytester"]


def write_config(
    folder: Path, name: str = "config.yaml", base: Path | None = RUNTIME_CONFIG, **sections
) -> Path:
    """A config file: `base` with `sections` merged in section by section."""
    raw = yaml.safe_load(base.read_text()) if base else {}
    if "models" in sections:
        raw.pop("model", None)  # a config names its models one way or the other
    raw = merge(raw, sections)
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


async def eventually(condition, timeout_s: float = 30.0) -> bool:
    """Poll a condition until it holds or the time is up; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def server_cli(config: Path, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """`python -m server --config CONFIG ARGS` run to its end (a config it refuses exits 2 at once)."""
    cmd = [sys.executable, "-m", "server", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)


def chat_body(max_tokens: int, stream: bool = False, content: str = "Keep talking.") -> dict:
    """A fixed-length chat request to the embedded text model."""
    return {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One v1.2.0 server for the whole session (model loading is the slow part)."""
    with running_server(RUNTIME_CONFIG) as url:
        yield url


@pytest.fixture
def app_client(aiohttp_client):
    """`await app_client(sections)`: the real app in-process (pytest-aiohttp, port 0) with these settings
    sections, once every model's worker is ready."""
    from server.app import create_app
    from server.appkeys import WORKER_HANDLES
    from server.settings import build_settings

    async def start(sections: dict):
        client = await aiohttp_client(create_app(build_settings(sections)))
        for handle in client.app[WORKER_HANDLES].values():
            await handle.wait_ready(60)
        return client

    return start


@pytest.fixture(scope="session")
def tiny_llama():
    """The embedded tiny text model loaded with mlx-lm, (model, tokenizer), for in-process runtime tests."""
    from mlx_lm import load

    from server.models.embedded import build_embedded_model

    return load(str(build_embedded_model()))


@pytest.fixture(scope="module")
def fake_url():
    """The FAKE fault server (tests/support/fault_server.py), one per test module (its counters are too)."""
    from tests.support.helpers import fault_server

    with fault_server() as url:
        yield url


async def stream_timing(url: str, max_tokens: int) -> tuple[float, float]:
    """One streamed fixed-length request: (seconds to the first content, seconds from it to the end)."""
    start = time.perf_counter()
    first = None
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session,
        session.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens, stream=True)) as response,
    ):
        async for line in response.content:
            if first is None and line.startswith(b"data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    return first - start, end - first


@pytest.fixture(scope="session")
def decode_tokens_per_s(server_url) -> float:
    """This machine's single-stream decode speed, measured now: tests size their streams and deadlines
    from it instead of assuming a speed (machines here differ by 2.5x, and a loaded one is slower still)."""
    tokens = 64
    timings = [asyncio.run(stream_timing(server_url, tokens)) for _ in range(2)]
    best_s = max(min(decode_s for _, decode_s in timings), 1e-3)
    return (tokens - 1) / best_s
