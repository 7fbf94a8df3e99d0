"""OpenAI-shaped errors: every 4xx and 5xx the server sends is
``{"error": {"message", "type", "param", "code"}}``, FastAPI's own validation errors included."""

from __future__ import annotations

import logging
import re
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


def describe_validation(errors: Sequence[Any], *, content_type: str | None = None
                        ) -> tuple[str, str | None]:
    """Turn pydantic/FastAPI validation errors into one readable message and the first param.

    A field that takes one of several shapes (``prompt``: a string or lists) fails once per
    shape; those failures become one sentence naming the field, not pydantic's branch names.

    >>> describe_validation([{"loc": ("body", "n"), "msg": "Input should be greater than 0",
    ...                       "input": -1, "type": "greater_than"}])
    ('n: Input should be greater than 0 (got -1)', 'n')
    >>> describe_validation([
    ...     {"loc": ("body", "stop", "str"), "msg": "Input should be a valid string",
    ...      "input": 5, "type": "string_type"},
    ...     {"loc": ("body", "stop", "list[str]"), "msg": "Input should be a valid list",
    ...      "input": 5, "type": "list_type"}])
    ('stop: expected a string or a list of strings (got 5)', 'stop')
    """
    parts: list[str] = []
    first_param: str | None = None
    for err in _merge_union_branches(errors):
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        kind = err.get("type", "")
        given = err.get("input")
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
        elif param is None and isinstance(given, bytes | bytearray):
            # FastAPI hands over the raw bytes of a body whose Content-Type is not JSON.
            parts.append(f"the request body must be JSON sent with Content-Type: "
                         f"application/json, got Content-Type: {(content_type or '(none)')[:80]}")
        elif kind == "model_attributes_type" or (kind == "dict_type" and param is None):
            where = f"{param} must be" if param else "the request body must be"
            parts.append(f"{where} a JSON object, got {_short(given)}")
        elif kind == "union_mismatch":
            parts.append(f"{param}: expected {err['msg']} (got {_short(given)})")
        else:
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            where = f"{param}: " if param else ""
            got = "" if kind in ("missing", "value_error") else f" (got {_short(given)})"
            parts.append(f"{where}{msg}{got}")
        if first_param is None:
            first_param = param
    return "; ".join(parts) or "invalid request", first_param


# A loc segment naming a branch of a union field (``str``, ``list[int]``,
# ``list[function-after[_text_only(), ContentPart]]``) rather than a field, index or key. A
# user's dict key spelled like one (logit_bias {"str": ...}) loses only that last segment.
_BRANCH = re.compile(r"^(str|int|float|bool|none|[\w-]+\[.*\])$")


def _merge_union_branches(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Errors with union branches folded: when exactly one branch got past the outer shape
    (a list whose third item is wrong), its errors, at the field's own path; otherwise one
    ``union_mismatch`` error whose ``msg`` lists the accepted shapes."""
    out: list[dict[str, Any]] = []
    unions: dict[tuple[Any, ...], list[tuple[str, dict[str, Any]]]] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        at = next((i for i, x in enumerate(loc) if isinstance(x, str) and _BRANCH.match(x)),
                  None)
        if at is None:
            out.append(err)
            continue
        field, branch = loc[:at], loc[at]
        if field not in unions:
            unions[field] = []
            out.append({"loc": field, "type": "_union"})  # holds the place of the field
        unions[field].append((branch, {**err, "loc": field + loc[at + 1:]}))
    merged: list[dict[str, Any]] = []
    for err in out:
        if err.get("type") != "_union":
            merged.append(err)
            continue
        field = err["loc"]
        branches = unions[field]
        deep = {b for b, e in branches if len(e["loc"]) > len(field)}
        if len(deep) == 1:
            merged.extend(_merge_union_branches([e for b, e in branches if b in deep]))
            continue
        names = list(dict.fromkeys(_shape(b) for b, _ in branches))
        given = next((e.get("input") for _, e in branches if len(e["loc"]) == len(field)),
                     branches[0][1].get("input"))
        accepted = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        merged.append({"loc": field, "type": "union_mismatch", "msg": accepted,
                       "input": given})
    return merged


_SHAPES = {"str": ("a string", "strings"), "int": ("an integer", "integers"),
           "float": ("a number", "numbers"), "bool": ("true or false", "booleans")}


def _shape(branch: str, plural: bool = False) -> str:
    """``list[list[int]]`` -> ``a list of lists of integers``; a model -> an object."""
    if branch in _SHAPES:
        return _SHAPES[branch][plural]
    if branch.startswith("list[") and branch.endswith("]"):
        return ("lists of " if plural else "a list of ") + _shape(branch[5:-1], plural=True)
    return "objects" if plural else "an object"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unparsable(cause: BaseException) -> str:
    """Why a body FastAPI could not read as JSON failed, in words (it says only "There was an
    error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        why = f"it is not UTF-8 text (byte {cause.object[cause.start]:#04x} at {cause.start})"
    elif isinstance(cause, RecursionError):
        why = "its arrays or objects nest too deeply"
    else:
        why = f"{type(cause).__name__}: {str(cause)[:160]}"
    return (f"the request body could not be parsed as JSON: {why}; send a JSON object, UTF-8 "
            "encoded, with Content-Type: application/json")


def install_handlers(app: FastAPI) -> None:
    """Route every error through the OpenAI shape: no FastAPI ``{"detail": ...}`` bodies."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(exc.errors(),
                                             content_type=request.headers.get("content-type"))
        return error_response(APIError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (f"no route {request.method} {request.url.path}; the API lives under /v1 "
                       "(see /docs)")
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 400 and exc.__cause__ is not None:
            message = _unparsable(exc.__cause__)
        else:
            message = str(exc.detail)
        return error_response(APIError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Logged once here, with its traceback; the client gets one line, no traceback.
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}",
                                       type="server_error"))
