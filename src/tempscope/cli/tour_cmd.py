"""``tempscope tour``: the seed article, replayed on the embedded model in under a minute.

1. softmax with temperature on five words (ceiling, floor, mat, car, grass) at T = 1 and 100;
2. the next word after "The cat slept on the" at T = 0.1, 0.5, 1, 5, 10, 100 (one forward pass);
3. generation token by token at T = 0.5 and T = 10, in one batch, with the step trace and the
   numbers that show one stays coherent and the other falls apart.
"""

from __future__ import annotations

import argparse
import time

from tempscope.cli.common import parse_seed
from tempscope.cli.limits import MAX_NEW_TOKENS, MAX_TOP, check_context, check_range
from tempscope.cli.model_args import add_model_arguments, load_from_args

WORDS = ["ceiling", "floor", "mat", "car", "grass"]
LOGITS = [-49.82, -46.40, -45.25, -47.30, -48.32]
PROMPT = "The cat slept on the"
NEXT_TEMPERATURES = [0.1, 0.5, 1.0, 5.0, 10.0, 100.0]
GENERATE_TEMPERATURES = [0.5, 10.0]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tour",
        help="replay the seed article: softmax tables, next word at 6 temperatures, "
        "generation at 0.5 vs 10",
        description="A guided tour of what temperature does, on the embedded model (or -m). "
        "Every step is a library call you can make yourself; the equivalent commands are "
        "printed as it goes.",
    )
    add_model_arguments(p)
    p.add_argument("--prompt", default=PROMPT, help=f"the prompt (default {PROMPT!r})")
    p.add_argument("--seed", type=int, default=0, help="seed for every draw (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=20, metavar="N",
                   help="tokens per generated sample (default 20)")
    p.add_argument("--top", type=int, default=5, metavar="N",
                   help="rows per next-token table (default 5)")
    p.set_defaults(func=run)


def _heading(number: int, title: str, command: str) -> None:
    print()
    print(f"== {number}. {title}")
    print(f"   ($ {command})")
    print()


def run(args: argparse.Namespace) -> int:
    if args.prompt == "":
        raise ValueError("--prompt is empty: give some text, e.g. --prompt \"The cat sat\"")
    check_range(args.max_new_tokens, "--max-new-tokens", high=MAX_NEW_TOKENS)
    check_range(args.top, "--top", high=MAX_TOP)
    parse_seed(str(args.seed))
    start = time.perf_counter()
    from tempscope.cli.softmax import _print_distribution
    from tempscope.table import temperature_table

    _heading(1, "softmax(logits / T): the same five logits at T = 1 and T = 100",
             "tempscope softmax --words " + " ".join(WORDS) + " --logits "
             + " ".join(f"{x:g}" for x in LOGITS) + " -t 1 100")
    for dist in temperature_table(LOGITS, [1.0, 100.0], words=WORDS):
        _print_distribution(dist)

    model = load_from_args(args)
    check_context(model, len(model.encode(args.prompt)), args.max_new_tokens)
    facts = model.facts
    print()
    print(f"model: {facts.name} on the {model.engine} engine ({facts.device}, {facts.dtype}, "
          f"{facts.parameters / 1e6:.0f}M parameters; --engine torch|llama.cpp to switch)")
    from tempscope.cli.generate_cmd import print_samples, print_trace
    from tempscope.cli.next_cmd import print_view
    from tempscope.engine.loop import generate
    from tempscope.engine.nexttoken import next_token
    from tempscope.sampling import SamplingParams

    temps = " ".join(f"{t:g}" for t in NEXT_TEMPERATURES)
    _heading(2, f"the next word after {args.prompt!r} at T = {temps}",
             f"tempscope next \"{args.prompt}\" -t {temps} --top {args.top} --seed {args.seed}")
    result = next_token(model, args.prompt, NEXT_TEMPERATURES, top=args.top, seed=args.seed)
    print_view(result)

    gen_temps = " ".join(f"{t:g}" for t in GENERATE_TEMPERATURES)
    _heading(3, f"generation, one token at a time, at T = {gen_temps} (one batch, KV cache)",
             f"tempscope generate \"{args.prompt}\" -t {gen_temps} --max-new-tokens "
             f"{args.max_new_tokens} --stop-at-newline --seed {args.seed} --trace")
    samples = generate(model, args.prompt,
                       [SamplingParams(temperature=t) for t in GENERATE_TEMPERATURES],
                       max_new_tokens=args.max_new_tokens, stop_at_newline=True,
                       seed=args.seed)
    for sample in samples:
        print_trace(sample, top=0)
    print_samples(samples)
    print()
    print(f"At low T the text stays likely under the model itself (mean log-prob near 0); at "
          f"T = {GENERATE_TEMPERATURES[-1]:g} the tokens are ones the model finds implausible "
          f"(mean log-prob far below), so the text falls apart.")
    print(f"(tour took {time.perf_counter() - start:.1f} s)")
    return 0
