"""tempscope: see, measure and control how sampling temperature shapes what a language model
says.

Names that need torch or transformers (models, next-token, generation, samplers) are imported
on first use, so ``import tempscope`` and ``tempscope softmax`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tempscope._version import __version__
from tempscope.distribution import (
    check_temperature,
    effective_vocab,
    entropy,
    log_softmax,
    perplexity,
    softmax,
    top_p_mask,
    top_p_size,
    top_probability,
)
from tempscope.errors import ModelLoadError, TempscopeError
from tempscope.sampling.params import DEFAULT_ORDER, SamplingParams
from tempscope.table import TokenDistribution, temperature_table

if TYPE_CHECKING:
    from tempscope.calibration import Calibration, calibrate
    from tempscope.generation import (
        Alternative,
        RowResult,
        RowSpec,
        Sample,
        StepEvent,
        derive_seed,
        generate,
        generate_rows,
    )
    from tempscope.generator import Generator, LocalGenerator, RemoteGenerator, as_generator
    from tempscope.metrics import bootstrap_ci, score_texts
    from tempscope.models import LoadedModel, ModelFacts, default_device, load_model
    from tempscope.nexttoken import (
        NextTokenResult,
        TemperatureResult,
        TokenRow,
        last_logits,
        next_token,
    )
    from tempscope.remote import RemoteClient, RemoteError
    from tempscope.remote_engine import RemoteSample, remote_generate, remote_next_token
    from tempscope.report import write_report
    from tempscope.sampling.batch import BatchSampler, probabilities
    from tempscope.study import SweepProgress, builtin_prompts, sweep

_LAZY: dict[str, str] = {
    "Alternative": "generation",
    "BatchSampler": "sampling.batch",
    "Calibration": "calibration",
    "Generator": "generator",
    "LoadedModel": "models",
    "LocalGenerator": "generator",
    "ModelFacts": "models",
    "NextTokenResult": "nexttoken",
    "RemoteClient": "remote",
    "RemoteError": "remote",
    "RemoteGenerator": "generator",
    "RemoteSample": "remote_engine",
    "remote_generate": "remote_engine",
    "remote_next_token": "remote_engine",
    "RowResult": "generation",
    "RowSpec": "generation",
    "Sample": "generation",
    "StepEvent": "generation",
    "SweepProgress": "study",
    "TemperatureResult": "nexttoken",
    "TokenRow": "nexttoken",
    "as_generator": "generator",
    "bootstrap_ci": "metrics",
    "builtin_prompts": "study",
    "calibrate": "calibration",
    "default_device": "models",
    "derive_seed": "generation",
    "generate": "generation",
    "generate_rows": "generation",
    "last_logits": "nexttoken",
    "load_model": "models",
    "next_token": "nexttoken",
    "probabilities": "sampling.batch",
    "score_texts": "metrics",
    "sweep": "study",
    "write_report": "report",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tempscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tempscope.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Alternative",
    "BatchSampler",
    "Calibration",
    "DEFAULT_ORDER",
    "Generator",
    "LoadedModel",
    "LocalGenerator",
    "ModelFacts",
    "ModelLoadError",
    "NextTokenResult",
    "RemoteClient",
    "RemoteError",
    "RemoteGenerator",
    "RemoteSample",
    "RowResult",
    "RowSpec",
    "Sample",
    "SamplingParams",
    "StepEvent",
    "SweepProgress",
    "TemperatureResult",
    "TempscopeError",
    "TokenDistribution",
    "TokenRow",
    "__version__",
    "as_generator",
    "bootstrap_ci",
    "builtin_prompts",
    "calibrate",
    "check_temperature",
    "default_device",
    "derive_seed",
    "effective_vocab",
    "entropy",
    "generate",
    "generate_rows",
    "last_logits",
    "load_model",
    "log_softmax",
    "next_token",
    "perplexity",
    "probabilities",
    "remote_generate",
    "remote_next_token",
    "score_texts",
    "softmax",
    "sweep",
    "temperature_table",
    "top_p_mask",
    "top_p_size",
    "top_probability",
    "write_report",
]
