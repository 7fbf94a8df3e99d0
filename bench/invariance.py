"""Batch invariance: does a row's logits depend on what else decodes beside it?

One target row ("The cat slept on the", then 24 forced tokens) is decoded alone, then inside
batches of other compositions; at every step its ``(V,)`` logits are compared with the alone
run: the largest absolute difference, the largest KL(alone || in batch) in nats, and whether
they are bit-identical. Every engine layout is measured the same way:

- llama.cpp with a KV stream per sequence and flash attention off (the engine's layout) or on,
  and the unified KV cache it used before (flash attention automatic, on, off);
- torch reproducible (a cache and a forward pass per row) and batched (left-padded rows).

    python bench/invariance.py                      # both engines, the embedded model
    python bench/invariance.py --engine llama.cpp --model tiny.gguf --steps 8

Writes ``bench/out/invariance.json`` and prints a markdown table (docs/engines.md holds one).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tempscope import load_model
from tempscope.engine.backend import Backend
from tempscope.study.grid import builtin_prompts

TARGET = "The cat slept on the"


def trace(model: Backend, prompts: Sequence[list[int]], target: int, forced: Sequence[int],
          leave_after: int | None = None) -> list[torch.Tensor]:
    """The target row's logits at every step, its tokens forced, the others greedy; with
    ``leave_after``, every other odd row leaves the batch after that step."""
    session = model.open_session(prompts, budget=len(forced) + 1)
    live = list(range(len(prompts)))  # original index of each live row
    out = [session.logits[live.index(target)].clone()]
    try:
        for step, token in enumerate(forced):
            tokens = session.logits.argmax(-1)
            tokens[live.index(target)] = token
            if leave_after is not None and step == leave_after:
                keep = [i for i, r in enumerate(live) if r == target or r % 2 == 0]
                session.keep(keep)
                tokens = tokens[keep]
                live = [live[i] for i in keep]
            logits = session.step(tokens)
            out.append(logits[live.index(target)].clone())
    finally:
        session.close()
    return out


def compare(alone: list[torch.Tensor], other: list[torch.Tensor]) -> dict[str, Any]:
    diffs = [float((a - b).abs().max()) for a, b in zip(alone, other, strict=True)]
    kls = []
    for a, b in zip(alone, other, strict=True):
        pa, pb = torch.log_softmax(a.double(), -1), torch.log_softmax(b.double(), -1)
        kls.append(float((pa.exp() * (pa - pb)).sum()))
    first = next((i for i, d in enumerate(diffs) if d > 0), None)
    return {"identical": first is None, "max_abs": max(diffs), "max_kl": max(kls),
            "first_step": first}


Pair = tuple[list[torch.Tensor], list[torch.Tensor]]  # (alone, in the batch)


def cases(model: Backend, steps: int) -> list[tuple[str, Callable[[], Pair]]]:
    """(name, run) for every batch composition; run gives the target's alone and batch runs."""
    enc = model.encode
    target = enc(TARGET)
    others = [enc(p) for p in builtin_prompts() if p != TARGET]
    long = enc(" ".join(builtin_prompts() * 3))[: min(700, model.facts.context_length // 2)]
    forced = [int(t) for t in trace(model, [target], 0, [0] * steps)[0].topk(steps).indices]
    alone = trace(model, [target], 0, forced)

    def run(prompts: list[list[int]], at: int, **kw: Any) -> Callable[[], Pair]:
        return lambda: (alone, trace(model, prompts, at, forced, **kw))

    def mix(k: int) -> list[list[int]]:  # k rows, the target in the middle
        rows = [others[i % len(others)] for i in range(k - 1)]
        return [*rows[: k // 2], target, *rows[k // 2:]]

    def after_long() -> Pair:  # a target whose own prompt is long: prefilled in chunks
        mine = long[: len(long) - len(target)] + target
        return (trace(model, [mine], 0, forced),
                trace(model, [others[0], mine, others[1], others[2]], 1, forced))

    limit = model.max_rows or 64
    return [
        ("alone, again", run([target], 0)),
        ("same prompt x 2", run([target] * 2, 1)),
        ("same prompt x 8", run([target] * 8, 3)),
        ("other prompts x 2", run(mix(2), 1)),
        ("other prompts x 4", run(mix(4), 2)),
        ("other prompts x 16", run(mix(16), 8)),
        (f"other prompts x {limit}", run(mix(limit), limit // 2)),
        (f"beside a {len(long)}-token prompt (chunked prefill, bigger context)",
         run([long, target, *others[:2]], 1)),
        ("rows leaving after step 3", run(mix(16), 8, leave_after=3)),
        (f"its own prompt {len(long)} tokens, alone vs x 4", after_long),
    ]


def measure(model: Backend, steps: int, layout: str) -> list[dict[str, Any]]:
    rows = []
    for name, run in cases(model, steps):
        t = time.perf_counter()
        result = compare(*run())
        rows.append({"layout": layout, "case": name, **result,
                     "seconds": round(time.perf_counter() - t, 2)})
        print(f"{layout:40} {name:58} identical={result['identical']!s:5} "
              f"max|d|={result['max_abs']:.3g} KL={result['max_kl']:.2g}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", nargs="+", default=["llama.cpp", "torch"])
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=None,
                    help="also measure the llama.cpp alone run at this many threads")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "invariance.json"))
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for engine in args.engine:
        if engine == "llama.cpp":
            from tempscope.engine.llamacpp import LlamaCppModel

            base = load_model(args.model, engine="llama.cpp")
            assert isinstance(base, LlamaCppModel)
            for label, kw in (("llama.cpp: a KV stream per row", {}),
                              ("llama.cpp: a KV stream per row, flash attn on",
                               {"flash_attn": True}),
                              ("llama.cpp: unified KV, flash attn auto",
                               {"kv_unified": True, "flash_attn": None}),
                              ("llama.cpp: unified KV, flash attn on",
                               {"kv_unified": True, "flash_attn": True}),
                              ("llama.cpp: unified KV, flash attn off",
                               {"kv_unified": True, "flash_attn": False})):
                m = LlamaCppModel(base.path, base.name, source=base.source, **kw)
                rows += measure(m, args.steps, label)
            # Threads: the alone run at 1 thread against the alone run at the default count.
            one = LlamaCppModel(base.path, base.name, source=base.source, n_threads=1)
            target = [base.encode(TARGET)]
            forced = [int(t) for t in trace(base, target, 0, [0] * args.steps)[0]
                      .topk(args.steps).indices]
            result = compare(trace(base, target, 0, forced), trace(one, target, 0, forced))
            rows.append({"layout": "llama.cpp: a KV stream per row",
                         "case": f"alone at 1 thread vs {base.n_threads}", **result})
            print(f"threads 1 vs {base.n_threads}: {result}")
        else:
            model = load_model(args.model, engine="torch")
            for reproducible in (True, False):
                model.reproducible = reproducible
                label = "torch: " + ("reproducible (a pass per row)" if reproducible
                                     else "batched (left-padded)")
                rows += measure(model, args.steps, label)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model or "embedded", "steps": args.steps,
                               "threads": os.environ.get("TEMPSCOPE_THREADS"),
                               "rows": rows}, indent=2) + "\n")
    print("\n| layout | case | identical | max abs diff | max KL (nats) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['layout']} | {r['case']} | {'yes' if r['identical'] else 'no'} | "
              f"{r['max_abs']:.3g} | {r['max_kl']:.2g} |")


if __name__ == "__main__":
    main()
