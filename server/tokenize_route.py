"""POST /tokenize (vLLM-compatible): token ids exactly as a completion or chat request would count them."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import Field, model_validator

from server.appkeys import WORKER_HANDLES
from server.errors import APIError
from server.protocol import ImagePart, Message, _Request, parse_request
from server.route_inputs import handle_for, read_json
from server.worker_handle import WorkerHandle


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
