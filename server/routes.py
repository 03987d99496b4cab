"""HTTP handlers: parse the request, submit it to the model's worker handle, format its events (JSON, SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiohttp import web
from pydantic import Field, model_validator

from server import ipc
from server.admission import LimitExceeded, QueueFull
from server.appkeys import METRICS, SETTINGS, WORKER_HANDLES
from server.errors import APIError
from server.protocol import (
    ChatCompletionRequest,
    ChatShapes,
    CompletionRequest,
    CompletionShapes,
    ImagePart,
    Message,
    TextPart,
    _Request,
    check_json_shape,
    check_stops,
    completion_prompt,
    parse_request,
    resolve_max_tokens,
    too_deep,
)
from server.request_images import load_image
from server.settings import ImageSettings
from server.worker_handle import WorkerHandle, WorkerUnavailable

log = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_json(request: web.Request):
    body = await request.read()  # raises 413 past client_max_size
    limits = request.app[SETTINGS].limits
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "The request body is not valid JSON.", code="invalid_json") from None
    except RecursionError:  # nested past the interpreter's own limit, so far past ours
        raise too_deep(limits.max_json_depth) from None
    check_json_shape(value, limits.max_json_depth, limits.max_json_elements)
    return value


def handle_for(request: web.Request, model: str) -> WorkerHandle:
    handles = request.app[WORKER_HANDLES]
    handle = handles.get(model)
    if handle is None:
        known = ", ".join(sorted(handles))
        raise APIError(
            404,
            f"The model '{model}' does not exist. Available: {known}.",
            code="model_not_found",
            param="model",
        )
    return handle


async def chat_completions(request: web.Request) -> web.StreamResponse:
    req = parse_request(ChatCompletionRequest, await read_json(request))
    settings = request.app[SETTINGS]
    handle = handle_for(request, req.model)
    messages, images = await worker_messages(req.messages, handle, settings.images)
    fields = {
        "messages": messages,
        "prompt": None,
        "images": tuple(images),
        **_sampling_fields(req, req.max_completion_tokens or req.max_tokens, settings.limits),
    }
    return await respond(
        request, handle, fields, ChatShapes(req.model), req.stream, req.include_usage, "chat"
    )


async def worker_messages(
    messages: list[Message], handle: WorkerHandle, limits: ImageSettings
) -> tuple[list, list]:
    """Messages as the worker wants them: plain strings for text models, content parts for vision models
    (each image part replaced by {"type": "image"}, its bytes listed in order)."""
    images: list[bytes] = []
    converted = []
    for i, message in enumerate(messages):
        parts = (
            message.content
            if isinstance(message.content, list)
            else [TextPart(type="text", text=message.text())]
        )
        content = []
        for j, part in enumerate(parts):
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
                continue
            param = f"messages.{i}.content.{j}"
            if handle.kind != "vision":
                raise APIError(
                    400,
                    f"The model '{handle.name}' does not accept images.",
                    code="invalid_image",
                    param=param,
                )
            if len(images) >= limits.max_images_per_request:
                raise APIError(
                    400,
                    f"At most {limits.max_images_per_request} images per request.",
                    code="too_many_images",
                    param=param,
                )
            images.append(await load_image(part.image_url.url, limits, param))
            content.append({"type": "image"})
        if handle.kind != "vision":
            content = "".join(part["text"] for part in content)
        converted.append({"role": message.role, "content": content})
    return converted, images


async def completions(request: web.Request) -> web.StreamResponse:
    req = parse_request(CompletionRequest, await read_json(request))
    limits = request.app[SETTINGS].limits
    handle = handle_for(request, req.model)
    fields = {
        "messages": None,
        "prompt": completion_prompt(req),
        **_sampling_fields(req, req.max_tokens, limits),
    }
    return await respond(
        request, handle, fields, CompletionShapes(req.model), req.stream, req.include_usage, "completions"
    )


def _sampling_fields(req, max_tokens: int | None, limits) -> dict:
    return {
        "max_tokens": resolve_max_tokens(max_tokens, limits),
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": check_stops(req.stop_list(), limits),
        "ignore_eos": req.ignore_eos,
        "max_prompt_tokens": limits.max_prompt_tokens,
    }


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


async def list_models(request: web.Request) -> web.Response:
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "mlx-serving-bench"}
        for name in request.app[WORKER_HANDLES]
    ]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    models = {}
    for name, handle in request.app[WORKER_HANDLES].items():
        models[name] = {
            "state": handle.state,
            "kind": handle.kind,
            "restarts_total": handle.restarts_total,
            "last_recovery_s": handle.last_recovery_s,
            "error": handle.failure,
            "parameters": handle.info.parameter_count if handle.info else None,
            "active_requests": handle.active_requests,
            "engine_sequences": handle.stats.sequences,
            "batch_size": handle.stats.decoding,
            "limiter": handle.limiter.snapshot() if handle.limiter else None,
        }
    ready = all(m["state"] == "ready" for m in models.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "profile": settings.profile or settings.compat,
        "compat": settings.compat,
        "models": models,
    }
    return web.json_response(body, status=200 if ready else 503)


# ---------------------------------------------------------------- POST /tokenize (vLLM-compatible)


class TokenizeRequest(_Request):
    """vLLM's /tokenize body: a completion `prompt`, or chat `messages` (through the chat template)."""

    model: str | None = Field(None, min_length=1)
    prompt: str | None = None
    messages: list[Message] | None = Field(None, min_length=1)
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages (as vLLM)
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' (string) or 'messages' (list)")
        return self


