"""What goes over the wire to a remote server, by dialect: which server answers (llama.cpp's
C++ ``llama-server`` or any other OpenAI-compatible one), the sampler fields a request for
llama-server carries (llama.cpp's names, every sampler left off switched off, the chain in the
user's order), and the two shapes servers return log-probabilities in, read into one form.

No HTTP here (:mod:`tempscope.engine.remote.client` talks to servers): pure functions over JSON
and the sampler registry, so each rule is written once and tested without a server.

llama-server (llama.cpp's ``tools/server``) is recognised by ``GET /props`` (outside ``/v1``):
its answer lists every sampling field it takes (``default_generation_settings.params``) and a
slot's context size. It ignores fields it does not know, so what it accepts is read from there,
never probed. Its own defaults sample with top-k 40, top-p 0.95, min-p 0.05 and a penalty
window of 64 tokens; a request from tempscope says every one of them, and its chain
(``samplers``), explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tempscope.sampling.registry import BY_NAME, KNOBS, SAMPLERS

if TYPE_CHECKING:
    from tempscope.sampling import SamplingParams

__all__ = ["LLAMA_SERVER", "LLAMA_SERVER_OFF", "OPENAI", "ServerInfo", "TokenLogprobs",
           "llama_server_fields", "llama_server_samplers", "parse_logprobs", "server_info"]

LLAMA_SERVER = "llama-server"
OPENAI = "openai"  # any other OpenAI-compatible server: fields probed one by one

#: ``{llama.cpp field: value}`` that switches each of llama-server's samplers off, from the
#: registry (``Knob.llama_cpp_off``): top-k 0, top-p 1, min-p 0, typical 1, the three
#: penalties, DRY multiplier 0, XTC probability 0, top-n-sigma -1, dynatemp range 0, mirostat 0,
#: adaptive-p target -1.
LLAMA_SERVER_OFF: Mapping[str, Any] = MappingProxyType(
    {k.llama_cpp: k.llama_cpp_off for k in KNOBS.values()
     if k.llama_cpp is not None and k.llama_cpp_off is not None})

# Sampling fields llama-server's request schema takes but its /props leaves out (it lists the
# numeric settings only).
_UNLISTED = frozenset({"logit_bias", "dry_sequence_breakers"})
# Knobs whose tempscope value "the whole history" (-1) llama-server refuses (it takes 0 to
# INT32_MAX): sent as the slot's context size instead, which is the whole history there.
_WHOLE_HISTORY = frozenset({"dry_penalty_last_n", "penalty_last_n"})


@dataclass(frozen=True)
class ServerInfo:
    """Which server answers an endpoint, and what it said about itself.

    Attributes:
        kind: :data:`LLAMA_SERVER` or :data:`OPENAI`.
        accepts: llama-server's sampling fields (its ``/props``); empty for other servers.
        n_ctx: tokens of context per slot (llama-server), else ``None``.
        build: the server's build string, when it gives one.
    """

    kind: str = OPENAI
    accepts: frozenset[str] = frozenset()
    n_ctx: int | None = None
    build: str = ""

    @property
    def is_llama_server(self) -> bool:
        return self.kind == LLAMA_SERVER


def server_info(props: Mapping[str, Any] | None) -> ServerInfo:
    """Read ``GET /props``: llama-server when it lists its generation settings.

    >>> server_info({"default_generation_settings": {"params": {"top_k": 40}, "n_ctx": 512},
    ...              "build_info": "b1"}).kind
    'llama-server'
    >>> server_info(None).kind
    'openai'
    """
    if not isinstance(props, Mapping):
        return ServerInfo()
    settings = props.get("default_generation_settings")
    params = settings.get("params") if isinstance(settings, Mapping) else None
    if not isinstance(params, Mapping):
        return ServerInfo()
    n_ctx = settings.get("n_ctx") if isinstance(settings, Mapping) else None
    return ServerInfo(LLAMA_SERVER, frozenset(str(k) for k in params) | _UNLISTED,
                      int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None,
                      str(props.get("build_info") or ""))


def llama_server_samplers(params: SamplingParams) -> list[str]:
    """llama-server's ``samplers`` list for ``params``: its chain in the user's order, in
    llama.cpp's names (the three penalties are one stage there). Temperature is always in it
    (llama.cpp's greedy is temperature 0); mirostat is not a stage there (its own field picks
    it).

    >>> from tempscope.sampling import SamplingParams
    >>> llama_server_samplers(SamplingParams(temperature=0.7, top_k=40, presence_penalty=0.5))
    ['penalties', 'temperature', 'top_k']
    >>> llama_server_samplers(SamplingParams(top_p=0.9, temperature_last=True))
    ['top_p', 'temperature']
    """
    chain = set(params.chain) | {"temperature"}
    out: list[str] = []
    for name in params.resolved_order:
        stage = BY_NAME[name].llama_cpp
        if name in chain and stage is not None and stage not in out:
            out.append(stage)
    return out


def llama_server_fields(params: SamplingParams,
                        info: ServerInfo) -> tuple[dict[str, Any], list[str]]:
    """The sampler fields (beyond ``temperature`` and ``seed``) of a llama-server request for
    ``params``, and the settings it cannot apply.

    Every sampler the user switched on goes with all its knobs in llama.cpp's names, tempscope's
    defaults filled in (llama.cpp's differ: XTC probability 0, DRY and penalty windows of 64);
    every other sampler llama-server has goes switched off (:data:`LLAMA_SERVER_OFF`); the
    chain goes as ``samplers``. A setting llama.cpp has no field for (``epsilon``, ``top_a``,
    ``bad_words``, ...), or that this server does not list, is returned as not applied.

    Args:
        params: the row's settings.
        info: the server (:func:`server_info`); ``info.n_ctx`` stands for "the whole history".

    Returns:
        ``({llama.cpp field: value}, [tempscope names not applied])``.
    """
    accepts = info.accepts
    sent: dict[str, Any] = {k: v for k, v in LLAMA_SERVER_OFF.items() if k in accepts}
    ignored: list[str] = []
    penalties = _penalties_on(params)
    for spec in SAMPLERS:
        if spec.in_order and not spec.on(params):
            continue  # off: its llama.cpp switch (if any) is already in ``sent``
        for knob in spec.knobs:
            given = getattr(params, knob.name)
            value = params.value(knob.name)  # the user's, or tempscope's default
            if knob.name == "temperature" or value is None or (
                    knob.requires and getattr(params, knob.requires) is None):
                continue  # the row's temperature goes as the request's own field
            if knob.llama_cpp is None or knob.llama_cpp not in accepts:
                if given is not None:
                    ignored.append(knob.name)
            elif knob.name != "penalty_last_n" or penalties:
                sent[knob.llama_cpp] = _wire_value(knob.name, value, info)
    if penalties and params.penalty_last_n is None and "repeat_last_n" in accepts:
        sent["repeat_last_n"] = _wire_value("penalty_last_n", -1, info)  # the whole history
    if "samplers" in accepts:
        sent["samplers"] = llama_server_samplers(params)
    return sent, ignored


def _penalties_on(params: SamplingParams) -> bool:
    return any(BY_NAME[n].on(params)
               for n in ("repetition_penalty", "frequency_penalty", "presence_penalty"))


def _wire_value(name: str, value: Any, info: ServerInfo) -> Any:
    if name in _WHOLE_HISTORY and value == -1:
        if info.n_ctx is None:
            raise ValueError(f"{name} = -1 (the whole history) needs the server's context size, "
                             "which its /props did not give: set a number of tokens instead")
        return info.n_ctx
    if name == "logit_bias":
        return {str(k): v for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


# ---------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token as a server reported it.

    Attributes:
        text: the token's text.
        token_id: its id when the server gives ids (llama-server), else ``None``.
        logprob: its log-probability (``-inf`` for probability 0).
        top: ``[(text, id or None, logprob)]``, likeliest first.
        processed: the numbers are after the server's samplers (llama-server's
            ``post_sampling_probs``); otherwise they are what the server calls logprobs.
    """

    text: str
    token_id: int | None
    logprob: float
    top: list[tuple[str, int | None, float]] = field(default_factory=list)
    processed: bool = False


def parse_logprobs(logprobs: Mapping[str, Any] | None) -> list[TokenLogprobs]:
    """A completion choice's ``logprobs``, in either shape servers use.

    - legacy OpenAI completions (vLLM, llama-cpp-python, ``tempscope serve``): parallel lists
      ``tokens``, ``token_logprobs``, ``top_logprobs`` (one ``{text: logprob}`` per token);
    - chat style (llama-server's ``/v1/completions`` and ``/completion``): ``content``, one
      ``{id, token, logprob, top_logprobs: [{id, token, logprob}]}`` per token, or with
      ``post_sampling_probs`` ``prob`` and ``top_probs``.

    >>> parse_logprobs({"content": [{"id": 5, "token": " mat", "logprob": -0.5,
    ...                 "top_logprobs": [{"id": 5, "token": " mat", "logprob": -0.5}]}]})[0].top
    [(' mat', 5, -0.5)]
    >>> parse_logprobs({"tokens": ["a"], "token_logprobs": [-1.0],
    ...                 "top_logprobs": [{"a": -1.0, "b": -2.0}]})[0].top
    [('a', None, -1.0), ('b', None, -2.0)]
    """
    if not logprobs:
        return []
    content = logprobs.get("content")
    if isinstance(content, Sequence) and not isinstance(content, str):
        return [_content_token(c) for c in content if isinstance(c, Mapping)]
    tokens = [str(t) for t in logprobs.get("tokens") or []]
    values = list(logprobs.get("token_logprobs") or [])
    tops = list(logprobs.get("top_logprobs") or [])
    out = []
    for k, text in enumerate(tokens):
        value = float(values[k]) if k < len(values) and values[k] is not None else math.nan
        top = tops[k] if k < len(tops) and tops[k] else {}
        ranked: list[tuple[str, int | None, float]] = sorted(
            ((str(t), None, float(v)) for t, v in top.items()), key=lambda e: -e[2])
        out.append(TokenLogprobs(text, None, value, ranked))
    return out


def _content_token(c: Mapping[str, Any]) -> TokenLogprobs:
    processed = "prob" in c and "logprob" not in c
    read = _log if processed else _number
    key = "prob" if processed else "logprob"
    top = c.get("top_probs" if processed else "top_logprobs") or []
    ranked = [(str(t.get("token", "")), _id(t), read(t.get(key))) for t in top
              if isinstance(t, Mapping)]
    ranked.sort(key=lambda e: -e[2])
    return TokenLogprobs(str(c.get("token", "")), _id(c), read(c.get(key)), ranked, processed)


def _log(p: Any) -> float:
    if p is None:
        return math.nan
    return math.log(float(p)) if float(p) > 0 else -math.inf


def _id(entry: Mapping[str, Any]) -> int | None:
    value = entry.get("id")
    return int(value) if isinstance(value, int) else None


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    # llama-server writes log(0) as the lowest float32 (JSON has no -infinity).
    return -math.inf if float(value) <= -3e38 else float(value)
