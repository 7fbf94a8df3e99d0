"""``tempscope study NAME``: published results reproduced on any model.

Examples::

    tempscope study degeneration --prompts 100 --max-new-tokens 128 --out runs/degen
    tempscope study degeneration --endpoint http://127.0.0.1:8000/v1 --out runs/degen-remote
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from tempscope.cli.common import check_output_dir, parse_seed
from tempscope.cli.limits import MAX_NEW_TOKENS, MAX_ROWS, check_range
from tempscope.cli.model_args import add_model_arguments

if TYPE_CHECKING:
    from tempscope.study.grid import SweepProgress


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "study", help="reproduce a published result on a model (degeneration: Holtzman et al. "
        "2020, Table 1, and mirostat's repetition curve; calibration: temperature scaling, "
        "Guo et al. 2017)",
        description="Named studies that hold a model's numbers against a paper's.",
    )
    studies = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    d = studies.add_parser(
        "degeneration",
        help="greedy, pure, top-k, nucleus, min-p, top-n-sigma and mirostat against human text",
        description="Continue the first ~35 tokens of public-domain passages with 10 decoders "
        "(greedy; pure sampling; top-k 40 and 640; top-k 40 at T = 0.7; nucleus 0.95; min-p "
        "0.1; top-n-sigma 1; min-p 0.1 at T = 1.5; mirostat tau = 3) and measure perplexity, "
        "Self-BLEU4, Zipf coefficient, repetition % and cross-entropy beside the human "
        "continuations and the paper's Table 1; writes DIR/report.md, DIR/report.html and "
        "DIR/figures/degeneration.png. Rerunning the same command resumes. Example: tempscope "
        "study degeneration --prompts 8 --max-new-tokens 32 --out runs/degen",
    )
    d.add_argument("--prompts", type=int, default=100, metavar="N",
                   help="passages to continue, one sample per passage and decoder (default 100)")
    d.add_argument("--max-new-tokens", type=int, default=128, metavar="L",
                   help="tokens per generation and per human continuation (default 128)")
    d.add_argument("--prompt-tokens", type=int, default=35, metavar="K",
                   help="prompt length: the passage's first whole words within K tokens "
                   "(default 35)")
    d.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    d.add_argument("--batch-rows", type=int, default=64, metavar="R",
                   help=f"rows decoded together per model call, at most {MAX_ROWS} (default 64)")
    d.add_argument("--tokenizer", metavar="MODEL", default=None,
                   help="with --endpoint: the local model whose tokens cut the passages "
                   "(default: the embedded model)")
    d.add_argument("--out", default="runs/degeneration", metavar="DIR",
                   help="study directory, resumable (default runs/degeneration)")
    add_model_arguments(d)
    from tempscope.cli.remote_options import add_remote_options

    add_remote_options(d)
    d.set_defaults(func=run_degeneration_cmd)
    from tempscope.cli import calibration_cmd

    calibration_cmd.register(studies)


def run_degeneration_cmd(args: argparse.Namespace) -> int:
    from tempscope.report.degeneration import write_degeneration_report
    from tempscope.study.degeneration import check_study, run_degeneration

    check_output_dir(args.out, "--out")
    check_range(args.prompts, "--prompts", high=MAX_ROWS)
    check_range(args.max_new_tokens, "--max-new-tokens", high=MAX_NEW_TOKENS)
    check_range(args.prompt_tokens, "--prompt-tokens", high=MAX_NEW_TOKENS)
    check_range(args.batch_rows, "--batch-rows", high=MAX_ROWS)
    parse_seed(str(args.seed))
    check_study(args.prompts, args.max_new_tokens, args.prompt_tokens, args.batch_rows)
    from tempscope.cli.limits import check_context
    from tempscope.cli.remote_options import engine_run, generator_from_args, warn_settings
    from tempscope.study.degeneration import DECODERS

    started = time.monotonic()
    gen = generator_from_args(args)
    # + a BOS token
    gen.check_local(lambda model: check_context(model, args.prompt_tokens + 1,
                                                args.max_new_tokens))
    warn_settings(gen.check_settings({d.name: d.params for d in DECODERS}))
    with engine_run(gen, args.out):
        run_degeneration(gen, out=args.out, prompts=args.prompts,
                         max_new_tokens=args.max_new_tokens, prompt_tokens=args.prompt_tokens,
                         seed=args.seed, batch_rows=args.batch_rows, progress=_Progress())
    html = write_degeneration_report(args.out)
    print(f"{args.out}/report.md, {html} and {args.out}/figures/degeneration.png written in "
          f"{time.monotonic() - started:.0f} s")
    return 0


class _Progress:
    """One line on stderr per finished batch: group, cells, tokens, tokens per second."""

    def __init__(self) -> None:
        self.last: tuple[str, int] = ("", 0)  # a group's first report, with nothing done: quiet

    def __call__(self, group: str, p: SweepProgress) -> None:
        if (group, p.cells_done) == self.last or (group != self.last[0] and not p.cells_done):
            return
        self.last = (group, p.cells_done)
        rate = f"{p.tokens_per_s:.0f} tok/s" if p.tokens else "resumed"
        print(f"degeneration {group}: {p.cells_done}/{p.cells_total} samples, {p.tokens} tokens, "
              f"{rate}, {p.elapsed_s:.0f} s", file=sys.stderr, flush=True)
