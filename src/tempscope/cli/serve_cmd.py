"""``tempscope serve``: the OpenAI-compatible API and the playground, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from tempscope.cli.model_args import add_model_arguments, load_from_args
from tempscope.server.limits import ServerLimits


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an OpenAI-compatible API and the temperature playground",
        description="Serve a model over HTTP: /v1/completions and /v1/chat/completions "
        "(OpenAI shapes, any sampler), /v1/distribution, and a playground page at /. "
        "Example: tempscope serve --port 8000, then open http://127.0.0.1:8000",
    )
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--api-key", default=os.environ.get("TEMPSCOPE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes "
                   "(default: $TEMPSCOPE_API_KEY, else no key)")
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send and /v1/models lists")
    d = ServerLimits()
    p.add_argument("--max-tokens", type=int, default=None,
                   help=f"cap on max_tokens per request (default {d.max_tokens}); a request "
                   "that sends none gets the smaller of its default and this")
    p.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens, metavar="N",
                   help=f"most tokens in one prompt (default {d.max_prompt_tokens})")
    p.add_argument("--max-request-prompt-tokens", type=int,
                   default=d.max_request_prompt_tokens, metavar="N",
                   help="most prompt tokens of all prompts of one request (default "
                   f"{d.max_request_prompt_tokens})")
    p.add_argument("--max-batch-prompt-tokens", type=int, default=d.max_batch_prompt_tokens,
                   metavar="N", help="most prompt tokens admitted and still waiting to be "
                   "prefilled; a request over it alone runs when no other prompt waits "
                   f"(default {d.max_batch_prompt_tokens})")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                   metavar="SECONDS", help="a connection whose request headers are not "
                   f"complete after this long is closed (default {d.header_timeout_s:g})")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="SECONDS",
                   help="a client whose request body stalls this long gets a 408 (default "
                   f"{d.body_timeout_s:g})")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    for flag in ("max_tokens", "max_prompt_tokens", "max_request_prompt_tokens",
                 "max_batch_prompt_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    for flag in ("body_timeout", "header_timeout"):
        if not getattr(args, flag) > 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be > 0 seconds, got "
                             f"{getattr(args, flag)}")
    if not _is_loopback(args.host) and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach this "
              "machine can use the model", file=sys.stderr)

    import uvicorn

    from tempscope.server import create_app

    model = load_from_args(args)
    caps = {"max_prompt_tokens": args.max_prompt_tokens,
            "max_request_prompt_tokens": args.max_request_prompt_tokens,
            "max_batch_prompt_tokens": args.max_batch_prompt_tokens,
            "body_timeout_s": args.body_timeout, "header_timeout_s": args.header_timeout}
    if args.max_tokens is not None:
        caps["max_tokens"] = args.max_tokens
    limits = ServerLimits(**caps)
    app = create_app(model, api_key=args.api_key, limits=limits, name=args.served_model_name)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"tempscope: serving {app.state.tempscope.name} — playground at "
          f"http://{shown}:{args.port}/ , OpenAI base_url http://{shown}:{args.port}/v1",
          file=sys.stderr, flush=True)
    # Idle keep-alive connections close after 5 s (a slow or idle client holds no socket).
    from tempscope.server.protocol import with_header_timeout

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_keep_alive=5, http=with_header_timeout(limits.header_timeout_s))
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
