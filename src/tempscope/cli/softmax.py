"""``tempscope softmax``: the temperature softmax on any list of logits, as tables."""

from __future__ import annotations

import argparse
import json
import math

from tempscope.cli.common import check_output_file, parse_float, print_table
from tempscope.cli.options import add_sampler_options, params_from_args, samplers_used
from tempscope.table import TokenDistribution, temperature_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "softmax",
        help="softmax(logits / T) on a list of logits, for one or more temperatures",
        description="Turn logits into probabilities at each temperature. "
        "Example: tempscope softmax --words ceiling floor mat car grass "
        "--logits -49.82 -46.40 -45.25 -47.30 -48.32 --temperature 1 100",
    )
    p.add_argument("values", nargs="*", metavar="LOGIT", help="logits (or use --logits)")
    p.add_argument("--logits", nargs="+", metavar="LOGIT", help="logits, one per word")
    p.add_argument("--words", nargs="+", metavar="WORD", help="a name for each logit")
    p.add_argument(
        "-t", "--temperature", "--temperatures", dest="temperatures", nargs="+",
        default=["1"], metavar="T",
        help="one or more temperatures >= 0 (0 = greedy, inf = uniform); default 1",
    )
    p.add_argument(
        "--history", nargs="+", metavar="WORD",
        help="the words said so far (names from --words, or indices), for the samplers that "
        "read history: penalties, DRY, bad words; e.g. --history the cat sat on the",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per temperature")
    p.add_argument("--plot", metavar="FILE.png", help="draw the distributions side by side")
    add_sampler_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.values and args.logits:
        raise ValueError("give the logits either as plain arguments or after --logits, not both")
    raw = args.logits or args.values
    if not raw:
        raise ValueError("no logits given: try `tempscope softmax 2 4 3`")
    logits = [parse_float(v, "logit") for v in raw]
    temperatures = [parse_float(v, "temperature") for v in args.temperatures]
    if args.history and not samplers_used(args):
        raise ValueError("--history is read only by samplers that look at what was said "
                         "(penalties, DRY, bad words): add one, e.g. --repetition-penalty 1.3")
    if args.plot is not None:
        check_output_file(args.plot, "--plot", suffix=".png")
    import numpy as np

    # (l - max) / T overflows to -inf at extreme logits and tiny T (1e38, -1e38, T = 1e-300):
    # exactly the probability 0 it stands for, so numpy's warning is noise here.
    with np.errstate(over="ignore"):
        dists = temperature_table(logits, temperatures, words=args.words)
        if samplers_used(args):
            _check_float32(logits)
            return _run_samplers(args, dists)

    if args.json:
        print(json.dumps([d.to_dict() for d in dists], indent=2))
    elif args.words is None and len(dists) == 1:
        print(_numbers(dists[0]))
    elif args.words is None:
        for d in dists:
            print(f"T={d.temperature:g}\t{_numbers(d)}")
    else:
        for d in dists:
            _print_distribution(d)
    if args.plot:
        from tempscope.report.plots import Panel, plot_panels

        panels = [
            Panel(f"T = {d.temperature:g}", d.words, d.probabilities.tolist()) for d in dists
        ]
        plot_panels(panels, args.plot, suptitle="softmax(logits / T)")
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def _check_float32(logits: list[float]) -> None:
    """The samplers run in float32: a logit beyond its range would silently become inf."""
    limit = 3.4028234663852886e38  # float32's largest finite number
    for x in logits:
        if math.isfinite(x) and abs(x) > limit:
            raise ValueError(f"logit {x:g} is beyond float32's range (±{limit:.4g}), in which the "
                             "samplers compute: give logits within it")


def _numbers(d: TokenDistribution) -> str:
    return " ".join(f"{p:.8f}" for p in d.probabilities)


def _print_distribution(d: TokenDistribution) -> None:
    rows = [
        [str(i), w, f"{logit:.4f}", f"{p:.5f}"]
        for i, (w, logit, p) in enumerate(zip(d.words, d.logits, d.probabilities, strict=True))
    ]
    print_table(
        f"Temperature {d.temperature:g}", ["index", "word", "logit", "probability"], rows,
        highlight=d.argmax,
    )
    ent = f"entropy {d.entropy:.4f} nats, effective vocabulary {d.effective_vocab:.3f}"
    if math.isinf(d.temperature):
        ent += " (uniform)"
    print(f"Most likely word at T={d.temperature:g}: {d.top_word} (Prob: {d.top_probability:.5f})"
          f" — {ent}")
    print()


def _history(items: list[str], words: list[str]) -> list[int]:
    """``--history`` as token ids: each item a word from ``--words`` or an index."""
    out = []
    for item in items:
        if item in words:
            out.append(words.index(item))
        elif item.isdigit() and int(item) < len(words):
            out.append(int(item))
        else:
            raise ValueError(f"--history: {item!r} is not one of the words ({' '.join(words)}) "
                             f"nor an index below {len(words)}")
    return out


def _run_samplers(args: argparse.Namespace, dists: list[TokenDistribution]) -> int:
    """Raw (T = 1, no samplers) and processed probabilities side by side, per temperature."""
    import numpy as np

    from tempscope.sampling import probabilities
    from tempscope.sampling.vocab import ListVocab

    words = list(dists[0].words)
    history = _history(args.history or [], words)
    vocab = ListVocab(tuple(words))
    results = []
    for d in dists:
        params = params_from_args(args, d.temperature)
        processed = probabilities(d.logits.tolist(), params, history=history,
                                  vocab=vocab).double().numpy()
        raw = np.exp(d.logits - d.logits.max())
        raw = raw / raw.sum()
        results.append((d, params.chain, raw, processed))

    if args.json:
        print(json.dumps([
            {**d.to_dict(), "chain": list(chain), "raw": raw.tolist(),
             "processed": processed.tolist(), "kept": int((processed > 0).sum())}
            for d, chain, raw, processed in results
        ], indent=2))
    for d, chain, raw, processed in results:
        kept = int((processed > 0).sum())
        steps = " -> ".join(chain) or "no sampler"
        if args.json:
            continue
        if args.words is None:
            nums = " ".join(f"{p:.8f}" for p in processed)
            print(f"T={d.temperature:g}\t{steps}\tkept {kept}/{len(processed)}\t{nums}")
            continue
        rows = [
            [str(i), w, f"{logit:.4f}", f"{r:.5f}", f"{p:.5f}"]
            for i, (w, logit, r, p) in enumerate(
                zip(d.words, d.logits, raw, processed, strict=True)
            )
        ]
        print_table(
            f"Temperature {d.temperature:g}: {steps}",
            ["index", "word", "logit", "raw (T=1)", "processed"], rows,
            highlight=int(np.argmax(processed)),
        )
        print(f"{kept} of {len(processed)} tokens survive")
        print()
    if args.plot:
        from tempscope.report.plots import Panel, plot_panels

        panels = [
            Panel(f"T = {d.temperature:g}: {' -> '.join(chain)}", d.words, processed.tolist())
            for d, chain, _, processed in results
        ]
        plot_panels(panels, args.plot, suptitle="processed probabilities")
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0
