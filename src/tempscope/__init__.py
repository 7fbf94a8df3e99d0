"""tempscope: see, measure and control how sampling temperature shapes what a language model
says."""

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
from tempscope.table import TokenDistribution, temperature_table

__version__ = "0.1.0"

__all__ = [
    "ModelLoadError",
    "TempscopeError",
    "TokenDistribution",
    "__version__",
    "check_temperature",
    "effective_vocab",
    "entropy",
    "log_softmax",
    "perplexity",
    "softmax",
    "temperature_table",
    "top_p_mask",
    "top_p_size",
    "top_probability",
]
