"""The sampler chain: temperature and every sampler people use with it, in a user-given order,
batched with per-row parameters and seeds.

- :class:`SamplingParams`: every knob (``None`` = off) and ``order``.
- :func:`probabilities`: the final distribution after the chain, for ``(V,)`` or ``(B, V)``.
- :class:`BatchSampler`: ``process`` -> ``choose`` -> ``accept`` for a batch, ``select`` to
  drop finished rows.
- One class per sampler (``Temperature``, ``TopK``, ...): ``apply((B, V) logits)``.

``SamplingParams`` needs only pydantic; everything else needs torch and is imported on first
use, so ``import tempscope`` and ``tempscope softmax`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tempscope.sampling.params import DEFAULT_ORDER, SAMPLER_NAMES, SamplingParams

if TYPE_CHECKING:
    from tempscope.sampling.base import Sampler
    from tempscope.sampling.batch import BatchSampler, probabilities
    from tempscope.sampling.choosers import draw, greedy, inverse_cdf
    from tempscope.sampling.mirostat import MirostatV2
    from tempscope.sampling.penalties import (
        FrequencyPenalty,
        LogitBias,
        PresencePenalty,
        RepetitionPenalty,
    )
    from tempscope.sampling.temperature import (
        DynamicTemperature,
        EntropyTemperature,
        Temperature,
        scale,
    )
    from tempscope.sampling.truncation import Epsilon, Eta, MinP, TopK, TopNSigma, TopP, Typical
    from tempscope.sampling.xtc import XTC

_LAZY: dict[str, str] = {
    "Sampler": "base",
    "BatchSampler": "batch",
    "probabilities": "batch",
    "draw": "choosers",
    "greedy": "choosers",
    "inverse_cdf": "choosers",
    "MirostatV2": "mirostat",
    "FrequencyPenalty": "penalties",
    "LogitBias": "penalties",
    "PresencePenalty": "penalties",
    "RepetitionPenalty": "penalties",
    "DynamicTemperature": "temperature",
    "EntropyTemperature": "temperature",
    "Temperature": "temperature",
    "scale": "temperature",
    "Epsilon": "truncation",
    "Eta": "truncation",
    "MinP": "truncation",
    "TopK": "truncation",
    "TopNSigma": "truncation",
    "TopP": "truncation",
    "Typical": "truncation",
    "XTC": "xtc",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tempscope.sampling.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tempscope.sampling' has no attribute {name!r}")


__all__ = [
    "DEFAULT_ORDER",
    "SAMPLER_NAMES",
    "XTC",
    "BatchSampler",
    "DynamicTemperature",
    "EntropyTemperature",
    "Epsilon",
    "Eta",
    "FrequencyPenalty",
    "LogitBias",
    "MinP",
    "MirostatV2",
    "PresencePenalty",
    "RepetitionPenalty",
    "Sampler",
    "SamplingParams",
    "Temperature",
    "TopK",
    "TopNSigma",
    "TopP",
    "Typical",
    "draw",
    "greedy",
    "inverse_cdf",
    "probabilities",
    "scale",
]
