"""Options that send ``next``, ``generate`` and ``sweep`` to a remote OpenAI-compatible server
(vLLM, llama.cpp's server, ``tempscope serve``) instead of the local model, and the remote
versions of those commands' output.

Example: ``tempscope sweep --endpoint http://127.0.0.1:8000/v1 --limit 4 --out runs/remote``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tempscope.cli.common import print_table

if TYPE_CHECKING:
    from tempscope.remote import RemoteClient
    from tempscope.remote_engine import RemoteNextToken, RemoteSample


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


def print_next(result: RemoteNextToken, *, as_json: bool) -> None:
    """What ``tempscope next --endpoint`` prints: the local layout, marked as top-N."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    from tempscope.nexttoken import visible

    kind = "raw" if result.logprobs_raw else "processed"
    scope = "every token's" if result.exact else f"top-{result.top_n}"
    print(f"{result.model} at {result.endpoint}: one max_tokens=1 request, "
          f"{scope} {kind} logprobs, seed {result.seed}")
    print(f"note: {result.note}")
    if result.sent:
        print("samplers switched off on the server: "
              + ", ".join(f"{k}={v:g}" for k, v in result.sent.items()))
    print()
    for r in result.results:
        if result.exact:
            label = f"exact over all {result.top_n:,} tokens"
        else:
            label = "exact at T = 1" if r.exact else f"top-{result.top_n} renormalised"
        print(f"LLM Temperature: {r.temperature:g} → {result.prompt}{r.tokens[r.sampled]}")
        header = ["rank", "token", "log p (T=1)", "probability"]
        rows = [[str(i + 1), visible(t), f"{lp:.4f}", f"{p:.5f}"]
                for i, (t, lp, p) in enumerate(zip(r.tokens, r.logprobs, r.probabilities,
                                                   strict=True))]
        if r.processed is not None:  # the server's samplers ran: before and after
            label += f"; processed: {' -> '.join(result.chain or [])} on the server"
            header = ["rank", "token", "log p (T=1)", f"T={r.temperature:g} only", "processed"]
            rows = [[*row, f"{q:.5f}"] for row, q in zip(rows, r.processed, strict=True)]
        print_table(f"T = {r.temperature:g} ({label})", header, rows, highlight=r.sampled)
        if r.kept is not None:
            print(f"{r.kept:,} tokens survive the server's samplers")
        if result.exact:
            print(f"T={r.temperature:g}: entropy {r.entropy:.4f} nats (exact, before the "
                  "samplers)")
        else:
            print(f"T={r.temperature:g}: entropy over the top-{result.top_n} {r.entropy:.4f} "
                  f"nats; outside the top-{result.top_n} at T=1: {result.mass_outside:.5f}")
        print()
    if result.not_derived:
        temps = " ".join(f"{t:g}" for t in result.not_derived)
        print(f"not derived: T = {temps} (the server's logprobs are not raw)")


def generation_json(samples: Sequence[RemoteSample]) -> str:
    """``generate --json`` for remote samples: the local fields plus ``remote``."""
    from tempscope.cli.generate_cmd import sample_dict

    return json.dumps([{**sample_dict(s), "remote": {
        "ignored_settings": s.ignored, "logprobs_raw": s.logprobs_raw,
        "sent_settings": s.sent}} for s in samples],
        indent=2, ensure_ascii=False, default=str)
