"""v1.1.1's model concurrency limiter, reproduced on purpose (only under `compat: v1.1.1`).

Per model: at most `max_concurrent` requests active, a FIFO queue of at most `queue_depth` waiting ones,
each waiting at most `queue_timeout_ms`. The limits come from the model's size tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

TIERS = ("30B+", "13-27B", "7-13B", "3-7B", "<3B")


@dataclass(frozen=True)
class TierLimits:
    max_concurrent: int
    queue_depth: int
    queue_timeout_ms: int


# v1.1.1's runtime.yaml ("M3 Max optimized"), max_concurrent / queue_depth / queue_timeout_ms.
V111_TIER_TABLE = {
    "30B+": TierLimits(3, 25, 60000),
    "13-27B": TierLimits(8, 50, 45000),
    "7-13B": TierLimits(15, 75, 30000),
    "3-7B": TierLimits(20, 100, 30000),
    "<3B": TierLimits(25, 120, 30000),
}
FALLBACK_TIER = "7-13B"

_SIZE_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")


def tier_for_billions(billions: float) -> str:
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
    """v1.1.1 read the first number followed by `b` ("30B", "0.5b"); "4bit" is not a size."""
    match = _SIZE_IN_NAME.search(name)
    return float(match.group(1)) if match else None


def detect_tier(parameter_count: int | None, name: str, override: str | None = None) -> tuple[str, str]:
    """(tier, how it was found): the override, else the weights, else the name, else v1.1.1's fallback."""
    if override:
        return override, "config"
    if parameter_count:
        return tier_for_billions(parameter_count / 1e9), "weights"
    billions = billions_in_name(name)
    if billions is not None:
        return tier_for_billions(billions), "name"
    log.warning("no size for model %s in its weights or name; using tier %s", name, FALLBACK_TIER)
    return FALLBACK_TIER, "fallback"


class LimitExceeded(Exception):
    """Base of the limiter's two refusals; carries what the error response needs."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class QueueFull(LimitExceeded):
    pass


class QueueTimeout(LimitExceeded):
    pass


class ConcurrencyLimiter:
    def __init__(self, model: str, tier: str, limits: TierLimits):
        self.model = model
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
                "Please retry later or reduce concurrent requests."
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
                    f"concurrency slot (model: {self.model})"
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
