"""What the FAKE servers share: OpenAI-shaped stream chunks, and a FAKE `POST /tokenize` (vLLM's shape), so
that the load generator makes its prompts through it instead of sending calibration requests that the fakes
would count as served. Not a real tokenizer: one token per whitespace-separated word; a chat prompt adds 3
tokens per message and 2 for the generation prompt, like a chat template."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

MAX_MODEL_LEN = 4096
PER_MESSAGE_TOKENS, GENERATION_PROMPT_TOKENS = 3, 2


def fake_tokenize(body: Any) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body)."""
    if not isinstance(body, dict) or (body.get("prompt") is None) == (body.get("messages") is None):
        message = "Give exactly one of 'prompt' (string) or 'messages' (list)."
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        return 400, {"error": error}
    if body.get("prompt") is not None:
        count = len(str(body["prompt"]).split())
    else:
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        count = sum(PER_MESSAGE_TOKENS + len(str(m.get("content") or "").split()) for m in messages)
        count += GENERATION_PROMPT_TOKENS if body.get("add_generation_prompt", True) else 0
    return 200, {"count": count, "max_model_len": MAX_MODEL_LEN, "tokens": list(range(count))}


def stream_chunk(chat: bool, text: str | None, finish: str | None = None) -> dict:
    """One SSE chunk in OpenAI's shape: chat.completion.chunk (a delta) or text_completion (text)."""
    if chat:
        delta = {} if text is None else {"content": text}
        return {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    return {
        "object": "text_completion",
        "choices": [{"index": 0, "text": text or "", "finish_reason": finish}],
    }


def sse_frame(obj: Any) -> bytes:
    """One server-sent event carrying `obj` as compact JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def openai_app(handle: Callable[[Any, bool], Awaitable[Any]], model_id: str, profile: str) -> Any:
    """An aiohttp app with the routes every aiohttp FAKE server answers alike: chat and completions
    (`handle(request, chat)`), GET /v1/models listing `model_id`, the FAKE /tokenize (a body that is not
    JSON is its 400), and /health naming `profile`. The caller adds its own routes."""
    from aiohttp import web  # here: the bare-asyncio delay server imports this module too

    async def chat(request: web.Request) -> Any:
        return await handle(request, True)

    async def completions(request: web.Request) -> Any:
        return await handle(request, False)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model_id, "object": "model"}]})

    async def tokenize(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        status, doc = fake_tokenize(body)
        return web.json_response(doc, status=status)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "profile": profile})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_get("/health", health)
    return app


def serve_app_main(create_app: Callable[[], Any], name: str, doc: str, argv: list[str] | None) -> int:
    """`python tests/support/NAME_server.py [--host H] [--port P]` for an aiohttp FAKE server: bind, print
    "FAKE NAME server listening on http://HOST:PORT" (what tests.support.helpers.serve waits for), serve
    until interrupted."""
    from aiohttp import web  # here: the bare-asyncio delay server imports this module too

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        runner = web.AppRunner(create_app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"FAKE {name} server listening on http://{bound_host}:{bound_port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
