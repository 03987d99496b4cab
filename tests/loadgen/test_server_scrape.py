"""Scraping the server's metrics (loadgen/server_scrape.py): the probe, the samples, the last scrape; and
through Locust: a non-Prometheus endpoint turns it off with a note, and distributed runs scrape once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from loadgen import server_scrape
from loadgen.server_scrape import Scraper, metrics_url
from runfolder import SERVER_METRICS_FILE, read_run, read_server_metrics
from tests.loadgen.known import known
from tests.support.helpers import free_port, get_json, post, run_locust_with_stats


class Pages:
    """What each path of the little test server answers: (status, content type, body)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("app_requests", "requests", ["outcome"], registry=self.registry)
        self.in_flight = Gauge("mlxserving_requests_in_flight", "held", registry=self.registry)
        self.broken = False

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            if self.broken:
                return 500, "text/plain", b"oops"
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        return {
            "/json404": (404, "application/json", json.dumps({"error": {"message": "Not Found"}}).encode()),
            "/html": (200, "text/html", b"<html><body>metrics live elsewhere</body></html>"),
            "/empty": (200, "text/plain", b""),
            "/garbage": (200, "text/plain", b"404: Not Found"),
        }.get(path, (404, "text/plain", b"404: Not Found"))


@pytest.fixture
def pages() -> Iterator[tuple[str, Pages]]:
    state = Pages()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, kind, body = state.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:  # quiet: the test's stderr is checked for errors
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_url_defaults_to_the_targets_metrics():
    assert metrics_url("auto", "http://h:1/") == "http://h:1/metrics"
    assert metrics_url(None, "http://h:1") == "http://h:1/metrics"
    assert metrics_url("OFF", "http://h:1") is None
    assert metrics_url("http://other:9/m", "http://h:1") == "http://other:9/m"


def test_prometheus_text_is_scraped_without_creation_times(pages):
    base, state = pages
    state.requests.labels("success").inc(3)
    scraper = Scraper(f"{base}/metrics", interval_s=1.0)
    assert scraper.start() and scraper.on and scraper.note is None
    assert scraper.first_ts_s is not None
    names = {s.name for s in scraper.samples}
    assert "app_requests_total" in names and not any(n.endswith("_created") for n in names)
    total = next(s for s in scraper.samples if s.name == "app_requests_total")
    assert total.value == 3 and total.labels == {"outcome": "success"}
    state.requests.labels("success").inc()
    assert scraper.scrape() is not None and scraper.scrapes == 2
    assert scraper.describe()["status"] == "on" and scraper.describe()["samples"] == len(scraper.samples)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/json404", "HTTP 404 (application/json)"),
        ("/html", "text/html, not Prometheus text"),
        ("/empty", "no metric samples"),
        ("/garbage", "not Prometheus text (invalid metric name"),
    ],
)
def test_an_endpoint_without_prometheus_text_turns_scraping_off_with_a_note(pages, path, why):
    base, _ = pages
    scraper = Scraper(f"{base}{path}")
    assert not scraper.start()
    assert not scraper.on and scraper.samples == []
    note = known(scraper.note)
    assert f"GET {base}{path}" in note and why in note
    scraper.finish()  # nothing to do when off, and no error
    assert scraper.describe()["status"] == "off" and scraper.describe()["last_ts_s"] is None


def test_no_answer_and_off_are_notes_too():
    port = free_port()  # nothing listens there
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics", timeout_s=1.0)
    assert not scraper.start() and "no answer" in known(scraper.note)
    off = Scraper(metrics_url("off", "http://127.0.0.1:1"))
    assert not off.start() and off.note == "not scraped (--server-metrics off)"


def test_the_last_scrape_waits_for_the_server_to_finish_its_requests(pages):
    base, state = pages
    scraper = Scraper(f"{base}/metrics")
    assert scraper.start()
    state.in_flight.set(2)
    naps = []

    def sleep(seconds: float) -> None:  # the server finishes its requests while the scraper waits
        naps.append(seconds)
        state.in_flight.set(0)

    scraper.finish(sleep)
    assert len(naps) == 1 and scraper.scrapes == 3 and scraper.note is None
    assert scraper.last_ts_s is not None and scraper.last_ts_s >= known(scraper.first_ts_s)


def test_a_server_that_keeps_requests_is_noted_after_the_settling_time(pages, monkeypatch):
    base, state = pages
    monkeypatch.setattr(server_scrape, "SETTLE_S", 0.0)
    scraper = Scraper(f"{base}/metrics")
    assert scraper.start()
    state.in_flight.set(2)
    scraper.finish()
    assert scraper.last_ts_s is not None and "still held 2 request(s)" in known(scraper.note)


def test_failed_scrapes_are_counted_and_a_failed_last_one_leaves_nothing_to_reconcile(pages, monkeypatch):
    base, state = pages
    monkeypatch.setattr(server_scrape, "SETTLE_S", 0.0)
    scraper = Scraper(f"{base}/metrics")
    assert scraper.start()
    state.broken = True
    assert scraper.scrape() is None
    scraper.finish()
    assert scraper.failures == 2 and scraper.last_ts_s is None
    assert "the last scrape failed (HTTP 500" in known(scraper.note)


# ---- through Locust ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("option", "why"), [(None, "HTTP 404"), ("/v1/models", "not Prometheus text")])
def test_a_run_against_a_non_prometheus_endpoint_completes_with_a_note(fake_url, tmp_path, option, why):
    run_dir = tmp_path / "run"
    extra = ["--server-metrics", fake_url + option] if option else []
    proc = run_locust_with_stats(
        fake_url, run_dir, "-u", "2", "-r", "2", "-t", "2s", "--stop-timeout", "5", "--model", "instant",
        "--max-tokens", "4", "--think-time-s", "0.05", *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_run(run_dir)
    info = run.summary["server_metrics"]
    assert info["status"] == "off" and why in info["note"] and info["scrapes"] == 0
    assert len(run.records) > 0 and not (run_dir / SERVER_METRICS_FILE).exists()
    assert "server metrics off for this run" in proc.stderr


@pytest.mark.slow
def test_a_distributed_run_scrapes_from_one_process_only(fake_url, tmp_path):
    post(fake_url + "/fake/reset")
    run_dir = tmp_path / "dist"
    port = str(free_port())  # Locust's default 5557 may be taken by another run on this machine
    proc = run_locust_with_stats(
        fake_url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--processes", "2",
        "--master-port", port, "--master-bind-port", port, "--model", "instant", "--max-tokens", "4",
        "--think-time-s", "0.05", "--stop-timeout", "5", "--server-metrics", fake_url + "/fake/lying_metrics",
        "--server-metrics-interval-s", "0.5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_run(run_dir).summary["server_metrics"]
    served = get_json(fake_url + "/fake/stats")["metrics_scrapes"]
    # Every GET the fake served is one of the master's scrapes: no worker scraped.
    assert info["status"] == "on" and served == info["scrapes"] + info["failed_scrapes"]
    assert info["scrapes"] >= 3 and info["last_ts_s"] is not None  # first, periodic ones, last
    samples = read_server_metrics(run_dir / SERVER_METRICS_FILE)
    assert len({s.ts_s for s in samples}) == info["scrapes"]
