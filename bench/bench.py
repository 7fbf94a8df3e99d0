"""tempscope benchmarks P1-P7 on the embedded model, in one process.

Run: ``.venv/bin/python bench/bench.py`` (about 10 minutes on 2 cores; ``--runs 3`` is the
minimum the table allows, ``--quick`` shrinks the sweeps for a smoke test). Writes
``bench/results.json`` and ``bench/results.md`` (the table for the README).

- P1 next-token at 6 temperatures: ``next_token`` (one pass) vs the seed's way
  (6 x ``generate(max_new_tokens=1)``). Goal >= 5x.
- P2 batch-1 decode, 128 tokens at T = 0.8: tempscope tok/s / transformers ``generate`` tok/s,
  fp32; and tempscope with bfloat16 weights, whose next-token KL to fp32 is measured on a fixed
  prompt set. Goal >= 1.5x.
- P3 sweep 6 temperatures x 8 samples x 64 tokens: one tempscope batch vs ``generate`` once
  per temperature (``num_return_sequences=8``). Goal >= 2x.
- P4 the same sweep vs the seed's loop (re-encode the text each step, no cache), timed on one
  row and scaled by the 48 rows it would run one after another. Goal >= 20x.
- P5 llama.cpp through ``llama-cpp-python`` on the same GGUF file, when installed.
- P6 the sampler chain (temperature, top-k, top-p, min-p) per step at B = 48, as a fraction of
  the decode forward pass at B = 48. Goal <= 10 %.
- P7 peak RSS of ``tempscope next`` on the default model. Goal <= 1.2 GB.

Every row generates a fixed number of tokens (``ignore_eos`` / ``min_new_tokens``) so that both
sides do the same work; transformers gets ``top_k=0`` (it applies top-k 50 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tempscope.generation import generate
from tempscope.models import LoadedModel, embedded_gguf_path, load_model
from tempscope.nexttoken import last_logits, next_token
from tempscope.sampling import BatchSampler, SamplingParams

HERE = Path(__file__).resolve().parent
PROMPT = "The cat slept on the"
TEMPS = [0.1, 0.5, 1.0, 5.0, 10.0, 100.0]
KL_PROMPTS = [
    "The cat slept on the",
    "Once upon a time, there was a",
    "The capital of France is",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "In 1969, the first person to walk on the moon was",
    "The best way to learn a new language is",
    "Photosynthesis is the process by which",
]


def timed(fn: Callable[[], object], runs: int, warmup: int = 0) -> dict[str, Any]:
    """Median wall time of ``fn`` over ``runs`` runs after ``warmup`` untimed ones."""
    return compare({"fn": fn}, runs, warmup)["fn"]


def compare(fns: dict[str, Callable[[], object]], runs: int,
            warmup: int = 0) -> dict[str, dict[str, Any]]:
    """Median wall time of each function, run in turns (a, b, a, b, ...) so that a busy,
    shared CPU slows every side alike instead of whichever ran during a busy minute."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "times_s": t} for name, t in times.items()}


