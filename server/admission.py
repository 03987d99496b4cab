"""Admission in front of a model, reproduced on purpose from mlx-serving's releases.

- v1.1.1's model concurrency limiter (only under `compat: v1.1.1`): per model, at most `max_concurrent`
  requests active, a FIFO queue of at most `queue_depth` waiting ones, each waiting at most
  `queue_timeout_ms`. The limits come from the model's size tier, read from its name as v1.1.1 did.
- v1.2.0's stream registry cap (`stream_registry.max_active_streams`): at most N active streams, the next
  one refused at once (`StreamCap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.settings import ModelSettings, Settings, Tier

log = logging.getLogger(__name__)

TIERS = ("30B+", "13-27B", "7-13B", "3-7B", "<3B")


@dataclass(frozen=True)
class TierLimits:
    max_concurrent: int
    queue_depth: int
    queue_timeout_ms: int


# v1.1.1's runtime.yaml ("M3 Max optimized"), max_concurrent / queue_depth / queue_timeout_ms. Its keys were
# snake_case while the code read camelCase, so this table was probably never applied.
V111_TIER_TABLE = {
    "30B+": TierLimits(3, 25, 60000),
    "13-27B": TierLimits(8, 50, 45000),
    "7-13B": TierLimits(15, 75, 30000),
    "3-7B": TierLimits(20, 100, 30000),
    "<3B": TierLimits(25, 120, 30000),
}
# The defaults in v1.1.1's code (DEFAULT_TIER_LIMITS in model-concurrency-limiter.ts): what probably ran.
V111_CODE_DEFAULT_TABLE = {
    "30B+": TierLimits(2, 10, 60000),
    "13-27B": TierLimits(4, 20, 45000),
    "7-13B": TierLimits(6, 30, 30000),
    "3-7B": TierLimits(8, 40, 30000),
    "<3B": TierLimits(10, 50, 30000),
}
TIER_TABLES = {"code_defaults": V111_CODE_DEFAULT_TABLE, "runtime_yaml": V111_TIER_TABLE}
FALLBACK_TIER: Tier = "7-13B"

# v1.1.1's pattern, on the lower-cased name: the first number followed by `b` (not "byte"). As in v1.1.1,
# "4bit" reads as 4B: a quantization suffix can set the tier when the name has no size before it.
_SIZE_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)b(?!yte)")


def tier_for_billions(billions: float) -> Tier:
    if billions >= 30:
        return "30B+"
    if billions >= 13:
        return "13-27B"
    if billions >= 7:
        return "7-13B"
    if billions >= 3:
        return "3-7B"
    return "<3B"


def billions_in_name(name: str) -> float | None:
    """v1.1.1's reading of a size from a model name ("30B", "0.5b", and "4bit" as 4)."""
    match = _SIZE_IN_NAME.search(name.lower())
    return float(match.group(1)) if match else None


def detect_tier(
    parameter_count: int | None, name: str, override: Tier | None = None, source: str = "name"
) -> tuple[Tier, str]:
    """(tier, how it was found): the override; else, with source "weights", the parameter count; else the
    name (v1.1.1's rule); else v1.1.1's fallback, 7-13B, with a warning."""
    if override:
        return override, "config"
    if source == "weights" and parameter_count:
        return tier_for_billions(parameter_count / 1e9), "weights"
    billions = billions_in_name(name)
    if billions is not None:
        return tier_for_billions(billions), "name"
    log.warning(
        "cannot detect the size of model %s from its name; using tier %s (as v1.1.1)", name, FALLBACK_TIER
    )
    return FALLBACK_TIER, "fallback"


@dataclass(frozen=True)
class RefusalStyle:
    """How a refusal reaches the client: an HTTP status with `code`, or (in_stream) a 200 reply carrying
    an error event under one generic code, as mlx-serving answered."""

    error_mode: str = "http"  # "http" | "in_stream"
    retry_after_s: int = 1
    rejection_code: str = "concurrency_limit_exceeded"


class LimitExceeded(Exception):
    """Base of the refusals; carries what the error response needs."""

    def __init__(self, message: str, style: RefusalStyle = RefusalStyle()):
        super().__init__(message)
        self.message = message
        self.style = style


class QueueFull(LimitExceeded):
    pass


class QueueTimeout(LimitExceeded):
    pass


