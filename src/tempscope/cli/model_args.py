"""Model options every command that loads a model shares: ``-m/--model``, ``--device``,
``--dtype``, ``--engine``, and loading with a one-line notice instead of progress bars."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend


def add_model_arguments(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """Add ``-m/--model`` (or a positional ``MODEL`` too), ``--device`` and ``--dtype``."""
    model_help = ("hub name (gpt2), local folder or .gguf file; default: the embedded "
                  "SmolLM2-135M-Instruct")
    if positional:
        p.add_argument("model_pos", nargs="?", metavar="MODEL", help=model_help)
    p.add_argument("-m", "--model", default=None, metavar="MODEL", help=model_help)
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or mps; default: CUDA, else MPS, else CPU")
    p.add_argument("--dtype", default=None,
                   help="float32 (default), bfloat16 or float16 (torch engine)")
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "llama.cpp"],
                   help="llama.cpp: GGUF files as they are (fast, small); torch: transformers "
                   "(any model, CUDA/MPS); auto (default): llama.cpp for .gguf files and the "
                   "embedded model when llama-cpp-python is installed, else torch")
    p.add_argument("--reproducible", default=True, action=argparse.BooleanOptionalAction,
                   help="every row computed exactly as it would be alone, so a seed gives the "
                   "same tokens in any batch, after a resume and under server load (default); "
                   "--no-reproducible lets the torch engine batch rows into shared matrix "
                   "products (faster for many rows; llama.cpp is reproducible either way)")


def load_from_args(args: argparse.Namespace) -> Backend:
    """Load the model the arguments name; library log lines go to stderr, progress bars off."""
    positional = getattr(args, "model_pos", None)
    if positional is not None and args.model is not None and positional != args.model:
        raise ValueError(f"two models given ({positional!r} and -m {args.model!r}): give one")
    quiet_loading()
    from tempscope.engine.loader import load_model

    return load_model(positional or args.model, device=args.device, dtype=args.dtype,
                      engine=args.engine, reproducible=args.reproducible)


def quiet_loading() -> None:
    """Send tempscope's INFO lines (e.g. the one-time GGUF conversion) to stderr and silence
    transformers' progress bars and advisory warnings."""
    logger = logging.getLogger("tempscope")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tempscope: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    # Environment, not an import: transformers reads these when (and if) it is imported, and
    # the llama.cpp engine never imports it (~0.6 s saved on every command).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        hf_logging: Any = transformers_logging  # its functions are untyped
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
