"""THE one launcher: servers (ours or any other) and Locust runs, as real subprocesses.

`with running_server(config, profile=..., model=...) as base_url:` starts `python -m server` on a free port
and gives its base URL once /health answers 200; `serve(cmd)` does the same for any server command (fake
servers, mlx_lm.server). Both return the ServerProcess, for a caller that signals the process itself.
`run_locust` runs `locust -f loadtest --headless` and waits; `start_locust` starts any Locust command
(headless run, distributed master and workers, web UI) and returns a LocustProcess without waiting.
Bounded everywhere: a server that does not print its URL or answer /health in time is stopped (SIGTERM,
then kill) and reported as ServerFailed with its last output.
What the children print is collected; it goes to `log_file` when given, to our stderr as well when
MLXBENCH_ECHO_CHILD_OUTPUT is set, and to the file MLXBENCH_CHILD_LOG names when that is set (the test suite
sets the file only: tests/support/server_logs.py searches it for ERROR records and shows a failed test the
lines of its phase; echoed, a long-lived server's lines between tests would land on the terminal).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import loadtest
from configkit import REPO_ROOT

log = logging.getLogger(__name__)

REPO = REPO_ROOT  # the checkout: fake servers and Locust run from here
LOADTEST_DIR = Path(loadtest.__file__).resolve().parent
URL_RE = re.compile(r"http://127\.0\.0\.1:\d+")
SERVING_ON = re.compile(r"serving on (http://\S+)")  # what `python -m server` prints once listening
ECHO_ENV = "MLXBENCH_ECHO_CHILD_OUTPUT"
CHILD_LOG_ENV = "MLXBENCH_CHILD_LOG"
OUTPUT_TAIL_LINES = 200  # kept for the failure message; the rest goes to the log file, if any
FAILURE_TAIL_CHARS = 3000
STOP_TIMEOUT_S = 30.0  # after SIGTERM: our server's grace period for streams in flight fits in it


def echo_child_output() -> bool:
    return os.environ.get(ECHO_ENV, "") not in ("", "0")


_child_log_lock = threading.Lock()
_child_logs: dict[str, IO[str]] = {}  # path -> open file, kept for the process's life: no open per line


@atexit.register
def _close_child_logs() -> None:
    with _child_log_lock:
        for sink in _child_logs.values():
            sink.close()
        _child_logs.clear()


def pass_on(line: str, echo: bool) -> None:
    """A child's line to our stderr when `echo` (echo_child_output()), and appended to MLXBENCH_CHILD_LOG's
    file when that is set: the file misses nothing, also not what a long-lived server prints between the
    tests of a pytest session."""
    if echo:
        sys.stderr.write(line)
    if path := os.environ.get(CHILD_LOG_ENV):
        with _child_log_lock:
            if (sink := _child_logs.get(path)) is None:
                sink = _child_logs[path] = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            sink.write(line)
            sink.flush()  # the log check reads the file after each test phase


def terminate(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, then kill after `timeout_s`; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    code: int = process.returncode
    return code


class ServerFailed(RuntimeError):
    """The server exited, or did not become healthy in time; the message ends with its last output."""


def _health_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except OSError:
        return None


class ServerProcess:
    """A started server: its process, its base URL once known, and what it printed (the last lines)."""

    def __init__(
        self, cmd: Sequence[str], cwd: Path | None, env: dict[str, str] | None, log_file: Path | None
    ):
        self.cmd = list(cmd)
        self.url: str | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._printed = threading.Event()
        self._pattern = URL_RE
        self._log: IO[str] | None = open(log_file, "w", encoding="utf-8") if log_file else None  # noqa: SIM115
        self.process = subprocess.Popen(
            self.cmd,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)

    def _pump(self) -> None:  # also keeps the pipe drained, so a chatty server never blocks on it
        echo = echo_child_output()
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tail.append(line)
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            pass_on(line, echo)
            if self.url is None and (match := self._pattern.search(line)):
                self.url = match.group(match.lastindex or 0)
                self._printed.set()

    def output(self) -> str:
        return "".join(self.tail)

    def _failed(self, what: str) -> ServerFailed:
        code = self.process.poll()
        state = f"exit code {code}" if code is not None else "still running"
        return ServerFailed(f"{what} ({state}): {' '.join(self.cmd)}\n{self.output()[-FAILURE_TAIL_CHARS:]}")

    def wait_ready(self, timeout_s: float, url: str | None = None, pattern: re.Pattern[str] = URL_RE) -> str:
        """The base URL (`url`, or the first `pattern` match it prints) once /health answers 200."""
        self._pattern = pattern
        self._reader.start()
        deadline = time.monotonic() + timeout_s

        def check(what: str) -> None:
            if self.process.poll() is not None:
                self._reader.join(5)  # its last words
                raise self._failed(what)
            if time.monotonic() > deadline:
                raise self._failed(what)

        while url is None and not self._printed.wait(0.1):
            check("the server printed no URL")
        base = (url or self.url or "").rstrip("/")
        while _health_status(base + "/health") != 200:
            check("the server was not healthy")
            time.sleep(0.2)
        log.info("server up at %s", base)
        self.url = base
        return base

    def __enter__(self) -> str:
        return self.url or ""

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then kill after `timeout_s`; returns the exit code."""
        terminate(self.process, timeout_s)
        if self._reader.is_alive():
            self._reader.join(5)  # the pipe reaches EOF once the process is gone
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._log is not None:
            self._log.close()
        return self.process.returncode