class ConcurrencyLimiter:
    def __init__(self, model: str, tier: str, limits: TierLimits, style: RefusalStyle = RefusalStyle()):
        self.model = model
        self.style = style
        self.tier = tier
        self.limits = limits
        self.active = 0
        self.rejections_total = 0
        self.queue_timeouts_total = 0
        self._waiting: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def snapshot(self) -> dict:
        return {
            "tier": self.tier,
            "active": self.active,
            "queued": self.queued,
            "max_concurrent": self.limits.max_concurrent,
            "queue_depth": self.limits.queue_depth,
            "queue_timeout_ms": self.limits.queue_timeout_ms,
            "rejections_total": self.rejections_total,
            "queue_timeouts_total": self.queue_timeouts_total,
        }

    @contextlib.asynccontextmanager
    async def slot(self, request_label: str = "request") -> AsyncIterator[None]:
        await self._acquire(request_label)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, request_label: str) -> None:
        if self.active < self.limits.max_concurrent and not self._waiting:
            self.active += 1
            return
        if len(self._waiting) >= self.limits.queue_depth:
            self.rejections_total += 1
            limits = self.limits
            raise QueueFull(
                f"Concurrency limit reached for {self.model} (tier: {self.tier}, active: "
                f"{self.active}/{limits.max_concurrent}, queued: {self.queued}/{limits.queue_depth}). "
                "Please retry later or reduce concurrent requests.",
                self.style,
            )
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append(granted)
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.limits.queue_timeout_ms / 1000)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if granted.done():  # the slot was handed over just as we gave up: pass it on
                self._release()
            else:
                granted.cancel()
                self._waiting.remove(granted)
            if isinstance(exc, TimeoutError):
                self.queue_timeouts_total += 1
                raise QueueTimeout(
                    f"{request_label} timed out after {self.limits.queue_timeout_ms} ms in queue waiting for "
                    f"concurrency slot (model: {self.model})",
                    self.style,
                ) from None
            raise

    def _release(self) -> None:
        # Hand the slot straight to the oldest waiter (FIFO), so `active` never dips and lets a newcomer in.
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


class StreamCap(ConcurrencyLimiter):
    """v1.2.0's stream registry: at most `max_active_streams` active, the next refused at once (no queue),
    with the registry's own message."""

    TIER = "stream-registry"  # the `tier` label of its /health and /metrics entries

    def __init__(self, model: str, max_active_streams: int, style: RefusalStyle):
        super().__init__(model, self.TIER, TierLimits(max_active_streams, 0, 1), style)

    async def _acquire(self, request_label: str) -> None:
        if self.active < self.limits.max_concurrent:
            self.active += 1
            return
        self.rejections_total += 1
        raise QueueFull(
            f"Max active streams ({self.limits.max_concurrent}) exceeded. Consider increasing "
            "maxActiveStreams or waiting for streams to complete.",
            self.style,
        )


def admission_for(settings: Settings, model: ModelSettings, name: str, parameter_count: int | None):
    """What stands in front of this model's engine: v1.1.1's limiter (under compat v1.1.1), else v1.2.0's
    stream cap when `stream_registry.max_active_streams` is set, else nothing (None)."""
    config = settings.model_concurrency_limiter
    if settings.compat == "v1.1.1" and config is not None and config.enabled:
        tier, source = detect_tier(parameter_count, model.path, model.tier, config.tier_source)
        limits = TIER_TABLES[config.tier_table][tier]
        override = config.tier_limits.get(tier)
        if override:
            limits = replace(limits, **override.model_dump(exclude_none=True))
        if config.queue_scale != 1:
            limits = replace(
                limits,
                queue_depth=max(1, round(limits.queue_depth * config.queue_scale)),
                queue_timeout_ms=max(1, round(limits.queue_timeout_ms * config.queue_scale)),
            )
        log.info("v1.1.1 limiter for %s: tier %s (from %s), %s", name, tier, source, limits)
        return ConcurrencyLimiter(name, tier, limits, RefusalStyle(config.error_mode, config.retry_after_s))
    registry = settings.stream_registry
    if registry.max_active_streams is not None:
        style = RefusalStyle(registry.error_mode, registry.retry_after_s, "max_active_streams_exceeded")
        log.info("stream registry for %s: at most %d active streams", name, registry.max_active_streams)
        return StreamCap(name, registry.max_active_streams, style)
    return None
