"""Test helpers: the fake server, Locust's own counts. Starting processes is orchestrate.processes' job."""

from __future__ import annotations

import contextlib
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from configkit import REPO_ROOT

# Re-exported for the tests: the one launcher's own helpers.
from orchestrate.processes import free_port, mlx_lm_server, run_locust, serve

FAULT_SERVER = REPO_ROOT / "tests" / "support" / "fault_server.py"
DELAY_SERVER = REPO_ROOT / "tests" / "support" / "delay_server.py"
SWAP_SERVER = REPO_ROOT / "tests" / "support" / "swap_server.py"
__all__ = ["free_port", "mlx_lm_server", "run_locust"]  # and every name defined here


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


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=5).close()


def run_locust_with_stats(
    host: str, run_dir: Path, *args: str, timeout_s: float = 90.0
) -> subprocess.CompletedProcess[str]:
    """A headless run (orchestrate.processes.run_locust) with a test's timeout; Locust's own statistics
    also go to <run_dir>-locust.json (see locust_totals)."""
    return run_locust(
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


@contextlib.contextmanager
def threaded_http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stdlib HTTP server on a free loopback port in a thread; yields its base URL, stops it after."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def send_json(handler: http.server.BaseHTTPRequestHandler, status: int, doc: Any) -> None:
    """A FAKE server's whole JSON reply, with its length (so that clients need not wait for a close)."""
    body = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
