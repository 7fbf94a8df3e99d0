"""Requests -> engine inputs (token ids, SamplingParams, RowSpecs) and engine outputs ->
OpenAI logprobs objects. The only place the server translates between the two worlds."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tempscope.server.errors import APIError
from tempscope.server.limits import ServerLimits
from tempscope.server.responses import (
    CompletionLogprobs,
    FinishReason,
    NamedLogprob,
    TokenLogprob,
    TopLogprob,
)
from tempscope.server.schemas import ChatMessage, SamplerFields

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend
    from tempscope.engine.loop import Alternative, StepEvent
    from tempscope.sampling import SamplingParams

# What the OpenAI API reports for a token of probability 0 (JSON has no -inf).
NEG_INF_LOGPROB = -9999.0

_TOKEN_ID = re.compile(r"-?[0-9]+")

# Request field -> SamplingParams field, where the names differ.
_RENAMED = {"sampler_order": "order"}
_NOT_SAMPLER = {"logprobs_mode"}


def sampling_params(fields: SamplerFields, vocab_size: int, *,
                    temperature: float | None = None) -> SamplingParams:
    """Build :class:`SamplingParams` from a request's sampler fields.

    Range checks are the library's; its errors come back as a 400 naming the request field.
    ``top_k`` of ``-1`` or ``0`` means off (vLLM's convention), so does ``mirostat`` 0
    (llama.cpp's); ``temperature`` None means 1.
    """
    from tempscope.sampling import SamplingParams

    known = SamplingParams.model_fields
    kwargs: dict[str, Any] = {}
    for name in SamplerFields.model_fields:
        value = getattr(fields, name)
        if name in _NOT_SAMPLER or value is None:
            continue
        target = _RENAMED.get(name, name)
        if target not in known:
            raise APIError(400, f"{name} is not supported by this server's samplers; leave it "
                           "out", param=name, code="unsupported_parameter")
        kwargs[target] = value
    if kwargs.get("top_k") in (-1, 0):  # vLLM's "off"
        del kwargs["top_k"]
    if fields.logit_bias is not None:
        kwargs["logit_bias"] = _logit_bias(fields.logit_bias, vocab_size)
    if kwargs.get("mirostat") == 0:  # llama.cpp's "off" switches its knobs off too
        for name in ("mirostat", "mirostat_tau", "mirostat_eta"):
            kwargs.pop(name, None)
    outside = [t for t in fields.logprob_token_ids or () if not 0 <= t < vocab_size]
    if outside:
        raise APIError(400, f"logprob_token_ids: token id {outside[0]} is outside the "
                       f"vocabulary [0, {vocab_size})", param="logprob_token_ids",
                       code="invalid_value")
    if temperature is not None:
        kwargs["temperature"] = temperature
    elif "temperature" not in kwargs:
        kwargs["temperature"] = 1.0
    try:
        return SamplingParams(**kwargs)
    except (ValidationError, ValueError, TypeError) as exc:
        message = str(exc).removeprefix("Value error, ")
        for field, target in _RENAMED.items():  # speak the request's names, not the library's
            if message.startswith(f"{target}:") or message.startswith(f"{target} "):
                message = field + message[len(target):]
        raise APIError(400, message, param=_param_named(message),
                       code="invalid_value") from None


def _param_named(message: str) -> str | None:
    """The request field a library error message starts with, e.g. ``top_p must be ...``."""
    first = message.split(" ", 1)[0].strip(":,")
    first = {v: k for k, v in _RENAMED.items()}.get(first, first)
    return first if first in SamplerFields.model_fields else None


def _logit_bias(bias: dict[str, float], vocab_size: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in bias.items():
        shown = key if len(key) <= 40 else key[:37] + "..."
        # Digits only: int() would also take " 7", "7_0" and "٧" (an Arabic-Indic seven).
        if not _TOKEN_ID.fullmatch(key):
            raise APIError(400, f"logit_bias keys must be token ids written in digits, got "
                           f"{shown!r}", param="logit_bias", code="invalid_value")
        try:
            token = int(key)
        except ValueError:  # over Python's 4300 digits: far outside any vocabulary
            token = vocab_size
        if not 0 <= token < vocab_size:
            raise APIError(400, f"logit_bias token id {shown} is outside the vocabulary "
                           f"(0..{vocab_size - 1})", param="logit_bias", code="invalid_value")
        if not -100 <= value <= 100:
            raise APIError(400, f"logit_bias values must be in [-100, 100], got {value} for "
                           f"token {token}", param="logit_bias", code="invalid_value")
        out[token] = value
    return out


def prompt_ids(model: Backend, prompt: str | list[int], *, param: str = "prompt"
               ) -> list[int]:
    """Token ids of one prompt (text or ids); an empty prompt starts from BOS when there is one."""
    if isinstance(prompt, str):
        try:
            ids = model.encode(prompt)
        except ValueError as exc:  # text no tokenizer can encode (a lone surrogate)
            raise APIError(400, str(exc), param=param, code="invalid_value") from None
    else:
        ids = list(prompt)
        vocab = model.vocab_size  # a property that walks the model: read it once, not per id
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is outside the vocabulary (0..{vocab - 1})",
                           param=param, code="invalid_value")
    if not ids:
        bos = model.bos_token_id
        if bos is None:
            raise APIError(400, "the prompt is empty and the model has no BOS token to start "
                           "from; send at least one token of text", param=param)
        ids = [int(bos)]
    return ids


def completion_prompts(prompt: str | list[str] | list[int] | list[list[int]]
                       ) -> list[str | list[int]]:
    """Normalise the four OpenAI prompt forms to a list of prompts."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise APIError(400, "prompt is an empty list; send a string or a non-empty list",
                       param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [[int(p) for p in prompt]]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def chat_ids(model: Backend, messages: Sequence[ChatMessage], limits: ServerLimits, *,
             param: str = "messages") -> list[int]:
    """Token ids of a conversation with the generation prompt: the model's chat template when
    it has one, else a plain ``role: text`` transcript ending in ``assistant:``.

    ``param`` names the request field the messages came from, for errors.
    """
    if len(messages) > limits.max_prompt_tokens:
        raise APIError(400, f"{len(messages)} messages; every message takes at least one "
                       f"token and this server takes at most {limits.max_prompt_tokens} prompt "
                       "tokens: send fewer", param=param, code="context_length_exceeded")
    convo = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
             for m in messages]
    for i, m in enumerate(convo):  # name the message, not a place in the rendered template
        check_text(m["content"], f"messages[{i}].content" if param == "messages" else param,
                   param=param)
    check_chars(["".join(m["content"] for m in convo)], limits, param=param)
    if model.has_chat_template:
        try:
            ids = model.encode_chat(convo)
        except ValueError as exc:
            raise APIError(400, str(exc), param=param) from None
        return ids or prompt_ids(model, "")
    transcript = "".join(f"{m['role']}: {m['content']}\n" for m in convo) + "assistant:"
    return prompt_ids(model, transcript, param=param)


def check_text(text: str, what: str, *, param: str) -> str:
    """400 naming ``param`` when ``text`` holds a lone surrogate (valid JSON, no valid text)."""
    from tempscope.engine.backend import check_text as library_check

    try:
        return library_check(text, what)
    except ValueError as exc:
        raise APIError(400, str(exc), param=param, code="invalid_value") from None


def check_chars(texts: Sequence[str], limits: ServerLimits, *, param: str) -> None:
    """400 before tokenizing when the text is far longer than the token caps could take (see
    :attr:`ServerLimits.prompt_chars_per_token`)."""
    per = limits.prompt_chars_per_token
    checks = [(len(t), limits.max_prompt_tokens, "the prompt has") for t in texts]
    checks.append((sum(map(len, texts)), limits.max_request_prompt_tokens,
                   "the prompts of this request have"))
    for chars, tokens, what in checks:
        if chars > tokens * per:
            raise APIError(400, f"{what} {chars} characters; this server tokenizes at most "
                           f"{tokens * per} ({tokens} tokens x {per} characters): send "
                           "shorter text", param=param, code="context_length_exceeded")


def check_lengths(model: Backend, limits: ServerLimits, ids: Sequence[int],
                  max_tokens: int, *, param: str = "prompt") -> None:
    """400 when the prompt or prompt + max_tokens does not fit the caps and the context.

    ``param`` names the field the prompt came from; a prompt that leaves no room for even one
    new token is its fault, not ``max_tokens``'.
    """
    context = model.facts.context_length
    if len(ids) > limits.max_prompt_tokens:
        raise APIError(400, f"the prompt has {len(ids)} tokens; this server takes at most "
                       f"{limits.max_prompt_tokens}", param=param,
                       code="context_length_exceeded")
    if len(ids) >= context:
        raise APIError(400, f"the prompt has {len(ids)} tokens, which fills the model's "
                       f"context of {context} tokens and leaves no room for a new one; shorten "
                       "it", param=param, code="context_length_exceeded")
    if len(ids) + max_tokens > context:
        raise APIError(400, f"the prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) "
                       f"is more than the model's context of {context} tokens; shorten the "
                       "prompt or lower max_tokens", param="max_tokens",
                       code="context_length_exceeded")


def check_request_prompts(encoded: Sequence[Sequence[int]], limits: ServerLimits) -> None:
    """400 when one request's distinct prompts hold more tokens than the server prefills for
    one request (each distinct prompt is prefilled once, whatever ``n``)."""
    total = sum(len(p) for p in {tuple(p) for p in encoded})
    if total > limits.max_request_prompt_tokens:
        raise APIError(400, f"the prompts of this request hold {total} tokens; this server "
                       f"takes at most {limits.max_request_prompt_tokens} per request: send "
                       "fewer or shorter prompts", param="prompt",
                       code="context_length_exceeded")


def check_max_tokens(max_tokens: int, limits: ServerLimits) -> int:
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most "
                       f"{limits.max_tokens}", param="max_tokens", code="invalid_value")
    return max_tokens


