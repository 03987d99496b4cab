"""Stream lines are stamped when their bytes reached the socket, not when the reading greenlet ran."""

from __future__ import annotations

import json
import socket
import threading
import time

import gevent
import pytest

from loadgen import receive_stamps
from loadgen.transport import Connection, RequestSpec
from tests.loadgen.known import known
from tests.support.helpers import delay_server, fault_server, get_json

HOG_S = 0.05  # how long the reader is kept from reading after the bytes arrived
FIRST_TOKEN_S = 0.1

linux_only = pytest.mark.skipif(
    not receive_stamps.ENABLED, reason="kernel receive stamps are Linux-only here"
)


def _hog(seconds: float) -> None:
    """Keep the CPU (as other users' parsing would) without sleeping: a read meanwhile cannot happen."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
def tcp_pair():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            yield client, peer


@linux_only
def test_the_first_read_of_every_new_connection_is_stamped():
    """Linux switches stamping on late (a deferred work item) and off when the last socket asking for it
    closes: without a socket held open, most first reads of fresh connections came back unstamped."""
    assert receive_stamps.keep_on() and receive_stamps.stamps_live()
    unstamped = 0
    for _ in range(20):
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            peer, _ = server.accept()
            with client, peer:
                assert receive_stamps.enable(client)
                peer.sendall(b"x")
                unstamped += not receive_stamps.recv_stamped(client, 1024, True)[2]
        time.sleep(0.01)  # long enough for a switch-off to take effect, were nothing holding it on
    assert unstamped == 0


@linux_only
def test_a_kernel_that_never_stamps_costs_one_probe_not_one_per_connection(monkeypatch):
    probes = []

    def unstamped(sock, size, stamped):
        probes.append(size)
        return sock.recv(size), time.perf_counter(), False

    monkeypatch.setattr(receive_stamps, "_tried", False)
    monkeypatch.setattr(receive_stamps, "_live", False)
    monkeypatch.setattr(receive_stamps, "_KEEP_ON_WAIT_S", 0.05)
    monkeypatch.setattr(receive_stamps, "recv_stamped", unstamped)
    assert not receive_stamps.keep_on() and not receive_stamps.stamps_live()
    tried = len(probes)
    assert tried >= 1
    assert not receive_stamps.keep_on() and len(probes) == tried  # no second probe, no second wait


@linux_only
def test_a_late_read_is_stamped_at_the_arrival(tcp_pair):
    client, peer = tcp_pair
    assert receive_stamps.enable(client)
    sent_s = time.perf_counter()
    peer.sendall(b"data: x\n\n")
    _hog(HOG_S)
    data, arrived_s, kernel = receive_stamps.recv_stamped(client, 1024, True)
    read_s = time.perf_counter()
    assert data == b"data: x\n\n" and kernel
    assert sent_s <= arrived_s < read_s - HOG_S / 2  # the wait for the CPU is not in the stamp


def test_without_kernel_stamps_the_read_time_is_used(tcp_pair):
    client, peer = tcp_pair
    peer.sendall(b"x")
    before = time.perf_counter()
    data, arrived_s, kernel = receive_stamps.recv_stamped(client, 1024, False)
    assert data == b"x" and not kernel and before <= arrived_s <= time.perf_counter()


def _spec(max_tokens: int) -> RequestSpec:
    body = {"model": "fake-delays", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": max_tokens, "stream_options": {"include_usage": True}}  # fmt: skip
    path = "/v1/chat/completions"
    return RequestSpec("chat_stream", path, json.dumps(body).encode(), True, None, max_tokens)


@linux_only
def test_ttft_excludes_time_the_greenlet_waited_for_the_cpu():
    """A greenlet hogs the hub from just before the first token is due until well after: the record's
    TTFT stays at the fake's, while a stamp taken at the read would carry the hog."""
    ttft_ms = 200
    with delay_server(ttft_ms, 5) as url:
        conn = Connection(url, timeout_s=30)
        try:
            conn.exchange(_spec(2), scheduled_ts_s=None)  # connect and warm up outside the measurement
            sent_s = time.perf_counter()
            hog = gevent.spawn_later(ttft_ms / 2000, _hog, ttft_ms / 1000 + HOG_S)
            rec = conn.exchange(_spec(2), scheduled_ts_s=None)
            hog.join()
        finally:
            conn.close()
        served = get_json(url + "/fake/stats")["timings"][-1]
    assert rec.outcome == "success", rec.outcome_detail
    hog_end_s = sent_s + ttft_ms / 2000 + ttft_ms / 1000 + HOG_S
    ttft_s = known(rec.ttft_s)
    assert ttft_s < hog_end_s - sent_s - HOG_S / 2  # read after the hog, stamped before it ended
    assert ttft_s >= served["ttft_s"]  # never before the fake wrote the token
    assert 0 < known(rec.ttfb_s) <= ttft_s <= known(rec.e2e_s)


