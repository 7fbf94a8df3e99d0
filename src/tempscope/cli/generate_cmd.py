"""``tempscope generate``: continue a prompt token by token, at one or several temperatures.

Examples::

    tempscope generate "The cat slept on the" -t 0.5 --max-new-tokens 20 --trace
    tempscope generate "The cat slept on the" -t 0.5 10 --n 4 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tempscope.cli.common import parse_float, parse_seed, print_table
from tempscope.cli.limits import MAX_NEW_TOKENS, MAX_ROWS, MAX_TOP, check_range, check_rows
from tempscope.cli.model_args import add_model_arguments

if TYPE_CHECKING:
    from tempscope.engine.generator import Generator
    from tempscope.engine.loop import Sample, StepEvent
    from tempscope.sampling import SamplingParams

BLANK = "______"
TRACE_WIDTH = 72  # longer text-so-far in a trace line is cut on the left: "…end of the text"
# A progress bar only pays for itself when the run takes a while: rows x tokens above this.
PROGRESS_WORK = 256


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt token by token (batched, KV-cached), with a step trace",
        description="Generate text from PROMPT, all temperatures and samples in one batch. "
        "Example: tempscope generate \"The cat slept on the\" -t 0.5 10 --max-new-tokens 20. "
        "One sample at a time decodes ~1.6x faster with --dtype bfloat16 (next-token KL to "
        "float32 about 0.002 nats, see bench/).",
    )
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    add_model_arguments(p)
    add_generation_arguments(p)
    from tempscope.cli.remote_options import add_remote_options

    add_remote_options(p)
    p.set_defaults(func=run)


def add_generation_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``generate`` besides the prompt and the model (the tour reuses them)."""
    from tempscope.cli.options import add_sampler_options

    p.add_argument(
        "-t", "--temperature", "--temperatures", dest="temperatures", nargs="+", default=["1"],
        metavar="T", help="one or more temperatures >= 0 (0 = greedy); several are compared "
        "side by side in one batch; default 1",
    )
    p.add_argument("--seed", default=None, metavar="S",
                   help="seed of the first sample at every temperature (default: random, "
                   "printed); the same seed gives the same text alone or in any batch")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                   help="token budget per sample, at most the model's context less the prompt "
                   "(default 32)")
    p.add_argument("--n", "--samples", dest="n", type=int, default=1, metavar="N",
                   help=f"samples per temperature; temperatures x N at most {MAX_ROWS} "
                   "(default 1)")
    p.add_argument("--stop", nargs="+", default=None, metavar="TEXT",
                   help="strings that end a sample (the text stops before them)")
    p.add_argument("--stop-at-newline", action="store_true",
                   help="end a sample at its first newline (the seed article's rule)")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt in the model's chat template")
    p.add_argument("--trace", action="store_true",
                   help="print every step: the text so far, the chosen token, its probability")
    p.add_argument("--top", type=int, default=3, metavar="K",
                   help=f"alternatives shown per trace step, 0 to {MAX_TOP} (default 3)")
    p.add_argument("--json", action="store_true", help="print the samples as JSON")
    add_sampler_options(p)


def run(args: argparse.Namespace) -> int:
    if args.prompt == "":
        raise ValueError("the prompt is empty: give some text, e.g. "
                         "tempscope generate \"The cat slept on the\"")
    params, seed = parse_options(args)
    from tempscope.cli.remote_options import engine_run, generator_from_args, warn_settings

    with engine_run(generator_from_args(args)) as gen:
        gen.check_local(lambda model: check_fits(model, args, rows=len(params) * args.n))
        samples = run_generation(gen, args.prompt, params, args, seed=seed)
        warn_settings(gen.check_settings(dict(enumerate(params))), raw_note=True)
    return _show(samples, args, lambda: json.dumps(
        [{**sample_dict(s), **gen.describe(s)} for s in samples], indent=2, ensure_ascii=False,
        default=str))


