"""Every error leaves through one place, in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

import json
import logging

from aiohttp import web

log = logging.getLogger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error that becomes an HTTP response (or an in-stream error event once headers are sent)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPE_BY_STATUS.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error"
        )

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            text=json.dumps(self.body()),
            content_type="application/json",
            headers=self.headers,
        )


_CODE_BY_STATUS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except APIError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status != 404 else f"No route for {request.method} {request.path}."
        if exc.status == 413:
            limit = request.app._client_max_size
            message = f"The request body is larger than this server's limit of {limit} bytes."
        return APIError(exc.status, message or exc.reason, code=_CODE_BY_STATUS.get(exc.status)).response()
    except ConnectionResetError:
        # The client went away while we wrote to it: nobody to answer, nothing wrong with the server.
        # Returned, not raised: aiohttp logs an exception that leaves a handler as a server error.
        log.debug("client gone during %s %s", request.method, request.path)
        return web.Response(status=499)  # never sent: the connection is gone
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return APIError(500, "Internal server error.", code="internal_error").response()
