"""Server-sent events and job results shared by every generating route (the OpenAI routes and
the lab): wait for a batcher job, turn its failure into the right HTTP error, stream its step
events as ``data:`` lines ending with ``data: [DONE]``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tempscope.server.batcher import BatcherBusy, Done, Job
from tempscope.server.errors import APIError

if TYPE_CHECKING:
    from tempscope.engine.loop import RowResult, StepEvent


async def next_item(job: Job, request: Request) -> tuple[int, StepEvent] | Done:
    """The job's next queue item; a client that disconnects meanwhile cancels the job."""
    if not job.queue.empty():  # a step's events arrive together: no timer, no task per item
        return job.queue.get_nowait()
    while True:
        try:
            return await asyncio.wait_for(job.queue.get(), timeout=0.25)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise APIError(499, "client disconnected") from None


async def job_results(job: Job, request: Request) -> list[RowResult]:
    """Wait for a job's results (a non-streaming job queues nothing before its Done)."""
    try:
        while not isinstance(item := await next_item(job, request), Done):
            pass
        return unwrap(item)
    finally:
        job.cancel()  # a no-op when the job finished; stops its rows otherwise


async def first_item(job: Job, request: Request) -> tuple[int, StepEvent] | Done:
    """A streaming job's first item, awaited before the response starts: a job that fails
    before its first token is refused with its own status, not a 200 carrying an error."""
    try:
        item = await next_item(job, request)
        if isinstance(item, Done):
            unwrap(item)
        return item
    except BaseException:
        job.cancel()
        raise


def unwrap(done: Done) -> list[RowResult]:
    if done.error is not None:
        if isinstance(done.error, BatcherBusy):
            raise APIError(503, f"the server is busy: {done.error}", type="server_error",
                           code="server_busy")
        if isinstance(done.error, ValueError):
            raise APIError(400, str(done.error), code="invalid_value")
        raise APIError(500, f"generation failed: {type(done.error).__name__}: {done.error}",
                       type="server_error")
    assert done.results is not None
    return done.results


def sse(chunk: BaseModel | dict[str, object]) -> str:
    data = chunk.model_dump_json() if isinstance(chunk, BaseModel) else json.dumps(chunk)
    return f"data: {data}\n\n"


async def stream(job: Job, first: tuple[int, StepEvent] | Done,
                  chunks: Callable[[int, StepEvent], BaseModel | None],
                  head: list[BaseModel], tail: Callable[[list[RowResult]], list[BaseModel]]
                  ) -> AsyncIterator[str]:
    """Server-sent events: ``head`` chunks, one chunk per step event (from ``first`` on),
    ``tail`` chunks, then ``[DONE]``. A client that goes away cancels the job (Starlette
    cancels this generator). An error after the first token can only be an event."""
    try:
        for chunk in head:
            yield sse(chunk)
        item = first
        while True:
            if isinstance(item, Done):
                try:
                    results = unwrap(item)
                except APIError as err:
                    yield sse(err.body())
                    break
                for chunk in tail(results):
                    yield sse(chunk)
                break
            out = chunks(*item)
            if out is not None:
                yield sse(out)
            item = await job.queue.get()
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()


def streaming_response(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def streamed(chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The spec's second form of a 200: with ``"stream": true``, server-sent events, each
    ``data: <chunk JSON>`` (an error after the first token: ``data: <ErrorResponse>``), then
    ``data: [DONE]``. Before Open API 3.2 a stream's ``schema`` describes one event."""
    json_data = {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [{"$ref": f"#/components/schemas/{chunk.__name__}"},
                                             {"$ref": "#/components/schemas/ErrorResponse"}]}}
    event = {"type": "object", "required": ["data"],
             "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}}}
    return {200: {"description": f"the JSON body; with \"stream\": true, server-sent events "
                  f"of {chunk.__name__} chunks ending with data: [DONE]",
                  "content": {"text/event-stream": {"schema": event}}}}
