"""``tempscope study calibration``: which temperature fits a model on real text.

Examples::

    tempscope study calibration --out runs/calib
    tempscope study calibration -m gemma3.gguf --prompts 8 --json --out runs/calib-gemma
    tempscope study calibration --text essay.txt --prompts 4 --out runs/calib-essay
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tempscope.cli.common import check_output_dir, parse_float, parse_seed
from tempscope.cli.limits import MAX_NEW_TOKENS, MAX_ROWS, check_range
from tempscope.cli.model_args import add_model_arguments, load_from_args


def register(studies: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``study calibration`` to the ``study`` command's subcommands."""
    from tempscope.study.calibration_study import SAMPLE_TEMPERATURES

    c = studies.add_parser(
        "calibration",
        help="temperature scaling: NLL vs T on human text, T*, ECE and Brier at T = 1 and "
        "T*, reliability diagrams, the sampling T that matches the text",
        description="Score human text (the Britannica passages of the degeneration study, or "
        "--text files) with the model: the mean next-token NLL at every temperature, the T* "
        "that minimizes it (Guo et al. 2017), ECE (equal-width bins) and Brier score at T = 1 "
        "and T*, the reliability diagrams, and the sampling temperature whose samples are as "
        "surprising as the human text. Writes DIR/report.md, DIR/report.html, "
        "DIR/results.json and DIR/figures/calibration.png. Rerunning the same command "
        "resumes. Example: tempscope study calibration --prompts 8 --out runs/calib",
    )
    c.add_argument("--text", nargs="+", metavar="FILE", default=None,
                   help="UTF-8 prose files to use instead of the Britannica passages (cut into "
                   "passages of whole sentences)")
    c.add_argument("--prompts", type=int, default=24, metavar="N",
                   help="passages scored and sampled from (default 24)")
    c.add_argument("--max-tokens", type=int, default=128, metavar="L",
                   help="human tokens scored per passage (default 128)")
    c.add_argument("--prompt-tokens", type=int, default=35, metavar="K",
                   help="context before the scored tokens: the passage's first whole words "
                   "within K tokens (default 35)")
    c.add_argument("--sample-tokens", type=int, default=48, metavar="S",
                   help="tokens sampled per prompt and temperature, at most L (default 48)")
    c.add_argument("--sample-temperatures", nargs="+", metavar="T", default=None,
                   help="sampling temperatures (default "
                   f"{' '.join(str(t) for t in SAMPLE_TEMPERATURES)})")
    c.add_argument("--bins", type=int, default=15, metavar="B",
                   help="equal-width confidence bins of ECE and the diagrams (default 15)")
    c.add_argument("--seed", type=int, default=0, help="base seed of the samples (default 0)")
    c.add_argument("--batch-rows", type=int, default=64, metavar="R",
                   help=f"sampled rows decoded together, at most {MAX_ROWS} (default 64)")
    c.add_argument("--out", default="runs/calibration", metavar="DIR",
                   help="study directory, resumable (default runs/calibration)")
    c.add_argument("--json", action="store_true",
                   help="print every number as JSON on stdout (results.json)")
    add_model_arguments(c)
    c.set_defaults(func=run_calibration_cmd)


def run_calibration_cmd(args: argparse.Namespace) -> int:
    from tempscope.study.calibration_study import (
        SAMPLE_TEMPERATURES,
        check_calibration_study,
        run_calibration,
    )

    check_output_dir(args.out, "--out")
    check_range(args.prompts, "--prompts", high=MAX_ROWS)
    check_range(args.max_tokens, "--max-tokens", high=MAX_NEW_TOKENS)
    check_range(args.prompt_tokens, "--prompt-tokens", high=MAX_NEW_TOKENS)
    check_range(args.sample_tokens, "--sample-tokens", high=args.max_tokens)
    check_range(args.bins, "--bins", high=1000)
    check_range(args.batch_rows, "--batch-rows", high=MAX_ROWS)
    parse_seed(str(args.seed))
    temps = SAMPLE_TEMPERATURES if args.sample_temperatures is None else tuple(
        parse_float(t, "--sample-temperatures") for t in args.sample_temperatures)
    if len(set(temps)) != len(temps):
        raise ValueError(f"--sample-temperatures repeat: {' '.join(map(str, temps))}; give "
                         "each once")
    check_calibration_study(args.prompts, args.max_tokens, args.prompt_tokens,
                            args.sample_tokens, args.text, temps)
    started = time.monotonic()
    model = load_from_args(args)
    from tempscope.cli.limits import check_context

    check_context(model, args.prompt_tokens + 1, args.max_tokens)  # + a BOS token
    run_calibration(model, out=args.out, prompts=args.prompts, max_tokens=args.max_tokens,
                    prompt_tokens=args.prompt_tokens, sample_tokens=args.sample_tokens,
                    sample_temperatures=temps, seed=args.seed, text_files=args.text,
                    bins=args.bins, batch_rows=args.batch_rows, progress=_Progress())
    from tempscope.report.calibration import write_calibration_report

    html = write_calibration_report(args.out)
    seconds = time.monotonic() - started
    if args.json:
        from pathlib import Path

        print(json.dumps(json.loads((Path(args.out) / "results.json").read_text()), indent=2))
    else:
        print(f"{args.out}/report.md, {html} and {args.out}/figures/calibration.png written "
              f"in {seconds:.0f} s")
    return 0


class _Progress:
    """One line on stderr per stage at most every few seconds, and when a stage ends."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 5:
            return
        self.last = now
        print(f"calibration {stage}: {done}/{total}, {now - self.start:.0f} s",
              file=sys.stderr, flush=True)
