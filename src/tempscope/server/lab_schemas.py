"""Request and response bodies of the lab routes (``/v1/lab/...``).

Every lab request starts from the same place: a ``prompt`` (text, or one user message through
the chat template with ``chat``) and the ``tokens`` already chosen after it (a path in the
tree of continuations). Sampler fields are the server's usual ones (:class:`SamplerFields`),
checked by the library; types are strict and unknown fields are refused, as everywhere.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tempscope.server.responses import TemperatureDistribution, VocabToken
from tempscope.server.schemas import SamplerFields, TemperatureList

MAX_TREE_DEPTH = 6  # levels below the prompt one tree request may expand
MAX_TREE_TOP = 10  # children per node
MAX_TREE_NODES = 256  # nodes in one tree


def _config(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(strict=True, extra="forbid", allow_inf_nan=False,
                      json_schema_extra={"examples": list(examples)})


class LabText(SamplerFields):
    """Where a lab request starts: a prompt and the token ids chosen after it."""

    model: str | None = None
    prompt: str
    chat: bool = False  # the prompt as one user message through the chat template
    tokens: list[int] = Field(default_factory=list)  # ids after the prompt (a branch's path)


class _Temperatures(LabText, TemperatureList):
    """A lab request at several temperatures."""


class ContinueRequest(_Temperatures):
    """``POST /v1/lab/continue``: generate from prompt + tokens (+ typed text), one row per
    temperature, every row with the same seed and samplers, batched; streamed with
    ``"stream": true``."""

    model_config = _config(
        {"prompt": "The cat slept on the", "temperatures": [0.2, 0.7, 1.0, 1.5], "seed": 7,
         "max_tokens": 16, "min_p": 0.05, "stream": True},
        {"prompt": "The cat slept on the", "tokens": [42], "append_text": " sofa",
         "temperatures": [0.7], "seed": 7, "max_tokens": 8},
    )

    append_text: str | None = None  # typed text, tokenized and appended after ``tokens``
    # None: 40, or the server's --max-tokens cap when that is lower
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    top_alternatives: int = Field(default=10, ge=0)  # alternatives listed per token


class StepRequest(_Temperatures):
    """``POST /v1/lab/step``: the distribution after prompt + tokens, raw and after the
    sampler chain, at several temperatures. The logits of recent steps are cached: asking
    again at other temperatures costs no model call (``cached`` says so)."""

    model_config = _config(
        {"prompt": "The cat slept on the", "tokens": [], "temperatures": [0.5, 1.5],
         "top": 10, "min_p": 0.1},
        {"prompt": "Hi", "chat": True, "temperatures": [1], "return_logits": True},
    )

    top: int = Field(default=20, ge=1)
    return_logits: bool = False  # add the (V,) logits: redraw softmax(logits / T) anywhere


class TreeRequest(LabText):
    """``POST /v1/lab/tree``: the likeliest continuations to ``depth`` tokens, each node's
    probability under the sampler chain at ``temperature`` (None = 1)."""

    model_config = _config(
        {"prompt": "The cat slept on the", "temperature": 0.7, "depth": 3, "top": 3,
         "min_prob": 0.05},
    )

    depth: int = Field(default=3, ge=1, le=MAX_TREE_DEPTH)
    top: int = Field(default=3, ge=1, le=MAX_TREE_TOP)  # children per node at most
    min_prob: float = Field(default=0.05, ge=0, le=1)  # cut-off on a child's probability
    max_nodes: int = Field(default=100, ge=1, le=MAX_TREE_NODES)


# ---------------------------------------------------------------------------- responses


class LabCandidate(BaseModel):
    token_id: int
    text: str  # decoded alone
    raw_prob: float  # T = 1, no samplers
    prob: float  # after the sampler chain (0 = removed)


class LabToken(BaseModel):
    """One generated token."""

    token_id: int
    text: str  # decoded alone, e.g. " mat"
    display: str  # whitespace made visible; a partial UTF-8 character as its bytes
    raw_prob: float  # T = 1, no samplers
    prob: float  # under the distribution it was drawn from
    raw_entropy: float  # nats, T = 1
    entropy: float  # nats, of the distribution it was drawn from
    rank: int | None  # 1-based rank in the raw distribution (over the whole vocabulary)
    bucket: Literal["top10", "top100", "top1000", "rest"] | None  # GLTR bucket of the rank
    top: list[LabCandidate]  # the likeliest alternatives after processing, then raw
    finished: str | None = None  # the row's finish reason, on its last token
    named: list[LabCandidate] = []  # the tokens of logprob_token_ids, whatever their rank


class LabPiece(BaseModel):
    """A token the request appended from ``append_text``."""

    token_id: int
    text: str


class LabColumn(BaseModel):
    """One row (one temperature) of a continuation."""

    index: int
    temperature: float
    text: str
    token_ids: list[int]  # an end-of-sequence token that ended the row included
    finish_reason: str  # "eos", "length" (or "stop", "cancelled")
    mean_logprob: float | None  # mean raw (T = 1) log-prob of its tokens; None: no tokens
    mean_entropy: float | None  # mean raw (T = 1) entropy of its steps, nats
    mean_sampled_entropy: float | None  # mean entropy of the distributions drawn from
    tokens: list[LabToken] | None = None  # left out of the stream's final event


class ContinueResponse(BaseModel):
    object: Literal["lab.continuation"] = "lab.continuation"
    model: str
    seed: int  # every row's seed (chosen at random when the request sent none)
    prompt_tokens: int  # prompt + tokens + appended
    appended: list[LabPiece]
    columns: list[LabColumn]


class LabStartEvent(BaseModel):
    """The first event of a stream."""

    type: Literal["start"] = "start"
    model: str
    seed: int
    prompt_tokens: int
    appended: list[LabPiece]
    temperatures: list[float]  # column i generates at temperatures[i]


class LabTokenEvent(BaseModel):
    """One token of one column."""

    type: Literal["token"] = "token"
    column: int
    step: int  # 1-based
    delta: str  # the text safe to show now (held back inside a UTF-8 character)
    token: LabToken


class LabDoneEvent(BaseModel):
    """The last event before ``[DONE]``: every column's summary."""

    type: Literal["done"] = "done"
    columns: list[LabColumn]