def hf_ids(model: LoadedModel, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([model.encode(prompt)], device=model.device)
    return ids, torch.ones_like(ids)


def hf_generate(model: LoadedModel, prompt: str, **kwargs: Any) -> torch.Tensor:
    """transformers' own ``generate`` as a user would call it (tokenizing included)."""
    ids, mask = hf_ids(model, prompt)
    with torch.inference_mode():
        out: torch.Tensor = model.model.generate(
            ids, attention_mask=mask, pad_token_id=model.eos_token_ids[0], **kwargs)
    return out


def p1(model: LoadedModel, runs: int) -> dict[str, Any]:
    def seed_way() -> None:
        for t in TEMPS:
            hf_generate(model, PROMPT, max_new_tokens=1, do_sample=True, temperature=t, top_k=0)

    got = compare({"ours": lambda: next_token(model, PROMPT, TEMPS, seed=0),
                   "base": seed_way}, max(runs, 5), warmup=1)
    ours, base = got["ours"], got["base"]
    return {"tempscope_s": ours["median_s"], "baseline_s": base["median_s"],
            "ratio": base["median_s"] / ours["median_s"], "goal": ">= 5x",
            "met": base["median_s"] / ours["median_s"] >= 5, "detail": {"ours": ours,
                                                                          "baseline": base}}


def tempscope_decode(model: LoadedModel, tokens: int) -> None:
    generate(model, PROMPT, SamplingParams(temperature=0.8), max_new_tokens=tokens, seed=0,
             ignore_eos=True, top_alternatives=0)


def p2(model: LoadedModel, bf16: LoadedModel, runs: int, tokens: int) -> dict[str, Any]:
    got = compare({
        "ours": lambda: tempscope_decode(model, tokens),
        "ours_bf16": lambda: tempscope_decode(bf16, tokens),
        "base": lambda: hf_generate(model, PROMPT, max_new_tokens=tokens,
                                    min_new_tokens=tokens, do_sample=True, temperature=0.8,
                                    top_k=0),
    }, runs)
    ours, ours_bf16, base = got["ours"], got["ours_bf16"], got["base"]
    ours_tps, bf16_tps = tokens / ours["median_s"], tokens / ours_bf16["median_s"]
    base_tps = tokens / base["median_s"]
    kl = next_token_kl(model, bf16)
    return {"tokens": tokens, "tempscope_tok_s": ours_tps, "tempscope_bf16_tok_s": bf16_tps,
            "baseline_tok_s": base_tps, "ratio": ours_tps / base_tps,
            "ratio_bf16": bf16_tps / base_tps, "bf16_kl_nats": kl, "goal": ">= 1.5x",
            "met": max(ours_tps, bf16_tps) / base_tps >= 1.5,
            "detail": {"ours": ours, "ours_bf16": ours_bf16, "baseline": base}}


def next_token_kl(model: LoadedModel, other: LoadedModel) -> dict[str, float]:
    """KL(fp32 || other) of the next-token distribution at T = 1 over ``KL_PROMPTS``, nats."""
    kls = []
    for prompt in KL_PROMPTS:
        ids = model.encode(prompt)
        p = torch.log_softmax(last_logits(model, ids).double(), -1)
        q = torch.log_softmax(last_logits(other, ids).double(), -1)
        kls.append(float((p.exp() * (p - q)).sum()))
    return {"mean": statistics.mean(kls), "max": max(kls), "prompts": len(kls)}


def p3_p4(model: LoadedModel, runs: int, samples: int, tokens: int) -> dict[str, Any]:
    params = [SamplingParams(temperature=t) for t in TEMPS]
    rows = len(TEMPS) * samples

    def sweep() -> None:
        generate(model, PROMPT, params, n=samples, max_new_tokens=tokens, seed=0,
                 ignore_eos=True, top_alternatives=0)

    def hf_sweep() -> None:
        for t in TEMPS:
            hf_generate(model, PROMPT, max_new_tokens=tokens, min_new_tokens=tokens,
                        do_sample=True, temperature=t, top_k=0, num_return_sequences=samples)

    got = compare({"ours": sweep, "base": hf_sweep,
                   "one_row": lambda: seed_loop(model, PROMPT, 1.0, tokens)}, runs)
    ours, base, one_row = got["ours"], got["base"], got["one_row"]
    seed_total = one_row["median_s"] * rows
    total = rows * tokens
    return {
        "P3": {"rows": rows, "tokens_per_row": tokens, "tempscope_s": ours["median_s"],
               "tempscope_tok_s": total / ours["median_s"], "baseline_s": base["median_s"],
               "baseline_tok_s": total / base["median_s"],
               "ratio": base["median_s"] / ours["median_s"], "goal": ">= 2x",
               "met": base["median_s"] / ours["median_s"] >= 2,
               "detail": {"ours": ours, "baseline": base}},
        "P4": {"tempscope_s": ours["median_s"], "baseline_s": seed_total,
               "baseline_note": f"one row timed ({one_row['median_s']:.1f} s), x {rows} rows",
               "ratio": seed_total / ours["median_s"], "goal": ">= 20x",
               "met": seed_total / ours["median_s"] >= 20, "detail": {"one_row": one_row}},
    }


def seed_loop(model: LoadedModel, prompt: str, temperature: float, tokens: int) -> str:
    """The seed article's generation: re-encode the whole text and run the full model each
    step (no cache, logits at every position), sample, append the decoded token."""
    text = prompt
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for _ in range(tokens):
            ids = torch.tensor([model.encode(text)], device=model.device)
            logits = model.model(input_ids=ids).logits[0, -1].float()
            probs = torch.softmax(logits / temperature, -1)
            token = int(torch.multinomial(probs.cpu(), 1, generator=gen))
            text += model.decode([token])
    return text


def p5(runs: int, tokens: int, samples: int) -> dict[str, Any]:
    try:
        from llama_cpp import Llama
    except ImportError:
        return {"available": False,
                "note": "llama-cpp-python is not installed (it compiles for ~10 min); "
                        "pip install llama-cpp-python and rerun to fill this row"}
    llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=512, verbose=False, seed=0)

    def one(t: float, n: int) -> None:
        llm.reset()
        llm.create_completion(PROMPT, max_tokens=n, temperature=t, top_k=0, top_p=1.0,
                              min_p=0.0, seed=0)

    b1 = timed(lambda: one(0.8, 128), runs)
    sweep = timed(lambda: [one(t, tokens) for t in TEMPS for _ in range(samples)], runs)
    return {"available": True, "batch1_tok_s": 128 / b1["median_s"],
            "sweep_s": sweep["median_s"],
            "note": "llama.cpp may stop early at EOS: tok/s counts the requested tokens",
            "detail": {"batch1": b1, "sweep": sweep}}


