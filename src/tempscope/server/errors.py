"""OpenAI-shaped errors: every 4xx and 5xx the server sends is
``{"error": {"message", "type", "param", "code"}}``, FastAPI's own validation errors included."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tempscope.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class APIError(Exception):
    """An error to send back to the client as JSON in the OpenAI shape.

    Args:
        status: HTTP status (400 for a bad parameter, 401 bad key, 404 unknown model, ...).
        message: what was wrong, the value given and what to do instead.
        param: the request field at fault (dotted path), if any.
        code: a short machine-readable code, e.g. ``"context_length_exceeded"``.
    """

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500
                                       else "server_error")

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {...}}``."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


class ErrorDetail(BaseModel):
    message: str  # what was wrong, the value given and what to do instead
    type: str  # e.g. "invalid_request_error", "authentication_error", "server_error"
    param: str | None = None  # the request field at fault
    code: str | None = None  # e.g. "invalid_value", "context_length_exceeded"


class ErrorResponse(BaseModel):
    """The body of every error answer: OpenAI's shape."""

    error: ErrorDetail


_MEANING = {
    400: "invalid request: a field is missing, of the wrong type or out of range",
    401: "missing or incorrect API key (only when the server runs with --api-key)",
    404: "unknown model",
    408: "the request body stalled (a slow client)",
    413: "request body larger than the server's limit",
    429: "too many requests",
    500: "internal error (logged by the server)",
    503: "the server is busy: its queue is full; retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for these error statuses, all with :class:`ErrorResponse`."""
    return {s: {"model": ErrorResponse, "description": _MEANING[s]} for s in statuses}


def describe_validation(errors: Sequence[Any]) -> tuple[str, str | None]:
    """Turn pydantic/FastAPI validation errors into one readable message and the first param.

    >>> describe_validation([{"loc": ("body", "n"), "msg": "Input should be greater than 0",
    ...                       "input": -1, "type": "greater_than"}])
    ('n: Input should be greater than 0 (got -1)', 'n')
    """
    parts: list[str] = []
    first_param: str | None = None
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        kind = err.get("type", "")
        if kind == "json_invalid":
            ctx = err.get("ctx") or {}
            parts.append(f"the request body is not valid JSON ({ctx.get('error', 'parse error')}); "
                         "send a JSON object with Content-Type: application/json")
            param = None
        elif kind == "extra_forbidden":
            parts.append(f"unknown field {param!r}; check its spelling (see the API docs at "
                         "/docs for the fields this route takes)")
        elif kind == "missing" and param is None:
            parts.append("the request body is missing: send a JSON object")
        elif kind == "model_attributes_type" or (kind == "dict_type" and param is None):
            parts.append(f"the request body must be a JSON object, got {_short(err.get('input'))}")
        else:
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            where = f"{param}: " if param else ""
            got = "" if kind in ("missing", "value_error") else (
                f" (got {_short(err.get('input'))})")
            parts.append(f"{where}{msg}{got}")
        if first_param is None:
            first_param = param
    return "; ".join(parts) or "invalid request", first_param


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def install_handlers(app: FastAPI) -> None:
    """Route every error through the OpenAI shape: no FastAPI ``{"detail": ...}`` bodies."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(exc.errors())
        return error_response(APIError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (f"no route {request.method} {request.url.path}; the API lives under /v1 "
                       "(see /docs)")
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(APIError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Logged once here, with its traceback; the client gets one line, no traceback.
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}",
                                       type="server_error"))
