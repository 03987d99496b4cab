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


class WorkerHandleCollector:
    """Engine batch state, worker restarts and v1.1.1 limiter state per model, read from the worker handles at
    scrape time (the worker reports its batch after every step; nothing is done per step here)."""

    def __init__(self, handles: dict):
        self.handles = handles

    def collect(self):
        yield from self.batch_state()
        yield from self.prefix_cache_state()
        yield from self.limiter_state()

    def prefix_cache_state(self):
        """The worker's prefix cache (server/worker/prefix_cache.py); no samples for a model without one."""

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_prefix_cache_{name}", doc, labels=["model"])

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_prefix_cache_{name}", doc, labels=["model"])

        hits = counter(
            "hits", "Prompts that reused a cached prefix (at least prefix_cache.min_tokens tokens)"
        )
        misses = counter("misses", "Prompts that found no cached prefix to reuse")
        saved = counter("saved_tokens", "Prompt tokens not prefilled because their KV came from the cache")
        entries = gauge("entries", "Sequences held by the prefix cache")
        size = gauge("bytes", "KV bytes held by the prefix cache")
        for name, handle in self.handles.items():
            cache = handle.stats.prefix_cache
            if cache is None:
                continue
            hits.add_metric([name], cache.hits)
            misses.add_metric([name], cache.misses)
            saved.add_metric([name], cache.tokens_saved)
            entries.add_metric([name], cache.entries)
            size.add_metric([name], cache.bytes)
        yield from (hits, misses, saved, entries, size)

    def batch_state(self):
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])

        running = gauge("sequences_running", "Sequences in the engine's batch that are decoding")
        waiting = gauge(
            "sequences_waiting",
            "Sequences admitted to the engine but not decoding yet (prefilling, waiting for a batch slot, "
            "or held by mlx.concurrency_limit)",
        )
        held = gauge("sequences_held", "Sequences held back by mlx.concurrency_limit (serialized generation)")
        batch = gauge("batch_size", "Sequences decoded by the latest engine step")
        steps = CounterMetricFamily(
            f"{PREFIX}_decode_steps", "Engine decode steps since the worker started", labels=["model"]
        )
        for name, handle in self.handles.items():
            stats = handle.stats
            running.add_metric([name], stats.sequences - stats.waiting)
            waiting.add_metric([name], stats.waiting + stats.held)
            held.add_metric([name], stats.held)
            batch.add_metric([name], stats.decoding)
            steps.add_metric([name], stats.decode_steps)
        yield from (running, waiting, held, batch, steps)

    def limiter_state(self):
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
        for name, handle in self.handles.items():
            limiter = handle.limiter
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
        for name, handle in self.handles.items():
            restarts.add_metric([name], handle.restarts_total)
        yield from (active, queued, rejected, timeouts, restarts)


class ServerMetrics:
    def __init__(self, handles: dict) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(WorkerHandleCollector(handles))
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
        self.model_ready = Gauge(f"{PREFIX}_model_ready", "1 once the model is loaded", ["model"], registry=r)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
