"""``tempscope next``: a model's next-token distribution at many temperatures, one forward pass.

Example: ``tempscope next "The cat slept on the" -t 0.1 0.5 1 5 10 100``
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from tempscope.cli.common import check_output_file, parse_float, parse_seed, print_table
from tempscope.cli.model_args import add_model_arguments
from tempscope.cli.options import add_sampler_options, params_from_args, samplers_used
from tempscope.cli.remote_options import add_remote_options, engine_run, generator_from_args

if TYPE_CHECKING:
    from tempscope.engine.nexttoken import NextTokenView

DEFAULT_TEMPERATURES = ["0.1", "0.5", "1", "5", "10", "100"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "next",
        help="the next-token distribution after a prompt, at several temperatures",
        description="Run the model once on PROMPT and show the distribution of the next token "
        "at each temperature: a seeded sample, the top-N table, entropy and effective "
        "vocabulary. Example: tempscope next \"The cat slept on the\" -t 0.1 1 10",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of ``next`` (kept in one place so other option groups can be added)."""
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    add_model_arguments(p)
    add_remote_options(p)
    p.add_argument(
        "-t", "--temperature", "--temperatures", dest="temperatures", nargs="+",
        default=DEFAULT_TEMPERATURES, metavar="T",
        help="temperatures >= 0 (0 = greedy, inf = uniform); default 0.1 0.5 1 5 10 100",
    )
    p.add_argument("--top", default="10", metavar="N", help="rows per table (default 10)")
    p.add_argument("--seed", default=None, metavar="S",
                   help="seed for the sampled tokens (default: random, printed)")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt in the model's chat template")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="one bar panel per temperature, same tokens in every panel")
    add_sampler_options(p)


def parse_options(args: argparse.Namespace) -> tuple[list[float], int, int | None]:
    """Check the cheap arguments before any model loads: (temperatures, top, seed)."""
    from tempscope.distribution import check_temperature

    if args.prompt == "":
        raise ValueError("the prompt is empty: give some text, e.g. "
                         "tempscope next \"The cat slept on the\"")
    temps = [check_temperature(parse_float(t, "temperature")) for t in args.temperatures]
    top = _whole(args.top, "--top", minimum=1)
    seed = None if args.seed is None else parse_seed(args.seed)
    if args.plot is not None:
        check_output_file(args.plot, "--plot", suffix=".png")
    return temps, top, seed


def run(args: argparse.Namespace) -> int:
    temps, top, seed = parse_options(args)
    # Checked before the model loads; each -t temperature is put in turn (a server runs the
    # samplers itself: llama-server shows raw and processed side by side).
    params = params_from_args(args, 1.0) if samplers_used(args) else None
    with engine_run(generator_from_args(args)) as gen:
        result = gen.next_token(args.prompt, temps, top=top, seed=seed, chat=args.chat,
                                params=params)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_view(result)
    if args.plot:
        _plot(result, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def _whole(text: str, what: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} must be a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{what} must be a whole number >= {minimum}, got {text!r}")
    return value


def print_view(view: NextTokenView) -> None:
    """Print a next-token view, whichever engine made it: its lines and tables in order."""
    from tempscope.engine.nexttoken import ViewTable

    for part in view.text_parts():
        if isinstance(part, ViewTable):
            print_table(part.title, part.header, part.rows, highlight=part.highlight)
        else:
            print(part)


def _plot(result: NextTokenView, path: str) -> None:
    from tempscope.engine.nexttoken import temperature_label
    from tempscope.report.plots import Panel, plot_panels

    labels, rows = result.across_temperatures()
    panels = [Panel(f"T = {temperature_label(t)}", labels, probs) for t, probs in rows]
    plot_panels(panels, path, suptitle=f"next token after {result.prompt!r} ({result.model})")
