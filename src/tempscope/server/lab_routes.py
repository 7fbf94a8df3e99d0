"""The lab routes under ``/v1/lab``: what the playground's temperature lab calls, documented
so that a notebook can do the same. Thin: every number comes from :mod:`tempscope.lab`.

- ``POST /v1/lab/continue``: generate from a prompt plus token ids (plus typed text), one row
  per temperature, the same seed and samplers for all, in one batched job; streamed or not.
- ``POST /v1/lab/step``: the distribution at one step, raw and after the samplers, at several
  temperatures; the step's logits are cached, so redrawing at another T costs no model call.
- ``POST /v1/lab/tree``: the likeliest continuations to depth d, one batched job per level.
- ``GET /v1/lab/calibration``: the model's T* on the default text (computed on the first
  request, then cached for the server's life).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tempscope import lab
from tempscope.server import convert
from tempscope.server.distribution_routes import distribution_fields
from tempscope.server.errors import APIError
from tempscope.server.lab_schemas import (
    STREAM_EVENTS,
    CalibrationResponse,
    ContinueRequest,
    ContinueResponse,
    LabColumn,
    LabDoneEvent,
    LabPiece,
    LabStartEvent,
    LabText,
    LabToken,
    LabTokenEvent,
    LabTreeNode,
    StepRequest,
    StepResponse,
    TreeRequest,
    TreeResponse,
)
from tempscope.server.schemas import ChatMessage
from tempscope.server.state import ServerState, get_state
from tempscope.server.streaming import (
    first_item,
    job_results,
    stream,
    streaming_response,
)

if TYPE_CHECKING:
    from tempscope.engine.loop import RowResult, StepEvent
    from tempscope.sampling import SamplingParams

router = APIRouter(prefix="/v1/lab", tags=["lab"])

DEFAULT_TOKENS = 40  # max_tokens of a continuation that sends none (capped by the server's)


def _event_stream() -> dict[int | str, dict[str, Any]]:
    """The spec's second form of a 200 on /continue: server-sent events, each ``data: <one of
    the event objects>`` (or an error object), then ``data: [DONE]``."""
    events = []
    for model in STREAM_EVENTS:
        schema = model.model_json_schema(mode="serialization",
                                         ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)  # every model they refer to is ContinueResponse's too
        events.append(schema)
    json_data = {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [*events,
                                             {"$ref": "#/components/schemas/ErrorResponse"}]}}
    event = {"type": "object", "required": ["data"],
             "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}}}
    return {200: {"description": "the JSON body; with \"stream\": true, server-sent events: "
                  "one start event, token events, one done event, then data: [DONE]",
                  "content": {"text/event-stream": {"schema": event}}}}


# ---------------------------------------------------------------------------- checks


def _text_ids(st: ServerState, body: LabText) -> list[int]:
    """The ids the request starts from: the prompt (through the chat template with ``chat``),
    then ``tokens``."""
    limits = st.limits
    convert.check_chars([body.prompt], limits, param="prompt")
    if body.chat:
        ids = convert.chat_ids(st.model, [ChatMessage(role="user", content=body.prompt)],
                               limits, param="prompt")
    else:
        ids = convert.prompt_ids(st.model, body.prompt)
    if body.tokens:
        if len(body.tokens) > limits.max_prompt_tokens:
            raise APIError(400, f"tokens holds {len(body.tokens)} ids; this server takes at "
                           f"most {limits.max_prompt_tokens} prompt tokens", param="tokens",
                           code="context_length_exceeded")
        ids = ids + convert.prompt_ids(st.model, body.tokens, param="tokens")
    return ids


def _params(st: ServerState, body: LabText, temperatures: Sequence[float], *,
            param: str = "temperatures") -> list[SamplingParams]:
    """One validated parameter set per temperature (every other field from the request);
    ``param`` names the field the temperatures came from."""
    from tempscope.distribution import check_temperature

    cap = min(st.limits.max_temperatures, st.limits.max_rows)
    if len(temperatures) > cap:
        raise APIError(400, f"{len(temperatures)} temperatures; at most {cap} per request",
                       param=param, code="invalid_value")
    for t in temperatures:
        try:
            check_temperature(t, name=param)
        except ValueError as exc:
            raise APIError(400, str(exc), param=param, code="invalid_value") from None
    return [convert.sampling_params(body, st.model.vocab_size, temperature=t)
            for t in temperatures]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------- /continue


def _token(st: ServerState, event: StepEvent, alternatives: int) -> LabToken:
    return LabToken(**dataclasses.asdict(lab.token_info(st.model, event,
                                                        alternatives=alternatives)))


def _column(st: ServerState, index: int, temperature: float, result: RowResult,
            alternatives: int | None) -> LabColumn:
    """A column; ``alternatives`` None leaves its tokens out (the stream sent them)."""
    s = lab.column_summary(result)
    return LabColumn(
        index=index, temperature=temperature, text=s.text, token_ids=s.token_ids,
        finish_reason=s.finish_reason, mean_logprob=_finite(s.mean_logprob),
        mean_entropy=_finite(s.mean_entropy),
        mean_sampled_entropy=_finite(s.mean_sampled_entropy),
        tokens=None if alternatives is None else [_token(st, e, alternatives)
                                                  for e in result.steps])


@router.post("/continue", response_model=ContinueResponse, responses=_event_stream())
async def continue_text(body: ContinueRequest, request: Request
                        ) -> ContinueResponse | StreamingResponse:
    """Generate after prompt + ``tokens`` (+ ``append_text``) at each of ``temperatures``:
    one row each, the same seed and samplers, one batched job. Each token comes with its raw
    and processed probability, both entropies, its GLTR rank bucket and the top
    alternatives; each column with its mean log-prob and entropy."""
    st = get_state(request)
    st.check_model(body.model)
    limits = st.limits
    # A default never exceeds the server's own cap: a request that sends none always fits.
    max_tokens = convert.check_max_tokens(
        body.max_tokens if body.max_tokens is not None else min(DEFAULT_TOKENS,
                                                                limits.max_tokens), limits)
    k = convert.check_top_logprobs(body.top_alternatives, limits, "top_alternatives")
    params = _params(st, body, body.temperatures)
    ids = _text_ids(st, body)
    appended: list[int] = []
    if body.append_text:
        convert.check_chars([body.append_text], limits, param="append_text")
        text = convert.check_text(body.append_text, "append_text", param="append_text")
        appended = lab.piece_ids(st.model, text)
        ids += appended
    convert.check_lengths(st.model, limits, ids, max_tokens,
                          param="tokens" if body.tokens or appended else "prompt")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    rows = lab.side_by_side_rows(ids, params, seed=seed, max_new_tokens=max_tokens)
    # Ranks are counted among the alternatives each step lists. The server's cap on them
    # applies: rows that share a sampler chain in the scheduler list the largest count any
    # of their jobs asks for, so a longer list here would cost the requests beside it.
    job = st.submit(rows, top_alternatives=limits.max_top_logprobs, events=body.stream)
    pieces = [LabPiece(token_id=t, text=st.model.token_text(t)) for t in appended]
    temps = list(body.temperatures)

    if body.stream:
        head: list[BaseModel] = [LabStartEvent(model=st.name, seed=seed,
                                               prompt_tokens=len(ids), appended=pieces,
                                               temperatures=temps)]

        def chunk(row: int, event: StepEvent) -> BaseModel:
            return LabTokenEvent(column=row, step=event.step, delta=event.delta,
                                 token=_token(st, event, k))

        def tail(results: list[RowResult]) -> list[BaseModel]:
            return [LabDoneEvent(columns=[_column(st, i, temps[i], r, None)
                                          for i, r in enumerate(results)])]

        return streaming_response(stream(job, await first_item(job, request), chunk, head, tail))

    results = await job_results(job, request)
    return ContinueResponse(model=st.name, seed=seed, prompt_tokens=len(ids), appended=pieces,
                            columns=[_column(st, i, temps[i], r, k)
                                     for i, r in enumerate(results)])


# ---------------------------------------------------------------------------- /step


@router.post("/step", response_model=StepResponse)
async def step(body: StepRequest, request: Request) -> StepResponse:
    """The distribution after prompt + ``tokens`` at each of ``temperatures``: the top-N by
    logit (the order at every T > 0) with raw and processed probabilities, entropy,
    effective vocabulary and how many tokens survive the chain; ``return_logits`` adds the
    ``(V,)`` logits so a page can redraw the raw softmax at any T by itself."""
    st = get_state(request)
    st.check_model(body.model)
    if body.top > st.limits.max_top:
        raise APIError(400, f"top is {body.top}; at most {st.limits.max_top}", param="top",
                       code="invalid_value")
    params = _params(st, body, body.temperatures)
    ids = _text_ids(st, body)
    convert.check_lengths(st.model, st.limits, ids, 1,
                          param="tokens" if body.tokens else "prompt")
    async with st.model_slots:
        d, cached = await asyncio.to_thread(_step_distribution, st, ids, params, body.top)
    return StepResponse(cached=cached, **distribution_fields(st, d, body.return_logits))


def _step_distribution(st: ServerState, ids: list[int], params: list[SamplingParams],
                       top: int) -> tuple[lab.StepDistribution, bool]:
    logits, cached = st.last_logits(ids)
    return lab.step_distribution(st.model, ids, params, top=top, logits=logits), cached


# ---------------------------------------------------------------------------- /tree


@router.post("/tree", response_model=TreeResponse)
async def tree(body: TreeRequest, request: Request) -> TreeResponse:
    """The likeliest continuations of prompt + ``tokens``: breadth first to ``depth``, at
    most ``top`` children per node, each at least ``min_prob`` likely under the sampler chain
    at ``temperature``; a node's ``path_prob`` multiplies the probabilities down to it."""
    st = get_state(request)
    st.check_model(body.model)
    t = 1.0 if body.temperature is None else body.temperature
    (params,) = _params(st, body, [t], param="temperature")
    ids = _text_ids(st, body)
    convert.check_lengths(st.model, st.limits, ids, body.depth,
                          param="tokens" if body.tokens else "prompt")
    expansion = lab.TreeExpansion(ids, params, depth=body.depth, top=body.top,
                                  min_prob=body.min_prob, max_nodes=body.max_nodes,
                                  eos_ids=frozenset(st.model.eos_token_ids))
    while rows := expansion.rows():
        job = st.submit(rows, top_alternatives=body.top, events=False)
        expansion.add(await job_results(job, request), decode=st.model.decode)
    return TreeResponse(
        model=st.name, prompt_tokens=len(ids), temperature=t,
        truncated=expansion.truncated,
        nodes=[LabTreeNode(**{**dataclasses.asdict(n), "path": list(n.path)})
               for n in expansion.nodes])


