"""FAKE OpenAI-compatible server for tests and the load-generator benchmark. Not an LLM.

The `model` field of a request picks the behaviour (see FAULTS), so one server covers every case:
    python tests/support/fault_server.py --port 0
prints "FAKE fault server listening on http://127.0.0.1:PORT". Model "mixed" cycles through MIXED_CYCLE,
one fault per request, in arrival order.

Known delays (the load generator's bias is measured against them): model `ttft_ms_<A>_itl_ms_<B>`
streams `max_tokens` chunks of one token each, the first A ms after the request arrived and the rest B ms
apart, on deadlines counted from the arrival (no drift from sleeping in steps). Model `serial_ms_<N>`
serves one request at a time, N ms each: a server that saturates. GET /fake/stats reports, per request,
what the fake itself observed (arrival, first-token write, last write) and how many requests each model
received and completed: the counting side of the distributed test. GET /fake/lying_metrics is a
Prometheus page that MISCOUNTS on purpose, in our server's metric names: every request received is counted
as a success, none as a rejection (the reconciliation's test); /fake/stats counts its scrapes.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import time
from typing import Any

from aiohttp import web

try:  # run as a script (python tests/support/fault_server.py) or imported as a module
    from fake_shapes import openai_app, serve_app_main, sse_frame
    from fake_shapes import stream_chunk as _chunk
except ImportError:
    from tests.support.fake_shapes import openai_app, serve_app_main, sse_frame
    from tests.support.fake_shapes import stream_chunk as _chunk

MAX_SLEEP_S = 10.0  # a stalled reply never holds a test longer than this
MIXED_CYCLE = (
    "ok",
    "http_429",
    "queue_timeout",
    "stream_error",
    "cut",
    "stall",
    "empty",
    "malformed",
    "stream_rejected",
    "no_finish",
)
HTTP_FAULTS = {
    "http_429": (429, "concurrency_limit_exceeded", {"Retry-After": "1"}),
    "queue_timeout": (503, "queue_timeout", {}),
    "overloaded": (503, "server_overloaded", {}),
    "http_503_nocode": (503, None, {}),
    "http_504": (504, None, {}),
    "http_500": (500, "internal_error", {}),
}
STREAM_FAULTS = (
    "ok",
    "ok_no_usage",
    "ok_cached",  # usage.prompt_tokens_details.cached_tokens = FAKE_CACHED_TOKENS (a prefix cache's report)
    "instant",
    "stream_error",
    "stream_rejected",
    "stream_queue_timeout",
    "cut",
    "reset",
    "stall",
    "empty",
    "malformed",
    "no_finish",
)
# Replies that look complete but break the strict-success rules (stream and body alike): the finish_reason
# sent, how many tokens are sent against max_tokens, and what usage claims (None: the true count).
STRICT_FAULTS = {
    "finish_abort": ("abort", 0, None),
    "short": ("length", -1, None),
    "over_usage": ("length", 0, 1),
    "zero_usage": ("length", 0, "zero"),
}
# A proxy's error page: newlines, quotes and bytes that are not UTF-8.
HTML_ERROR_BODY = b'<html>\r\n<h1>502 "Bad Gateway"</h1>\n<p>upstream \xff\xfe said, "no"</p>\n</html>\n'
FAULTS = (
    *STREAM_FAULTS,
    *HTTP_FAULTS,
    *STRICT_FAULTS,
    "html_502",
    "body_no_finish",
    "mixed",
    "first_token_ms_<N>",
    "token_ms_<N>",
    "ttft_ms_<A>_itl_ms_<B>",
    "serial_ms_<N>",
)
_DELAY = re.compile(r"(first_token|token)_ms_(\d+)$")
_KNOWN = re.compile(r"ttft_ms_(\d+)_itl_ms_(\d+)$")
_SERIAL = re.compile(r"serial_ms_(\d+)$")
_counter = itertools.count()
# Server-side seconds from a request's arrival to the write of its first content chunk (GET /fake/stats):
# the benchmark compares the client's TTFT with this.
_first_token_s: list[float] = []
# Per known-delay request, what the fake observed (epoch seconds and durations from the arrival).
_timings: list[dict] = []
_received: dict[str, int] = {}
_completed: dict[str, int] = {}
_metrics_scrapes = [0]  # GETs of /fake/lying_metrics
_serial_lock = asyncio.Lock()


FAKE_CACHED_TOKENS = 3


def _usage_doc(prompt: int, completion: int, fault: str = "ok") -> dict:
    usage: dict = {"prompt_tokens": prompt, "completion_tokens": completion}
    if fault == "ok_cached":
        usage["prompt_tokens_details"] = {"cached_tokens": FAKE_CACHED_TOKENS}
    return usage


def _usage(prompt: int, completion: int, fault: str = "ok") -> dict:
    return {"choices": [], "usage": _usage_doc(prompt, completion, fault)}


def _error(code: str | None, message: str = "fake failure") -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


_instant_cache: dict[tuple[bool, int], bytes] = {}


def _instant_body(chat: bool, n: int) -> bytes:
    """The whole stream in one buffer, built once: the fake must cost far less than the client it feeds."""
    key = (chat, n)
    if key not in _instant_cache:
        frames = [sse_frame(_chunk(chat, "tok ")) for _ in range(n)]
        frames += [sse_frame(_chunk(chat, None, "length")), sse_frame(_usage(4, n)), b"data: [DONE]\n\n"]
        _instant_cache[key] = b"".join(frames)
    return _instant_cache[key]


def _claimed(sent: int, claimed) -> int:
    return 0 if claimed == "zero" else sent + (claimed or 0)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, MAX_SLEEP_S))


async def _stream(
    request: web.Request, fault: str, chat: bool, n: int, arrived_s: float
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    if fault == "instant":
        await resp.write(_instant_body(chat, n))
        await resp.write_eof()
        return resp
    delay = _DELAY.match(fault)
    first_s = int(delay[2]) / 1000 if delay and delay[1] == "first_token" else 0.0
    gap_s = int(delay[2]) / 1000 if delay and delay[1] == "token" else 0.0
    await resp.write(b": keepalive 0/4\n\n\n")  # a comment and a stray blank line, as mlx_lm.server sends
    if chat:
        await resp.write(
            sse_frame({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        )
    if fault in ("stream_rejected", "stream_queue_timeout"):
        code = "concurrency_limit_exceeded" if fault == "stream_rejected" else "queue_timeout"
        await resp.write(sse_frame(_error(code)))
        await resp.write_eof()
        return resp
    if first_s:
        await asyncio.sleep(first_s)
    sent = 0
    finish, extra_tokens, claimed = STRICT_FAULTS.get(fault, ("length", 0, None))
    n += extra_tokens
    for i in range(0 if fault == "empty" else n):
        if i and gap_s:
            await asyncio.sleep(gap_s)
        if i == 0:
            _first_token_s.append(time.perf_counter() - arrived_s)
        await resp.write(sse_frame(_chunk(chat, f"t{i} ")))
        sent += 1
        if i == 1 and fault in ("stream_error", "cut", "reset", "stall", "malformed"):
            break
    if fault == "stream_error":
        await resp.write(sse_frame(_error("internal_error")))
    elif fault == "cut":
        pass  # a clean end of body with no [DONE]
    elif fault == "reset":
        assert request.transport is not None  # the connection is open while its handler runs
        request.transport.abort()
        return resp
    elif fault == "stall":
        await _sleep(MAX_SLEEP_S)
    elif fault == "malformed":
        await resp.write(b'data: {"choices": [\n\n')
    elif fault == "no_finish":
        await resp.write(b"data: [DONE]\n\n")
    else:
        await resp.write(sse_frame(_chunk(chat, None, finish)))
        if fault != "ok_no_usage":
            await resp.write(sse_frame(_usage(4, _claimed(sent, claimed), fault)))
        await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _known_delays(
    request: web.Request, chat: bool, n: int, ttft_s: float, itl_s: float, arrived_s: float
):
    """One token per chunk on deadlines from the arrival; records what was really written when."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    timing = {"arrival_ts_s": time.time() - (time.perf_counter() - arrived_s)}
    for i in range(n):
        deadline = arrived_s + ttft_s + i * itl_s
        delay = deadline - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await resp.write(sse_frame(_chunk(chat, f"t{i} ")))
        if i == 0:
            timing["ttft_s"] = time.perf_counter() - arrived_s
    await resp.write(sse_frame(_chunk(chat, None, "length")) + sse_frame(_usage(4, n)) + b"data: [DONE]\n\n")
    timing["e2e_s"] = time.perf_counter() - arrived_s
    _timings.append(timing)
    await resp.write_eof()
    return resp


