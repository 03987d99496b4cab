"""FAKE OpenAI-compatible streaming server with known delays, for measuring the load generator's bias.

    python tests/support/delay_server.py --ttft-ms 100 --itl-ms 10 [--port 0]

prints "FAKE delay server listening on http://127.0.0.1:PORT". Every chat or completion request gets
`max_tokens` chunks of one token each: the first --ttft-ms after the request's bytes were read, the rest
--itl-ms apart, on deadlines counted from that moment (sleeping in steps would drift). It is a bare
asyncio protocol, not aiohttp, so that its own overhead (and its queue when many requests arrive at
once) stays out of the figures: it stamps a request when its bytes arrive, and GET /fake/stats reports
per request what it really did (arrival, first-token write, last write, epoch seconds). POST /fake/reset
clears them. Not an LLM; only what the benchmark and the tests need.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

try:  # run as a script (python tests/support/delay_server.py) or imported as a module
    from fake_shapes import fake_tokenize, sse_frame
    from fake_shapes import stream_chunk as _chunk
except ImportError:
    from tests.support.fake_shapes import fake_tokenize, sse_frame
    from tests.support.fake_shapes import stream_chunk as _chunk

MAX_BODY_BYTES = 1 << 20


def _json_or_none(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class DelayProtocol(asyncio.Protocol):
    """One client connection (keep-alive); requests on it are answered one after the other."""

    def __init__(self, server: DelayServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        arrived = (time.time(), asyncio.get_running_loop().time())  # before any parsing
        self.buffer += data
        if not self.busy:
            self._next_request(arrived)

    def _next_request(self, arrived: tuple[float, float]) -> None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = min(int(value.strip()), MAX_BODY_BYTES)
        if len(self.buffer) < head_end + 4 + length:
            return  # the body is still coming
        body = self.buffer[head_end + 4 : head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length :]
        self.busy = True
        asyncio.get_running_loop().create_task(self._answer(method, path, body, arrived))

    async def _answer(self, method: str, path: str, body: bytes, arrived: tuple[float, float]) -> None:
        try:
            await self.server.answer(self, method, path, body, arrived)
        finally:
            self.busy = False
            if self.buffer and self.transport is not None:
                self._next_request((time.time(), asyncio.get_running_loop().time()))

    def write(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True


class DelayServer:
    def __init__(self, ttft_s: float, itl_s: float) -> None:
        self.ttft_s, self.itl_s = ttft_s, itl_s
        self.timings: list[dict[str, float]] = []

    async def answer(self, conn: DelayProtocol, method: str, path: str, body: bytes, arrived) -> None:
        if method == "GET" and path in ("/health", "/v1/models"):
            doc = {"status": "ok", "profile": "fake-delays"} if path == "/health" else {
                "object": "list", "data": [{"id": "fake-delays", "object": "model"}]}  # fmt: skip
            conn.write(_response("200 OK", json.dumps(doc).encode()))
        elif method == "GET" and path == "/fake/stats":
            conn.write(_response("200 OK", json.dumps({"timings": self.timings}).encode()))
        elif method == "POST" and path == "/fake/reset":
            self.timings.clear()
            conn.write(_response("200 OK", b'{"ok":true}'))
        elif method == "POST" and path == "/tokenize":
            status, doc = fake_tokenize(_json_or_none(body))
            conn.write(_response("200 OK" if status == 200 else "400 Bad Request", json.dumps(doc).encode()))
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            try:
                request = json.loads(body)
            except ValueError:
                conn.write(_response("400 Bad Request", b'{"error":{"message":"body is not JSON"}}'))
                return
            await self._stream(conn, path.endswith("chat/completions"), request, arrived)
        else:
            conn.write(_response("404 Not Found", b'{"error":{"message":"no such route"}}'))

    async def _stream(self, conn: DelayProtocol, chat: bool, request: dict, arrived) -> None:
        loop = asyncio.get_running_loop()
        arrival_ts, arrival_loop = arrived
        # GuideLLM sends OpenAI's newer max_completion_tokens; our generator sends max_tokens
        n = max(int(request.get("max_completion_tokens") or request.get("max_tokens") or 16), 1)
        stream = bool(request.get("stream"))
        timing = {"arrival_ts_s": arrival_ts}
        if stream:
            conn.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            timing["headers_s"] = loop.time() - arrival_loop
        for i in range(n):
            delay = arrival_loop + self.ttft_s + i * self.itl_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if stream and not conn.write(_chunked(sse_frame(_chunk(chat, f"t{i} ", None)))):
                return  # the client went away
            if i == 0:
                timing["ttft_s"] = loop.time() - arrival_loop
        usage = {"prompt_tokens": 4, "completion_tokens": n}
        if stream:
            tail = sse_frame(_chunk(chat, None, "length")) + sse_frame({"choices": [], "usage": usage})
            conn.write(_chunked(tail + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        else:
            choice = {"index": 0, "finish_reason": "length"}
            text = "t " * n
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            conn.write(_response("200 OK", json.dumps({"choices": [choice], "usage": usage}).encode()))
        timing["e2e_s"] = loop.time() - arrival_loop
        self.timings.append(timing)


async def _serve(host: str, port: int, ttft_s: float, itl_s: float) -> None:
    server = DelayServer(ttft_s, itl_s)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: DelayProtocol(server), host, port)
    bound = listener.sockets[0].getsockname()
    print(f"FAKE delay server listening on http://{bound[0]}:{bound[1]}", flush=True)
    async with listener:
        await listener.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=100.0, help="time to first token (default: 100)")
    parser.add_argument("--itl-ms", type=float, default=10.0, help="time between tokens (default: 10)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.ttft_ms / 1000, args.itl_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