STREAM_EVENTS: tuple[type[BaseModel], ...] = (LabStartEvent, LabTokenEvent, LabDoneEvent)


class StepResponse(BaseModel):
    object: Literal["lab.step"] = "lab.step"
    model: str
    prompt_tokens: int  # prompt + tokens: the step's position
    vocab_size: int
    samplers_on: bool  # a sampler besides temperature changes the distribution
    cached: bool  # the logits came from the cache: no model call
    tokens: list[VocabToken]  # top-N by logit: the same order at every temperature
    temperatures: list[TemperatureDistribution]
    logits: list[float] | None = None  # (V,), with return_logits


class LabTreeNode(BaseModel):
    id: int
    parent: int | None  # None: a first token after the prompt
    depth: int
    token_id: int
    text: str
    prob: float  # p(token | path), after the sampler chain
    raw_prob: float  # T = 1, no samplers
    path_prob: float  # product of prob from the prompt to here
    path: list[int]  # token ids from the prompt to here
    path_text: str  # those tokens decoded together
    end: bool  # an end-of-sequence token (a leaf)


class TreeResponse(BaseModel):
    object: Literal["lab.tree"] = "lab.tree"
    model: str
    prompt_tokens: int
    temperature: float
    nodes: list[LabTreeNode]  # breadth first: parents before children
    truncated: bool  # max_nodes stopped the expansion


class CalibrationResponse(BaseModel):
    """The served model's best temperature on the default text (GET /v1/lab/calibration)."""

    model: str
    text: str  # what was scored, in words
    texts: int  # passages
    positions: int  # scored tokens
    t_star: float  # argmin over T of the mean NLL of the human text
    t_star_error: float
    at_edge: str | None  # "below" / "above" the searched range: T* is at its edge
    nll_t1: float  # mean NLL at T = 1, nats per token
    nll_t_star: float
    ece_t1: float  # expected calibration error of the top-1 prediction
    ece_t_star: float
    bins: int
    direction: str  # "over-confident at T = 1", "under-confident ...", "close to calibrated ..."
    cached: bool  # computed by an earlier request

