"""HTTP routes: parse a completion request into what the worker takes, then hand it to `responses.respond`;
/v1/models and /health. /tokenize: `tokenize_route`; shared inputs: `route_inputs`."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from server.appkeys import METRICS, SETTINGS, WORKER_HANDLES
from server.errors import APIError
from server.protocol import (
    ChatCompletionRequest,
    ChatShapes,
    CompletionRequest,
    CompletionShapes,
    Message,
    TextPart,
    check_stops,
    completion_prompt,
    parse_request,
    resolve_max_tokens,
)
from server.request_images import load_image
from server.responses import respond
from server.route_inputs import handle_for, read_json
from server.settings import ImageSettings
from server.tokenize_route import tokenize
from server.worker_handle import WorkerHandle

log = logging.getLogger(__name__)


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
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Messages as the worker wants them: plain strings for text models, content parts for vision models
    (each image part replaced by {"type": "image"}, its bytes listed in order)."""
    images: list[bytes] = []
    converted: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        parts = (
            message.content
            if isinstance(message.content, list)
            else [TextPart(type="text", text=message.text())]
        )
        content: list[dict[str, str]] = []
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
        text_or_parts = content if handle.kind == "vision" else "".join(part["text"] for part in content)
        converted.append({"role": message.role, "content": text_or_parts})
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


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", app[METRICS].handle)
