"""The ``tempscope`` command: a thin shell over the library.

argparse, not typer/click: the seed's commands take lists after one option
(``--temperature 1 100``, ``--words a b c``), which click cannot express (``nargs='+'``).
Each subcommand lives in its own module and imports torch/transformers only when it runs, so
``tempscope --help`` and ``tempscope softmax`` start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from tempscope.cli import softmax as softmax_cmd
from tempscope.errors import TempscopeError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="tempscope",
        description="See, measure and control how sampling temperature shapes what a "
        "language model says.",
    )
    from tempscope import __version__

    parser.add_argument("--version", action="version", version=f"tempscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list[ModuleType]:
    from tempscope.cli import (
        generate_cmd,
        models_cmd,
        next_cmd,
        report_cmd,
        serve_cmd,
        sweep_cmd,
        tour_cmd,
    )

    return [softmax_cmd, next_cmd, generate_cmd, tour_cmd, sweep_cmd, report_cmd, serve_cmd,
            models_cmd]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except (TempscopeError, ValueError) as exc:
        print(f"tempscope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
