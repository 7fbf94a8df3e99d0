"""Temperature-lab timings in a real browser (Debian's Chromium through Playwright).

Run: ``.venv/bin/python bench/lab.py`` (under a minute on the embedded model with the llama.cpp
engine; ``--model`` / ``--engine`` pick another). Writes ``bench/lab-results.json``.

- redraw: the step view's temperature slider redraws the raw distribution from the step's
  cached logits in the browser (softmax over the whole vocabulary, no request): time from the
  slider's ``input`` event until the chart is redrawn, for 20 slider positions. The main
  next-token chart's slider is timed the same way.
- processed redraw: with a sampler on (top-k 40), the processed bars come from the server,
  which reuses the step's cached logits (``"cached": true``, no model call): one
  ``POST /v1/lab/step`` round trip, timed from the page.
- side by side: time from the click on "Side by side" (4 temperatures, 32 tokens each, one
  batched request) to the first token on screen, and to every column finished.

Timings are medians over ``--runs`` runs; these are measurements, not goals.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHROMIUM = "/usr/bin/chromium"

SLIDER_REDRAW = """async (id) => {
  const slider = document.getElementById(id);
  const times = [];
  for (let i = 0; i < 20; i++) {
    slider.value = String(100 + 40 * i);
    const t0 = performance.now();
    slider.dispatchEvent(new Event("input", { bubbles: true }));  // redraws synchronously
    times.push(performance.now() - t0);
    await new Promise((r) => requestAnimationFrame(r));
  }
  return times;
}"""

SIDE_BY_SIDE = """async () => {
  const box = document.getElementById("columns");
  const t0 = performance.now();
  let first = null;
  const seen = new Promise((resolve) => {
    new MutationObserver((_, obs) => {
      if (first === null && box.querySelector(".column .t")) {
        first = performance.now() - t0; obs.disconnect(); resolve();
      }
    }).observe(box, { childList: true, subtree: true });
  });
  document.getElementById("side").click();
  await seen;
  while ([...box.querySelectorAll(".column")].some((c) => c.dataset.state !== "done")) {
    await new Promise((r) => setTimeout(r, 5));
  }
  return { first_token_ms: first, all_done_ms: performance.now() - t0,
           tokens: box.querySelectorAll(".column .t").length };
}"""

PROCESSED_ROUND_TRIP = """async (body) => {
  const t0 = performance.now();
  const res = await fetch("/v1/lab/step", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json();
  return { ms: performance.now() - t0, cached: data.cached };
}"""


def serve(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    cli = ["serve", "--port", str(port), "--log-level", "warning"]
    if args.model:
        cli += ["-m", args.model]
    if args.engine:
        cli += ["--engine", args.engine]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from tempscope.cli import main;"
                             " sys.exit(main(sys.argv[1:]))", *cli])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise SystemExit("the server did not start in 300 s")


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def measure(page: Any, url: str, runs: int) -> dict[str, Any]:
    page.goto(url + "/")
    page.wait_for_selector("#chart .row")
    main = page.evaluate(SLIDER_REDRAW, "temp-slider")
    page.fill("#max-tokens", "32")
    sides = []
    for seed in range(runs):
        page.fill("#seed", str(100 + seed))
        sides.append(page.evaluate(SIDE_BY_SIDE))
    # Open a step of the T = 1 column and move its slider.
    page.click(".column[data-temperature='1'] .t >> nth=5")
    page.wait_for_selector("#step-chart .row .alt")
    step = page.evaluate(SLIDER_REDRAW, "step-t")
    ids = page.eval_on_selector_all(".column[data-temperature='1'] .t",
                                    "els => els.slice(0, 5).map(e => +e.dataset.tokenId)")
    body = {"prompt": page.input_value("#prompt"), "tokens": ids, "temperatures": [0.5],
            "top": 15, "top_k": 40}
    trips = [page.evaluate(PROCESSED_ROUND_TRIP, {**body, "temperatures": [0.3 + 0.2 * i]})
             for i in range(max(runs, 5))]
    vocab = page.evaluate("(async () => (await (await fetch('/v1/info')).json())"
                          ".facts.vocab_size)()")
    return {
        "vocab_size": vocab,
        "main_slider_redraw_ms": {"median": median(main), "max": round(max(main), 3),
                                  "n": len(main)},
        "step_slider_redraw_ms": {"median": median(step), "max": round(max(step), 3),
                                  "n": len(step)},
        "step_processed_round_trip_ms": {"median": median([t["ms"] for t in trips]),
                                         "all_cached": all(t["cached"] for t in trips),
                                         "n": len(trips)},
        "side_by_side": {
            "temperatures": page.input_value("#lab-temps"), "max_tokens": 32,
            "first_token_ms": median([s["first_token_ms"] for s in sides]),
            "all_done_ms": median([s["all_done_ms"] for s in sides]),
            "tokens": [s["tokens"] for s in sides], "runs": len(sides)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="default: the embedded model")
    ap.add_argument("--engine", default=None, choices=["auto", "torch", "llama.cpp"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", type=Path, default=HERE / "lab-results.json")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    proc = serve(args, args.port)
    try:
        url = f"http://127.0.0.1:{args.port}"
        health = httpx.get(url + "/health").json()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            started = os.getloadavg()[0]
            numbers = measure(page, url, args.runs)
            result = {
                "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "model": health["model"], "engine": health["engine"],
                "browser": f"Chromium {browser.version}", "cpu": platform.processor() or
                platform.machine(), "cores": os.cpu_count(),
                "load_average_start_end": [round(started, 2), round(os.getloadavg()[0], 2)],
                **numbers,
            }
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