def _show(samples: Sequence[Sample], args: argparse.Namespace, to_json: Callable[[], str]) -> int:
    """Print the samples as JSON, a step trace, and/or the side-by-side table."""
    if args.json:
        print(to_json())
        return 0
    if args.trace:
        for s in samples:
            print_trace(s, top=args.top)
    if not args.trace or len(samples) > 1:
        print_samples(samples)
    return 0


def parse_options(args: argparse.Namespace) -> tuple[list[SamplingParams], int]:
    """Check the options before any model loads: one ``SamplingParams`` per temperature, and
    the seed (a random one when none was given, so every run can be repeated)."""
    import secrets

    from tempscope.cli.options import params_from_args
    from tempscope.distribution import check_temperature

    check_range(args.max_new_tokens, "--max-new-tokens", high=MAX_NEW_TOKENS)
    check_range(args.n, "--n", high=MAX_ROWS)
    check_range(args.top, "--top", low=0, high=MAX_TOP)
    temps = [check_temperature(parse_float(t, "temperature")) for t in args.temperatures]
    check_rows(len(temps) * args.n, f"{len(temps)} temperature(s) x --n {args.n}",
               f"use --n {max(1, MAX_ROWS // len(temps)):,} or less, or `tempscope sweep` for "
               "a bigger study")
    params = [params_from_args(args, t) for t in temps]
    if args.seed is None:
        return params, secrets.randbelow(2**31)
    return params, parse_seed(args.seed)


def check_fits(model: Any, args: argparse.Namespace, *, rows: int) -> None:
    """After loading: the prompt and ``--max-new-tokens`` fit the model's context, and the
    batch fits this machine's memory (:mod:`tempscope.cli.limits`)."""
    from tempscope.cli.limits import check_context, check_memory, step_bytes

    prompt_tokens = len(model.encode(args.prompt, chat=args.chat))
    check_context(model, prompt_tokens, args.max_new_tokens)
    check_memory(model, session_rows=rows, tokens_per_row=prompt_tokens + args.max_new_tokens,
                 host_bytes=rows * args.max_new_tokens * step_bytes(max(args.top, 1)),
                 option="--n", value=args.n)


def run_generation(gen: Generator, prompt: str, params: list[SamplingParams],
                   args: argparse.Namespace, *, seed: int | None) -> list[Sample]:
    """:meth:`Generator.generate <tempscope.engine.generator.Generator.generate>` with the command's
    options, with a progress bar on long interactive runs; a server is asked for the numbers
    after its samplers too where they are shown (``--trace``, ``--json``)."""

    def call(on_step: Callable[[StepEvent], None] | None) -> list[Sample]:
        return gen.generate(prompt, params, n=args.n, max_new_tokens=args.max_new_tokens,
                            stop=args.stop, stop_at_newline=args.stop_at_newline,
                            seed=seed, chat=args.chat, on_step=on_step,
                            top_alternatives=max(args.top, 1),
                            processed=args.trace or args.json)

    rows = len(params) * args.n
    if args.json or not sys.stderr.isatty() or rows * args.max_new_tokens < PROGRESS_WORK:
        return call(None)
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(f"generating {rows} samples", total=args.max_new_tokens)
        return call(lambda e: progress.update(task, completed=e.step))


def visible(text: str) -> str:
    """Text for one trace line: newlines and tabs shown as escapes."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


def fmt_prob(p: float) -> str:
    """A probability with 3 decimals, or 2 significant digits when it is below 0.001."""
    return f"{p:.3f}" if p >= 0.001 or p == 0 else f"{p:.1e}"


def _tail(text: str, width: int = TRACE_WIDTH) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def t_label(params: SamplingParams | None) -> str:
    t = None if params is None else params.temperature
    if t is None:
        return "1"
    return "0 (greedy)" if t == 0 else ("inf" if math.isinf(t) else f"{t:g}")


def end_label(sample: Sample) -> str:
    """Why a sample ended, in the seed article's words: <EOS>, newline, stop or limit."""
    if sample.finish_reason == "eos":
        return "<EOS>"
    if sample.finish_reason == "stop":
        return "newline" if sample.stop_text == "\n" else f"stop string {sample.stop_text!r}"
    if sample.finish_reason == "length":
        return f"limit ({sample.n_tokens} tokens)"
    return sample.finish_reason