def p6(model: LoadedModel, rows: int = 48, iters: int = 20) -> dict[str, Any]:
    vocab = model.vocab_size
    params = [SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)] * rows
    sampler = BatchSampler(params, vocab_size=vocab, device=model.device, seeds=range(rows))
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(rows, vocab, generator=gen) * 3).to(model.device)

    def chain() -> None:
        tokens = sampler.choose(sampler.process(logits))
        sampler.accept(tokens)

    forward = decode_forward(model, rows)
    got = compare({"chain": chain, "forward": forward}, iters, warmup=1)
    fraction = got["chain"]["median_s"] / got["forward"]["median_s"]
    return {"rows": rows, "vocab": vocab, "chain_ms": got["chain"]["median_s"] * 1e3,
            "forward_ms": got["forward"]["median_s"] * 1e3, "fraction": fraction,
            "goal": "<= 10 %", "met": fraction <= 0.10, "detail": got}


def decode_forward(model: LoadedModel, rows: int) -> Callable[[], None]:
    """One decode step (one new token per row, KV cache) at ``rows`` rows, as a function; each
    call appends a token, as generation does."""
    from transformers import DynamicCache

    ids = torch.tensor([model.encode(PROMPT)] * rows, device=model.device)
    state = {"mask": torch.ones_like(ids)}
    cache = DynamicCache()
    with torch.inference_mode():
        out = model.model(input_ids=ids, attention_mask=state["mask"], cache=cache,
                          use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)  # (rows, 1)

    def step() -> None:
        mask = torch.cat([state["mask"], torch.ones_like(token)], 1)
        state["mask"] = mask
        with torch.inference_mode():
            model.model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True,
                        logits_to_keep=1, position_ids=torch.full_like(token, mask.shape[1] - 1))

    return step


def p7(runs: int) -> dict[str, Any]:
    """Peak RSS of ``tempscope next`` in a fresh process per run (model cache already built)."""
    exe = str(Path(sys.executable).with_name("tempscope"))
    probe = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    peaks = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", probe, exe, "next", PROMPT],
                             check=True, capture_output=True, text=True)
        peaks.append(int(out.stdout.strip()) * 1024)  # ru_maxrss is in KiB on Linux
    peak = statistics.median(peaks)
    return {"peak_rss_mb": peak / 1e6, "runs_mb": [p / 1e6 for p in peaks], "goal": "<= 1.2 GB",
            "met": peak <= 1.2e9}


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(),
            "load_average_start": os.getloadavg()}


