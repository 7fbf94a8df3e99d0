"""How long a short request waits behind a long one, and what a client that gives up costs.

Run: ``.venv/bin/python bench/reliability.py [--engine llama.cpp|torch]`` (about a minute).
Starts a real ``tempscope serve`` on the embedded model, then:

1. alone: a one-token request on an idle server (the baseline latency);
2. behind a long request: 2 prompts of ~4,000 tokens with ``max_tokens: 1`` (the largest a
   request may send under the default caps), then the short one 0.3 s later;
3. behind a long request whose client gives up after 0.3 s: the same, the long client
   disconnecting before the short one is sent;
4. the server's peak RSS over the whole run.

Writes ``bench/reliability.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
LONG_PROMPTS = ["The cat slept on the mat while the dog watched the door. " * 300,
                "The dog watched the door while the cat slept on the mat. " * 300]  # ~3,900 each


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def short(url: str) -> float:
    start = time.perf_counter()
    r = httpx.post(url + "/v1/completions", json={"model": "default", "prompt": "Hi",
                                                  "max_tokens": 1, "temperature": 0},
                   timeout=600)
    r.raise_for_status()
    return time.perf_counter() - start


def long_request(url: str, *, give_up_after: float | None, out: dict[str, Any]) -> None:
    # A fresh opening for each phase: the llama.cpp engine would otherwise reuse the cells
    # an earlier phase left (its prefix cache) and answer at once.
    opening = f"Run {time.monotonic_ns()}. "
    body = {"model": "default", "prompt": [opening + p for p in LONG_PROMPTS], "max_tokens": 1,
            "temperature": 0}
    start = time.perf_counter()
    try:
        r = httpx.post(url + "/v1/completions", json=body,
                       timeout=give_up_after if give_up_after else 600)
        out["status"] = r.status_code
        out["prompt_tokens"] = r.json().get("usage", {}).get("prompt_tokens")
    except httpx.TimeoutException:
        out["status"] = "client gave up"
    out["seconds"] = time.perf_counter() - start


def behind_long(url: str, *, give_up_after: float | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    thread = threading.Thread(target=long_request, args=(url,),
                              kwargs={"give_up_after": give_up_after, "out": info})
    thread.start()
    time.sleep(0.3 if give_up_after is None else give_up_after + 0.05)
    waited = short(url)
    thread.join()
    return {"short_request_s": waited, "long_request": info}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="llama.cpp", choices=["llama.cpp", "torch"])
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("tempscope")), "serve", "--engine", args.engine,
         "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.25)
        short(url)  # warm up
        result: dict[str, Any] = {"engine": args.engine}
        result["alone_s"] = min(short(url) for _ in range(3))
        result["behind_long"] = behind_long(url, give_up_after=None)
        result["behind_long_client_gone"] = behind_long(url, give_up_after=0.3)
        health = httpx.get(url + "/health").json()
        result["batcher"] = health["batcher"]
        result["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
        result["limits"] = {k: health["limits"][k] for k in (
            "max_prompt_tokens", "max_request_prompt_tokens", "max_batch_prompt_tokens")}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = HERE / f"reliability-{args.engine}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
