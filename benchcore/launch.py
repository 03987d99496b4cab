"""Start a server and run `locust -f loadtest` headless, as subprocesses (tests, benchmarks, reproductions).

Bounded everywhere: a server that does not print its URL or answer /health in time is killed and reported.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import loadtest

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]  # the checkout: servers run from here (config/, .cache/)
LOADTEST_DIR = Path(loadtest.__file__).resolve().parent
URL_RE = re.compile(r"http://127\.0\.0\.1:\d+")


# Set (by the test suite) to pass what servers and Locust runs print through to our stderr.
ECHO_ENV = "MLXBENCH_ECHO_CHILD_OUTPUT"


def echo_child_output() -> bool:
    return os.environ.get(ECHO_ENV, "") not in ("", "0")


class ServerFailed(RuntimeError):
    """The server exited, or did not become healthy in time; the message ends with its last output."""


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except OSError:
        return None


@contextmanager
def serve(
    cmd: list[str], *, url: str | None = None, timeout_s: float = 120.0, cwd: Path = REPO
) -> Iterator[str]:
    """Run a server; yield its base URL (`url`, or the first http://127.0.0.1:PORT it prints) once /health
    answers 200. Terminates it on exit."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    printed = threading.Event()
    echo = echo_child_output()

    def pump() -> None:  # also keeps the pipe drained so a chatty server never blocks
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if echo:
                sys.stderr.write(line)
            if URL_RE.search(line):
                printed.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s

    def check(what: str) -> None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServerFailed(f"{what}: {' '.join(cmd)}\n{''.join(output)[-3000:]}")

    try:
        while url is None and not printed.wait(0.1):
            check("server printed no URL")
        base = url or URL_RE.search("".join(output))[0]
        while _status(base + "/health") != 200:
            check("server not healthy")
            time.sleep(0.2)
        log.info("server up at %s", base)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        reader.join(timeout=5)  # the pipe reaches EOF once the process is gone
        if proc.stdout is not None:
            proc.stdout.close()


def locust_cmd(host: str, run_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOADTEST_DIR), "--headless", "--only-summary",
        "--host", host, "--run-dir", str(run_dir), *args,
    ]  # fmt: skip


def run_locust(host: str, run_dir: Path, *args: str, timeout_s: float = 600.0) -> subprocess.CompletedProcess:
    """One headless run; the run folder lands in run_dir. Output is captured (see .stderr for the log)."""
    proc = subprocess.run(
        locust_cmd(host, run_dir, *args), cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )
    if echo_child_output():
        sys.stderr.write(proc.stdout + proc.stderr)
    return proc
