"""Shared fixtures: the real server as a subprocess on a free port, with the real tiny model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from server.launch import running_server

REPO = Path(__file__).resolve().parent.parent
RUNTIME_CONFIG = REPO / "config" / "runtime.yaml"


def write_config(
    folder: Path, name: str = "config.yaml", base: Path | None = RUNTIME_CONFIG, **sections
) -> Path:
    """A config file: `base` with `sections` merged in section by section."""
    raw = yaml.safe_load(base.read_text()) if base else {}
    if "models" in sections:
        raw.pop("model", None)  # a config names its models one way or the other
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
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
def server_url(tmp_path_factory) -> str:
    """One v1.2.0 server for the whole session (model loading is the slow part)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(RUNTIME_CONFIG, log_file=log) as url:
        yield url
