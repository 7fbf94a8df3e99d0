"""Request bodies in the OpenAI shapes, plus vLLM/llama.cpp-style sampler fields.

Types are checked strictly (``"stream": "yes"`` or ``"n": "2"`` is an error, not a guess) and
unknown fields are rejected, so a typo such as ``temprature`` gets a 400 instead of being
silently ignored. Ranges of sampler knobs are checked by :class:`tempscope.sampling.
SamplingParams` itself, so the library stays the one place that knows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from tempscope.sampling.params import KNOB_TYPES, MAX_NAMED_TOKENS

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class _SamplerBase(BaseModel):
    """What every request has besides the registry's knobs."""

    model_config = _STRICT

    sampler_order: list[str] | None = Field(default=None, max_length=32)
    temperature_last: bool | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    logprobs_mode: Literal["raw", "processed"] = "processed"

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...


# The request type of each kind of knob: the library's, except that JSON object keys are
# strings (token ids as text).
_WIRE_TYPES: dict[str, Any] = {**KNOB_TYPES, "token_bias": dict[str, float] | None}
# The most items a list knob may hold in one request.
_MAX_ITEMS = {"strings": 64, "token_ids": MAX_NAMED_TOKENS}


def _sampler_fields() -> dict[str, Any]:
    """One request field per knob of the sampler registry."""
    from tempscope.sampling.registry import KNOBS

    out: dict[str, Any] = {}
    for knob in KNOBS.values():
        out[knob.name] = (_WIRE_TYPES[knob.kind], Field(
            default=None, description=knob.doc, max_length=_MAX_ITEMS.get(knob.kind)))
    return out


if TYPE_CHECKING:

    class SamplerFields(_SamplerBase):
        """Sampling knobs shared by every route (see the runtime docstring)."""

        def __init__(self, **data: Any) -> None: ...

else:
    SamplerFields = create_model(
        "SamplerFields",
        __base__=_SamplerBase,
        __module__=__name__,
        __doc__="""Sampling knobs shared by every route, one per knob of the sampler registry
    (``GET /v1/samplers`` lists them). ``None`` (or leaving a field out) means off.

    ``temperature`` 0 is greedy. ``top_k`` accepts vLLM's ``-1`` / ``0`` and ``mirostat``
    llama.cpp's ``0`` as "off" for compatibility. ``sampler_order`` lists the samplers in the
    order they run.
    """,
        **_sampler_fields(),
    )


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


def _examples(*bodies: dict[str, Any]) -> ConfigDict:
    """The strict config plus request examples for the spec (/docs shows them; contract
    tests send them)."""
    return ConfigDict(**_STRICT, json_schema_extra={"examples": list(bodies)})


class CompletionRequest(SamplerFields):
    """``POST /v1/completions``."""

    model_config = _examples(
        {"model": "default", "prompt": "The cat slept on the", "max_tokens": 8,
         "temperature": 0.7, "min_p": 0.1, "seed": 1, "logprobs": 2},
        {"model": "default", "prompt": [[84, 104, 101], [65]], "n": 2, "max_tokens": 4,
         "stop": ["\n"], "stream": True, "stream_options": {"include_usage": True}},
    )

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    # None: 16 (OpenAI's default), or the server's --max-tokens cap when that is lower
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    best_of: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(default=None, ge=0)
    echo: bool = False
    suffix: str | None = None
    user: str | None = None

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("n", 1)  # absent when n itself was invalid: that error is enough
        if value is not None and value != n:
            raise ValueError(f"{value} is not supported; leave best_of out or set it equal "
                             f"to n ({n})")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("fill-in-the-middle is not supported; leave suffix out")
        return value

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.echo and self.logprobs is not None:
            raise ValueError("echo together with logprobs is not supported (prompt tokens carry "
                             "no logprobs here); drop one of them")
        return self


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type != "text" or self.text is None:
            raise ValueError(f"content parts of type {self.type!r} are not supported; this "
                             "server takes text only ({'type': 'text', 'text': ...})")
        return self


class ChatMessage(BaseModel):
    # Extra keys (tool_calls, refusal, ...) from clients that echo whole messages are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text, parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(SamplerFields):
    """``POST /v1/chat/completions``."""

    model_config = _examples(
        {"model": "default", "messages": [{"role": "user", "content": "Name a colour."}],
         "max_tokens": 8, "temperature": 0.7, "logprobs": True, "top_logprobs": 2},
        {"model": "default", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hi"}],
         "max_completion_tokens": 4, "top_k": 40, "stream": True,
         "stream_options": {"include_usage": True}},
    )

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0)
    user: str | None = None
    # Accepted for compatibility; they change nothing here.
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    # Accepted only when empty or trivial; anything else gets a clear 400.
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool and function calling are not supported; leave it out")
        return value

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, value: Any) -> Any:
        if value not in (None, "none", "auto"):
            raise ValueError("tool and function calling are not supported; leave it out")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError(f"response_format {value!r} is not supported; only "
                             "{'type': 'text'}")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("logprobs") is False:
            raise ValueError("needs logprobs: true as well")
        return value

    @model_validator(mode="after")
    def _one_budget(self) -> ChatCompletionRequest:
        if (self.max_tokens is not None and self.max_completion_tokens is not None
                and self.max_tokens != self.max_completion_tokens):
            raise ValueError("max_tokens and max_completion_tokens disagree; send one of them")
        return self


class TemperatureList(SamplerFields):
    """Sampler fields at several temperatures: ``temperatures`` replaces ``temperature``."""

    # Not a field here (the spec leaves it out); declared only to answer with a pointer to
    # ``temperatures`` instead of a bare "unknown field".
    temperature: SkipJsonSchema[float | None] = None
    temperatures: list[float] = Field(default_factory=lambda: [1.0], min_length=1)

    @field_validator("temperature")
    @classmethod
    def _one_temperature_field(cls, value: float | None) -> float | None:
        if value is not None:
            raise ValueError("use temperatures: [...] (a list) on this route, not temperature")
        return value


class DistributionRequest(TemperatureList):
    """``POST /v1/distribution``: the next-token distribution at several temperatures.

    ``temperatures`` replaces ``temperature``; the other sampler fields give the processed
    distribution next to the raw one. ``return_logits`` adds the full last-position logits
    ``(V,)`` so a page can recompute ``softmax(logits / T)`` for any T without another call.
    """

    model_config = _examples(
        {"prompt": "The cat slept on the", "temperatures": [0, 0.5, 1, 2], "top": 5},
        {"prompt": "Hi", "chat": True, "temperatures": [1], "min_p": 0.1,
         "return_logits": True},
    )

    model: str | None = None
    prompt: str
    chat: bool = False
    top: int = Field(default=10, ge=1)
    return_logits: bool = False
