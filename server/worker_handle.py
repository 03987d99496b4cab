"""The HTTP process's handle on one model worker process.

Commands go to the worker through a multiprocessing queue (non-blocking for the event loop); events come
back through a pipe read by one thread, which hands them to the event loop and on to each request's
asyncio queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from server import ipc
from server.ipc import RuntimeOptions
from server.worker.main import run_worker

if TYPE_CHECKING:
    from server.admission import ConcurrencyLimiter

log = logging.getLogger(__name__)

# Builds the limiter in front of a worker from the parameter count its model reports (None: unknown);
# returns None when nothing limits it. Called once, when the model first loads: the tier needs the count.
AdmissionFactory = Callable[[int | None], "ConcurrencyLimiter | None"]


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a crashed worker after 0.5, 1, 2, 4, 8 s...; give up after `max_restarts` in a row."""

    max_restarts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay_s(self, attempt: int) -> float:
        return min(self.first_delay_s * 2**attempt, self.max_delay_s)


class WorkerUnavailable(Exception):
    """The worker is not ready (still loading, failed, or gone)."""


class WorkerHandle:
    def __init__(
        self,
        name: str,
        model_path: str,
        options: RuntimeOptions,
        log_level: str = "info",
        kind: str = "text",
        restart: RestartPolicy | None = None,
        admission: AdmissionFactory | None = None,
    ):
        self.name = name
        self.kind = kind
        self.model_path = model_path
        self.options = options
        self.log_level = log_level
        self.restart = restart or RestartPolicy()
        self.info: ipc.Ready | None = None
        self.failure: str | None = None
        self.draining = False
        self.stats = ipc.BatchStats(0, 0, 0, 0)
        # The v1.1.1 limiter or v1.2.0 stream cap (server/admission.py), from `admission` at first load.
        self.limiter: ConcurrencyLimiter | None = None
        self._admission = admission
        self.restarts_total = 0
        self.last_recovery_s: float | None = None
        self._restarts_in_a_row = 0
        self._crashed_at: float | None = None
        self._streams: dict[str, asyncio.Queue] = {}
        self._settled: asyncio.Future | None = None
        self._process: BaseProcess | None = None
        self._stopping = False

    @property
    def ready(self) -> bool:
        return self.info is not None and self.failure is None and not self.draining

    @property
    def state(self) -> str:
        if self.failure:
            return "failed"
        if self.draining:
            return "draining"
        if self.info is None:
            return "restarting" if self.restarts_total else "loading"
        return "ready"

    @property
    def active_requests(self) -> int:
        return len(self._streams)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn the worker; returns at once. `wait_ready` waits for the model to load."""
        self._loop = asyncio.get_running_loop()
        self._settled = self._loop.create_future()
        self._spawn()

    def _spawn(self) -> None:
        # spawn, not fork: the HTTP process has threads and an event loop a forked child must not inherit.
        ctx = mp.get_context("spawn")
        self._inbox = ctx.Queue()
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=run_worker,
            args=(self.model_path, self.options, self._inbox, send, self.log_level, self.kind),
            name=f"mlx-worker-{self.name}",
            daemon=True,
        )
        process.start()
        send.close()  # the child holds the only write end, so its death shows here as EOF
        self._process = process
        threading.Thread(target=self._read_events, args=(receive, process), daemon=True).start()

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait for the first start to settle: the model loaded, or failed for good."""
        assert self._settled is not None
        await asyncio.wait_for(asyncio.shield(self._settled), timeout_s)
        if self.failure:
            raise WorkerUnavailable(self.failure)

    def abort_all(self, status: int, code: str, message: str) -> int:
        """End every request in flight with an error event (shutdown past its grace period)."""
        for request_id, stream in self._streams.items():
            stream.put_nowait(ipc.Failed(request_id, status, code, message))
        return len(self._streams)

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self._process is None:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            self._inbox.put(ipc.Shutdown())
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, timeout_s)
        if self._process.is_alive():
            log.warning("worker %s did not stop in %.0f s; killing it", self.name, timeout_s)
            self._process.kill()
            self._process.join(5)
        self._close_inbox()
        self._process = None

    def _close_inbox(self) -> None:
        self._inbox.close()
        self._inbox.cancel_join_thread()  # never block on commands a dead worker will not read

    # -- events from the worker -----------------------------------------------------------------------
    def _read_events(self, receive, process: BaseProcess) -> None:
        while True:
            try:
                events = receive.recv()
            except (EOFError, OSError):
                self._to_loop(self._worker_exited, process)
                return
            if not self._to_loop(self._dispatch, events):
                return

    def _to_loop(self, callback, *args) -> bool:
        """Hand work to the event loop; False once the loop is closed (the server is exiting, e.g. after
        failing to bind its port), when there is nobody left to tell."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    def _dispatch(self, events: list) -> None:
        for event in events:
            if isinstance(event, ipc.BatchStats):
                self.stats = event  # read by /metrics and /health when they are asked
            elif isinstance(event, ipc.Ready):
                self._on_ready(event)
            elif isinstance(event, ipc.WorkerError):
                # A clean load failure (bad model files) will fail again: no restart.
                self.failure = event.message
                log.error("model %s failed to start: %s", self.name, event.message)
                self._settle()
            else:
                stream = self._streams.get(event.request_id)
                if stream is not None:
                    stream.put_nowait(event)

    def _on_ready(self, event: ipc.Ready) -> None:
        if self._admission is not None:
            # Before `info` is set, so that no request is admitted past a limiter still to be built.
            self.limiter = self._admission(event.parameter_count)
            self._admission = None  # a restarted worker keeps its limiter and the requests it holds
        self.info = event
        self._restarts_in_a_row = 0
        if self._crashed_at is not None:
            self.last_recovery_s = time.monotonic() - self._crashed_at
            log.info("model %s back after %.2f s", self.name, self.last_recovery_s)
            self._crashed_at = None
        log.info("model %s ready (%s, %d parameters)", self.name, event.model_path, event.parameter_count)
        self._settle()

    def _worker_exited(self, process: BaseProcess) -> None:
        if self._stopping or process is not self._process:
            return  # a requested stop, or an old worker already replaced
        process.join(1)
        message = f"The model worker exited unexpectedly (exit code {process.exitcode})."
        log.error("model %s: %s", self.name, message)
        self.abort_all(503, "worker_crashed", message)
        self.info = None
        self.stats = ipc.BatchStats(0, 0, 0, 0)
        self._close_inbox()
        self._crashed_at = self._crashed_at or time.monotonic()
        if self._restarts_in_a_row >= self.restart.max_restarts:
            self.failure = f"{message} Gave up after {self._restarts_in_a_row} restarts in a row."
            log.error("model %s: %s", self.name, self.failure)
            self._settle()
            return
        delay_s = self.restart.delay_s(self._restarts_in_a_row)
        self._restarts_in_a_row += 1
        self.restarts_total += 1
        log.warning(
            "model %s: restarting the worker in %.1f s (restart %d)", self.name, delay_s, self.restarts_total
        )
        self._loop.call_later(delay_s, self._respawn)

    def _respawn(self) -> None:
        if not self._stopping:
            self._spawn()

    def _settle(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    # -- requests -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def open(self, submit_fields: dict) -> AsyncIterator[AsyncIterator[ipc.Event]]:
        """Submit a request; yields its events until Finished or Failed. Leaving early cancels it."""
        if not self.ready:
            raise WorkerUnavailable(self.failure or f"The model {self.name} is {self.state}; retry shortly.")
        request_id = uuid.uuid4().hex
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = stream
        state = {"ended": False}

        async def events() -> AsyncIterator[ipc.Event]:
            while True:
                event = await stream.get()
                if isinstance(event, ipc.Finished | ipc.Failed):
                    state["ended"] = True
                    yield event
                    return
                yield event

        try:
            self._inbox.put(ipc.Submit(request_id=request_id, **submit_fields))
            yield events()
        finally:
            del self._streams[request_id]
            if not state["ended"] and self.info is not None and not self._stopping:
                self._inbox.put(ipc.Cancel(request_id))
