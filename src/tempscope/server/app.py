"""The FastAPI app: OpenAI-compatible routes, ``/v1/distribution``, ``/health`` and the
playground page at ``/``. Thin: every number comes from the library."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tempscope.server import distribution_routes, lab_routes, openai_routes
from tempscope.server.batcher import Batcher
from tempscope.server.errors import (
    APIError,
    error_body,
    error_response,
    error_responses,
    install_handlers,
)
from tempscope.server.limits import ServerLimits
from tempscope.server.responses import ModelCard, ModelList
from tempscope.server.state import ServerState, get_state

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend

STATIC = Path(__file__).resolve().parent / "static"


def served_name(model: Backend) -> str:
    """The id /v1/models lists: a local folder or file by its last path part, else the name."""
    if getattr(model, "source", None) in ("local", "gguf"):
        return PurePath(model.name).name or model.name
    return model.name


def create_app(model: Backend, *, api_key: str | None = None,
               limits: ServerLimits | None = None, name: str | None = None) -> FastAPI:
    """Build the server for one loaded model.

    Args:
        model: what every route runs on (:func:`tempscope.load_model`).
        api_key: when set, every ``/v1`` route needs ``Authorization: Bearer <api_key>``.
        limits: caps on tokens, choices, prompt length and body size.
        name: the model id clients send and /v1/models lists (default: from the model).

    Example (serves the tiny test model; needs no download)::

        app = create_app(load_model("path/to/model"), api_key="secret")
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    limits = limits or ServerLimits()
    batcher = Batcher(model, window_s=limits.batch_window_ms / 1000,
                      max_rows=limits.max_batch_rows, max_queued_rows=limits.max_queued_rows,
                      max_prompt_tokens=limits.max_batch_prompt_tokens)
    state = ServerState(model=model, name=name or served_name(model), limits=limits,
                        batcher=batcher, api_key=api_key or None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    from tempscope._version import __version__

    app = FastAPI(title="tempscope", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible completions with any sampler, next-token "
                  "distributions, and a temperature playground at /.")
    app.state.tempscope = state
    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes,
                       timeout_s=limits.body_timeout_s)
    # Outermost: a request without the key gets its 401 before any byte of the body is read.
    app.add_middleware(ApiKeyGate, api_key=state.api_key)
    responses = error_responses(400, 401, 404, 408, 413, 429, 500, 503)
    app.include_router(openai_routes.router, responses=responses)
    app.include_router(distribution_routes.router, responses=responses)
    app.include_router(lab_routes.router, responses=responses)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness: the model's name, the engine running it, whether a seeded request's
        tokens are independent of the load (``reproducible``) and the batcher's counters."""
        st = get_state(request)
        return {"status": "ok", "model": st.name, "engine": st.model.engine,
                "reproducible": st.model.reproducible,
                "batcher": st.batcher.stats(), "limits": dataclasses.asdict(st.limits)}

    @app.get("/v1/models", responses=error_responses(401))
    async def models(request: Request) -> ModelList:
        """The one model this server serves (the id ``default`` also reaches it)."""
        st = get_state(request)
        return ModelList(data=[ModelCard(id=st.name, created=int(time.time()),
                                         engine=st.model.engine)])

    @app.get("/v1/info", responses=error_responses(401))
    async def info(request: Request) -> dict[str, Any]:
        """What the playground shows about the model and the server's caps."""
        st = get_state(request)
        return {"model": st.name, "facts": st.model.facts.to_dict(),
                "limits": dataclasses.asdict(st.limits), "auth": st.api_key is not None}

    @app.get("/v1/samplers", responses=error_responses(401))
    async def samplers() -> dict[str, Any]:
        """The sampler registry: every sampler, its request fields (type, range, default, the
        names llama.cpp and vLLM use), the default order and the presets. The playground
        builds its controls from it."""
        from tempscope.sampling.registry import catalogue

        return catalogue()

    def openapi() -> dict[str, Any]:
        """FastAPI's spec, minus the 422 it lists for every body (this server answers a
        validation error with a 400 in the OpenAI shape, which the spec lists instead), plus
        the schemas of stream chunks."""
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version,
                               description=app.description, routes=app.routes)
            for path in spec.get("paths", {}).values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            # Stream chunks are no route's response_model: add what their events refer to.
            for chunk in openai_routes.STREAM_CHUNKS:
                full = chunk.model_json_schema(mode="serialization",
                                               ref_template="#/components/schemas/{model}")
                for sub, definition in full.pop("$defs", {}).items():
                    schemas.setdefault(sub, definition)
                schemas.setdefault(chunk.__name__, full)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def api_key_error(key: str | None, header: str) -> APIError | None:
    """The 401 for an ``Authorization`` header that does not carry ``key``; None when it
    does (or when the server has no key)."""
    if key is None:
        return None
    scheme, _, given = header.partition(" ")
    if not header:
        return APIError(401, "missing API key: send the header Authorization: Bearer <key> "
                        "(the key given to tempscope serve --api-key)", code="invalid_api_key")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(),
                                                                key.encode()):
        return APIError(401, "incorrect API key: send Authorization: Bearer <key> with the key "
                        "given to tempscope serve --api-key", code="invalid_api_key")
    return None


class ApiKeyGate:
    """Pure ASGI middleware: every ``/v1`` request must carry the server's key; checked before
    the body is read or parsed, so a keyless request with a malformed body still gets a 401."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            err = api_key_error(self.api_key, header)
            if err is not None:
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: a body over ``max_bytes`` gets a 413 before anything parses it,
    whether the client sent Content-Length or a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s  # longest wait for the next body chunk (a slow client)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._reject(send)
            return
        seen = 0
        exceeded = False  # FastAPI turns errors raised while reading into its own 400
        stalled = False
        body_done = False  # after the body, receive() only waits for a disconnect: no timeout
        sent = False  # a response (ours or the app's) has started

        async def limited_receive() -> Message:
            nonlocal seen, exceeded, stalled, body_done
            if body_done or self.timeout_s is None:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.timeout_s)
                except TimeoutError:
                    stalled = True
                    raise _TooLarge from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal sent
            if exceeded or stalled:  # replace whatever the app answers with the 413/408
                if not sent:
                    sent = True
                    await (self._timeout(send) if stalled else self._reject(send))
                return
            sent = sent or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not sent:
                await (self._timeout(send) if stalled else self._reject(send))

    async def _timeout(self, send: Send) -> None:
        await _send_error(send, 408, error_body(
            f"the request body stalled: no bytes for {self.timeout_s:g} s; send the whole body "
            "at once", param=None, code="request_timeout"))

    async def _reject(self, send: Send) -> None:
        await _send_error(send, 413, error_body(
            f"the request body is larger than this server's limit of {self.max_bytes} bytes; "
            "send a shorter prompt", param=None, code="request_too_large"))


async def _send_error(send: Send, status: int, payload: dict[str, Any]) -> None:
    """A whole JSON error response, straight through ASGI."""
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
