"""The sampler options every command shares (``--top-k``, ``--top-p``, ... ``--order``).

Values are parsed here, not by argparse, so a bad value gives one clear line (exit 2) that
names the option. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from tempscope.cli.common import parse_float

if TYPE_CHECKING:
    from tempscope.sampling.params import SamplingParams

# (flag, field, metavar, help)
_FLOAT_OPTIONS: list[tuple[str, str, str]] = [
    ("top_p", "P", "nucleus: keep the smallest set of tokens holding mass >= P, in (0, 1]"),
    ("min_p", "P", "keep tokens with p >= P * p_max, in [0, 1]"),
    ("typical_p", "P", "locally typical set holding mass P, in (0, 1]"),
    ("epsilon", "E", "keep tokens with p >= E (e.g. 3e-4)"),
    ("eta", "E", "keep p >= min(E, sqrt(E) * exp(-entropy)) (e.g. 6e-4)"),
    ("top_n_sigma", "N", "keep logits >= max - N * std(logits), N >= 0"),
    ("dynatemp_range", "R", "llama.cpp dynamic temperature: T in [T-R, T+R] by entropy"),
    ("dynatemp_exponent", "X", "dynatemp curve exponent (default 1 = linear)"),
    ("edt_theta", "THETA", "EDT dynamic temperature T = T0 * N^(THETA / entropy)"),
    ("edt_n", "N", "EDT base N in (0, 1] (default 0.8)"),
    ("xtc_threshold", "P", "XTC: drop every token with p >= P except the least of them"),
    ("xtc_probability", "P", "chance XTC fires on a step (default 1)"),
    ("mirostat_tau", "BITS", "mirostat v2 target surprise in bits (e.g. 5)"),
    ("mirostat_eta", "RATE", "mirostat v2 learning rate (default 0.1)"),
    ("repetition_penalty", "R", "divide positive / multiply negative logits of seen tokens"),
    ("frequency_penalty", "F", "subtract F * count of each seen token, in [-2, 2]"),
    ("presence_penalty", "P", "subtract P from every seen token, in [-2, 2]"),
]
_FIELDS = ["top_k", *(name for name, _, _ in _FLOAT_OPTIONS), "logit_bias", "order"]


def add_sampler_options(parser: argparse.ArgumentParser) -> None:
    """Add the sampler options to ``parser`` (all default to off)."""
    from tempscope.sampling.params import DEFAULT_ORDER

    group = parser.add_argument_group(
        "samplers", "All off unless given (None = off). Temperature comes from -t/--temperature."
    )
    group.add_argument("--top-k", metavar="K", help="keep the K most likely tokens, K >= 1")
    for name, metavar, text in _FLOAT_OPTIONS:
        group.add_argument(f"--{name.replace('_', '-')}", metavar=metavar, help=text)
    group.add_argument(
        "--logit-bias", nargs="+", metavar="ID=BIAS",
        help="add BIAS in [-100, 100] to token ID's logit, e.g. --logit-bias 2=-100 7=1.5",
    )
    group.add_argument(
        "--order", nargs="+", metavar="NAME",
        help=f"sampler order (default: {' '.join(DEFAULT_ORDER)})",
    )
    group.add_argument(
        "--temperature-last", action="store_true",
        help="apply temperature after the filters (llama.cpp style) instead of before",
    )


def samplers_used(args: argparse.Namespace) -> bool:
    """True when any sampler option was given on the command line."""
    return any(getattr(args, f, None) is not None for f in _FIELDS) or bool(
        getattr(args, "temperature_last", False)
    )


def params_from_args(args: argparse.Namespace, temperature: float | None) -> SamplingParams:
    """Build ``SamplingParams`` from the options (seed not included: set it per row).

    Raises ``ValueError`` with one line naming the option and value when one is invalid.
    """
    from tempscope.sampling.params import SamplingParams

    fields: dict[str, Any] = {"temperature": temperature}
    if args.top_k is not None:
        try:
            fields["top_k"] = int(args.top_k)
        except ValueError:
            raise ValueError(f"--top-k must be an integer >= 1, got {args.top_k!r}") from None
    for name, _, _ in _FLOAT_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = parse_float(value, f"--{name.replace('_', '-')}")
    if args.logit_bias:
        fields["logit_bias"] = parse_logit_bias(args.logit_bias)
    if args.order:
        fields["order"] = list(args.order)
    fields["temperature_last"] = bool(args.temperature_last)
    return SamplingParams(**fields)


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
