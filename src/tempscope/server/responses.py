"""Response bodies in the OpenAI shapes (completions, chat, streaming chunks, models) and the
``/v1/distribution`` answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

FinishReason = Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """The legacy completions ``logprobs`` object: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]
    # Per step, the log-probability of each token named in logprob_token_ids (token id as
    # text -> logprob), whatever its rank; absent when none were named.
    named_logprobs: list[dict[str, float]] | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class NamedLogprob(TopLogprob):
    """A token named in ``logprob_token_ids``: its id beside its text."""

    token_id: int


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]
    named_logprobs: list[NamedLogprob] | None = None  # logprob_token_ids, in the order named


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChatDelta(BaseModel):
    """A streamed message piece; unset keys are left out (``{}`` on the last chunk)."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tempscope"
    engine: str = "torch"  # which engine runs the model: "torch" or "llama.cpp"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VocabToken(BaseModel):
    token_id: int
    text: str  # the token decoded alone, e.g. " mat"
    logit: float


class DistributionToken(BaseModel):
    """One row of a top-N table."""

    token_id: int
    text: str
    logit: float
    raw_prob: float  # softmax(logits / T), no samplers
    prob: float  # after the sampler chain (equal to raw_prob when no sampler is on)


class DistributionSummary(BaseModel):
    entropy: float  # nats
    effective_vocab: float  # exp(entropy)
    top_probability: float
    kept: int  # tokens with probability > 0


class TemperatureDistribution(BaseModel):
    temperature: float
    raw: DistributionSummary
    processed: DistributionSummary
    raw_probs: list[float]  # aligned with DistributionResponse.tokens
    probs: list[float]  # aligned with DistributionResponse.tokens
    top: list[DistributionToken]  # the top-N after the samplers, most likely first


class DistributionResponse(BaseModel):
    object: Literal["distribution"] = "distribution"
    model: str
    prompt_tokens: int
    vocab_size: int
    samplers_on: bool  # whether any sampler besides temperature changes the distribution
    tokens: list[VocabToken]  # top-N by logit: the same order at every temperature
    temperatures: list[TemperatureDistribution]
    logits: list[float] | None = None  # (V,) last-position logits, when return_logits is true