def check_n(n: int, prompts: int, limits: ServerLimits) -> None:
    if n > limits.max_n:
        raise APIError(400, f"n is {n}; this server allows at most {limits.max_n}",
                       param="n", code="invalid_value")
    if prompts > limits.max_prompts:
        raise APIError(400, f"{prompts} prompts in one request; at most "
                       f"{limits.max_prompts}", param="prompt", code="invalid_value")
    if n * prompts > limits.max_rows:
        raise APIError(400, f"{prompts} prompts x n={n} = {n * prompts} completions; at most "
                       f"{limits.max_rows} per request", param="n", code="invalid_value")


def stop_list(stop: str | list[str] | None, limits: ServerLimits) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > limits.max_stop:
        raise APIError(400, f"{len(stops)} stop strings; at most {limits.max_stop}",
                       param="stop", code="invalid_value")
    for i, s in enumerate(stops):
        if len(s) > limits.max_stop_chars:
            raise APIError(400, f"a stop string has {len(s)} characters; at most "
                           f"{limits.max_stop_chars}", param="stop", code="invalid_value")
        # Generated text never holds a lone surrogate: such a stop string could never match.
        check_text(s, "stop" if isinstance(stop, str) else f"stop[{i}]", param="stop")
    return [s for s in stops if s]


