"""The ``tempscope`` command: a thin shell over the library.

argparse, not typer/click: the seed's commands take lists after one option
(``--temperature 1 100``, ``--words a b c``), which click cannot express (``nargs='+'``).
Each subcommand lives in its own module and imports torch/transformers only when it runs, so
``tempscope --help`` and ``tempscope softmax`` start fast.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from tempscope.cli import softmax as softmax_cmd
from tempscope.errors import TempscopeError

# A LOGIT or T may be any float Python reads: -1e5, -.5, -inf. argparse's own pattern
# (``^-\d+$|^-\d*\.\d+$`` in Python 3.11) takes ``-1e5`` for an unknown option.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$",
                              re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse with negative numbers in any float notation and one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER  # private in argparse; no hook

    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit status 2, like every other user error (argparse's own
        prints the usage block first)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per command."""
    parser = _Parser(
        prog="tempscope",
        description="See, measure and control how sampling temperature shapes what a "
        "language model says.",
    )
    from tempscope._version import __version__

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
        study_cmd,
        sweep_cmd,
        tour_cmd,
    )

    return [softmax_cmd, next_cmd, generate_cmd, tour_cmd, sweep_cmd, report_cmd, serve_cmd,
            models_cmd, study_cmd]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command they were given to, with its --help
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status: int = args.func(args)
    except (TempscopeError, ValueError) as exc:
        return _fail(args.command, str(exc))
    except OSError as exc:  # a file or folder the user named; the commands check most first
        where = f": {exc.filename!r}" if exc.filename else ""
        return _fail(args.command, f"{exc.strerror or exc}{where} (check the path and its "
                     "permissions)")
    except MemoryError:
        from tempscope.cli.limits import MEMORY_ADVICE

        return _fail(args.command, f"out of memory: {MEMORY_ADVICE}")
    except RuntimeError as exc:
        if type(exc).__name__ != "OutOfMemoryError":  # torch's, for CUDA; not imported here
            raise
        from tempscope.cli.limits import MEMORY_ADVICE

        return _fail(args.command, f"out of GPU memory: {MEMORY_ADVICE}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return status


def _fail(command: str, message: str) -> int:
    """Print ``tempscope COMMAND: error: MESSAGE`` as one line; exit status 2."""
    one_line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"tempscope {command}: error: {one_line}", file=sys.stderr)
    return 2


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse keeps no public map of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[command]
            return found
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