# Tokenizers by model folder, loaded in the HTTP process once the model is ready (server/app.py) or on first
# use (the worker holds its own copy).
_tokenizers: dict[str, object] = {}
_tokenizer_lock = asyncio.Lock()


def _load_tokenizer(model_path: str):
    from transformers import AutoTokenizer  # deferred: only /tokenize needs it in this process

    return AutoTokenizer.from_pretrained(model_path, local_files_only=True)


async def tokenizer_for(handle: WorkerHandle):
    async with _tokenizer_lock:
        if handle.model_path not in _tokenizers:
            _tokenizers[handle.model_path] = await asyncio.to_thread(_load_tokenizer, handle.model_path)
    return _tokenizers[handle.model_path]


def _tokenize_model(request: web.Request, req: TokenizeRequest) -> WorkerHandle:
    if req.model is not None:
        return handle_for(request, req.model)
    handles = request.app[WORKER_HANDLES]
    if len(handles) != 1:
        raise APIError(400, "Missing required parameter: 'model'.", code="invalid_value", param="model")
    return next(iter(handles.values()))


async def tokenize(request: web.Request) -> web.Response:
    """Token ids exactly as a completion or chat request would be tokenized: the worker's own rules
    (server/worker/text_runtime.py `tokenize`), so `count` equals that request's usage.prompt_tokens."""
    body = await read_json(request)
    if isinstance(body, dict) and not (body.get("prompt") is None) ^ (body.get("messages") is None):
        raise APIError(
            400, "Give exactly one of 'prompt' (string) or 'messages' (list).", code="invalid_value"
        )
    req = parse_request(TokenizeRequest, body)
    handle = _tokenize_model(request, req)
    tokenizer = await tokenizer_for(handle)
    if req.messages is not None:
        messages = []
        for i, message in enumerate(req.messages):
            if isinstance(message.content, list) and any(isinstance(p, ImagePart) for p in message.content):
                raise APIError(
                    400,
                    "/tokenize counts text only: image parts are not supported.",
                    code="invalid_value",
                    param=f"messages.{i}.content",
                )
            messages.append({"role": message.role, "content": message.text()})
        try:
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=req.add_generation_prompt, tokenize=False
            )
        except Exception as exc:  # the template's own raise_exception (a role it does not support)
            raise APIError(
                400, f"The chat template rejected the messages: {exc}", code="invalid_value", param="messages"
            ) from None
        tokens = tokenizer.encode(text, add_special_tokens=bool(req.add_special_tokens))
    else:
        add_special = True if req.add_special_tokens is None else req.add_special_tokens
        tokens = tokenizer.encode(req.prompt, add_special_tokens=add_special)
    context = handle.info.context_length if handle.info else None
    if context is None:
        limit = getattr(tokenizer, "model_max_length", None)
        context = limit if isinstance(limit, int) and limit < 10**8 else None
    return web.json_response({"count": len(tokens), "max_model_len": context, "tokens": list(tokens)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", app[METRICS].handle)
