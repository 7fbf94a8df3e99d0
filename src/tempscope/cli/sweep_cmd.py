"""``tempscope sweep``: prompts x sampler configs x temperatures x samples, resumable.

Examples::

    tempscope sweep --out runs/smol                      # built-in prompts, default grid
    tempscope sweep -p "The cat slept on the" --temperatures 0 0.5 1 2 --n 4 --out runs/cat
    tempscope sweep --limit 8 --config plain: --config top_p:top_p=0.9 --out runs/cmp
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

from tempscope.cli.common import check_output_dir, parse_seed
from tempscope.cli.limits import MAX_NEW_TOKENS, MAX_ROWS, check_range, check_rows
from tempscope.cli.model_args import add_model_arguments

if TYPE_CHECKING:
    from tempscope.sampling import SamplingParams
    from tempscope.study.grid import SweepProgress

DEFAULT_TEMPERATURES = ["0", "0.3", "0.7", "1", "1.5", "2"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sweep",
        help="run prompts x temperatures x sampler configs, n samples each, into a directory",
        description="Generate n samples for every prompt, sampler config and temperature, "
        "writing one JSON record per sample to DIR/samples.jsonl as it goes; rerunning the "
        "same command resumes. Then run `tempscope report DIR`. Example: tempscope sweep "
        "--limit 8 --n 4 --max-new-tokens 32 --out runs/smol",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompts", metavar="FILE",
                     help="prompts file: one per line ('#' lines skipped), or .jsonl with a "
                     'string or {"prompt": ...} per line; default: the built-in set (36)')
    src.add_argument("-p", "--prompt", dest="prompt_texts", action="append", metavar="TEXT",
                     help="a prompt (repeat for several)")
    p.add_argument("--limit", type=int, default=None, metavar="K",
                   help="use only the first K prompts")
    p.add_argument("-t", "--temperatures", "--temperature", dest="temperatures", nargs="+",
                   default=DEFAULT_TEMPERATURES, metavar="T",
                   help="temperatures to sweep (default 0 0.3 0.7 1 1.5 2)")
    p.add_argument("--n", "--samples", dest="n", type=int, default=8, metavar="N",
                   help="samples per prompt, config and temperature; one prompt's configs x "
                   f"temperatures x N (T = 0 counts once) at most {MAX_ROWS} (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=48, metavar="N",
                   help="token budget per sample (default 48)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--config", dest="configs", action="append", metavar="NAME:KEY=VAL,...",
                   help="a named sampler config on top of the sampler options, e.g. "
                   "top_p:top_p=0.9 or strict:top_k=20,min_p=0.05 (repeat to compare; "
                   "'NAME:' alone = the sampler options as given)")
    p.add_argument("--judge", metavar="MODEL", default=None,
                   help="a second model that scores every sample's log-likelihood")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
    p.add_argument("--batch-rows", type=int, default=64, metavar="R",
                   help=f"rows decoded together per model call, at most {MAX_ROWS} "
                   "(default 64)")
    p.add_argument("--out", required=True, metavar="DIR", help="where results go (resumable)")
    add_model_arguments(p)
    _add_sampler_options(p)
    from tempscope.cli.remote_options import add_remote_options

    add_remote_options(p)
    p.set_defaults(func=run)


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    from tempscope.cli.options import add_sampler_options

    add_sampler_options(p)  # every --config starts from these


def run(args: argparse.Namespace) -> int:
    from tempscope.study.grid import (
        MANIFEST,
        builtin_prompts,
        check_grid,
        read_manifest,
        read_prompts,
    )

    out = check_output_dir(args.out, "--out")
    if (out / MANIFEST).exists():  # resuming: a damaged run folder is named before any loading
        read_manifest(out)
    if args.prompt_texts:
        prompts = list(args.prompt_texts)
    elif args.prompts:
        prompts = read_prompts(args.prompts)
    else:
        prompts = builtin_prompts()
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1 prompt, got {args.limit}")
        prompts = prompts[: args.limit]
    check_range(args.n, "--n", high=MAX_ROWS)
    check_range(args.max_new_tokens, "--max-new-tokens", high=MAX_NEW_TOKENS)
    check_range(args.batch_rows, "--batch-rows", high=MAX_ROWS)
    parse_seed(str(args.seed))
    temperatures = check_grid(prompts, [_number(t, "--temperatures") for t in args.temperatures],
                              args.n, args.max_new_tokens, args.batch_rows)
    base = _base_params(args)
    configs = parse_configs(args.configs or [], base)
    block = len(configs) * sum(1 if t == 0 else args.n for t in temperatures)
    check_rows(block, f"one prompt's {len(configs)} config(s) x {len(temperatures)} "
               f"temperature(s) x --n {args.n}",
               "use a smaller --n, or fewer temperatures or configs")
    from tempscope.cli.remote_options import engine_run, generator_from_args, warn_settings

    gen = generator_from_args(args)
    gen.check_local(lambda model: _check_fits(model, prompts, args, block=block,
                                              total=block * len(prompts)))
    warn_settings(gen.check_settings(configs))
    judge = None
    if args.judge is not None:
        from tempscope.engine.loader import load_model

        judge = load_model(args.judge, device=args.device)
    from tempscope.study.grid import sweep

    with engine_run(gen, args.out), _ProgressBar() as bar:
        frame = sweep(gen, prompts, temperatures, configs=configs, n=args.n,
                      max_new_tokens=args.max_new_tokens, seed=args.seed, out=args.out,
                      judge=judge, chat=args.chat, batch_rows=args.batch_rows,
                      progress=bar.update)
    print(f"{len(frame)} samples in {args.out}/samples.jsonl; next: tempscope report {args.out}")
    return 0


def _check_fits(model: Any, prompts: list[str], args: argparse.Namespace, *, block: int,
                total: int) -> None:
    """After loading: the longest prompt and --max-new-tokens fit the context, and a batch
    plus the records kept fit this machine's memory (:mod:`tempscope.cli.limits`)."""
    from tempscope.cli.limits import RECORD_BYTES, check_context, check_memory, step_bytes
    from tempscope.study.grid import TOP_ALTERNATIVES

    longest = max(len(model.encode(p, chat=args.chat)) for p in prompts)
    check_context(model, longest, args.max_new_tokens)
    batch = min(total, max(block, args.batch_rows // block * block))  # rows per model call
    check_memory(model, session_rows=batch, tokens_per_row=longest + args.max_new_tokens,
                 host_bytes=args.max_new_tokens * (batch * step_bytes(TOP_ALTERNATIVES)
                                                   + total * RECORD_BYTES),
                 option="--n", value=args.n)


def _number(text: str, what: str) -> float:
    from tempscope.cli.common import parse_float

    return parse_float(text, what)


def _base_params(args: argparse.Namespace) -> SamplingParams:
    """The sampler options given on the command line; the sweep sets the temperature."""
    from tempscope.cli.options import params_from_args

    return params_from_args(args, 1.0)


_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")  # commas that start a new key


def parse_configs(specs: list[str], base: SamplingParams) -> dict[str, SamplingParams]:
    """``NAME:key=val,key=val`` specs -> named params, each starting from ``base``.

    Values: a number or word as typed (``none`` = off), ``a|b`` for a list (``order``), or JSON
    (``logit_bias={"50256": -100}``). ``temperature`` is not allowed (the sweep sets it).
    No spec gives one config, ``default``, = ``base``.
    """
    import json

    from tempscope.sampling import SamplingParams

    if not specs:
        return {"default": base}
    configs: dict[str, SamplingParams] = {}
    for spec in specs:
        name, sep, body = spec.partition(":")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--config {spec!r}: write NAME:key=value,key=value "
                             "(e.g. top_p:top_p=0.9)")
        if name in configs:
            raise ValueError(f"--config name {name!r} given twice: names must differ")
        values: dict[str, Any] = base.model_dump()
        for item in (s for s in _SPLIT.split(body) if s.strip()):
            key, eq, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not eq or not key:
                raise ValueError(f"--config {spec!r}: {item!r} is not key=value")
            if key not in SamplingParams.model_fields:
                raise ValueError(f"--config {spec!r}: unknown sampler setting {key!r}; known: "
                                 f"{', '.join(sorted(SamplingParams.model_fields))}")
            if key == "temperature":
                raise ValueError(f"--config {spec!r}: temperature comes from --temperatures; "
                                 "leave it out of the config")
            value: Any = raw
            if raw.lower() in ("none", "off", "null"):
                value = None
            elif raw[:1] in "[{":
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"--config {spec!r}: {key}={raw} is not JSON ({exc.msg}); "
                                     'e.g. logit_bias={"50256": -100}') from None
            elif "|" in raw:
                value = raw.split("|")
            values[key] = value
        try:
            # SamplingParams(**...) reports one line naming the setting, the value and its
            # range; model_validate would print pydantic's multi-line report.
            configs[name] = SamplingParams(**values)
        except ValueError as exc:
            raise ValueError(f"--config {spec!r}: {exc}") from None
    return configs


class _ProgressBar:
    """A rich progress bar on stderr: cells done, tokens per second, time left. When stderr is
    not a terminal (a log file, CI), one plain line per finished batch instead."""

    def __enter__(self) -> _ProgressBar:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=sys.stderr)
        self.live = console.is_terminal
        self.last_done = -1
        self.progress = Progress(
            TextColumn("sweep"), BarColumn(), TextColumn("{task.fields[cells]} cells"),
            TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not self.live,
        )
        self.task = self.progress.add_task("sweep", total=None, cells="0/?", rate="–")
        self.progress.start()
        return self

    def update(self, p: SweepProgress) -> None:
        rate = f"{p.tokens_per_s:.0f}" if p.tokens else "–"
        self.progress.update(self.task, total=p.cells_total, completed=p.completed,
                             cells=f"{p.cells_done}/{p.cells_total}", rate=rate)
        if not self.live and p.cells_done != self.last_done:
            self.last_done = p.cells_done
            print(f"sweep: {p.cells_done}/{p.cells_total} cells, {p.tokens} tokens, "
                  f"{rate} tok/s, {p.elapsed_s:.0f} s", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
