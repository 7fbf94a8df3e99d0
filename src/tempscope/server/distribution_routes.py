"""``POST /v1/distribution``: the next-token distribution at several temperatures, raw and
after the sampler chain, from one forward pass."""

from __future__ import annotations

import asyncio
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
from tempscope.server.schemas import DistributionRequest, SamplerFields
from tempscope.server.state import ServerState, get_state

if TYPE_CHECKING:
    import torch

router = APIRouter()

# Fields that leave the distribution as softmax(logits / T) when they are the only ones set.
_NOT_SAMPLERS = {"temperature", "seed", "logprobs_mode", "sampler_order", "temperature_last"}


def samplers_on(fields: SamplerFields) -> bool:
    """Whether any sampler besides temperature is set."""
    return any(getattr(fields, name) is not None for name in SamplerFields.model_fields
               if name not in _NOT_SAMPLERS)


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
    import torch

    from tempscope.distribution import effective_vocab, entropy, softmax
    from tempscope.sampling import probabilities

    model = st.model
    logits = _last_logits(st, ids)  # (V,) float32
    top = min(body.top, logits.shape[-1])
    order = torch.topk(logits, top).indices.tolist()  # top-N by logit, most likely first
    texts = {t: model.token_text(t) for t in order}
    # All temperatures through the chain at once: (B, V), one row per temperature.
    processed = probabilities(logits.expand(len(params), -1), params,
                              history=[ids] * len(params))
    rows = []
    for t, proc in zip(body.temperatures, processed, strict=True):
        raw = softmax(logits, t)  # (V,)
        best = torch.topk(proc, top).indices.tolist()
        for tok in best:
            texts.setdefault(tok, model.token_text(tok))
        rows.append(TemperatureDistribution(
            temperature=t, raw=_summary(raw, entropy, effective_vocab),
            processed=_summary(proc, entropy, effective_vocab),
            raw_probs=raw[order].tolist(), probs=proc[order].tolist(),
            top=[DistributionToken(token_id=tok, text=texts[tok], logit=float(logits[tok]),
                                   raw_prob=float(raw[tok]), prob=float(proc[tok]))
                 for tok in best]))
    return DistributionResponse(
        model=st.name, prompt_tokens=len(ids), vocab_size=int(logits.shape[-1]),
        samplers_on=samplers_on(body),
        tokens=[VocabToken(token_id=tok, text=texts[tok], logit=float(logits[tok]))
                for tok in order],
        temperatures=rows,
        logits=[round(x, 4) for x in logits.tolist()] if body.return_logits else None)


def _summary(p: torch.Tensor, entropy: Any, effective_vocab: Any) -> DistributionSummary:
    return DistributionSummary(entropy=float(entropy(p)), effective_vocab=float(
        effective_vocab(p)), top_probability=float(p.max()), kept=int((p > 0).sum()))


_CACHE_SIZE = 16  # recent prompts whose logits are kept: a slider moving costs no forward pass


def _last_logits(st: ServerState, ids: list[int]) -> torch.Tensor:
    from tempscope.nexttoken import last_logits

    key = tuple(ids)
    with st.cache_lock:
        hit: torch.Tensor | None = st.logits_cache.get(key)
        if hit is not None:
            st.logits_cache.move_to_end(key)
            return hit
    out: torch.Tensor = last_logits(st.model, ids).float().reshape(-1)  # (V,)
    with st.cache_lock:
        st.logits_cache[key] = out
        while len(st.logits_cache) > _CACHE_SIZE:
            st.logits_cache.popitem(last=False)
    return out
