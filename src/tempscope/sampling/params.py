"""``SamplingParams``: every sampler's knob in one typed, validated, frozen model, made from
the registry (:mod:`tempscope.sampling.registry`).

Names follow vLLM / OpenAI / llama.cpp. ``None`` means off, everywhere; no value stands for
"disabled". The order the samplers run in is data: ``order`` (a list of names from
:data:`SAMPLER_NAMES`) or :data:`DEFAULT_ORDER`, with ``temperature_last`` as a shortcut.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from tempscope.sampling.registry import (
    BY_NAME,
    DEFAULT_ORDER,
    KNOBS,
    SAMPLERS,
    Knob,
    interval,
)

__all__ = ["DEFAULT_ORDER", "KNOB_TYPES", "MAX_NAMED_TOKENS", "SAMPLER_NAMES", "SamplingParams",
           "check_value", "interval"]

SAMPLER_NAMES: frozenset[str] = frozenset(DEFAULT_ORDER)


def check_value(name: str, value: float) -> float:
    """Raise ``ValueError`` naming ``name``, ``value`` and the valid range if out of range.

    The samplers compute in float32, so the value must stay in range after that cast too:
    ``top_p = 1e-300`` would become 0 and ``repetition_penalty = 1e308`` infinity.

    >>> check_value("top_p", 0.9)
    0.9
    """
    knob = KNOBS[name]
    low, high, low_open, high_open, hint = (knob.low, knob.high, knob.low_open,
                                            knob.high_open, knob.hint)

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
    # Rounding to the nearest float32 is fine (0.99 -> 0.99000001); becoming 0 or infinity
    # (1e-300 -> 0, 1e308 -> inf) changes what the value means.
    lost = (as_float32 == 0 and value != 0) or (math.isinf(as_float32) and math.isfinite(value))
    if lost and not inside(as_float32):
        tiny, huge = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
        raise ValueError(
            f"{name} = {value!r} becomes {as_float32!r} in float32, the precision samplers "
            f"compute in, which is outside {interval(low, high, low_open, high_open)}: use a "
            f"value whose size is between {tiny:.3g} and {huge:.3g}"
        )
    return value


class _SamplingBase(BaseModel):
    """What every ``SamplingParams`` has besides the registry's knobs: seed, order and the
    checks that come from the registry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int | None = None  # seeds this row's torch.Generator; None = fresh entropy
    order: list[str] | None = None  # sampler names in the order to run; None = DEFAULT_ORDER
    temperature_last: bool = False  # move temperature after the filters (before mirostat)

    if TYPE_CHECKING:
        # The knobs are fields made from the registry at import time (see below).
        def __getattr__(self, name: str) -> Any: ...
    else:

        def __init__(self, **data: Any) -> None:
            # One line a person can read, not pydantic's multi-line report.
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise ValueError(_one_line(exc)) from None

    @field_validator("*")
    @classmethod
    def _knob(cls, value: Any, info: Any) -> Any:
        knob = KNOBS.get(info.field_name)
        if knob is None or value is None:
            return value
        return _check_knob(knob, value)

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {value}")
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
    def _consistent(self) -> _SamplingBase:
        for spec in SAMPLERS:
            on = spec.on(self)
            for n, knob in enumerate(spec.knobs):
                if getattr(self, knob.name) is None or (n == 0 and knob.requires is None):
                    continue
                if knob.requires is None and not on:
                    switch = spec.knobs[0].name
                    raise ValueError(f"{knob.name} is set but {switch} is not: set {switch} too")
                if knob.requires and getattr(self, knob.requires) is None:
                    raise ValueError(f"{knob.name} is set but {knob.requires} is not: set "
                                     f"{knob.requires} too")
            if on and spec.check is not None:
                spec.check(self)
        if self.order is not None:
            for name in self.active_stages():
                if name not in self.order:
                    param = BY_NAME[name].knobs[0].name
                    raise ValueError(
                        f"{param} is set but {name!r} is not in order={self.order}: add it or "
                        f"set {param}=None"
                    )
        chain = self.chain
        for n, name in enumerate(chain[:-1]):
            if BY_NAME[name].ends_chain:
                raise ValueError(f"{name} chooses the token itself, so it must run last, but "
                                 f"{', '.join(chain[n + 1:])} come after it: reorder")
        return self

    def __repr_args__(self) -> Any:
        # Only what differs from the defaults: SamplingParams(temperature=0.7, top_p=0.9).
        for name, value in super().__repr_args__():
            info = type(self).model_fields.get(name or "")
            if info is None or value != info.default:
                yield name, value

    def active_stages(self) -> set[str]:
        """Names of the stages whose parameters are set (temperature 1 alone is a no-op)."""
        return {spec.name for spec in SAMPLERS if spec.in_order and spec.on(self)}

    @property
    def resolved_order(self) -> tuple[str, ...]:
        """The full order, ``temperature_last`` applied: temperature moves after the filters,
        before the samplers that read the final distribution (mirostat, adaptive-p)."""
        base = list(self.order or DEFAULT_ORDER)
        if not self.temperature_last:
            return tuple(base)
        names = [n for n in base if n != "temperature"]
        finals = [i for i, n in enumerate(names) if n in _AFTER_TEMPERATURE]
        names.insert(finals[0] if finals else len(names), "temperature")
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

    def value(self, name: str) -> Any:
        """A knob's value, its registry default when left ``None`` (secondary knobs)."""
        value = getattr(self, name)
        return KNOBS[name].default if value is None else value

    def secondary(self, name: str) -> float:
        """A numeric secondary knob's value, its documented default when left ``None``."""
        return float(self.value(name))


