"""Options that send ``next``, ``generate``, ``sweep`` and ``study`` to a remote
OpenAI-compatible server (vLLM, llama.cpp's server, ``tempscope serve``) instead of the local
model, and the warnings a remote run adds.

Example: ``tempscope sweep --endpoint http://127.0.0.1:8000/v1 --limit 4 --out runs/remote``
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tempscope.remote import RemoteClient


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
    from tempscope.remote import RemoteClient

    return RemoteClient(endpoint, api_key=args.api_key, model=args.remote_model,
                        concurrency=args.concurrency, logprobs_raw=args.logprobs_raw)


def warn_ignored(ignored: Sequence[str], refused: dict[str, str] | None = None) -> None:
    """One line on stderr naming the sampler settings the server refused."""
    if not ignored:
        return
    why = ""
    if refused:
        first = next((refused[k] for k in ignored if refused.get(k)), "")
        why = f" (server said: {first[:160]})" if first else ""
    print(f"tempscope: warning: the server refused {', '.join(ignored)}; these settings were "
          f"NOT applied{why}", file=sys.stderr)


def warn_stats(client: RemoteClient) -> None:
    """One line on stderr when requests had to be retried."""
    s = client.stats
    if s.retries:
        print(f"tempscope: {s.requests} requests, {s.retries} retried "
              f"({', '.join(sorted(set(s.retried_statuses)))})", file=sys.stderr)


@contextmanager
def resumable(client: RemoteClient | None, out: object) -> Iterator[None]:
    """Around a resumable run (sweep, study): a server fault that ends it says the samples so
    far are saved and a rerun resumes; a run that ends well reports the client's retries and
    closes it."""
    from tempscope.remote import RemoteError

    try:
        yield
    except RemoteError as exc:
        raise RemoteError(f"{exc}; the samples received so far are saved in {out}: rerun "
                          "the same command to resume") from None
    if client is not None:
        warn_stats(client)
        client.close()