def check_top_logprobs(k: int | None, limits: ServerLimits, param: str) -> int:
    if k is not None and k > limits.max_top_logprobs:
        raise APIError(400, f"{param} is {k}; at most {limits.max_top_logprobs}", param=param,
                       code="invalid_value")
    return k or 0


def finish_reason(engine_reason: str | None) -> FinishReason | None:
    """The engine's ``stop``/``eos``/``length`` as OpenAI's ``stop``/``length``."""
    if engine_reason is None or engine_reason == "cancelled":
        return None
    return "length" if engine_reason == "length" else "stop"


def is_shown(event: StepEvent, eos_ids: set[int]) -> bool:
    """Whether a step's token belongs in logprobs: an end-of-sequence token does not."""
    return not (event.finished == "eos" and event.token_id in eos_ids)


def _lp(value: float) -> float:
    return value if math.isfinite(value) else NEG_INF_LOGPROB


def token_logprob(event: StepEvent, raw: bool) -> float:
    return _lp(event.raw_logprob if raw else event.logprob)


def alternatives(event: StepEvent, k: int, raw: bool) -> list[tuple[Alternative, float]]:
    """The ``k`` likeliest alternatives under the chosen mode, with their log-probabilities."""
    def logp(alt: Alternative) -> float:
        p = alt.raw_prob if raw else alt.prob
        return math.log(p) if p > 0 else NEG_INF_LOGPROB

    ranked = sorted(event.top, key=lambda a: -(a.raw_prob if raw else a.prob))
    return [(a, logp(a)) for a in ranked[:k]]


def completion_logprobs(events: Sequence[StepEvent], k: int, raw: bool,
                        offset: int = 0) -> CompletionLogprobs:
    """The legacy completions ``logprobs`` object for these steps."""
    tokens, lps, tops, offsets = [], [], [], []
    named: list[dict[str, float]] = []
    for ev in events:
        named.append({str(a.token_id): _logp(a, raw) for a in ev.named})
        tokens.append(ev.text)
        lps.append(token_logprob(ev, raw))
        top: dict[str, float] = {}
        for a, lp in alternatives(ev, k, raw):
            top.setdefault(a.text, lp)  # tokens with the same text: keep the likeliest
        tops.append(top)
        offsets.append(offset)
        offset += len(ev.text)
    return CompletionLogprobs(tokens=tokens, token_logprobs=lps, top_logprobs=tops,
                              text_offset=offsets,
                              named_logprobs=named if any(named) else None)


def chat_logprobs(events: Sequence[StepEvent], k: int, raw: bool) -> list[TokenLogprob]:
    """The chat ``logprobs.content`` list for these steps."""
    return [
        TokenLogprob(token=ev.text, logprob=token_logprob(ev, raw),
                     bytes=list(ev.text.encode()),
                     top_logprobs=[TopLogprob(token=a.text, logprob=lp,
                                              bytes=list(a.text.encode()))
                                   for a, lp in alternatives(ev, k, raw)],
                     named_logprobs=[NamedLogprob(token=a.text, token_id=a.token_id,
                                                  logprob=_logp(a, raw),
                                                  bytes=list(a.text.encode()))
                                     for a in ev.named] or None)
        for ev in events
    ]


def _logp(alt: Alternative, raw: bool) -> float:
    """An alternative's log-probability (raw or processed) as the API reports it."""
    p = alt.raw_prob if raw else alt.prob
    return math.log(p) if p > 0 else NEG_INF_LOGPROB