def print_trace(sample: Sample, *, top: int = 3) -> None:
    """The seed's trace: ``k: <prompt and the first k tokens> ______`` and the chosen token with
    its probability (and the likeliest alternatives), then why it ended."""
    print(f"T={t_label(sample.params)}, seed {sample.seed}, sample {sample.sample_index + 1}: "
          f"{sample.prompt}{BLANK}")
    text = sample.prompt
    for step in sample.steps:
        if step.finished == "eos":
            shown = "<EOS>"
        else:
            text += step.text
            shown = repr(step.text)
        alts = "  ".join(f"{a.text!r} {fmt_prob(a.prob)}" for a in step.top[:top])
        alts = f"   [{alts}]" if top else ""
        print(f"{step.step}: {_tail(visible(text))} {BLANK}   <- {shown} p={fmt_prob(step.prob)}"
              f" (T=1: {fmt_prob(step.raw_prob)}){alts}")
    print(f"stopped: {end_label(sample)}")
    print(f"result: {sample.prompt}{sample.text}")
    print()


def print_samples(samples: Sequence[Sample]) -> None:
    """One table row per sample; per temperature the mean log-probability and entropy (at
    T = 1) make the coherent/incoherent contrast a number."""
    rows = [
        [t_label(s.params), str(s.sample_index + 1), visible(s.text), str(s.n_tokens),
         _number(s.mean_logprob), _number(s.mean_entropy), end_label(s)]
        for s in samples
    ]
    print_table(f"{samples[0].prompt!r} continued", ["T", "#", "text", "tokens", "mean log p",
                "mean H", "end"], rows)
    by_t: dict[str, list[Sample]] = {}
    for s in samples:
        by_t.setdefault(t_label(s.params), []).append(s)
    for label, group in by_t.items():
        lp = sum(s.mean_logprob for s in group) / len(group)
        h = sum(s.mean_entropy for s in group) / len(group)
        # A remote server may not give raw log-probs or entropies: "–", never "nan".
        ppl = "" if math.isnan(lp) else f" (perplexity {math.exp(-lp):.1f})"
        print(f"T={label}: mean log-prob {_number(lp)} nats/token{ppl}, "
              f"mean entropy {_number(h)} nats over {len(group)} sample(s)")


def _number(x: float) -> str:
    """``x`` to 3 decimals, or ``–`` for a quantity that is not known (NaN)."""
    return "–" if math.isnan(x) else f"{x:.3f}"


def sample_dict(s: Sample) -> dict[str, Any]:
    """A sample as plain JSON types."""
    return {
        "prompt": s.prompt,
        "params": None if s.params is None else s.params.model_dump(exclude_none=True),
        "sample_index": s.sample_index,
        "seed": s.seed,
        "text": s.text,
        "token_ids": s.token_ids,
        "finish_reason": s.finish_reason,
        "stop_text": s.stop_text,
        "n_tokens": s.n_tokens,
        "mean_logprob": s.mean_logprob,
        "mean_entropy": s.mean_entropy,
        "steps": [
            {"step": e.step, "token_id": e.token_id, "text": e.text,
             "raw_logprob": e.raw_logprob, "logprob": e.logprob, "entropy": e.entropy,
             "raw_entropy": e.raw_entropy,
             "top": [{"token_id": a.token_id, "text": a.text, "raw_prob": a.raw_prob,
                      "prob": a.prob} for a in e.top],
             **({"named": [{"token_id": a.token_id, "text": a.text, "raw_prob": a.raw_prob,
                            "prob": a.prob} for a in e.named]} if e.named else {})}
            for e in s.steps
        ],
    }
