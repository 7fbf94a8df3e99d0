"""``tempscope next``: a model's next-token distribution at many temperatures, one forward pass.

Example: ``tempscope next "The cat slept on the" -t 0.1 0.5 1 5 10 100``
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

from tempscope.cli.common import check_output_file, parse_float, parse_seed, print_table
from tempscope.cli.model_args import add_model_arguments
from tempscope.cli.options import add_sampler_options, params_from_args, samplers_used
from tempscope.cli.remote_options import add_remote_options, engine_run, generator_from_args

if TYPE_CHECKING:
    from tempscope.engine.nexttoken import NextTokenResult, TemperatureResult
    from tempscope.engine.remote.engine import RemoteNextToken

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
        _print(result)
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


def _t_label(t: float) -> str:
    return "0 (greedy)" if t == 0 else ("inf (uniform)" if math.isinf(t) else f"{t:g}")


def print_result(result: NextTokenResult, vocab: int) -> None:
    """Print what ``tempscope next`` prints: per temperature the seed's line, the table and
    a summary line."""
    print(f"{result.model}: {len(result.prompt_ids)} prompt tokens, one forward pass, "
          f"seed {result.seed}")
    print()
    for r in result.results:
        _print_temperature(result, r, vocab)


_print_result = print_result  # the name tour_cmd imports


def _print_temperature(result: NextTokenResult, r: TemperatureResult, vocab: int) -> None:
    token = r.sampled.text
    if not token.isprintable() or "\ufffd" in token:  # a newline or a partial character
        token = r.sampled.display
    if result.chat:
        print(f"LLM Temperature: {r.temperature:g} → {result.prompt!r} → reply starts: {token}")
    else:
        print(f"LLM Temperature: {r.temperature:g} → {result.prompt}{token}")
    rows = [
        [str(row.rank), str(row.token_id), row.display, f"{row.logit:.4f}",
         *([] if row.raw_probability is None else [f"{row.raw_probability:.5f}"]),
         f"{row.probability:.5f}"]
        for row in r.top
    ]
    highlight = next((i for i, row in enumerate(r.top)
                      if row.token_id == r.sampled.token_id), None)
    title = f"T = {_t_label(r.temperature)}"
    header = ["rank", "id", "token", "logit", "probability"]
    if r.chain is not None:  # samplers ran: raw and processed side by side
        title += f": {' -> '.join(r.chain)}"
        header = ["rank", "id", "token", "logit", "raw (T=1)", "processed"]
    print_table(title, header, rows, highlight=highlight)
    if r.chain is not None:
        print(f"{r.kept:,} of {vocab:,} tokens survive")
    print(f"T={r.temperature:g}: entropy {r.entropy:.4f} nats, effective vocabulary "
          f"{r.effective_vocab:,.2f} of {vocab:,} tokens, top token {r.top_probability:.5f}, "
          f"sampled {r.sampled.display!r} (rank {r.sampled.rank}, p={r.sampled.probability:.5f})")
    print()


def print_remote(result: RemoteNextToken) -> None:
    """What ``tempscope next --endpoint`` prints: the local layout, marked as top-N."""
    from tempscope.engine.nexttoken import visible

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


def _print(result: NextTokenResult | RemoteNextToken) -> None:
    """The text output of either kind of view: the whole vocabulary (a local model), or what a
    server's log-probabilities give (:class:`~tempscope.engine.remote.engine.RemoteNextToken`)."""
    from tempscope.engine.nexttoken import NextTokenResult

    if isinstance(result, NextTokenResult):
        print_result(result, int(result.logits.shape[0]))
    else:
        print_remote(result)


def _plot(result: NextTokenResult | RemoteNextToken, path: str) -> None:
    from tempscope.report.plots import Panel, plot_panels

    labels, rows = result.across_temperatures()
    panels = [Panel(f"T = {_t_label(t)}", labels, probs) for t, probs in rows]
    plot_panels(panels, path, suptitle=f"next token after {result.prompt!r} ({result.model})")
