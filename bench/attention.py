"""What the 1-client gap to llama-server is made of: its flash attention.

Run: ``.venv/bin/python bench/attention.py`` (about 2 minutes on 2 idle cores). Writes
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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serve  # noqa: E402
from bench import machine  # noqa: E402
from tests.server_helpers import llama_server_binary  # noqa: E402

NO_FA = "llama-server -fa off"


def main() -> int:
    binary = llama_server_binary()
    if binary is None:
        print("llama-server is not built: run scripts/build-llama-server.sh (~10 min, once)",
              file=sys.stderr)
        return 1
    sizes = replace(serve.Sizes(), loads=((1, 4),), load_rounds=3)
    work = serve.workload(sizes)
    logs = Path(tempfile.mkdtemp(prefix="tempscope-attention-"))
    with contextlib.ExitStack() as stack:
        sides = [stack.enter_context(serve.tempscope_server("llama.cpp", work, logs)),
                 stack.enter_context(serve.llama_server(binary, work, logs)),
                 stack.enter_context(serve.llama_server(binary, work, logs,
                                                        extra=("-fa", "off"), name=NO_FA))]
        result = asyncio.run(serve.load(sides, work, {}))
    tok_s = {name: r["1"]["tok_s"] for name, r in result.items()}
    rounds = {name: r["1"]["round_tok_s"] for name, r in result.items()}
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(), "tok_s": tok_s, "round_tok_s": rounds,
        "tempscope_over_llama_server": tok_s[serve.TEMPSCOPE] / tok_s[serve.LLAMA],
        "tempscope_over_llama_server_fa_off": tok_s[serve.TEMPSCOPE] / tok_s[NO_FA],
        "llama_server_fa_off_over_default": tok_s[NO_FA] / tok_s[serve.LLAMA],
        "ttft_p50_s": {name: r["1"]["ttft_p50_s"] for name, r in result.items()},
        "requests": "1 client x 4 x 64 tokens, 3 rounds alternating between the servers",
    }
    (HERE / "attention.json").write_text(json.dumps(out, indent=1) + "\n")
    for name, v in tok_s.items():
        print(f"{name}: {v:.1f} tok/s (rounds {', '.join(f'{x:.1f}' for x in rounds[name])})")
    print(f"tempscope / llama-server: {out['tempscope_over_llama_server']:.2f}x; "
          f"tempscope / llama-server -fa off: {out['tempscope_over_llama_server_fa_off']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
