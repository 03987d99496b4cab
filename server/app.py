"""The app factory: `create_app(settings)` wires settings, worker handles, metrics, middlewares and routes."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from server.admission import admission_for
from server.appkeys import METRICS, SETTINGS, WORKER_HANDLES
from server.errors import APIError, error_middleware
from server.ipc import RuntimeOptions
from server.metrics import ServerMetrics
from server.models.resolve import resolve_model_path
from server.routes import add_routes
from server.settings import ModelSettings, Settings
from server.tokenize_route import tokenizer_for
from server.worker_handle import RestartPolicy, WorkerHandle, WorkerUnavailable

log = logging.getLogger(__name__)

# Left open without a key: probes and scrapers do not carry one.
_OPEN_PATHS = frozenset({"/health", "/metrics"})


def runtime_options(settings: Settings) -> RuntimeOptions:
    return RuntimeOptions(
        max_batch_size=settings.engine.max_batch_size,
        prefill_batch_size=settings.engine.prefill_batch_size,
        prefill_step_size=settings.engine.prefill_step_size,
        max_kv_size=settings.engine.max_kv_size,
        decode_batch_cap=settings.engine.decode_batch_cap,
        prefill_wait_ms=settings.engine.prefill_wait_ms,
        prefill_schedule=settings.engine.prefill_schedule,
        early_first_token=settings.engine.early_first_token,
        batch_tokens=settings.streaming.batch_tokens,
        flush_ms=settings.streaming.flush_ms,
        concurrency_limit=settings.mlx.concurrency_limit or settings.python_runtime.concurrency_limit,
        force_sync=settings.mlx.device_sync_every_step,  # never force_metal_sync: v1.1.1 never used it
        persistent=settings.engine.persistent,
        prefix_cache_entries=settings.prefix_cache.max_entries if settings.prefix_cache.enabled else 0,
        prefix_cache_bytes=settings.prefix_cache.max_bytes,
        prefix_cache_min_tokens=settings.prefix_cache.min_tokens,
        slowdown_pct=settings.testing.slowdown_pct,
    )


def auth_middleware(api_key: str):
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def check_key(request: web.Request, handler):
        if request.path not in _OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            # compare_digest: the time taken must not reveal how much of the key matched.
            if not hmac.compare_digest(given, expected):
                raise APIError(
                    401, "Missing or invalid API key (Authorization: Bearer ...).", code="invalid_api_key"
                )
        return await handler(request)

    return check_key


def model_kind(model: ModelSettings, path: Path) -> str:
    """text or vision; `auto` looks for a vision tower in the model's config.json."""
    if model.kind != "auto":
        return model.kind
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "text"
    return "vision" if "vision_config" in config else "text"


async def _engines(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    handles: list[tuple[WorkerHandle, ModelSettings]] = []
    for model in settings.served_models:
        # Building an embedded model takes seconds the first time: off the event loop.
        path = await loop.run_in_executor(None, resolve_model_path, model.path)
        kind = model_kind(model, path)
        restart = RestartPolicy(settings.engine.max_restarts, settings.engine.restart_delay_s)
        admission = functools.partial(admission_for, settings, model, model.served_name)
        handle = WorkerHandle(
            model.served_name,
            str(path),
            runtime_options(settings),
            settings.log_level,
            kind,
            restart,
            admission,
        )
        handles.append((handle, model))
        app[WORKER_HANDLES][handle.name] = handle
    for handle, _ in handles:
        await handle.start()
    watchers = [asyncio.create_task(_on_ready(app, handle)) for handle, _ in handles]
    yield
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*(handle.stop() for handle, _ in handles))


async def _on_ready(app: web.Application, handle: WorkerHandle) -> None:
    metrics = app[METRICS]
    try:
        await handle.wait_ready()
    except WorkerUnavailable:
        metrics.model_ready.labels(handle.name).set(0)
        return
    metrics.model_ready.labels(handle.name).set(1)
    # Load /tokenize's tokenizer now: on first use it took ~9 s on a busy machine (transformers' import),
    # long enough for a load generator's probe to give up and fall back to approximate prompt lengths.
    try:
        await tokenizer_for(handle)
    except Exception as exc:  # /tokenize will answer the error itself; serving goes on
        log.warning("model %s: tokenizer for /tokenize not loaded: %s", handle.name, exc)


async def _drain(app: web.Application) -> None:
    """On shutdown: refuse new work, give in-flight requests the grace period, then end the rest with an
    error event so that no client waits on a stream that will never finish."""
    handles = list(app[WORKER_HANDLES].values())
    for handle in handles:
        handle.draining = True
    grace_s = app[SETTINGS].server.shutdown_grace_s
    deadline = asyncio.get_running_loop().time() + grace_s
    while any(e.active_requests for e in handles) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    aborted = sum(
        e.abort_all(
            503,
            "server_shutting_down",
            f"The server shut down before this request finished ({grace_s:g} s grace).",
        )
        for e in handles
    )
    if aborted:
        log.warning("shutdown: ended %d requests still running after %.0f s", aborted, grace_s)
        await asyncio.sleep(0.2)  # let their handlers write the error event


def create_app(settings: Settings) -> web.Application:
    middlewares = [error_middleware]
    if settings.server.api_key:
        middlewares.append(auth_middleware(settings.server.api_key))
    app = web.Application(client_max_size=settings.limits.max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    app[WORKER_HANDLES] = {}
    app[METRICS] = ServerMetrics(app[WORKER_HANDLES])
    app.cleanup_ctx.append(_engines)
    app.on_shutdown.append(_drain)
    add_routes(app)
    return app
