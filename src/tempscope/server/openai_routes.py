"""``/v1/completions`` and ``/v1/chat/completions``: OpenAI shapes over the batched engine."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tempscope.server import convert
from tempscope.server.responses import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatMessageOut,
    CompletionChoice,
    CompletionResponse,
    Usage,
)
from tempscope.server.schemas import ChatCompletionRequest, CompletionRequest
from tempscope.server.state import ServerState, get_state
from tempscope.server.streaming import (
    first_item,
    job_results,
    stream,
    streamed,
    streaming_response,
)

if TYPE_CHECKING:
    from tempscope.engine.loop import RowResult, RowSpec, StepEvent

router = APIRouter()


@dataclass
class _Plan:
    """A validated request, ready for the batcher."""

    rows: list[RowSpec]
    prompt_tokens: int
    top_logprobs: int
    want_logprobs: bool
    raw: bool


def _plan(st: ServerState, body: CompletionRequest | ChatCompletionRequest,
          encoded: list[list[int]], max_tokens: int, stop: str | list[str] | None,
          top_logprobs: int | None, logprobs_param: str, want_logprobs: bool,
          prompt_param: str) -> _Plan:
    """Every check that needs the token ids, then the rows; the counts were checked before
    anything was encoded (:func:`convert.check_n`)."""
    from tempscope.engine.loop import RowSpec, derive_seed

    model, limits = st.model, st.limits
    convert.check_max_tokens(max_tokens, limits)
    stops = convert.stop_list(stop, limits)
    k = convert.check_top_logprobs(top_logprobs, limits, logprobs_param)
    params = convert.sampling_params(body, model.vocab_size)
    for ids in encoded:
        convert.check_lengths(model, limits, ids, max_tokens, param=prompt_param)
    convert.check_request_prompts(encoded, limits)
    rows = [RowSpec(prompt_ids=ids, params=params, seed=derive_seed(body.seed, i),
                    max_new_tokens=max_tokens, stop=stops, numbers=want_logprobs)
            for ids in encoded for i in range(body.n)]
    return _Plan(rows, sum(len(ids) for ids in encoded), k, want_logprobs,
                 body.logprobs_mode == "raw")


def _usage(plan: _Plan, results: Sequence[RowResult]) -> Usage:
    completion = sum(len(r.token_ids) for r in results)
    return Usage(prompt_tokens=plan.prompt_tokens, completion_tokens=completion,
                 total_tokens=plan.prompt_tokens + completion)


# Models the stream events refer to, for the spec's components.
STREAM_CHUNKS: tuple[type[BaseModel], ...] = (CompletionResponse, ChatCompletionChunk)


DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's max_tokens when a completions request sends none


@router.post("/v1/completions", response_model=CompletionResponse,
             responses=streamed(CompletionResponse))
async def completions(body: CompletionRequest, request: Request
                      ) -> CompletionResponse | StreamingResponse:
    """Text completion, OpenAI's legacy shape; extra sampler fields as vLLM names them."""
    st = get_state(request)
    st.check_model(body.model)
    prompts = convert.completion_prompts(body.prompt)
    # Before encoding any of them:
    convert.check_n(body.n, len(prompts), st.limits)
    convert.check_chars([p for p in prompts if isinstance(p, str)], st.limits, param="prompt")
    encoded = [convert.prompt_ids(st.model, p) for p in prompts]
    # A default never exceeds the server's own cap: a request that sends none always fits.
    max_tokens = (body.max_tokens if body.max_tokens is not None
                  else min(DEFAULT_COMPLETION_TOKENS, st.limits.max_tokens))
    plan = _plan(st, body, encoded, max_tokens, body.stop, body.logprobs, "logprobs",
                 body.logprobs is not None or bool(body.logprob_token_ids), "prompt")
    job = st.submit(plan.rows, top_alternatives=plan.top_logprobs, events=body.stream)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    eos = set(st.model.eos_token_ids)

    def echo(i: int) -> str:
        if not body.echo:
            return ""
        p = prompts[i // body.n]
        return p if isinstance(p, str) else st.model.decode(p)

    if body.stream:
        offsets = [0] * len(plan.rows)

        def chunk(row: int, ev: StepEvent) -> BaseModel | None:
            lp = None
            if plan.want_logprobs and convert.is_shown(ev, eos):
                lp = convert.completion_logprobs([ev], plan.top_logprobs, plan.raw, offsets[row])
                offsets[row] += len(ev.text)
            text = (echo(row) if ev.step == 1 else "") + ev.delta
            reason = convert.finish_reason(ev.finished)
            if not text and lp is None and reason is None:
                return None
            return CompletionResponse(id=rid, created=created, model=st.name, choices=[
                CompletionChoice(index=row, text=text, logprobs=lp, finish_reason=reason)])

        def tail(results: list[RowResult]) -> list[BaseModel]:
            if body.stream_options is None or not body.stream_options.include_usage:
                return []
            return [CompletionResponse(id=rid, created=created, model=st.name, choices=[],
                                       usage=_usage(plan, results))]

        return streaming_response(stream(job, await first_item(job, request), chunk, [], tail))

    results = await job_results(job, request)
    choices = [
        CompletionChoice(
            index=i, text=echo(i) + r.text, finish_reason=convert.finish_reason(r.finish_reason),
            logprobs=convert.completion_logprobs(
                [e for e in r.steps if convert.is_shown(e, eos)], plan.top_logprobs, plan.raw)
            if plan.want_logprobs else None)
        for i, r in enumerate(results)
    ]
    return CompletionResponse(id=rid, created=created, model=st.name, choices=choices,
                              usage=_usage(plan, results))


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses=streamed(ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, request: Request
                           ) -> ChatCompletionResponse | StreamingResponse:
    """Chat completion: the model's chat template, then the same batched engine."""
    st = get_state(request)
    st.check_model(body.model)
    convert.check_n(body.n, 1, st.limits)
    ids = convert.chat_ids(st.model, body.messages, st.limits)
    max_tokens = body.max_tokens or body.max_completion_tokens
    if max_tokens is None:
        # No budget given: as much as the caps and the context leave.
        room = st.model.facts.context_length - len(ids)
        max_tokens = max(1, min(st.limits.default_chat_max_tokens, st.limits.max_tokens, room))
    plan = _plan(st, body, [ids], max_tokens, body.stop, body.top_logprobs, "top_logprobs",
                 body.logprobs or bool(body.logprob_token_ids), "messages")
    job = st.submit(plan.rows, top_alternatives=plan.top_logprobs, events=body.stream)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    eos = set(st.model.eos_token_ids)

    def logprobs(events: Sequence[StepEvent]) -> ChatLogprobs | None:
        if not plan.want_logprobs:
            return None
        shown = [e for e in events if convert.is_shown(e, eos)]
        return ChatLogprobs(content=convert.chat_logprobs(shown, plan.top_logprobs, plan.raw))

    if body.stream:
        def chunk(row: int, ev: StepEvent) -> BaseModel | None:
            lp = logprobs([ev])
            reason = convert.finish_reason(ev.finished)
            if not ev.delta and (lp is None or not lp.content) and reason is None:
                return None
            delta = ChatDelta(content=ev.delta) if ev.delta else ChatDelta()
            return ChatCompletionChunk(id=rid, created=created, model=st.name, choices=[
                ChatChunkChoice(index=row, delta=delta, logprobs=lp, finish_reason=reason)])

        head: list[BaseModel] = [
            ChatCompletionChunk(id=rid, created=created, model=st.name, choices=[
                ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
            for i in range(len(plan.rows))]

        def tail(results: list[RowResult]) -> list[BaseModel]:
            if body.stream_options is None or not body.stream_options.include_usage:
                return []
            return [ChatCompletionChunk(id=rid, created=created, model=st.name, choices=[],
                                        usage=_usage(plan, results))]

        return streaming_response(stream(job, await first_item(job, request), chunk, head, tail))

    results = await job_results(job, request)
    choices = [
        ChatChoice(index=i, message=ChatMessageOut(content=r.text), logprobs=logprobs(r.steps),
                   finish_reason=convert.finish_reason(r.finish_reason))
        for i, r in enumerate(results)
    ]
    return ChatCompletionResponse(id=rid, created=created, model=st.name, choices=choices,
                                  usage=_usage(plan, results))
