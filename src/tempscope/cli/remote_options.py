"""Which engine a command runs on: the local model (``-m``, :mod:`tempscope.cli.model_args`) or
a remote OpenAI-compatible server (vLLM, llama.cpp's server, ``tempscope serve``) with
``--endpoint``. The choice is made once, here (:func:`generator_from_args`); the commands then
talk to a :class:`~tempscope.engine.generator.Generator` and print what it reports.

Example: ``tempscope sweep --endpoint http://127.0.0.1:8000/v1 --limit 4 --out runs/remote``
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tempscope.engine.generator import Generator, SettingsCheck
    from tempscope.engine.remote.client import RemoteClient


def add_remote_options(p: argparse.ArgumentParser) -> None:
    """Add ``--endpoint``, ``--api-key``, ``--remote-model``, ``--concurrency`` and
    ``--logprobs-raw``."""
    g = p.add_argument_group("remote engine (any OpenAI-compatible server)")
    g.add_argument("--endpoint", metavar="URL", default=None,
                   help="run on this server instead of a local model, e.g. "
                   "http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL when --api-key or "
                   "--remote-model is given)")
    g.add_argument("--api-key", metavar="KEY", default=None,
                   help="bearer token for the server (default: $OPENAI_API_KEY)")
    g.add_argument("--remote-model", metavar="NAME", default=None,
                   help="model name to request (default: the first the server lists)")
    g.add_argument("--concurrency", type=int, default=8, metavar="C",
                   help="most requests in flight at once (default 8)")
    g.add_argument("--logprobs-raw", action="store_true",
                   help="assert the server returns raw logprobs (T = 1, no samplers), e.g. "
                   "vLLM started with --logprobs-mode raw_logprobs; tempscope's own server "
                   "is asked for them per request")


def client_from_args(args: argparse.Namespace) -> RemoteClient | None:
    """The client the options ask for, or ``None`` to run locally."""
    endpoint = getattr(args, "endpoint", None)
    if endpoint is None and not (getattr(args, "remote_model", None)
                                 and os.environ.get("OPENAI_BASE_URL")):
        return None
    if getattr(args, "model", None) is not None or getattr(args, "model_pos", None):
        raise ValueError("give either a local model (-m) or --endpoint, not both; use "
                         "--remote-model to pick the server's model")
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {args.concurrency}")
    from tempscope.engine.remote.client import RemoteClient

    return RemoteClient(endpoint, api_key=args.api_key, model=args.remote_model,
                        concurrency=args.concurrency, logprobs_raw=args.logprobs_raw)


def generator_from_args(args: argparse.Namespace) -> Generator:
    """The engine the options ask for: a server with ``--endpoint`` (``--tokenizer``, where the
    command has it, names the local model that measures text in tokens for it), else the
    local model the model options name, loaded."""
    from tempscope.engine.generator import LocalGenerator, RemoteGenerator

    client = client_from_args(args)
    tokenizer = getattr(args, "tokenizer", None)
    if client is not None:
        return RemoteGenerator(client, tokenizer=tokenizer)
    if tokenizer is not None:
        raise ValueError("--tokenizer is for --endpoint runs; a local model cuts the "
                         "passages with its own tokens")
    from tempscope.cli.model_args import load_from_args

    return LocalGenerator(load_from_args(args))


def warn_settings(check: SettingsCheck, *, raw_note: bool = False) -> None:
    """On stderr: one line naming the sampler settings the engine will not apply, and with
    ``raw_note`` one saying when its log-probabilities are not raw."""
    if check.ignored:
        first = next((check.refused[k] for k in check.ignored if check.refused.get(k)), "")
        why = f" (server said: {first[:160]})" if first else ""
        print(f"tempscope: warning: the server refused {', '.join(check.ignored)}; these "
              f"settings were NOT applied{why}", file=sys.stderr)
    if raw_note and not check.logprobs_raw:
        print("tempscope: note: the server's logprobs are processed, not raw: mean log p at "
              "T = 1 cannot be shown (NaN); pass --logprobs-raw if they are raw",
              file=sys.stderr)


@contextmanager
def engine_run(gen: Generator, out: object = None) -> Iterator[Generator]:
    """Around a command's work on ``gen``: a server fault that ends a resumable run (``out``:
    its directory) says the samples so far are saved and a rerun resumes; a run that ends well
    reports what the transport went through (retries). The generator is closed either way."""
    from tempscope.engine.remote.client import RemoteError

    try:
        yield gen
    except RemoteError as exc:
        if out is None:
            raise
        raise RemoteError(f"{exc}; the samples received so far are saved in {out}: rerun "
                          "the same command to resume") from None
    else:
        note = gen.stats()
        if note is not None:
            print(f"tempscope: {note}", file=sys.stderr)
    finally:
        gen.close()