# ---------------------------------------------------------------------------- /calibration


@router.get("/calibration", response_model=CalibrationResponse)
async def calibration(request: Request) -> CalibrationResponse:
    """The served model's T* (the temperature that predicts human text best) on the default
    text, with the NLL and ECE at T = 1 and at T*: a few passages of the calibration study's
    text (:func:`tempscope.study.calibration_study.default_text_calibration`), two forward passes
    each. The first request computes it (seconds on a small model); later ones read the
    cache."""
    st = get_state(request)
    app_state = request.app.state
    if not hasattr(app_state, "lab_calibration_lock"):
        app_state.lab_calibration_lock = asyncio.Lock()
    async with app_state.lab_calibration_lock:
        found: dict[str, Any] | None = getattr(app_state, "lab_calibration", None)
        cached = found is not None
        if found is None:
            async with st.model_slots:
                found = await asyncio.to_thread(_default_calibration, st)
            app_state.lab_calibration = found
    return CalibrationResponse(**found, cached=cached)


def _default_calibration(st: ServerState) -> dict[str, Any]:
    from tempscope.errors import TempscopeError
    from tempscope.report.calibration import direction
    from tempscope.study.calibration_study import default_text_calibration
    from tempscope.study.corpus import CORPUS

    try:
        cal = default_text_calibration(st.model)
    except TempscopeError as exc:
        raise APIError(503, str(exc), type="server_error", code="text_unavailable") from None
    return {"model": st.name, "text": CORPUS["title"], "texts": cal.texts,
            "positions": cal.positions, "t_star": cal.t_star, "t_star_error": cal.t_star_error,
            "at_edge": cal.at_edge, "nll_t1": cal.at_one.nll, "nll_t_star": cal.at_t_star.nll,
            "ece_t1": cal.at_one.ece, "ece_t_star": cal.at_t_star.ece, "bins": cal.bins,
            "direction": direction(cal)}