# Stages that stay after temperature when it moves last (they read the final distribution).
_AFTER_TEMPERATURE = frozenset({"mirostat", "adaptive_p"})

#: The Python type of each kind of knob (None = off).
KNOB_TYPES: dict[str, Any] = {
    "float": float | None,
    "int": int | None,
    "strings": list[str] | None,
    "token_ids": list[int] | None,
    "token_bias": dict[int, float] | None,
}
# The field's value when not given: every knob is off (None) except temperature, which is 1.
_INITIAL: dict[str, Any] = {"temperature": 1.0}


def _check_knob(knob: Knob, value: Any) -> Any:
    """One knob's value, checked: numbers against the range, lists item by item."""
    if knob.kind == "float":
        return check_value(knob.name, float(value))
    if knob.kind == "int":
        low = "" if math.isinf(knob.low) else f" >= {knob.low:g}"
        high = "" if math.isinf(knob.high) else f" and <= {knob.high:g}"
        if not knob.low <= value <= knob.high:
            raise ValueError(f"{knob.name} must be an integer{low}{high} ({knob.hint}; None = "
                             f"off), got {value}")
        return value
    if knob.kind == "strings":
        if any(not item for item in value):
            raise ValueError(f"{knob.name} takes non-empty strings, got {value!r}")
        return value
    if knob.kind == "token_ids":
        bad = [t for t in value if t < 0]
        if bad:
            raise ValueError(f"{knob.name}: token ids must be >= 0, got {bad[0]}")
        if len(value) > MAX_NAMED_TOKENS:
            raise ValueError(f"{knob.name}: at most {MAX_NAMED_TOKENS} token ids, got "
                             f"{len(value)}")
        return value
    for token, bias in value.items():  # token_bias
        if token < 0:
            raise ValueError(f"{knob.name} token ids must be >= 0, got {token}")
        if not math.isfinite(bias) or not knob.low <= bias <= knob.high:
            raise ValueError(
                f"{knob.name} for token {token} must be in {knob.interval} ({knob.hint}), got "
                f"{bias!r}"
            )
    return value


#: The most token ids ``logprob_token_ids`` may name.
MAX_NAMED_TOKENS = 100

if TYPE_CHECKING:

    class SamplingParams(_SamplingBase):
        """How to turn one row's logits into a token (see the runtime docstring)."""

        def __init__(self, **data: Any) -> None: ...

else:
    SamplingParams = create_model(
        "SamplingParams",
        __base__=_SamplingBase,
        __module__=__name__,
        __doc__="""How to turn one row's logits into a token: the samplers, their order and the
    seed.

    One field per knob of the sampler registry (:mod:`tempscope.sampling.registry`);
    ``None`` switches a sampler off. The chain runs the samplers named in ``order`` (default
    :data:`DEFAULT_ORDER`) that are switched on, then one chooser: greedy when
    :attr:`is_greedy`, else a seeded draw.

    >>> p = SamplingParams(temperature=0.7, top_p=0.9, min_p=0.05)
    >>> p.chain
    ('temperature', 'top_p', 'min_p')
    >>> SamplingParams(temperature=0.7, min_p=0.05, temperature_last=True).chain
    ('min_p', 'temperature')
    """,
        **{
            knob.name: (KNOB_TYPES[knob.kind], Field(default=_INITIAL.get(knob.name),
                                                 description=knob.doc))
            for knob in KNOBS.values()
        },
    )


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