async def _handle(request: web.Request, chat: bool) -> web.StreamResponse:
    arrived_s = time.perf_counter()
    body = await request.json()
    fault = str(body.get("model") or "ok")
    _received[fault] = _received.get(fault, 0) + 1
    try:
        resp = await _reply(request, chat, body, fault, arrived_s)
    except ConnectionResetError:
        # The client went away (a run that ended, a killed worker) before aiohttp noticed and cancelled
        # this handler: the same thing, so end the same way, without an error log.
        raise asyncio.CancelledError from None
    _completed[fault] = _completed.get(fault, 0) + 1
    return resp


async def _reply(request: web.Request, chat: bool, body: dict, fault: str, arrived_s: float):
    if known := _KNOWN.match(fault):
        n = int(body.get("max_tokens") or 8)
        return await _known_delays(request, chat, n, int(known[1]) / 1000, int(known[2]) / 1000, arrived_s)
    if serial := _SERIAL.match(fault):
        async with _serial_lock:
            await asyncio.sleep(int(serial[1]) / 1000)
        fault = "instant"
    if fault == "mixed":
        fault = MIXED_CYCLE[next(_counter) % len(MIXED_CYCLE)]
    n = int(body.get("max_tokens") or 8)
    if fault == "html_502":
        return web.Response(status=502, body=HTML_ERROR_BODY, content_type="text/html")
    if fault in HTTP_FAULTS:
        status, code, headers = HTTP_FAULTS[fault]
        return web.json_response(_error(code), status=status, headers=headers)
    if body.get("stream"):
        return await _stream(request, fault, chat, n, arrived_s)
    delay = _DELAY.match(fault)
    if delay:
        await asyncio.sleep(int(delay[2]) / 1000)
    finish, extra_tokens, claimed = STRICT_FAULTS.get(fault, ("length", 0, None))
    n += extra_tokens
    text = "" if fault == "empty" else "t " * n
    choice: dict[str, Any] = {"index": 0, "finish_reason": None if fault == "body_no_finish" else finish}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
    usage = _usage_doc(4, _claimed(len(text.split()), claimed), fault)
    return web.json_response({"choices": [choice], "usage": usage})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "first_token_s": _first_token_s,
            "timings": _timings,
            "received": _received,
            "completed": _completed,
            "metrics_scrapes": _metrics_scrapes[0],
        }
    )