CLOCK_SLACK_S = 0.010  # two clocks read in turn on a busy 2-core machine; far under the 200 ms hog


@pytest.fixture
def headers_with_first_token():
    """A FAKE streaming server that, like GuideLLM's mock, sends nothing until the first token is due and
    then its headers and that token in one write; it writes once `hog_started` is set, and records when
    (perf_counter before and after the write). A thread: it answers while the test hogs gevent."""
    server = socket.create_server(("127.0.0.1", 0))
    first = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "t"}}]}).encode() + b"\n\n"
    last = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n\ndata: [DONE]\n\n'
    hog_started, written = threading.Event(), {}

    def serve() -> None:
        peer, _ = server.accept()
        with peer:
            peer.recv(65536)
            hog_started.wait(30)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            written["before_s"] = time.perf_counter()
            peer.sendall(head + first)
            written["after_s"] = time.perf_counter()
            peer.sendall(last)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", hog_started, written
    thread.join(5)


@linux_only
def test_headers_sent_with_the_first_token_are_stamped_on_arrival(headers_with_first_token):
    """The first token came in the headers' packet while this greenlet was kept from running: its stamp
    is when the server wrote it, not when the read got to run (after the hog)."""
    url, hog_started, written = headers_with_first_token

    def hog() -> None:
        hog_started.set()
        _hog(HOG_S * 4)

    conn = Connection(url, timeout_s=30)
    try:
        sent_s = time.perf_counter()
        hogger = gevent.spawn_later(0.01, hog)
        rec = conn.exchange(_spec(1), scheduled_ts_s=None)
        hogger.join()
    finally:
        conn.close()
    assert rec.outcome == "success", rec.outcome_detail
    first_s = sent_s + known(rec.ttft_s)
    assert written["before_s"] - CLOCK_SLACK_S <= first_s <= written["after_s"] + CLOCK_SLACK_S
    assert rec.ttfb_s == rec.ttft_s


def test_streams_that_break_keep_their_outcomes():
    """The stamped reader must end streams as geventhttpclient's readline did (cut, stall, malformed)."""
    with fault_server() as url:
        conn = Connection(url, timeout_s=5)
        try:
            outcomes = {}
            for fault in ("ok", "cut", "malformed", "stream_error"):
                body = {"model": fault, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                        "max_tokens": 8}  # fmt: skip
                spec = RequestSpec("chat_stream", "/v1/chat/completions", json.dumps(body).encode(), True)
                rec = conn.exchange(spec, scheduled_ts_s=None)
                outcomes[fault] = (rec.outcome, rec.outcome_detail)
        finally:
            conn.close()
    assert outcomes == {
        "ok": ("success", "ok"),
        "cut": ("error", "truncated_stream"),
        "malformed": ("error", "malformed_chunk"),
        "stream_error": ("error", "stream_error"),
    }