def server_command(
    config: Path | str,
    *,
    profile: Path | str | None = None,
    model: str | None = None,
    port: int = 0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """`python -m server` with these settings; port 0 lets it pick a free one."""
    command = [sys.executable, "-m", "server", "--config", str(config), "--port", str(port)]
    if profile is not None:
        command += ["--profile", str(profile)]
    if model is not None:
        command += ["--model", model]
    return [*command, *extra_args]


def serve(
    cmd: Sequence[str],
    *,
    url: str | None = None,
    pattern: re.Pattern[str] = URL_RE,
    timeout_s: float = 120.0,
    cwd: Path | None = REPO,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
) -> ServerProcess:
    """Start any server command and wait until /health answers 200 at `url`, or at the first `pattern` match
    it prints. `with serve(cmd) as base_url:` stops it on exit; else the caller calls `.stop()`.
    Raises ServerFailed."""
    server = ServerProcess(cmd, cwd, env, log_file)
    try:
        server.wait_ready(timeout_s, url, pattern)
    except BaseException:
        server.stop()
        raise
    return server


def running_server(
    config: Path | str,
    *,
    profile: Path | str | None = None,
    model: str | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    log_file: Path | None = None,
) -> ServerProcess:
    """Our server (`python -m server`) on a free port, ready, as `serve`; run from the caller's working
    directory, so that relative config paths stay the caller's."""
    cmd = server_command(config, profile=profile, model=model, extra_args=extra_args)
    return serve(cmd, pattern=SERVING_ON, timeout_s=ready_timeout_s, cwd=None, env=env, log_file=log_file)


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server that cannot be given port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlx_lm_server(
    model_dir: Path | str,
    *,
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
) -> ServerProcess:
    """The peer, `mlx_lm.server`, on `model_dir`, ready (its /health answers 200), as `serve`.
    It takes no port 0 and prints no URL: a free port, then the URL it will answer on."""
    port = free_port()
    command = [sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir), "--host", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}"
    return serve([*command, "--port", str(port)], url=url, timeout_s=timeout_s, env=env, log_file=log_file)


def locust_cmd(
    host: str, run_dir: Path, *args: str, only_summary: bool = True, headless: bool = True
) -> list[str]:
    """`locust -f loadtest --headless` against `host`, writing its run folder to `run_dir`; without
    `only_summary`, Locust also prints its stats table every few seconds (progress lines); without
    `headless`, Locust serves its web UI (give --web-host/--web-port, and --autostart to start at once)."""
    mode = ["--headless", *(["--only-summary"] if only_summary else [])] if headless else []
    return [
        sys.executable, "-m", "locust", "-f", str(LOADTEST_DIR), *mode,
        "--host", host, "--run-dir", str(run_dir), *args,
    ]  # fmt: skip