async def lying_metrics(request: web.Request) -> web.Response:
    """Our server's counter names, wrongly kept: whatever happened to a request, it is counted a success."""
    _metrics_scrapes[0] += 1
    received = sum(_received.values())
    text = (
        "# HELP mlxserving_requests Requests by endpoint and outcome (FAKE: miscounted)\n"
        "# TYPE mlxserving_requests counter\n"
        f'mlxserving_requests_total{{endpoint="chat",outcome="success"}} {float(received)}\n'
        "# HELP mlxserving_requests_in_flight Requests being answered (FAKE: always 0)\n"
        "# TYPE mlxserving_requests_in_flight gauge\n"
        'mlxserving_requests_in_flight{model="fake"} 0.0\n'
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def reset(request: web.Request) -> web.Response:
    """Start the "mixed" cycle and the stats afresh (each test that relies on the order calls this)."""
    global _counter
    _counter = itertools.count()
    _first_token_s.clear()
    _timings.clear()
    _received.clear()
    _completed.clear()
    _metrics_scrapes[0] = 0
    return web.json_response({"ok": True})


def create_app() -> web.Application:
    app: web.Application = openai_app(_handle, "ok", "fake-faults")
    app.router.add_get("/fake/stats", stats)
    app.router.add_post("/fake/reset", reset)
    app.router.add_get("/fake/lying_metrics", lying_metrics)
    return app


def main(argv: list[str] | None = None) -> int:
    return serve_app_main(create_app, "fault", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
