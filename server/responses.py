"""From an accepted request to the last byte of its reply: capacity and admission checks, the worker's
events under the request deadline, and the reply written as JSON or as SSE chunks, with the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from server import ipc
from server.admission import LimitExceeded, QueueFull
from server.appkeys import METRICS, SETTINGS
from server.errors import APIError
from server.worker_handle import WorkerHandle, WorkerUnavailable

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _api_error(event: ipc.Failed) -> APIError:
    return APIError(event.status, event.message, code=event.code, param=event.param)


async def respond(
    request, handle: WorkerHandle, fields: dict, shapes, stream: bool, include_usage: bool, endpoint: str
):
    metrics = request.app[METRICS]
    limits = request.app[SETTINGS].limits
    started_s = time.perf_counter()
    outcome = "server_error"
    try:
        _check_capacity(handle, limits)
    except APIError:
        # Refused before admission, but a request and a rejection all the same: counted, so that the
        # server's counters agree with a client's (reports/reconcile.py).
        metrics.requests.labels(endpoint, "rejected").inc()
        raise
    metrics.in_flight.labels(handle.name).inc()
    try:
        async with _admission(handle, f"Request {shapes.id}"), handle.open(fields) as worker_events:
            deadline = asyncio.get_running_loop().time() + limits.request_timeout_s
            events = _until(worker_events, deadline, limits.request_timeout_s)
            first = await anext(events)
            if isinstance(first, ipc.Failed):
                raise _api_error(first)
            metrics.prompt_tokens.labels(handle.name).inc(first.prompt_tokens)
            writer = _stream_reply if stream else _json_reply
            response, outcome = await writer(request, events, shapes, include_usage, handle.name, started_s)
            return response
    except LimitExceeded as exc:
        outcome = "rejected" if isinstance(exc, QueueFull) else "timeout"
        if exc.style.error_mode == "in_stream":
            return await _in_stream_limit_error(request, exc, stream)
        raise _limit_error(exc) from None
    except WorkerUnavailable as exc:
        outcome = "unavailable"
        code = "server_shutting_down" if handle.draining else "model_not_ready"
        raise APIError(503, str(exc), code=code, headers={"Retry-After": "1"}) from None
    except SlowReader:
        outcome = "slow_reader"
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)  # never sent: the connection is gone
    except APIError as exc:
        outcome = "timeout" if exc.code == "request_timeout" else _status_outcome(exc.status)
        raise
    except ConnectionResetError:
        # The client went away while its reply was written: nobody to answer. Returned, not raised, so
        # that aiohttp does not log it as an error in the server.
        outcome = "cancelled"
        return web.Response(status=499)  # never sent: the connection is gone
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        metrics.in_flight.labels(handle.name).dec()
        metrics.requests.labels(endpoint, outcome).inc()


class SlowReader(Exception):
    """The client did not take a chunk within limits.write_timeout_s."""


def _check_capacity(handle: WorkerHandle, limits) -> None:
    """Bounded admission: past max_batch_size running plus max_waiting_requests waiting, refuse."""
    capacity = handle.options.max_batch_size + limits.max_waiting_requests
    if handle.active_requests >= capacity:
        raise APIError(
            429,
            f"The server is at capacity for {handle.name} ({handle.active_requests} requests in flight). "
            "Retry shortly.",
            code="server_overloaded",
            headers={"Retry-After": "1"},
        )


async def _until(events, deadline: float, timeout_s: float):
    """The engine's events, ending with a request_timeout failure if the deadline passes first."""
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                event = await anext(events)
        except StopAsyncIteration:
            return
        except TimeoutError:
            message = f"The request did not finish within this server's limit of {timeout_s:g} s."
            yield ipc.Failed("", 504, "request_timeout", message)
            return
        yield event


def _admission(handle: WorkerHandle, label: str):
    """A slot from the v1.1.1 limiter when there is one; v1.2.0 admits everything straight to the engine."""
    return handle.limiter.slot(label) if handle.limiter else contextlib.nullcontext()


def _limit_error(exc: LimitExceeded) -> APIError:
    if isinstance(exc, QueueFull):
        headers = {"Retry-After": str(exc.style.retry_after_s)}
        return APIError(429, exc.message, code=exc.style.rejection_code, headers=headers)
    return APIError(503, exc.message, code="queue_timeout")


# v1.1.1 put both refusals inside a 200 reply under one code (and v1.2.0 its stream cap's, the same way);
# reproduced for testing harnesses against it.
IN_STREAM_LIMIT_CODE = "model_concurrency_error"


async def _in_stream_limit_error(request, exc: LimitExceeded, stream: bool) -> web.StreamResponse:
    body = APIError(200, exc.message, code=IN_STREAM_LIMIT_CODE).body()
    body["error"]["type"] = "server_error"
    if not stream:
        return web.json_response(body)
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    await response.write(_frame(body))
    await response.write_eof()
    return response


async def _json_reply(request, events, shapes, include_usage, model, started_s):
    metrics = request.app[METRICS]
    parts: list[str] = []
    async for event in events:
        if isinstance(event, ipc.Tokens):
            if not parts:
                metrics.ttft.labels(model).observe(time.perf_counter() - started_s)
            parts.append(event.text)
        elif isinstance(event, ipc.Failed):
            raise _api_error(event)
        elif isinstance(event, ipc.Finished):
            metrics.output_tokens.labels(model).inc(event.completion_tokens)
            metrics.e2e.labels(model).observe(time.perf_counter() - started_s)
            body = shapes.final(
                "".join(parts),
                event.finish_reason,
                event.prompt_tokens,
                event.completion_tokens,
                event.cached_tokens,
            )
            return web.json_response(body), "success"
    raise APIError(500, "The engine ended the request without a result.", code="engine_error")


def _frame(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _stream_reply(request, events, shapes, include_usage, model, started_s):
    metrics = request.app[METRICS]
    write_timeout_s = request.app[SETTINGS].limits.write_timeout_s
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)

    async def send(data: bytes) -> None:
        try:
            async with asyncio.timeout(write_timeout_s):
                await response.write(data)
        except TimeoutError:
            raise SlowReader from None

    opening = shapes.opening()
    if opening:
        await send(_frame(opening))
    first_text = True
    async for event in events:
        if isinstance(event, ipc.Tokens):
            if event.text:
                if first_text:
                    metrics.ttft.labels(model).observe(time.perf_counter() - started_s)
                    first_text = False
                await send(_frame(shapes.chunk(event.text)))
        elif isinstance(event, ipc.Failed):
            # Headers are gone: the error travels as an event, and no [DONE] follows, so no client can
            # mistake the truncated stream for a complete one.
            await send(_frame(_api_error(event).body()))
            await response.write_eof()
            return response, _failure_outcome(event)
        elif isinstance(event, ipc.Finished):
            await send(_frame(shapes.chunk(None, event.finish_reason)))
            if include_usage:
                usage = shapes.usage_chunk(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
                await send(_frame(usage))
            await send(b"data: [DONE]\n\n")
            await response.write_eof()
            metrics.output_tokens.labels(model).inc(event.completion_tokens)
            metrics.e2e.labels(model).observe(time.perf_counter() - started_s)
            return response, "success"
    return response, "server_error"


def _failure_outcome(event: ipc.Failed) -> str:
    return "timeout" if event.code == "request_timeout" else _status_outcome(event.status)


def _status_outcome(status: int) -> str:
    return "server_error" if status >= 500 else "client_error"
