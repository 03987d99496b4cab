"""What every POST route starts with: the JSON body, checked against the limits before any work, and the
worker handle of the model it names."""

from __future__ import annotations

import json

from aiohttp import web

from server.appkeys import SETTINGS, WORKER_HANDLES
from server.errors import APIError
from server.protocol import check_json_shape, too_deep
from server.worker_handle import WorkerHandle


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
