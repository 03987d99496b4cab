"""Start the server as a real subprocess on a free port and stop it again (demo, benchmarks, tests)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

_LISTENING = re.compile(r"serving on (http://\S+)")
# Set (by the test suite) to pass the server's log through to our stderr instead of discarding it.
ECHO_ENV = "MLXBENCH_ECHO_CHILD_OUTPUT"


def echo_child_output() -> bool:
    return os.environ.get(ECHO_ENV, "") not in ("", "0")


@contextlib.contextmanager
def running_server(
    config: Path | str,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    log_file: Path | None = None,
) -> Iterator[str]:
    """Yields the base URL once /health says ready; SIGTERM and wait on exit. The server's log goes to
    `log_file`, else to our stderr when MLXBENCH_ECHO_CHILD_OUTPUT is set, else nowhere."""
    command = [sys.executable, "-m", "server", "--config", str(config), "--port", "0", *(extra_args or [])]
    inherit = None if echo_child_output() else subprocess.DEVNULL
    stderr = open(log_file, "w") if log_file else inherit  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})}
    )
    try:
        base_url = _wait_listening(process, ready_timeout_s)
        _wait_healthy(process, base_url, ready_timeout_s)
        yield base_url
    finally:
        stop_server(process)
        process.stdout.close()
        if log_file:
            stderr.close()
            if echo_child_output():
                sys.stderr.write(Path(log_file).read_text(errors="replace"))


def _wait_listening(process: subprocess.Popen, timeout_s: float) -> str:
    found: list[str] = []

    def read() -> None:
        for line in process.stdout:
            match = _LISTENING.search(line)
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not found:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)  # stdout closed: it is exiting; report how
        raise RuntimeError(f"the server did not start (exit code {process.poll()})")
    return found[0]


def _wait_healthy(process: subprocess.Popen, base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} while loading")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server was not healthy after {timeout_s:.0f} s")


def stop_server(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
