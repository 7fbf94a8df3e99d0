"""``POST /v1/distribution``: the next-token distribution at several temperatures, raw and
after the sampler chain, from one forward pass."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from tempscope.server import convert
from tempscope.server.errors import APIError
from tempscope.server.responses import (
    DistributionResponse,
    DistributionSummary,
    DistributionToken,
    TemperatureDistribution,
    VocabToken,
)
from tempscope.server.schemas import DistributionRequest
from tempscope.server.state import ServerState, get_state

if TYPE_CHECKING:
    from tempscope import lab

router = APIRouter()



@router.post("/v1/distribution", response_model=DistributionResponse)
async def distribution(body: DistributionRequest, request: Request) -> DistributionResponse:
    """For each temperature: the top-N table, entropy, effective vocabulary, raw and processed.

    ``tokens`` is the top-N by logit, which is the order at every temperature (dividing by
    T > 0 keeps the order), so a page can draw all temperatures on one axis.
    """
    st = get_state(request)
    st.check_model(body.model)
    limits = st.limits
    if len(body.temperatures) > limits.max_temperatures:
        raise APIError(400, f"{len(body.temperatures)} temperatures; at most "
                       f"{limits.max_temperatures} per request", param="temperatures")
    if body.top > limits.max_top:
        raise APIError(400, f"top is {body.top}; at most {limits.max_top}", param="top")
    for t in body.temperatures:
        if t < 0:
            raise APIError(400, f"temperatures must be >= 0 (0 = greedy), got {t}",
                           param="temperatures", code="invalid_value")
    # Validate every parameter set before touching the model.
    params = [convert.sampling_params(body, st.model.vocab_size, temperature=t)
              for t in body.temperatures]
    convert.check_chars([body.prompt], limits, param="prompt")
    ids = (convert.chat_ids(st.model, [_user(body.prompt)], limits, param="prompt")
           if body.chat else convert.prompt_ids(st.model, body.prompt))
    convert.check_lengths(st.model, limits, ids, 1)
    async with st.model_slots:
        return await asyncio.to_thread(_compute, st, body, ids, params)


def _user(text: str) -> Any:
    from tempscope.server.schemas import ChatMessage

    return ChatMessage(role="user", content=text)


def _compute(st: ServerState, body: DistributionRequest, ids: list[int], params: list[Any]
             ) -> DistributionResponse:
    from tempscope import lab

    logits, _ = st.last_logits(ids)  # (V,) float32
    d = lab.step_distribution(st.model, ids, params, top=body.top, logits=logits)
    return DistributionResponse(**distribution_fields(st, d, body.return_logits))


def distribution_fields(st: ServerState, d: lab.StepDistribution,
                        return_logits: bool) -> dict[str, Any]:
    """The fields ``/v1/distribution`` and ``/v1/lab/step`` share, from one step's
    :class:`~tempscope.lab.StepDistribution`."""
    texts, x = d.texts, d.logits
    return {
        "model": st.name, "prompt_tokens": len(d.ids), "vocab_size": int(x.shape[-1]),
        "samplers_on": d.samplers_on,
        "tokens": [VocabToken(token_id=t, text=texts[t], logit=float(x[t])) for t in d.tokens],
        "temperatures": [TemperatureDistribution(
            temperature=row.temperature, raw=_summary(row.raw),
            processed=_summary(row.processed), raw_probs=row.raw_probs, probs=row.probs,
            top=[DistributionToken(token_id=t, text=texts[t], logit=float(x[t]), raw_prob=rp,
                                   prob=p) for t, rp, p in row.top])
            for row in d.temperatures],
        "logits": [round(v, 4) for v in x.tolist()] if return_logits else None,
    }


def _summary(s: lab.Summary) -> DistributionSummary:
    return DistributionSummary(**dataclasses.asdict(s))
