"""Prometheus metrics, one registry per app (so several apps in one test process do not collide)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "mlxserving"
_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class EngineCollector:
    """Worker restarts and v1.1.1 limiter state per model, read from the engines at scrape time."""

    def __init__(self, engines: dict):
        self.engines = engines

    def collect(self):
        labels = ["model", "tier"]
        active = GaugeMetricFamily(
            f"{PREFIX}_limiter_active", "Requests holding a limiter slot", labels=labels
        )
        queued = GaugeMetricFamily(
            f"{PREFIX}_limiter_queued", "Requests waiting for a limiter slot", labels=labels
        )
        rejected = CounterMetricFamily(
            f"{PREFIX}_limiter_rejections", "Requests refused with a full queue (429)", labels=labels
        )
        timeouts = CounterMetricFamily(
            f"{PREFIX}_limiter_queue_timeouts",
            "Requests that waited past the queue timeout (503)",
            labels=labels,
        )
        for name, engine in self.engines.items():
            limiter = engine.limiter
            if limiter is None:
                continue
            key = [name, limiter.tier]
            active.add_metric(key, limiter.active)
            queued.add_metric(key, limiter.queued)
            rejected.add_metric(key, limiter.rejections_total)
            timeouts.add_metric(key, limiter.queue_timeouts_total)
        restarts = CounterMetricFamily(
            f"{PREFIX}_worker_restarts", "Model worker restarts after a crash", labels=["model"]
        )
        for name, engine in self.engines.items():
            restarts.add_metric([name], engine.restarts_total)
        yield from (active, queued, rejected, timeouts, restarts)


class ServerMetrics:
    def __init__(self, engines: dict) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(EngineCollector(engines))
        self.requests = Counter(
            f"{PREFIX}_requests", "Requests by endpoint and outcome", ["endpoint", "outcome"], registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From request arrival to the first generated text",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "From request arrival to the last byte of a successful reply",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.output_tokens = Counter(f"{PREFIX}_output_tokens", "Tokens generated", ["model"], registry=r)
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight", "Requests being answered", ["model"], registry=r
        )
        self.batch_size = Gauge(
            f"{PREFIX}_batch_size", "Sequences decoded in the latest engine step", ["model"], registry=r
        )
        self.waiting = Gauge(
            f"{PREFIX}_sequences_waiting",
            "Sequences admitted to the engine but not decoding yet",
            ["model"],
            registry=r,
        )
        self.model_ready = Gauge(f"{PREFIX}_model_ready", "1 once the model is loaded", ["model"], registry=r)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
