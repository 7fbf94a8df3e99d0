"""tempscope: see, measure and control how sampling temperature shapes what a language model
says.

Names that need torch or transformers (models, next-token, generation, samplers) are imported
on first use, so ``import tempscope`` and ``tempscope softmax`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tempscope._compat import install as _install_moved_modules
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

_install_moved_modules()  # the flat layout's module paths (tempscope.generation, ...) still import

if TYPE_CHECKING:
    from tempscope.engine.generator import Generator, LocalGenerator, RemoteGenerator, as_generator
    from tempscope.engine.loader import LoadedModel, ModelFacts, default_device, load_model
    from tempscope.engine.loop import (
        Alternative,
        RowResult,
        RowSpec,
        Sample,
        StepEvent,
        derive_seed,
        generate,
        generate_rows,
    )
    from tempscope.engine.nexttoken import (
        NextTokenResult,
        TemperatureResult,
        TokenRow,
        last_logits,
        next_token,
    )
    from tempscope.engine.remote.client import RemoteClient, RemoteError
    from tempscope.engine.remote.engine import RemoteSample, remote_generate, remote_next_token
    from tempscope.engine.scoring import score_texts
    from tempscope.report.sweep import write_report
    from tempscope.sampling.batch import BatchSampler, probabilities
    from tempscope.study.calibration import Calibration, calibrate
    from tempscope.study.grid import SweepProgress, builtin_prompts, sweep
    from tempscope.study.metrics import bootstrap_ci

_LAZY: dict[str, str] = {
    "Alternative": "engine.loop",
    "BatchSampler": "sampling.batch",
    "Calibration": "study.calibration",
    "Generator": "engine.generator",
    "LoadedModel": "engine.loader",
    "LocalGenerator": "engine.generator",
    "ModelFacts": "engine.loader",
    "NextTokenResult": "engine.nexttoken",
    "RemoteClient": "engine.remote.client",
    "RemoteError": "engine.remote.client",
    "RemoteGenerator": "engine.generator",
    "RemoteSample": "engine.remote.engine",
    "remote_generate": "engine.remote.engine",
    "remote_next_token": "engine.remote.engine",
    "RowResult": "engine.loop",
    "RowSpec": "engine.loop",
    "Sample": "engine.loop",
    "StepEvent": "engine.loop",
    "SweepProgress": "study.grid",
    "TemperatureResult": "engine.nexttoken",
    "TokenRow": "engine.nexttoken",
    "as_generator": "engine.generator",
    "bootstrap_ci": "study.metrics",
    "builtin_prompts": "study.grid",
    "calibrate": "study.calibration",
    "default_device": "engine.loader",
    "derive_seed": "engine.loop",
    "generate": "engine.loop",
    "generate_rows": "engine.loop",
    "last_logits": "engine.nexttoken",
    "load_model": "engine.loader",
    "next_token": "engine.nexttoken",
    "probabilities": "sampling.batch",
    "score_texts": "engine.scoring",
    "sweep": "study.grid",
    "write_report": "report.sweep",
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