def markdown(res: dict[str, Any]) -> str:
    m, b = res["machine"], res["benchmarks"]
    lines = [
        f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, "
        f"transformers {m['transformers']}, Python {m['python']}), embedded SmolLM2-135M "
        f"fp32 unless said, median of {res['runs']} runs, one process (`bench/bench.py`). "
        f"Load average {m['load_average_start'][0]:.2f} at start, "
        f"{res['load_average_end'][0]:.2f} at end (1-minute load average; the benchmark "
        "itself keeps both cores busy, so a value well above 2 means other work shared them).",
        "",
        "| | benchmark | tempscope | baseline | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(key: str, name: str, ours: str, base: str, ratio: str, goal: str, met: bool) -> None:
        lines.append(f"| {key} | {name} | {ours} | {base} | {ratio} | {goal} | "
                     f"{'yes' if met else '**no**'} |")

    r = b["P1"]
    row("P1", "next token at 6 temperatures (one pass vs 6 x generate)",
        f"{r['tempscope_s'] * 1e3:.0f} ms", f"{r['baseline_s'] * 1e3:.0f} ms",
        f"{r['ratio']:.1f}x", r["goal"], r["met"])
    r = b["P2"]
    row("P2", f"batch-1 decode, {r['tokens']} tokens, T = 0.8 (vs transformers generate fp32)",
        f"{r['tempscope_tok_s']:.1f} tok/s fp32; {r['tempscope_bf16_tok_s']:.1f} tok/s bf16 "
        f"(KL {r['bf16_kl_nats']['mean']:.4f} nats mean, {r['bf16_kl_nats']['max']:.4f} max)",
        f"{r['baseline_tok_s']:.1f} tok/s", f"{r['ratio']:.2f}x fp32, {r['ratio_bf16']:.2f}x bf16",
        r["goal"], r["met"])
    r = b["P3"]
    row("P3", f"sweep 6 T x {r['rows'] // 6} samples x {r['tokens_per_row']} tokens "
        "(vs generate per T, num_return_sequences)",
        f"{r['tempscope_s']:.1f} s ({r['tempscope_tok_s']:.0f} tok/s)",
        f"{r['baseline_s']:.1f} s ({r['baseline_tok_s']:.0f} tok/s)", f"{r['ratio']:.1f}x",
        r["goal"], r["met"])
    r = b["P4"]
    row("P4", "same sweep vs the seed's loop (re-encode, no cache)",
        f"{r['tempscope_s']:.1f} s", f"{r['baseline_s']:.0f} s ({r['baseline_note']})",
        f"{r['ratio']:.0f}x", r["goal"], r["met"])
    r = b["P5"]
    if r["available"]:
        lines.append(f"| P5 | llama.cpp, same GGUF | - | {r['batch1_tok_s']:.1f} tok/s batch 1; "
                     f"sweep {r['sweep_s']:.1f} s sequential | P3 sweep: "
                     f"{r['sweep_s'] / b['P3']['tempscope_s']:.2f}x | report | - |")
    else:
        lines.append(f"| P5 | llama.cpp, same GGUF | - | not measured: {r['note']} | - | "
                     "report | - |")
    r = b["P6"]
    row("P6", f"sampler chain (T, top-k, top-p, min-p) per step, B = {r['rows']}, "
        f"V = {r['vocab']:,}", f"{r['chain_ms']:.1f} ms",
        f"{r['forward_ms']:.0f} ms forward", f"{r['fraction'] * 100:.1f} %", r["goal"], r["met"])
    r = b["P7"]
    row("P7", "peak RSS of `tempscope next`", f"{r['peak_rss_mb']:.0f} MB", "-", "-",
        r["goal"], r["met"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per measurement (>= 3)")
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke test only")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json/.md")
    args = ap.parse_args(argv)
    runs = args.runs
    decode_tokens, samples, sweep_tokens = (16, 2, 8) if args.quick else (128, 8, 64)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "runs": runs, "quick": args.quick, "machine": machine(),
                               "benchmarks": {}}
    bench = results["benchmarks"]

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)

    def save(key: str, value: dict[str, Any]) -> None:
        bench[key] = value
        results["load_average_end"] = os.getloadavg()
        log(f"{key}: " + json.dumps({k: v for k, v in value.items() if k != "detail"}))
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    model = load_model()  # builds the cache on a first run, so P7 measures a cached load
    log("P7 peak RSS")
    save("P7", p7(runs))
    bf16 = load_model(dtype="bfloat16")
    # One short untimed run of each path first (allocator, thread pool, lazy imports), so the
    # long timed runs need no warm-up of their own.
    for m in (model, bf16):
        tempscope_decode(m, 8)
    hf_generate(model, PROMPT, max_new_tokens=8, do_sample=True, top_k=0)
    log("P1 next token")
    save("P1", p1(model, runs))
    log("P2 batch-1 decode")
    save("P2", p2(model, bf16, runs, decode_tokens))
    log("P6 sampler chain")
    save("P6", p6(model))
    log("P3/P4 sweep")
    for key, value in p3_p4(model, runs, samples, sweep_tokens).items():
        save(key, value)
    log("P5 llama.cpp")
    save("P5", p5(runs, sweep_tokens, samples))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
