"""Scraping the server's Prometheus endpoint during a run (`--server-metrics`): probe, samples, last scrape.

One process scrapes: the master, or the single local process (loadgen/plugin.py runs `Scraper.tick` in a
greenlet). Plain GETs with a short timeout, through urllib: Locust's monkey-patching makes them cooperative,
and this module imports no gevent, so it is tested without Locust. The first scrape, before any request
is sent, is also the probe: an endpoint that does not answer Prometheus text turns scraping off with a
note (summary.json `server_metrics`). The last one, after the run, waits (up to SETTLE_S) for the server's
in-flight requests to end, so that counter deltas between the two cover every request of the run.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadgen import side_requests
from loadgen.options import SERVER_METRICS_INTERVAL_S as DEFAULT_INTERVAL_S
from runfolder.server_metrics import Sample

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
SETTLE_S = 5.0
SETTLE_STEP_S = 0.2
# Gauges of requests the server still holds: the last scrape waits for them to reach 0.
IN_FLIGHT_NAMES = frozenset(
    {"mlxserving_requests_in_flight", "vllm:num_requests_running", "vllm:num_requests_waiting"}
)
# Creation times are clock readings, not series; histogram buckets are most of the bulk (sum and count stay).
SKIPPED_SUFFIXES = ("_created", "_bucket")
PROMETHEUS_TYPES = ("text/plain", "application/openmetrics-text")
MAX_BODY_BYTES = 8 * 1024 * 1024  # a metrics page is kilobytes; never hold a huge mistaken answer


class NotPrometheus(Exception):
    """The endpoint answered, but not with Prometheus text (a JSON 404, an HTML page, nothing to parse)."""


def metrics_url(option: str | None, host: str) -> str | None:
    """The endpoint to scrape: `--server-metrics URL`, the target's /metrics by default, None for `off`."""
    if option and option.lower() == "off":
        return None
    if option and option.lower() != "auto":
        return option
    return f"{host.rstrip('/')}/metrics" if host else None


def fetch(url: str, timeout_s: float = TIMEOUT_S) -> str:
    """The page's text; NotPrometheus unless a 200 in a Prometheus text type; OSError when no answer."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    ledger = side_requests.LEDGER
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            kind = resp.headers.get("Content-Type") or ""
            body: bytes = resp.read(MAX_BODY_BYTES)
    except urllib.error.HTTPError as exc:
        ledger.add(side_requests.SERVER_METRICS, "GET", url, side_requests.http_outcome(exc.code))
        kind = exc.headers.get("Content-Type") if exc.headers else None
        raise NotPrometheus(f"HTTP {exc.code} ({kind or 'no content type'})") from None
    except OSError:
        ledger.add(side_requests.SERVER_METRICS, "GET", url, side_requests.NO_ANSWER)
        raise
    ledger.add(side_requests.SERVER_METRICS, "GET", url, side_requests.http_outcome(resp.status))
    if not kind.split(";")[0].strip().lower().startswith(PROMETHEUS_TYPES):
        raise NotPrometheus(f"HTTP 200 in {kind or 'no content type'}, not Prometheus text")
    return body.decode("utf-8", errors="replace")


def parse(text: str, ts_s: float) -> list[Sample]:
    """Every sample of a Prometheus page, stamped `ts_s`; NotPrometheus if it does not parse or is empty."""
    try:
        samples = [
            Sample(ts_s, s.name, float(s.value), dict(s.labels))
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith(SKIPPED_SUFFIXES)
        ]
    except ValueError as exc:
        raise NotPrometheus(f"not Prometheus text ({str(exc)[:80]})") from None
    if not samples:
        raise NotPrometheus("no metric samples in the page")
    return samples


def in_flight(samples: list[Sample]) -> float:
    """Requests the server says it holds (0 when it exports no such gauge)."""
    return sum(s.value for s in samples if s.name in IN_FLIGHT_NAMES)


@dataclass
class Scraper:
    """The samples of one test and what happened to the scrapes; `describe()` goes to summary.json."""

    url: str | None
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = TIMEOUT_S
    samples: list[Sample] = field(default_factory=list)
    on: bool = False
    note: str | None = None
    scrapes: int = 0
    failures: int = 0
    first_ts_s: float | None = None
    last_ts_s: float | None = None
    last_error: str | None = None

    def scrape(self) -> list[Sample] | None:
        """One scrape, kept; None when it failed (counted, and logged the first time)."""
        try:
            page = fetch(self.url or "", self.timeout_s)
            samples = parse(page, time.time())
        except (NotPrometheus, OSError, ValueError) as exc:
            self.failures += 1
            if self.failures == 1 and self.on:
                log.warning("scraping %s failed (%s); later failures are only counted", self.url, exc)
            self.last_error = str(exc)
            return None
        self.scrapes += 1
        self.samples.extend(samples)
        return samples

    def start(self) -> bool:
        """The first scrape, before any request: on when it answers Prometheus text, else off with a note."""
        if self.url is None:
            self.note = "not scraped (--server-metrics off)"
            return False
        try:
            page = fetch(self.url, self.timeout_s)
            samples = parse(page, time.time())
        except (NotPrometheus, OSError, ValueError) as exc:
            what = "no answer" if isinstance(exc, OSError) else "not Prometheus text"
            self.note = f"not scraped: GET {self.url} gave {what} ({exc}); server metrics off for this run"
            log.warning("%s", self.note)
            return False
        self.on, self.scrapes = True, 1
        self.samples.extend(samples)
        self.first_ts_s = samples[0].ts_s
        log.info("scraping the server's metrics at %s every %g s", self.url, self.interval_s)
        return True

    def finish(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """The last scrape, after the run: repeated (up to SETTLE_S) while the server still holds requests."""
        if not self.on:
            return
        deadline = time.monotonic() + SETTLE_S
        while True:
            samples = self.scrape()
            settled = samples is not None and in_flight(samples) == 0
            if settled or time.monotonic() >= deadline:
                break
            sleep(SETTLE_STEP_S)
        if samples is None:
            self.note = f"the last scrape failed ({self.last_error}): no counts to reconcile"
            log.warning("server metrics: %s", self.note)
            return
        self.last_ts_s = samples[0].ts_s
        if not settled:
            self.note = f"the server still held {in_flight(samples):g} request(s) at the last scrape"

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": "on" if self.on else "off",
            "interval_s": self.interval_s,
            "scrapes": self.scrapes,
            "failed_scrapes": self.failures,
            "samples": len(self.samples),
            "first_ts_s": self.first_ts_s,
            "last_ts_s": self.last_ts_s,
            "note": self.note,
        }
