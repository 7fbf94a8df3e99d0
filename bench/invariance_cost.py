"""What batch invariance costs: P2, P5 (llama.cpp) and P3 (torch) in the invariant layout
beside the layout before it, each side in a fresh process, in one run.

- llama.cpp: a KV stream per row, flash attention off (the engine now) against one unified KV
  cache with flash attention left to llama.cpp (the engine before). Both on this build (no
  AMX, tinyBLAS or repack: see scripts/setup.sh), so the ratio is the layout's cost alone.
- torch: a forward pass per row (reproducible, the default) against the left-padded batch
  (``--no-reproducible``).

    .venv/bin/python bench/invariance_cost.py      # ~6 minutes on 2 idle cores

Writes ``bench/invariance-cost.json`` and prints the README's rows. Every row generates a
fixed number of tokens (``ignore_eos``); samplers are temperature only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROMPT = "The cat slept on the"
TEMPS = (0.2, 0.5, 0.8, 1.0, 1.5, 2.0)
LAYOUTS = {
    "llama.cpp invariant": ("llama.cpp", {}),
    "llama.cpp before": ("llama.cpp", {"kv_unified": True, "flash_attn": None}),
    "torch invariant": ("torch", {"reproducible": True}),
    "torch batched": ("torch", {"reproducible": False}),
}


def worker(layout: str, runs: int) -> dict[str, Any]:
    from tempscope import load_model
    from tempscope.engine.llamacpp import LlamaCppModel
    from tempscope.engine.loop import generate
    from tempscope.sampling import SamplingParams

    engine, options = LAYOUTS[layout]
    model: Any = load_model(engine=engine)
    if engine == "llama.cpp":
        model = LlamaCppModel(model.path, model.name, source=model.source, **options)
    else:
        model.reproducible = options["reproducible"]

    def timed(fn: Any) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def batch1() -> None:
        generate(model, PROMPT, SamplingParams(temperature=0.8), max_new_tokens=128, seed=0,
                 ignore_eos=True)

    def sweep() -> None:
        generate(model, PROMPT, [SamplingParams(temperature=t) for t in TEMPS], n=8,
                 max_new_tokens=64, seed=0, ignore_eos=True)

    batch1()  # warm-up: the context, the caches
    p2 = [timed(batch1) for _ in range(runs)]
    sweeps = [timed(sweep) for _ in range(runs if engine == "llama.cpp" else 1)]
    return {"layout": layout, "engine": engine,
            "batch1_tok_s": 128 / statistics.median(p2), "batch1_s": p2,
            "sweep_tok_s": 48 * 64 / statistics.median(sweeps), "sweep_s": sweeps,
            "threads": os.environ.get("TEMPSCOPE_THREADS") or os.cpu_count()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "invariance-cost.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.runs)))
        return 0
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "load_average_start": os.getloadavg(), "layouts": {}}
    for layout in LAYOUTS:
        out = subprocess.run([sys.executable, __file__, "--worker", layout, "--runs",
                              str(args.runs)], capture_output=True, text=True, check=True)
        results["layouts"][layout] = json.loads(out.stdout.strip().splitlines()[-1])
        print(layout, {k: v for k, v in results["layouts"][layout].items()
                       if k.endswith("tok_s")}, flush=True)
    results["load_average_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    got = results["layouts"]
    for engine, what in (("llama.cpp", "P2 batch-1 decode, 128 tokens"),
                         ("llama.cpp", "P5 sweep 6 T x 8 x 64 tokens"),
                         ("torch", "P2 batch-1 decode, 128 tokens"),
                         ("torch", "P3 sweep 6 T x 8 x 64 tokens")):
        key = "batch1_tok_s" if "batch-1" in what else "sweep_tok_s"
        new = got[f"{engine} invariant"][key]
        old = got[f"{engine} before" if engine == "llama.cpp" else "torch batched"][key]
        print(f"| {what}, {engine} | {new:.1f} tok/s | {old:.1f} tok/s | {new / old:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
