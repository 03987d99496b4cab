"""Test helpers: the fake server, Locust's own counts. Starting processes is orchestrate.processes' job."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from contextlib import AbstractContextManager
from pathlib import Path

from configkit import REPO_ROOT
from orchestrate.processes import run_locust as _run_locust
from orchestrate.processes import serve

FAULT_SERVER = REPO_ROOT / "tests" / "support" / "fault_server.py"
DELAY_SERVER = REPO_ROOT / "tests" / "support" / "delay_server.py"
SWAP_SERVER = REPO_ROOT / "tests" / "support" / "swap_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fault_server() -> AbstractContextManager[str]:
    return serve([sys.executable, str(FAULT_SERVER), "--port", "0"])


def swap_server() -> AbstractContextManager[str]:
    """The FAKE server that swaps replies between concurrent requests (see swap_server.py)."""
    return serve([sys.executable, str(SWAP_SERVER), "--port", "0"])


def delay_server(ttft_ms: float, itl_ms: float) -> AbstractContextManager[str]:
    """The FAKE server with known delays (see delay_server.py)."""
    cmd = [
        sys.executable,
        str(DELAY_SERVER),
        "--ttft-ms",
        str(ttft_ms),
        "--itl-ms",
        str(itl_ms),
        "--port",
        "0",
    ]
    return serve(cmd)


def mlx_lm_server(model: str) -> AbstractContextManager[str]:
    """The peer server, mlx_lm.server, serving `model` on a free port (it prints no URL, so it is named)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlx_lm.server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return serve(cmd, url=f"http://127.0.0.1:{port}")


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=5).close()


def run_locust(host: str, run_dir: Path, *args: str, timeout_s: float = 90.0):
    """A headless run; Locust's own statistics also go to <run_dir>-locust.json (see locust_totals)."""
    return _run_locust(
        host,
        run_dir,
        "--json-file",
        str(run_dir.parent / f"{run_dir.name}-locust"),
        *args,
        timeout_s=timeout_s,
    )


def locust_totals(run_dir: Path) -> tuple[int, int]:
    """(requests, failures) as Locust itself counted them."""
    stats = json.loads((run_dir.parent / f"{run_dir.name}-locust.json").read_text())
    return sum(s["num_requests"] for s in stats), sum(s["num_failures"] for s in stats)


def wait_for(condition, timeout_s: float, interval_s: float = 0.1) -> None:
    """Poll `condition()` until it holds; fail the test with a clear message after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
