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
import uuid
from collections.abc import AsyncIterator, Callable

from server import ipc
from server.worker import RuntimeOptions, run_worker

log = logging.getLogger(__name__)

EventSink = Callable[[object], None]


class EngineUnavailable(Exception):
    """The worker is not ready (still loading, failed, or gone)."""


class Engine:
    def __init__(
        self, name: str, model_path: str, options: RuntimeOptions, log_level: str = "info", kind: str = "text"
    ):
        self.name = name
        self.kind = kind
        self.model_path = model_path
        self.options = options
        self.log_level = log_level
        self.info: ipc.Ready | None = None
        self.failure: str | None = None
        self.stats = ipc.BatchStats(0, 0, 0, 0)
        self.on_stats: EventSink | None = None
        self.limiter = None  # a ConcurrencyLimiter under compat v1.1.1, set once the model is loaded
        self._streams: dict[str, asyncio.Queue] = {}
        self._settled: asyncio.Future | None = None
        self._process: mp.Process | None = None
        self._stopping = False

    @property
    def ready(self) -> bool:
        return self.info is not None and self.failure is None

    @property
    def active_requests(self) -> int:
        return len(self._streams)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn the worker; returns at once. `wait_ready` waits for the model to load."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._settled = loop.create_future()
        # spawn, not fork: the HTTP process has threads and an event loop a forked child must not inherit.
        ctx = mp.get_context("spawn")
        self._inbox = ctx.Queue()
        receive, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=run_worker,
            args=(self.model_path, self.options, self._inbox, send, self.log_level, self.kind),
            name=f"mlx-worker-{self.name}",
            daemon=True,
        )
        self._process.start()
        send.close()  # the child holds the only write end, so its death shows here as EOF
        self._reader = threading.Thread(target=self._read_events, args=(receive,), daemon=True)
        self._reader.start()

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        assert self._settled is not None
        await asyncio.wait_for(asyncio.shield(self._settled), timeout_s)
        if self.failure:
            raise EngineUnavailable(self.failure)

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
        self._inbox.close()
        self._inbox.cancel_join_thread()
        self._process = None

    # -- events from the worker -----------------------------------------------------------------------
    def _read_events(self, receive) -> None:
        while True:
            try:
                events = receive.recv()
            except (EOFError, OSError):
                self._loop.call_soon_threadsafe(self._worker_exited)
                return
            self._loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list) -> None:
        for event in events:
            if isinstance(event, ipc.BatchStats):
                self.stats = event
                if self.on_stats:
                    self.on_stats(event)
            elif isinstance(event, ipc.Ready):
                self.info = event
                log.info(
                    "model %s ready (%s, %d parameters)", self.name, event.model_path, event.parameter_count
                )
                self._settle()
            elif isinstance(event, ipc.WorkerError):
                self.failure = event.message
                log.error("model %s failed to start: %s", self.name, event.message)
                self._settle()
            else:
                stream = self._streams.get(event.request_id)
                if stream is not None:
                    stream.put_nowait(event)

    def _worker_exited(self) -> None:
        if self._process is None or self._stopping:
            return  # a requested stop
        code = self._process.exitcode
        self.failure = self.failure or f"the model worker exited unexpectedly (exit code {code})"
        log.error("model %s: %s", self.name, self.failure)
        for request_id, stream in self._streams.items():
            stream.put_nowait(ipc.Failed(request_id, 503, "worker_unavailable", self.failure))
        self._settle()

    def _settle(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    # -- requests -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def open(self, submit_fields: dict) -> AsyncIterator[AsyncIterator[ipc.Event]]:
        """Submit a request; yields its events until Finished or Failed. Leaving early cancels it."""
        if not self.ready:
            raise EngineUnavailable(self.failure or f"model {self.name} is still loading")
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
            if not state["ended"] and self.ready:
                self._inbox.put(ipc.Cancel(request_id))
