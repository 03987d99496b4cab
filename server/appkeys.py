"""Typed application state (aiohttp warns on plain string keys)."""

from aiohttp import web

from server.metrics import ServerMetrics
from server.settings import Settings
from server.worker_handle import WorkerHandle

SETTINGS = web.AppKey("settings", Settings)
WORKER_HANDLES = web.AppKey("worker_handles", dict[str, WorkerHandle])
METRICS = web.AppKey("metrics", ServerMetrics)
