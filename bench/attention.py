"""What the 1-client gap to llama-server is made of: its flash attention.

Run: ``.venv/bin/python bench/attention.py`` (about 3 minutes on 2 idle cores). Writes
``bench/attention.json``.

One streaming client sends 64-token completions back to back (the 1-client level of
``bench/serve.py``, same requests and fairness rules) to three servers on the embedded GGUF, 2
threads each, all up and measured one at a time in rounds that alternate between them:
``tempscope serve`` (llama.cpp engine: flash attention off, for batch invariance),
``llama-server`` at its defaults (flash attention auto: on for this CPU) and ``llama-server -fa
off``. When tempscope / llama-server -fa off is near 1 and tempscope / llama-server well below,
the gap is the attention kernel, not tempscope's per-token work. Why tempscope keeps it off:
with it, a row alone with a 700-token prompt came out differently from the same row beside 3
others (docs/engines.md), which would break the seed promise.

The same three servers then decode at a long context: one client, a 750-token prompt, 64
tokens; the rate after the first token (prefill left out, so a reused prefix changes nothing).
llama.cpp's flash attention takes another kernel there (a split over the KV cells when one
sequence with 512 or more cells decodes alone): this shows what it costs or saves.

First, with no server up, the kernel itself: llama.cpp in this process (tempscope's own
llama-cpp-python build, 2 threads, one sequence), flash attention off and on in alternating
rounds: the prefill of a 13-token prompt, and one decoded token at 40, 300, 700 and 1,500
cells of context (median of 32 tokens each).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serve  # noqa: E402
from bench import machine  # noqa: E402
from serve import Side, Workload  # noqa: E402
from tests.server_helpers import llama_server_binary  # noqa: E402

NO_FA = "llama-server -fa off"
LONG_CONTEXT = 750  # prompt tokens of the long-context level
LONG_ROUNDS = 3  # rounds, alternating between the servers; 2 requests each


async def long_context(sides: list[Side], work: Workload) -> dict[str, dict[str, Any]]:
    """Decode rate after the first token at a ``LONG_CONTEXT``-token prompt, one client."""
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)
    rates: dict[str, list[float]] = {side.name: [] for side in sides}
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        for r in range(LONG_ROUNDS):
            for side in sides:
                for i, ids in enumerate(work.contexts[:2]):
                    reply = await serve.complete(client, side, ids[:LONG_CONTEXT],
                                                 work.sizes.load_tokens, seed=r * 10 + i)
                    rates[side.name].append(
                        (reply.tokens - 1) / (reply.total_s - reply.first_token_s))
                serve.log(f"long context, round {r + 1}: {side.name} "
                          f"{statistics.mean(rates[side.name][-2:]):.1f} tok/s")
    return {name: {"decode_tok_s": statistics.mean(v), "runs_tok_s": v}
            for name, v in rates.items()}


KERNEL_CONTEXTS = (40, 300, 700, 1500)  # cells of context the kernel level decodes at
KERNEL_PROMPT = "Once upon a time, in a small village by the sea,"  # 13 tokens


def kernel(rounds: int = 2, tokens: int = 32) -> dict[str, Any]:
    """Milliseconds of llama.cpp's prefill and decode, flash attention off and on."""
    import llama_cpp

    from tempscope.engine.loader import embedded_gguf_path

    path = str(embedded_gguf_path())
    filler = ("The cat slept on the mat near the warm fire, dreaming of fish. " * 200).encode()
    found: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    for _ in range(rounds):
        for fa in ("off", "on"):
            llm: Any = llama_cpp.Llama(path, n_ctx=4096, n_threads=serve.THREADS,
                                  n_threads_batch=serve.THREADS, flash_attn=fa == "on",
                                  verbose=False)
            prompt = llm.tokenize(KERNEL_PROMPT.encode())
            times = []
            for _ in range(5):
                llm.reset()
                start = time.perf_counter()
                llm.eval(prompt)
                times.append(time.perf_counter() - start)
            found[fa].setdefault("prefill_13", []).append(statistics.median(times) * 1000)
            for cells in KERNEL_CONTEXTS:
                llm.reset()
                context = llm.tokenize(filler)[:cells]
                llm.eval(context)
                times = []
                for _ in range(tokens):
                    start = time.perf_counter()
                    llm.eval([context[-1]])
                    times.append(time.perf_counter() - start)
                found[fa].setdefault(f"decode_{cells}", []).append(
                    statistics.median(times) * 1000)
            del llm
    ms = {fa: {k: statistics.mean(v) for k, v in parts.items()} for fa, parts in found.items()}
    return {"ms": ms, "rounds_ms": found,
            "on_over_off": {k: ms["on"][k] / ms["off"][k] for k in ms["off"]},
            "how": f"llama-cpp-python in-process, {serve.THREADS} threads, one sequence; "
                   f"prefill of a {len(KERNEL_PROMPT.split())}-word prompt, decode medians of "
                   f"{tokens} tokens; {rounds} rounds alternating off/on"}


