"""Readiness before the clock: wait for the server, never send requests to one that is
not there or lists no model, exit 2 naming the URL."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from orchestrate.processes import locust_cmd, serve, start_locust
from runfolder import read_run
from tests.support.helpers import (
    FAULT_SERVER,
    free_port,
    run_locust_with_stats,
    send_json,
    threaded_http_server,
)

READY_WAIT_S = 60.0  # generous: the test waits for an event (a log line), never for a fixed time


@contextmanager
def silent_listener() -> Iterator[tuple[str, list[bytes]]]:
    """A FAKE endpoint that accepts connections and never answers; yields its URL and the bytes received."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.2)
            conns.append(conn)
        server.close()

    def read() -> None:
        while not stop.is_set():
            for conn in list(conns):
                try:
                    data = conn.recv(65536)
                except (TimeoutError, OSError):
                    continue
                if data:
                    received.append(data)

    threads = [threading.Thread(target=accept, daemon=True), threading.Thread(target=read, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", received
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for conn in conns:
            conn.close()


@contextmanager
def listing_server(models: list[str], health_status: int = 200) -> Iterator[tuple[str, list[str]]]:
    """A FAKE server with /health and /v1/models only; yields its URL and the POST paths it was sent."""
    posts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _json(self, status: int, doc) -> None:
            send_json(self, status, doc)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(health_status, {"status": "ok" if health_status == 200 else "loading"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})
            else:
                self._json(404, {"error": {"message": "no such path", "code": None}})

        def do_POST(self) -> None:
            posts.append(self.path)
            self._json(404, {"error": {"message": "no such path", "code": None}})

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    with threaded_http_server(Handler) as url:
        yield url, posts


@pytest.mark.expected_errors(r"was not ready within")
def test_a_url_that_never_answers_exits_2_naming_it_and_sends_nothing(tmp_path):
    with silent_listener() as (url, received):
        proc = run_locust_with_stats(
            url, tmp_path / "run", "-t", "5s", "--ready-timeout-s", "1", timeout_s=60
        )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert url in proc.stderr and "--ready-timeout-s" in proc.stderr
    assert not any(b"POST" in chunk for chunk in received)  # only readiness GETs reached it
    assert not (tmp_path / "run").exists()


@pytest.mark.expected_errors(r"was not ready within")
def test_a_url_that_refuses_connections_exits_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_locust_with_stats(url, tmp_path / "run", "-t", "5s", "--ready-timeout-s", "1", timeout_s=60)
    assert proc.returncode == 2 and url in proc.stderr


@pytest.mark.expected_errors(r"lists no model")
def test_a_server_listing_no_model_is_never_sent_a_request(tmp_path):
    with listing_server([]) as (url, posts):
        proc = run_locust_with_stats(
            url, tmp_path / "run", "-t", "3s", "--ready-timeout-s", "5", timeout_s=60
        )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{url}/v1/models lists no model" in proc.stderr
    assert posts == []


@pytest.mark.expected_errors(r"was not ready within")
def test_a_loading_server_is_waited_for_until_the_deadline(tmp_path):
    # /health says 503 (loading) although /v1/models already lists the model: not ready.
    with listing_server(["m"], health_status=503) as (url, posts):
        proc = run_locust_with_stats(
            url, tmp_path / "run", "-t", "3s", "--ready-timeout-s", "1", timeout_s=60
        )
    assert proc.returncode == 2 and "/health 503" in proc.stderr
    assert posts == []


@pytest.mark.slow
def test_a_server_started_after_the_generator(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "late"
    cmd = locust_cmd(
        url, run_dir, "-u", "2", "-r", "2", "-t", "2s", "--stop-timeout", "10",
        "--ready-timeout-s", str(READY_WAIT_S), "--max-tokens", "4",
    )  # fmt: skip
    waiting = threading.Event()

    def on_line(line: str) -> None:
        if "waiting up to" in line:
            waiting.set()

    with start_locust(cmd, on_line=on_line) as locust:
        assert waiting.wait(READY_WAIT_S), "the generator never said it was waiting for the server"
        # Only now, with the generator already waiting, does the server start.
        with serve([sys.executable, str(FAULT_SERVER), "--port", str(port)], url=url):
            done = locust.wait(120)
        assert done.returncode == 0, done.stderr[-3000:]
    run = read_run(run_dir)
    assert run.summary["requests"] > 0 and run.summary["success_rate"] == 1.0, run.summary["outcome_details"]
    assert {r.outcome_detail for r in run.records} == {"ok"}  # no connect_error, no request without model
    assert run.metadata["model"] == "ok"  # looked up once the server was ready