def locust_worker_cmd(master_port: int, master_host: str = "127.0.0.1") -> list[str]:
    """A distributed run's worker process: `locust -f loadtest --worker`, joining the master's port."""
    return [sys.executable, "-m", "locust", "-f", str(LOADTEST_DIR), "--worker", "--master-host", master_host,
            "--master-port", str(master_port)]  # fmt: skip


class _Lines:
    """One output stream of a child, read on a thread: kept, and passed on to a log file and a callback."""

    def __init__(self, stream: IO[str], sink: IO[str] | None, lock: threading.Lock, on_line) -> None:
        self.lines: list[str] = []
        self._stream, self._sink, self._lock, self._on_line = stream, sink, lock, on_line
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        echo = echo_child_output()
        for line in self._stream:
            self.lines.append(line)
            with self._lock:
                if self._sink is not None:
                    self._sink.write(line)
                pass_on(line, echo)
            if self._on_line is not None:
                self._on_line(line)


class LocustProcess:
    """A started Locust process (headless run, master, worker or web UI), not waited for. What it prints is
    kept, written to `log_file`, echoed as every child's output is, and each line given to `on_line`.
    `with start_locust(cmd) as locust:` stops it on exit if it is still running."""

    def __init__(
        self,
        cmd: Sequence[str],
        log_file: Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.cmd = list(cmd)
        log.info("running %s", " ".join(self.cmd))
        lock = threading.Lock()
        self._sink: IO[str] | None = open(log_file, "w", encoding="utf-8") if log_file else None  # noqa: SIM115
        self.process = subprocess.Popen(
            self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.process.stdout is not None and self.process.stderr is not None  # both are PIPE
        self._out = _Lines(self.process.stdout, self._sink, lock, on_line)
        self._err = _Lines(self.process.stderr, self._sink, lock, on_line)

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        """No goodbye (a worker whose final records never reach the master)."""
        self.process.kill()

    def wait(self, timeout_s: float) -> subprocess.CompletedProcess:
        """Its end, with all it printed; past `timeout_s` raises subprocess.TimeoutExpired (still running)."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise subprocess.TimeoutExpired(self.cmd, timeout_s) from None
        return self._finish()

    def stop(self) -> subprocess.CompletedProcess:
        """SIGTERM (Locust stops its users and writes what it has), then kill after STOP_TIMEOUT_S."""
        terminate(self.process)
        return self._finish()

    def _finish(self) -> subprocess.CompletedProcess:
        for stream in (self._out, self._err):
            stream.thread.join(5)  # the pipes reach EOF once the process is gone
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        if self._sink is not None:
            self._sink.close()
        out, err = "".join(self._out.lines), "".join(self._err.lines)
        return subprocess.CompletedProcess(self.cmd, self.process.returncode, out, err)

    def __enter__(self) -> LocustProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_locust(
    cmd: Sequence[str], *, log_file: Path | None = None, on_line: Callable[[str], None] | None = None
) -> LocustProcess:
    """Start a Locust command (locust_cmd, locust_worker_cmd) without waiting for it."""
    return LocustProcess(cmd, log_file, on_line)


def run_locust(
    host: str,
    run_dir: Path,
    *args: str,
    timeout_s: float = 600.0,
    log_file: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    tick_s: float = 10.0,
    only_summary: bool = True,
) -> subprocess.CompletedProcess:
    """One headless run, waited for; the run folder lands in run_dir. Its output is kept (.stdout, .stderr),
    written to `log_file` as it comes, each line given to `on_line`; `on_tick` is called every `tick_s`
    while it runs. Past `timeout_s` it is stopped and subprocess.TimeoutExpired raised, as subprocess.run."""
    cmd = locust_cmd(host, run_dir, *args, only_summary=only_summary)
    deadline = time.monotonic() + timeout_s
    with start_locust(cmd, log_file=log_file, on_line=on_line) as locust:  # stopped if interrupted
        while True:
            try:
                return locust.wait(min(tick_s, max(deadline - time.monotonic(), 0.01)))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(cmd, timeout_s) from None
                if on_tick is not None:
                    on_tick()