def main() -> int:
    binary = llama_server_binary()
    if binary is None:
        print("llama-server is not built: run scripts/build-llama-server.sh (~10 min, once)",
              file=sys.stderr)
        return 1
    # The branch contexts (distinct token ids, no shared prefix) give the long prompts.
    sizes = replace(serve.Sizes(), loads=((1, 4),),
                    branch_context=LONG_CONTEXT, branch_tokens=0, branch_runs=2)
    work = serve.workload(sizes)
    kernel_ms = kernel()
    logs = Path(tempfile.mkdtemp(prefix="tempscope-attention-"))
    with contextlib.ExitStack() as stack:
        sides = [stack.enter_context(serve.tempscope_server("llama.cpp", work, logs)),
                 stack.enter_context(serve.llama_server(binary, work, logs)),
                 stack.enter_context(serve.llama_server(binary, work, logs,
                                                        extra=("-fa", "off"), name=NO_FA))]
        result = asyncio.run(serve.load(sides, work, {}))
        long = asyncio.run(long_context(sides, work))
    tok_s = {name: r["1"]["tok_s"] for name, r in result.items()}
    rounds = {name: r["1"]["round_tok_s"] for name, r in result.items()}
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(), "kernel": kernel_ms, "tok_s": tok_s, "round_tok_s": rounds,
        "tempscope_over_llama_server": tok_s[serve.TEMPSCOPE] / tok_s[serve.LLAMA],
        "tempscope_over_llama_server_fa_off": tok_s[serve.TEMPSCOPE] / tok_s[NO_FA],
        "llama_server_fa_off_over_default": tok_s[NO_FA] / tok_s[serve.LLAMA],
        "ttft_p50_s": {name: r["1"]["ttft_p50_s"] for name, r in result.items()},
        "requests": (f"1 client x 4 x {sizes.load_tokens} tokens, {sizes.one_client_rounds} "
                     "rounds alternating between the servers"),
        "long_context": {
            "prompt_tokens": LONG_CONTEXT, "max_tokens": sizes.load_tokens,
            "requests": f"1 client x 2, {LONG_ROUNDS} rounds alternating between the servers",
            **long,
            "tempscope_over_llama_server": (long[serve.TEMPSCOPE]["decode_tok_s"]
                                            / long[serve.LLAMA]["decode_tok_s"]),
            "tempscope_over_llama_server_fa_off": (long[serve.TEMPSCOPE]["decode_tok_s"]
                                                   / long[NO_FA]["decode_tok_s"])},
    }
    (HERE / "attention.json").write_text(json.dumps(out, indent=1) + "\n")
    for part, off in kernel_ms["ms"]["off"].items():
        print(f"kernel {part}: flash attention off {off:.2f} ms, on "
              f"{kernel_ms['ms']['on'][part]:.2f} ms")
    for name, v in tok_s.items():
        print(f"{name}: {v:.1f} tok/s (rounds {', '.join(f'{x:.1f}' for x in rounds[name])})")
    print(f"tempscope / llama-server: {out['tempscope_over_llama_server']:.2f}x; "
          f"tempscope / llama-server -fa off: {out['tempscope_over_llama_server_fa_off']:.2f}x")
    lc = out["long_context"]
    for name in tok_s:
        print(f"{LONG_CONTEXT}-token context, {name}: {lc[name]['decode_tok_s']:.1f} tok/s after "
              "the first token")
    print(f"long context: tempscope / llama-server: {lc['tempscope_over_llama_server']:.2f}x; "
          f"tempscope / llama-server -fa off: {lc['tempscope_over_llama_server_fa_off']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
