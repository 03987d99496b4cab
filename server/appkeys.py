"""Typed application state (aiohttp warns on plain string keys)."""

from aiohttp import web

from server.engine import Engine
from server.metrics import ServerMetrics
from server.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
ENGINES = web.AppKey("engines", dict[str, Engine])
METRICS = web.AppKey("metrics", ServerMetrics)
