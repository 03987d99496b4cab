"""FAKE OpenAI-compatible server that gives requests each other's replies under concurrency. Not an LLM.

    python tests/support/swap_server.py --port 0
prints "FAKE swap server listening on http://127.0.0.1:PORT". A reply is `max_tokens` words made from a
hash of the prompt (one word, one token for the FAKE /tokenize), always the same for the same prompt.
Model `swap`: each request is held HOLD_S, and if another request with another prompt is in flight then,
it gets that request's reply (finish_reason "length", usage right): alone it answers right, under load it
answers with someone else's text, which `--check-outputs` must call `foreign`. Any other model never swaps.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sys

from aiohttp import web

try:  # run as a script (python tests/support/swap_server.py) or imported as a module
    from fake_shapes import openai_app, serve_app_main, sse_frame, stream_chunk
except ImportError:
    from tests.support.fake_shapes import openai_app, serve_app_main, sse_frame, stream_chunk

HOLD_S = 0.05  # long enough for concurrent users' requests to overlap
_ids = itertools.count()
_in_flight: dict[int, str] = {}  # request id -> its own (right) reply


def reply_for(prompt: str, n: int) -> str:
    """The right reply: n words of 4 hex digits, from a hash of the prompt and the word's position."""
    words = (hashlib.sha256(f"{prompt}|{i}".encode()).hexdigest()[:4] for i in range(n))
    return "".join(f" {w}" for w in words)


def _prompt_of(body: dict) -> str:
    if "messages" in body:
        return json.dumps(body["messages"], sort_keys=True)
    return str(body.get("prompt", ""))


async def _handle(request: web.Request, chat: bool) -> web.StreamResponse:
    body = await request.json()
    n = int(body.get("max_tokens") or 8)
    own = reply_for(_prompt_of(body), n)
    me = next(_ids)
    _in_flight[me] = own
    try:
        await asyncio.sleep(HOLD_S)
        others = [text for rid, text in _in_flight.items() if rid != me and text != own]
        text = others[0] if others and body.get("model") == "swap" else own
        words = text.split(" ")[1:]
        usage = {"prompt_tokens": 4, "completion_tokens": len(words)}
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "length"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            return web.json_response({"choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in words:
            await resp.write(sse_frame(stream_chunk(chat, f" {word}")))
        await resp.write(sse_frame(stream_chunk(chat, None, "length")))
        await resp.write(sse_frame({"choices": [], "usage": usage}) + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    finally:
        _in_flight.pop(me, None)


async def _answer(request: web.Request, chat: bool) -> web.StreamResponse:
    try:
        return await _handle(request, chat)
    except ConnectionResetError:
        # The client went away (a run that ended) before aiohttp cancelled this handler: end the same way.
        raise asyncio.CancelledError from None


def create_app() -> web.Application:
    app: web.Application = openai_app(_answer, "swap", "fake-swap")
    return app


def main(argv: list[str] | None = None) -> int:
    return serve_app_main(create_app, "swap", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
