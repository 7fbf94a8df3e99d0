"""The sampler registry: every sampler and setting declared once.

Each :class:`SamplerSpec` says, in one place: its name (as used in ``order``), its knobs
(:class:`Knob`: type, range, the value that means off, the names llama.cpp and vLLM use, the
default a secondary knob takes), where it sits in the default order, whether it keeps state,
and its one-line doc. Everything else is derived from :data:`SAMPLERS`:

- :class:`~tempscope.sampling.SamplingParams` (its fields, range checks and "set without its
  switch" checks), :data:`~tempscope.sampling.DEFAULT_ORDER`;
- ``BatchSampler``'s chain (the class named by ``impl``, built with per-row parameters);
- the CLI flags (``--top-k`` ...), the server's request fields, the remote field mapping,
  ``GET /v1/samplers`` (the playground's controls) and the table in ``docs/samplers.md``.

This module imports neither torch nor pydantic: the CLI reads it at start-up.

Adding a sampler: write its module (a ``RowSampler`` subclass with ``apply``, optionally
``accept``/``reset``), then add one ``SamplerSpec`` here. See the README's development section.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

_INF = math.inf

KnobKind = Literal["float", "int", "strings", "token_ids", "token_bias"]


@dataclass(frozen=True)
class Knob:
    """One field of a sampler.

    Attributes:
        name: the ``SamplingParams`` field, the server's request field and (dashes for
            underscores) the CLI flag.
        kind: ``float``, ``int``, ``strings`` (list of text), ``token_ids`` (list of ids) or
            ``token_bias`` (``{token id: bias}``).
        doc: one line for ``--help``, the schema and the page.
        low, high, low_open, high_open: the valid range of a number (``kind`` float or int).
        hint: the practical range, said in every range error.
        default: the value this knob takes when its sampler is on and it is left ``None``
            (secondary knobs); ``None`` for the switch.
        neutral: the value a row gets when its sampler is off but another row's is on (the
            class reads it as "do nothing").
        requires: the knob that must be set with this one (default: the sampler's switch).
        arg: the constructor argument of the sampler class that takes it (default ``name``).
        llama_cpp: llama.cpp server's field name (``None``: llama.cpp has no such field).
        vllm: vLLM's field name (``None``: vLLM has none).
        wire_off: ``{wire name: value}`` a server reads as "off", sent by the remote engine
            for every sampler the user leaves off (so a server's defaults shape nothing unseen).
        llama_cpp_off: the value llama.cpp's ``llama-server`` reads as "off" under the
            ``llama_cpp`` name, sent to it for every sampler the user leaves off (``None``: not
            a switch there).
        metavar: the CLI placeholder.
    """

    name: str
    kind: KnobKind
    doc: str
    low: float = -_INF
    high: float = _INF
    low_open: bool = False
    high_open: bool = False
    hint: str = ""
    default: Any = None
    neutral: Any = None
    requires: str | None = None
    arg: str | None = None
    llama_cpp: str | None = None
    vllm: str | None = None
    wire_off: Mapping[str, Any] = field(default_factory=dict)
    llama_cpp_off: Any = None
    metavar: str = "X"

    @property
    def flag(self) -> str:
        """``--top-k`` for ``top_k``."""
        return "--" + self.name.replace("_", "-")

    @property
    def interval(self) -> str:
        """``(0, 1]``-style text for the valid range."""
        return interval(self.low, self.high, self.low_open, self.high_open)

    def to_dict(self) -> dict[str, Any]:
        """JSON for ``GET /v1/samplers``."""
        num = self.kind in ("float", "int")
        return {
            "name": self.name, "type": self.kind, "doc": self.doc, "hint": self.hint,
            "min": _finite(self.low) if num else None,
            "max": _finite(self.high) if num else None,
            "min_open": self.low_open, "max_open": self.high_open,
            "default": self.default, "llama_cpp": self.llama_cpp, "vllm": self.vllm,
        }


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler (or one setting that shapes several, such as ``min_keep``).

    Attributes:
        name: the name in ``order`` (a stage) or of the setting.
        doc: one line.
        knobs: its fields; ``knobs[0]`` switches it on unless ``is_on`` says otherwise.
        impl: ``"module:Class"`` under ``tempscope.sampling`` that ``BatchSampler`` builds
            with one column per knob (``None`` for a setting or a custom ``build``).
        build: ``"module:function"`` that builds the stage itself (``(rows, ctx) -> list``),
            for samplers whose construction is not one column per knob.
        needs: context the class takes as keyword arguments: ``history`` (a ``HistoryView``),
            ``generators``, ``vocab`` (a ``Vocab``), ``vocab_size``, ``min_keep``,
            ``penalty_last_n`` (the penalties' window, ``(B,)``, -1 = whole history).
        in_order: a stage of the chain (listed in ``order``) rather than a setting.
        stateful: keeps state across steps (``accept``/``reset``).
        ends_chain: chooses the token itself; nothing may follow it.
        local: its result depends only on the finite logits (it may run on top-k candidates).
        is_on: whether a ``SamplingParams`` switches it on (default: ``knobs[0]`` set).
        check: extra consistency check on a ``SamplingParams`` (raise ``ValueError``).
        greedy_skips: a greedy row (T = 0) never needs it (it runs after temperature only).
        llama_cpp: llama.cpp's name for this stage in ``llama-server``'s ``samplers`` list
            (``None``: not a stage there; llama.cpp runs the three penalties as one,
            ``penalties``).
    """

    name: str
    doc: str
    knobs: tuple[Knob, ...] = ()
    impl: str | None = None
    build: str | None = None
    needs: tuple[str, ...] = ()
    in_order: bool = True
    stateful: bool = False
    ends_chain: bool = False
    local: bool = False
    is_on: Callable[[Any], bool] | None = None
    check: Callable[[Any], None] | None = None
    llama_cpp: str | None = None

    def on(self, params: Any) -> bool:
        """Whether ``params`` switches this sampler on."""
        if self.is_on is not None:
            return self.is_on(params)
        return bool(self.knobs) and getattr(params, self.knobs[0].name) is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON for ``GET /v1/samplers``."""
        return {"name": self.name, "doc": self.doc, "in_order": self.in_order,
                "stateful": self.stateful, "ends_chain": self.ends_chain,
                "fields": [k.to_dict() for k in self.knobs]}


def interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """``(0, 1]``-style text for an interval."""
    lo = "-inf" if math.isinf(low) else f"{low:g}"
    hi = "inf" if math.isinf(high) else f"{high:g}"
    return f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def _temperature_on(p: Any) -> bool:
    return p.dynatemp_range is not None or p.edt_theta is not None or (
        p.temperature is not None and p.temperature != 1)


def _temperature_check(p: Any) -> None:
    if p.dynatemp_range is not None and p.edt_theta is not None:
        raise ValueError("dynatemp_range and edt_theta both set: choose one dynamic temperature")


def _mirostat_on(p: Any) -> bool:
    return p.mirostat is not None or p.mirostat_tau is not None


def _f(name: str, doc: str, low: float, high: float, *, lo_open: bool = False,
       hi_open: bool = False, hint: str = "", metavar: str = "X", **kw: Any) -> Knob:
    return Knob(name, "float", doc, low, high, lo_open, hi_open, hint, metavar=metavar, **kw)


def _i(name: str, doc: str, low: float, high: float = _INF, *, hint: str = "",
       metavar: str = "N", **kw: Any) -> Knob:
    return Knob(name, "int", doc, low, high, False, math.isinf(high), hint, metavar=metavar,
                **kw)


_MIN_KEEP = ("min_keep",)
_PENALTY_NEEDS = ("history", "penalty_last_n")

#: Every sampler and setting, stages in the default order: logit processors (bias, bans,
#: penalties, DRY) first, then temperature and smoothing, then the filters, then the samplers
#: that read the final distribution (mirostat) or choose the token (adaptive-p). This is the
#: order of transformers, vLLM and text-generation-webui (temperature before the filters).
SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec(
        "logit_bias", "add a fixed bias to chosen tokens' logits (OpenAI)",
        (Knob("logit_bias", "token_bias", "token id -> bias in [-100, 100] added to its logit",
              -100, 100, hint="-100 all but bans a token", llama_cpp="logit_bias",
              vllm="logit_bias", metavar="ID=BIAS"),),
        build="penalties:build_logit_bias", local=False),
    SamplerSpec(
        "bad_words", "words or phrases that can never be produced (vLLM)",
        (Knob("bad_words", "strings", "words or phrases never produced, with and without a "
              "leading space", vllm="bad_words", metavar="WORD"),),
        impl="penalties:BadWords", needs=("history", "vocab")),
    SamplerSpec(
        "min_tokens", "end-of-sequence and stop strings cannot end a row before N tokens (vLLM)",
        (_i("min_tokens", "no end of sequence or stop string before this many tokens", 0,
            hint="0 = no minimum", vllm="min_tokens", neutral=0),),
        impl="penalties:MinTokens", needs=("history", "vocab")),
    SamplerSpec(
        "repetition_penalty", "CTRL penalty: seen logits / r if > 0 else * r",
        (_f("repetition_penalty", "divide positive / multiply negative logits of seen tokens",
            0, _INF, lo_open=True, hi_open=True, hint="1 = unchanged, typical 1.05-1.3",
            neutral=1.0, arg="penalty", llama_cpp="repeat_penalty",
            llama_cpp_off=1.0, vllm="repetition_penalty",
            wire_off={"repetition_penalty": 1.0, "repeat_penalty": 1.0}, metavar="R"),),
        impl="penalties:RepetitionPenalty", needs=_PENALTY_NEEDS, llama_cpp="penalties"),
    SamplerSpec(
        "frequency_penalty", "OpenAI frequency penalty: logit -= f * count",
        (_f("frequency_penalty", "subtract F * count of each seen token", -2, 2,
            hint="as in the OpenAI API", neutral=0.0, arg="penalty",
            llama_cpp="frequency_penalty", llama_cpp_off=0.0, vllm="frequency_penalty",
            wire_off={"frequency_penalty": 0.0}, metavar="F"),),
        impl="penalties:FrequencyPenalty", needs=_PENALTY_NEEDS, llama_cpp="penalties"),
    SamplerSpec(
        "presence_penalty", "OpenAI presence penalty: logit -= p once per seen token",
        (_f("presence_penalty", "subtract P from every seen token", -2, 2,
            hint="as in the OpenAI API", neutral=0.0, arg="penalty",
            llama_cpp="presence_penalty", llama_cpp_off=0.0, vllm="presence_penalty",
            wire_off={"presence_penalty": 0.0}, metavar="P"),),
        impl="penalties:PresencePenalty", needs=_PENALTY_NEEDS, llama_cpp="penalties"),
    SamplerSpec(
        "dry", "DRY: penalise tokens that would extend a repeat of earlier text (llama.cpp)",
        (_f("dry_multiplier", "DRY strength: penalty = M * base^(L - allowed length)", 0, _INF,
            hi_open=True, hint="0 = no penalty, typical 0.8", neutral=0.0, arg="multiplier",
            llama_cpp="dry_multiplier", llama_cpp_off=0.0, metavar="M"),
         _f("dry_base", "DRY growth per token past the allowed length", 1, _INF, hi_open=True,
            hint="typical 1.75", default=1.75, neutral=1.75, arg="base",
            llama_cpp="dry_base", metavar="B"),
         _i("dry_allowed_length", "DRY: repeats up to this long go unpenalised", 1,
            hint="typical 2", default=2, neutral=2, arg="allowed_length",
            llama_cpp="dry_allowed_length"),
         _i("dry_penalty_last_n", "DRY: how many recent tokens to search (-1 = all)", -1,
            hint="-1 = whole context", default=-1, neutral=-1, arg="penalty_last_n",
            llama_cpp="dry_penalty_last_n"),
         Knob("dry_sequence_breakers", "strings", "DRY: text that ends a repeat",
              default=("\n", ":", "\"", "*"), neutral=(), arg="sequence_breakers",
              llama_cpp="dry_sequence_breakers", metavar="TEXT")),
        impl="dry:DRY", needs=("history", "vocab"), llama_cpp="dry"),
    SamplerSpec(
        "temperature", "divide logits by T (0 = greedy), or a dynamic T from the entropy",
        (_f("temperature", "0 = greedy, 1 = unchanged, inf = uniform", 0, _INF,
            hint="0 = greedy, 1 = unchanged, inf = uniform", neutral=1.0, llama_cpp="temperature",
            vllm="temperature", metavar="T"),
         _f("dynatemp_range", "llama.cpp dynamic temperature: T in [T-R, T+R] by entropy", 0,
            _INF, hi_open=True, hint="typical 0.5-1.5", requires="", llama_cpp="dynatemp_range",
            llama_cpp_off=0.0,
            vllm="dynatemp_range", metavar="R"),
         _f("dynatemp_exponent", "dynatemp curve exponent (default 1 = linear)", 0, _INF,
            lo_open=False, hi_open=True, hint="1 = linear", default=1.0,
            requires="dynatemp_range", llama_cpp="dynatemp_exponent",
            vllm="dynatemp_exponent"),
         _f("edt_theta", "EDT dynamic temperature T = T0 * N^(THETA / entropy)", 0, _INF,
            hi_open=True, hint="typical 0.5-1.5", requires="", metavar="THETA"),
         _f("edt_n", "EDT base N in (0, 1] (default 0.8)", 0, 1, lo_open=True,
            hint="the paper uses 0.8", default=0.8, requires="edt_theta", metavar="N")),
        build="build:build_temperature", local=True, is_on=_temperature_on,
        check=_temperature_check, llama_cpp="temperature"),
    SamplerSpec(
        "smoothing", "quadratic smoothing (text-generation-webui): logits bent around the top",
        (_f("smoothing_factor", "quadratic smoothing strength (0 = off)", 0, _INF,
            hi_open=True, hint="typical 0.2-0.5", neutral=0.0, arg="factor", metavar="F"),
         _f("smoothing_curve", "smoothing curve (1 = plain quadratic)", 1, _INF,
            hi_open=True, hint="1 = quadratic, typical 1-4", default=1.0, neutral=1.0,
            arg="curve", metavar="C")),
        impl="smoothing:QuadraticSmoothing", local=True),
    SamplerSpec(
        "top_n_sigma", "keep logits >= max - n * std(logits) (Tang et al. 2024)",
        (_f("top_n_sigma", "keep logits >= max - N * std(logits), N >= 0", 0, _INF,
            hint="typical 1-2", neutral=_INF, arg="n", llama_cpp="top_n_sigma", llama_cpp_off=-1.0,
            vllm="top_n_sigma", metavar="N"),),
        impl="truncation:TopNSigma", needs=_MIN_KEEP, local=True, llama_cpp="top_n_sigma"),
    SamplerSpec(
        "top_k", "keep the k most likely tokens",
        (_i("top_k", "keep the K most likely tokens, K >= 1", 1,
            hint="k > vocabulary keeps all", arg="k", llama_cpp="top_k",
            llama_cpp_off=0, vllm="top_k",
            wire_off={"top_k": 0}, metavar="K"),),
        build="build:build_top_k", local=True, llama_cpp="top_k"),
    SamplerSpec(
        "top_p", "nucleus: the smallest set of tokens holding mass >= p",
        (_f("top_p", "nucleus: keep the smallest set of tokens holding mass >= P, in (0, 1]",
            0, 1, lo_open=True, hint="typical 0.8-0.95; 1 keeps everything", neutral=1.0,
            arg="p", llama_cpp="top_p", llama_cpp_off=1.0, vllm="top_p", wire_off={"top_p": 1.0},
            metavar="P"),),
        impl="truncation:TopP", needs=_MIN_KEEP, local=True, llama_cpp="top_p"),
    SamplerSpec(
        "typical_p", "locally typical sampling (Meister et al. 2022)",
        (_f("typical_p", "locally typical set holding mass P, in (0, 1]", 0, 1, lo_open=True,
            hint="typical 0.2-0.95", neutral=1.0, llama_cpp="typical_p",
            llama_cpp_off=1.0, vllm="typical_p",
            wire_off={"typical_p": 1.0}, metavar="P"),),
        impl="truncation:Typical", needs=_MIN_KEEP, local=True, llama_cpp="typ_p"),
    SamplerSpec(
        "tfs", "tail-free sampling: cut where the second derivative of sorted p flattens",
        (_f("tfs_z", "tail-free sampling: keep the head holding Z of the curvature", 0, 1,
            lo_open=True, hint="1 = off, typical 0.9-0.95", neutral=1.0, arg="z",
            llama_cpp="tfs_z", wire_off={"tfs_z": 1.0}, metavar="Z"),),
        impl="tail_free:TailFree", needs=_MIN_KEEP, local=True),
    SamplerSpec(
        "top_a", "remove tokens with p < a * p_max^2 (KoboldCpp, text-generation-webui)",
        (_f("top_a", "remove tokens with p < A * p_max^2", 0, 1, hint="typical 0.1-0.2",
            neutral=0.0, arg="a", metavar="A"),),
        impl="top_a:TopA", needs=_MIN_KEEP, local=True),
    SamplerSpec(
        "epsilon", "epsilon sampling: keep p >= epsilon (Hewitt et al. 2022)",
        (_f("epsilon", "keep tokens with p >= E (e.g. 3e-4)", 0, 1,
            hint="typical 3e-4 to 9e-4", neutral=0.0, vllm="epsilon_cutoff", metavar="E"),),
        impl="truncation:Epsilon", needs=_MIN_KEEP, local=True),
    SamplerSpec(
        "eta", "eta sampling: keep p >= min(eta, sqrt(eta) exp(-H)) (Hewitt et al. 2022)",
        (_f("eta", "keep p >= min(E, sqrt(E) * exp(-entropy)) (e.g. 6e-4)", 0, 1,
            hint="typical 3e-4 to 2e-3", neutral=0.0, vllm="eta_cutoff", metavar="E"),),
        impl="truncation:Eta", needs=_MIN_KEEP, local=True),
    SamplerSpec(
        "min_p", "keep tokens with p >= min_p * p_max",
        (_f("min_p", "keep tokens with p >= P * p_max, in [0, 1]", 0, 1,
            hint="typical 0.02-0.1", neutral=0.0, llama_cpp="min_p",
            llama_cpp_off=0.0, vllm="min_p",
            wire_off={"min_p": 0.0}, metavar="P"),),
        impl="truncation:MinP", needs=_MIN_KEEP, local=True, llama_cpp="min_p"),
    SamplerSpec(
        "xtc", "exclude top choices: drop every token >= threshold except the least of them",
        (_f("xtc_threshold", "XTC: drop every token with p >= P except the least of them",
            0, 1, hint="typical 0.1; above 0.5 never fires", neutral=1.0, arg="threshold",
            llama_cpp="xtc_threshold", vllm="xtc_threshold", metavar="P"),
         _f("xtc_probability", "chance XTC fires on a step (default 1)", 0, 1,
            hint="typical 0.5", default=1.0, neutral=0.0, arg="probability",
            llama_cpp="xtc_probability", llama_cpp_off=0.0, vllm="xtc_probability", metavar="P")),
        impl="xtc:XTC", needs=("generators", "min_keep"), local=True, llama_cpp="xtc"),
    SamplerSpec(
        "mirostat", "mirostat v1 or v2: hold the surprise of each token near a target",
        (_f("mirostat_tau", "mirostat target surprise in bits (e.g. 5)", 0, _INF,
            lo_open=True, hi_open=True, hint="target surprise in bits, typical 3-5",
            default=5.0, llama_cpp="mirostat_tau", vllm="mirostat_tau",
            metavar="BITS"),
         Knob("mirostat", "int", "mirostat version: 1 or 2 (default 2 when tau is set)", 1, 2,
              hint="1 = v1 (m = 100), 2 = v2", default=2, requires="", llama_cpp="mirostat",
              llama_cpp_off=0,
              wire_off={"mirostat_mode": 0}, metavar="V"),
         _f("mirostat_eta", "mirostat learning rate (default 0.1)", 0, 1, lo_open=True,
            hint="learning rate, typical 0.1", default=0.1, llama_cpp="mirostat_eta",
            vllm="mirostat_eta", metavar="RATE")),
        build="build:build_mirostat", stateful=True, local=True, is_on=_mirostat_on),
    SamplerSpec(
        "adaptive_p", "adaptive-p (llama.cpp): choose tokens near a target probability",
        (_f("adaptive_target", "adaptive-p: the probability to aim for", 0, 1,
            hint="typical 0.3-0.7", neutral=-1.0, arg="target", llama_cpp="adaptive_target",
            llama_cpp_off=-1.0,
            metavar="P"),
         _f("adaptive_decay", "adaptive-p: decay of its running average (history ~ 1/(1-D))",
            0, 0.99, hint="default 0.9", default=0.9, neutral=0.9, arg="decay",
            llama_cpp="adaptive_decay", metavar="D")),
        impl="adaptive_p:AdaptiveP", needs=("generators",), stateful=True, ends_chain=True,
        local=True, llama_cpp="adaptive_p"),
    # Settings: not stages of the chain.
    SamplerSpec(
        "min_keep", "every truncation sampler keeps at least this many tokens",
        (_i("min_keep", "every truncation sampler keeps at least N tokens (default 1)", 0,
            hint="0 and 1 both keep one token", llama_cpp="min_keep"),),
        in_order=False),
    SamplerSpec(
        "penalty_last_n", "the three penalties look at the last N tokens of the history only "
        "(llama.cpp's repeat_last_n, KoboldCpp's rep_pen_range, text-generation-webui's "
        "repetition_penalty_range)",
        (_i("penalty_last_n", "repetition, frequency and presence penalties count the last N "
            "tokens (prompt + generated) only; -1 = all, 0 = penalties off", -1,
            hint="None or -1 = the whole history, llama.cpp's default 64", neutral=-1,
            llama_cpp="repeat_last_n"),),
        in_order=False),
    SamplerSpec(
        "logprob_token_ids", "report these tokens' log-probabilities at every step (vLLM)",
        (Knob("logprob_token_ids", "token_ids", "token ids whose log-probability every step "
              "reports, whatever their rank", vllm="logprob_token_ids", metavar="ID"),),
        in_order=False),
)

BY_NAME: dict[str, SamplerSpec] = {s.name: s for s in SAMPLERS}
#: Every knob by name.
KNOBS: dict[str, Knob] = {k.name: k for s in SAMPLERS for k in s.knobs}
#: knob name -> the spec it belongs to.
SPEC_OF: dict[str, SamplerSpec] = {k.name: s for s in SAMPLERS for k in s.knobs}
#: The default order of the stages.
DEFAULT_ORDER: tuple[str, ...] = tuple(s.name for s in SAMPLERS if s.in_order)

#: Settings people start from (the playground's presets, ``--preset``). Values are knobs.
PRESETS: dict[str, dict[str, Any]] = {
    "temperature only": {"temperature": 1.0},
    "llama.cpp defaults": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
                           "temperature_last": True},
    "Ollama defaults": {"temperature": 0.8, "top_k": 40, "top_p": 0.9,
                        "repetition_penalty": 1.1},
    "min-p 0.1 at T = 1.5": {"temperature": 1.5, "min_p": 0.1},
}


def catalogue() -> dict[str, Any]:
    """The registry as JSON (``GET /v1/samplers``)."""
    return {"samplers": [s.to_dict() for s in SAMPLERS], "default_order": list(DEFAULT_ORDER),
            "presets": PRESETS}


def markdown_table() -> str:
    """The registry as the Markdown table in ``docs/samplers.md`` (a test holds the two equal).

    One row per knob: the sampler (stage) it belongs to, its range, the value that means
    off, its default when its sampler is on, and the names llama.cpp and vLLM use.
    """
    lines = [
        "| sampler | field | range | off (also a no-op) | default when on | llama.cpp | vLLM | "
        "what it does |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for spec in SAMPLERS:
        for n, knob in enumerate(spec.knobs):
            where = spec.name if spec.in_order else f"{spec.name} (setting)"
            span = knob.interval if knob.kind in ("float", "int") else knob.kind
            default = "" if knob.default is None else _md(repr(knob.default))
            off = "`None`" if n or knob.neutral is None else f"`None` ({knob.neutral:g})"
            lines.append(
                f"| {where if n == 0 else ''} | `{knob.name}` | {span} | {off} | {default} | "
                f"{_name(knob.llama_cpp)} | {_name(knob.vllm)} | {_md(knob.doc)} |")
    return "\n".join(lines) + "\n"


def _name(name: str | None) -> str:
    return "–" if name is None else f"`{name}`"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")
