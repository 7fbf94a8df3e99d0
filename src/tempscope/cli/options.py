"""The sampler options every command shares: one per knob of the sampler registry
(``--top-k``, ``--top-p``, ... ``--dry-multiplier``), plus ``--order`` and ``--preset``.

Values are parsed here, not by argparse, so a bad value gives one clear line (exit 2) that
names the option. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from tempscope.cli.common import parse_float

if TYPE_CHECKING:
    from tempscope.sampling.params import SamplingParams
    from tempscope.sampling.registry import Knob

# Knobs the commands take through their own options (-t/--temperature, often several).
_OWN = frozenset({"temperature"})


def _knobs() -> list[Knob]:
    from tempscope.sampling.registry import KNOBS

    return [k for k in KNOBS.values() if k.name not in _OWN]


def add_sampler_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per registry knob to ``parser`` (all default to off), plus ``--order``,
    ``--temperature-last`` and ``--preset``."""
    from tempscope.sampling.registry import DEFAULT_ORDER, PRESETS

    group = parser.add_argument_group(
        "samplers", "All off unless given (None = off). Temperature comes from -t/--temperature."
    )
    for knob in _knobs():
        text = knob.doc.replace("%", "%%")
        if knob.kind in ("float", "int") and knob.interval not in text:
            text += f", in {knob.interval}"
        if knob.kind == "token_bias":
            group.add_argument(knob.flag, nargs="+", metavar="ID=BIAS",
                               help="add BIAS in [-100, 100] to token ID's logit, e.g. "
                               "--logit-bias 2=-100 7=1.5")
        elif knob.kind in ("strings", "token_ids"):
            extra = r" (\n and \t for newline and tab)" if knob.kind == "strings" else ""
            group.add_argument(knob.flag, nargs="+", metavar=knob.metavar, help=text + extra)
        else:
            group.add_argument(knob.flag, metavar=knob.metavar, help=text)
    group.add_argument(
        "--order", nargs="+", metavar="NAME",
        help=f"sampler order (default: {' '.join(DEFAULT_ORDER)})",
    )
    group.add_argument(
        "--temperature-last", action="store_true",
        help="apply temperature after the filters (llama.cpp style) instead of before",
    )
    group.add_argument(
        "--preset", metavar="NAME", choices=sorted(PRESETS),
        help=f"start from a named setting ({'; '.join(sorted(PRESETS))}); other options "
        "override it",
    )


def samplers_used(args: argparse.Namespace) -> bool:
    """True when any sampler option was given on the command line."""
    return any(getattr(args, k.name, None) is not None for k in _knobs()) or bool(
        getattr(args, "order", None) or getattr(args, "temperature_last", False)
        or getattr(args, "preset", None)
    )


def params_from_args(args: argparse.Namespace, temperature: float | None) -> SamplingParams:
    """Build ``SamplingParams`` from the options (seed not included: set it per row).

    Raises ``ValueError`` with one line naming the option and value when one is invalid.
    """
    from tempscope.sampling.params import SamplingParams
    from tempscope.sampling.registry import PRESETS

    fields: dict[str, Any] = {}
    if getattr(args, "preset", None):
        fields.update(PRESETS[args.preset])
    fields["temperature"] = temperature
    for knob in _knobs():
        value = getattr(args, knob.name, None)
        if value is not None:
            fields[knob.name] = parse_knob(knob, value)
    if args.order:
        fields["order"] = list(args.order)
    if args.temperature_last:
        fields["temperature_last"] = True
    return SamplingParams(**fields)


def parse_knob(knob: Knob, value: Any) -> Any:
    """One option's text as the knob's type; a bad value gives one line naming the flag."""
    if knob.kind == "float":
        return parse_float(value, knob.flag)
    if knob.kind == "int":
        try:
            return int(value)
        except ValueError:
            low = "" if knob.low == -math.inf else f" >= {knob.low:g}"
            raise ValueError(f"{knob.flag} must be an integer{low}, got {value!r}") from None
    if knob.kind == "token_bias":
        return parse_logit_bias(value)
    if knob.kind == "token_ids":
        try:
            return [int(v) for v in value]
        except ValueError:
            raise ValueError(f"{knob.flag} takes token ids (integers), got "
                             f"{' '.join(value)!r}") from None
    return [unescape(v) for v in value]


def unescape(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` in a command-line string as newline, tab and backslash."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_logit_bias(items: list[str]) -> dict[int, float]:
    """``["2=-100", "7=1.5"]`` -> ``{2: -100.0, 7: 1.5}``."""
    out: dict[int, float] = {}
    for item in items:
        token, sep, bias = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[int(token)] = parse_float(bias, "--logit-bias")
        except ValueError:
            raise ValueError(
                f"--logit-bias takes TOKEN_ID=BIAS pairs like 2=-100, got {item!r}"
            ) from None
    return out
