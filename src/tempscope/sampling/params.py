"""``SamplingParams``: every sampler's knob in one typed, validated, frozen model.

Names follow vLLM / OpenAI / llama.cpp. ``None`` means off, everywhere; no value stands for
"disabled". The order the samplers run in is data: ``order`` (a list of names from
:data:`SAMPLER_NAMES`) or :data:`DEFAULT_ORDER`, with ``temperature_last`` as a shortcut.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

#: Every stage a chain can hold, in the default order: logit processors first, then the
#: temperature (fixed, dynatemp or EDT), then the filters, then mirostat (which reads the
#: final, temperature-scaled distribution, as in llama.cpp). This is the order of
#: transformers, vLLM and text-generation-webui (temperature before the filters).
DEFAULT_ORDER: tuple[str, ...] = (
    "logit_bias",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "temperature",
    "top_n_sigma",
    "top_k",
    "top_p",
    "typical_p",
    "epsilon",
    "eta",
    "min_p",
    "xtc",
    "mirostat",
)
SAMPLER_NAMES: frozenset[str] = frozenset(DEFAULT_ORDER)

# stage name -> the parameter that switches it on (temperature is handled on its own)
_SWITCH: dict[str, str] = {
    "logit_bias": "logit_bias",
    "repetition_penalty": "repetition_penalty",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "top_n_sigma": "top_n_sigma",
    "top_k": "top_k",
    "top_p": "top_p",
    "typical_p": "typical_p",
    "epsilon": "epsilon",
    "eta": "eta",
    "min_p": "min_p",
    "xtc": "xtc_threshold",
    "mirostat": "mirostat_tau",
}
# secondary knob -> (its primary, the value it takes when left None while the primary is on)
SECONDARY_DEFAULTS: dict[str, tuple[str, float]] = {
    "dynatemp_exponent": ("dynatemp_range", 1.0),
    "edt_n": ("edt_theta", 0.8),
    "xtc_probability": ("xtc_threshold", 1.0),
    "mirostat_eta": ("mirostat_tau", 0.1),
}

_INF = math.inf
# name -> (low, high, low_open, high_open, practical hint)
_RANGES: dict[str, tuple[float, float, bool, bool, str]] = {
    "temperature": (0, _INF, False, False, "0 = greedy, 1 = unchanged, inf = uniform"),
    "top_p": (0, 1, True, False, "typical 0.8-0.95; 1 keeps everything"),
    "min_p": (0, 1, False, False, "typical 0.02-0.1"),
    "typical_p": (0, 1, True, False, "typical 0.2-0.95"),
    "epsilon": (0, 1, False, False, "typical 3e-4 to 9e-4"),
    "eta": (0, 1, False, False, "typical 3e-4 to 2e-3"),
    "top_n_sigma": (0, _INF, False, True, "typical 1-2"),
    "dynatemp_range": (0, _INF, False, True, "typical 0.5-1.5"),
    "dynatemp_exponent": (0, _INF, False, True, "1 = linear"),
    "edt_theta": (0, _INF, False, True, "typical 0.5-1.5"),
    "edt_n": (0, 1, True, False, "the paper uses 0.8"),
    "xtc_threshold": (0, 1, False, False, "typical 0.1; above 0.5 never fires"),
    "xtc_probability": (0, 1, False, False, "typical 0.5"),
    "mirostat_tau": (0, _INF, True, True, "target surprise in bits, typical 3-5"),
    "mirostat_eta": (0, 1, True, False, "learning rate, typical 0.1"),
    "repetition_penalty": (0, _INF, True, True, "1 = unchanged, typical 1.05-1.3"),
    "frequency_penalty": (-2, 2, False, False, "as in the OpenAI API"),
    "presence_penalty": (-2, 2, False, False, "as in the OpenAI API"),
}


def interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """``(0, 1]``-style text for an interval."""
    hi = "inf" if math.isinf(high) else f"{high:g}"
    return f"{'(' if low_open else '['}{low:g}, {hi}{')' if high_open else ']'}"


def check_value(name: str, value: float) -> float:
    """Raise ``ValueError`` naming ``name``, ``value`` and the valid range if out of range.

    The samplers compute in float32, so the value must stay in range after that cast too:
    ``top_p = 1e-300`` would become 0 and ``repetition_penalty = 1e308`` infinity.

    >>> check_value("top_p", 0.9)
    0.9
    """
    low, high, low_open, high_open, hint = _RANGES[name]

    def inside(x: float) -> bool:
        return not math.isnan(x) and (x > low if low_open else x >= low) and (
            x < high if high_open else x <= high)

    if not inside(value):
        raise ValueError(
            f"{name} must be in {interval(low, high, low_open, high_open)} ({hint}; None = off), "
            f"got {value!r}"
        )
    with np.errstate(over="ignore", under="ignore"):
        as_float32 = float(np.float32(value))
    if not inside(as_float32):
        tiny, huge = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
        raise ValueError(
            f"{name} = {value!r} becomes {as_float32!r} in float32, the precision samplers "
            f"compute in, which is outside {interval(low, high, low_open, high_open)}: use a "
            f"value whose size is between {tiny:.3g} and {huge:.3g}"
        )
    return value


class SamplingParams(BaseModel):
    """How to turn one row's logits into a token: the samplers, their order and the seed.

    ``None`` switches a sampler off. The chain runs the samplers named in ``order`` (default
    :data:`DEFAULT_ORDER`) whose parameters are set, then one chooser: greedy when
    :attr:`is_greedy`, else a seeded draw.

    >>> p = SamplingParams(temperature=0.7, top_p=0.9, min_p=0.05)
    >>> p.chain
    ('temperature', 'top_p', 'min_p')
    >>> SamplingParams(temperature=0.7, min_p=0.05, temperature_last=True).chain
    ('min_p', 'temperature')
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = 1.0  # 0 = greedy, 1 = unchanged, inf = uniform; None = off (1)
    top_k: int | None = None  # keep the k most likely (ties at the cut kept); k > V keeps all
    top_p: float | None = None  # nucleus: smallest set with mass >= p, (0, 1]
    min_p: float | None = None  # keep p >= min_p * p_max, [0, 1]
    typical_p: float | None = None  # locally typical set holding this mass, (0, 1]
    epsilon: float | None = None  # keep p >= epsilon (truncation sampling), [0, 1]
    eta: float | None = None  # keep p >= min(eta, sqrt(eta) * exp(-H)), [0, 1]
    top_n_sigma: float | None = None  # keep logit >= max - n * std(logits), n >= 0
    dynatemp_range: float | None = None  # llama.cpp dynatemp: T in [T - r, T + r] by entropy
    dynatemp_exponent: float | None = None  # shape of that map; None with a range = 1 (linear)
    edt_theta: float | None = None  # EDT: T = T0 * N^(theta / H)
    edt_n: float | None = None  # EDT base N in (0, 1]; None with theta = 0.8 (the paper's)
    xtc_threshold: float | None = None  # XTC: drop every token >= this except the least of them
    xtc_probability: float | None = None  # chance XTC fires on a step; None with threshold = 1
    mirostat_tau: float | None = None  # mirostat v2 target surprise (bits)
    mirostat_eta: float | None = None  # mirostat v2 learning rate; None with tau = 0.1
    repetition_penalty: float | None = None  # CTRL: seen logits / r if > 0 else * r
    frequency_penalty: float | None = None  # logit -= f * count(token in history)
    presence_penalty: float | None = None  # logit -= p * (token in history)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit
    seed: int | None = None  # seeds this row's torch.Generator; None = fresh entropy
    order: list[str] | None = None  # sampler names in the order to run; None = DEFAULT_ORDER
    temperature_last: bool = False  # move temperature to the end (before mirostat)

    if not TYPE_CHECKING:

        def __init__(self, **data: Any) -> None:
            # One line a person can read, not pydantic's multi-line report.
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise ValueError(_one_line(exc)) from None

    @field_validator(*_RANGES)
    @classmethod
    def _in_range(cls, value: float | None, info: Any) -> float | None:
        if value is None:
            return None
        return check_value(info.field_name, float(value))

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(
                f"top_k must be an integer >= 1 (None = off; k > vocabulary keeps all), "
                f"got {value}"
            )
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {value}")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value is None:
            return None
        for token, bias in value.items():
            if token < 0:
                raise ValueError(f"logit_bias token ids must be >= 0, got {token}")
            if not math.isfinite(bias) or not -100 <= bias <= 100:
                raise ValueError(
                    f"logit_bias for token {token} must be in [-100, 100] (-100 all but bans "
                    f"it), got {bias!r}"
                )
        return value

    @field_validator("order")
    @classmethod
    def _order(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if name not in SAMPLER_NAMES:
                raise ValueError(
                    f"order: unknown sampler {name!r}; choose from {', '.join(DEFAULT_ORDER)}"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"order lists a sampler twice: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SamplingParams:
        for secondary, (primary, _) in SECONDARY_DEFAULTS.items():
            if getattr(self, secondary) is not None and getattr(self, primary) is None:
                raise ValueError(f"{secondary} is set but {primary} is not: set {primary} too")
        if self.dynatemp_range is not None and self.edt_theta is not None:
            raise ValueError(
                "dynatemp_range and edt_theta both set: choose one dynamic temperature"
            )
        if self.order is not None:
            for name in self.active_stages():
                if name not in self.order:
                    param = _SWITCH.get(name, "temperature")
                    raise ValueError(
                        f"{param} is set but {name!r} is not in order={self.order}: add it or "
                        f"set {param}=None"
                    )
        return self

    def active_stages(self) -> set[str]:
        """Names of the stages whose parameters are set (temperature 1 alone is a no-op)."""
        on = {name for name, param in _SWITCH.items() if getattr(self, param) is not None}
        if self.dynatemp_range is not None or self.edt_theta is not None or (
            self.temperature is not None and self.temperature != 1
        ):
            on.add("temperature")
        return on

    @property
    def resolved_order(self) -> tuple[str, ...]:
        """The full order, ``temperature_last`` applied (mirostat stays after temperature)."""
        names = [n for n in (self.order or DEFAULT_ORDER) if n != "temperature"]
        at = names.index("mirostat") if self.temperature_last and "mirostat" in names else None
        if self.temperature_last:
            names.insert(len(names) if at is None else at, "temperature")
        else:
            base = list(self.order or DEFAULT_ORDER)
            if "temperature" in base:
                names.insert(base.index("temperature"), "temperature")
        return tuple(names)

    @property
    def chain(self) -> tuple[str, ...]:
        """The stages this row runs, in order (only those switched on)."""
        on = self.active_stages()
        return tuple(n for n in self.resolved_order if n in on)

    @property
    def is_greedy(self) -> bool:
        """True when the chain always ends on one token: T = 0, or top-k = 1 with no XTC."""
        return self.temperature == 0 or (self.top_k == 1 and self.xtc_threshold is None)

    def secondary(self, name: str) -> float:
        """A secondary knob's value, its documented default when left ``None``."""
        value = getattr(self, name)
        return SECONDARY_DEFAULTS[name][1] if value is None else float(value)


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "value_error":
            parts.append(msg)
        else:
            parts.append(f"{loc}: {msg}, got {err.get('input')!r}")
    return "; ".join(parts)
