"""``tempscope serve`` beside llama.cpp's C++ ``llama-server``: the same embedded GGUF
(SmolLM2-135M-Instruct, Q4_1), 2 threads each, both servers up and one measured at a time, the
same requests.

Run: ``.venv/bin/python bench/serve.py`` (a few minutes on 2 idle cores; ``--quick`` is a smoke
test, under a minute per server, written to ``$TMPDIR/tempscope-serve-quick``). Writes
``bench/serve.json`` (every raw number, the machine, versions, both command lines and request
fields) and ``bench/serve.md`` (the table, with the issue's goals).

- idle: a 1-token completion with nothing else running (median of 5), request to end of stream.
- during-long: a 1-token completion sent while one 1,000-token streamed generation decodes:
  first once that one has streamed 50 tokens, then every 0.5 s while it runs (5 at most).
  Goal: <= 0.3 s (median; the max is shown).
- load: 1, 8 and 32 concurrent streaming clients, each sending 64-token completions back to
  back (1 x 4, 8 x 4, 32 x 2 requests): generated tokens / wall time (goal >= 0.9x llama-server
  at each), time to first token p50 / p99 (goal at 32 clients: p99 <= 1.5x llama-server's).
  Each load level runs in 3 rounds (the 1-client level in 9: its rounds take ~2 s each, and
  three of them gave 0.78x, 1.12x and 0.78x in one run) that alternate between the servers
  (tempscope, llama-server, tempscope, ...): a shared 2-core virtual machine drifts by +-15 %
  within minutes, so measuring one server after the other put the drift into the ratio (0.74x
  and 0.85x at 1 client on two days with the same code). llama-server is restarted before each
  of its rounds (and warmed up by one untimed request): a fresh one did 170-180 tok/s at 8
  clients, one that had served a few hundred of these requests 95-125 tok/s until it was
  restarted (its slots' state; measured 2026-12-05), so a fresh one is its best. The table
  gives tokens / wall time over all rounds; the JSON keeps each round's, and the ratio of each
  round pair.
- branch: the lab's "branch from token N" (``/v1/lab/continue`` sends the text so far plus the
  chosen tokens) at a 1,500-token context, as plain ``/v1/completions`` with token-id prompts:
  a 1-token completion of the context (so its KV could be kept), then the context plus 4 tokens,
  time to first token; 3 contexts, each new, median. llama-server reuses the first request's
  KV (``cache_prompt``, its default); tempscope's llama.cpp engine reuses the cells the first
  request left (its prefix cache). The context's own 1-token completion is the time without
  reuse: the same length prefilled from nothing.
- sweep: 64 rows (8 prompts x 8 seeds, 64 concurrent requests), 64 tokens, end of text allowed,
  temperature 1: generated tokens / wall time.

Fairness. Samplers are temperature 1 and nothing else: tempscope gets every other sampler left
out (``None`` is off there), llama-server gets each of its default samplers switched off field
by field, as tempscope's remote engine sends them (``remote_wire.llama_server_fields``: top-k 0,
top-p 1, min-p 0, typical 1, penalties 1/0, DRY, XTC, top-n-sigma, mirostat, dynatemp off, and
``samplers: ["temperature"]``). End of text is banned with ``logit_bias`` -100 on every
end-of-generation token of the model on both, and the bench fails unless
``usage.completion_tokens`` equals ``max_tokens`` (the sweep excepted). llama-server gets
``cache_prompt: false`` except in the branch measurement, whose point is that reuse. It runs at
its best: a slot for each concurrent request of the largest load (``-np 64``), a context per slot
that holds the longest request, a KV stream per slot, continuous batching, its default flash
attention (auto), weight repacking and llamafile kernels; tempscope's llama.cpp is built without
repack and tinyBLAS and runs flash attention off (batch invariance, docs/engines.md), so the
ratios include the price of invariance. The client (httpx, asyncio) runs in this process on the
same 2 cores as the server, for both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The tests' server helpers (where llama-server is, free ports, waiting for /health). Second on
# the path, so that ``bench`` below stays bench/bench.py (sys.path[0] is this folder).
sys.path.insert(1, str(ROOT))

from bench import busy_processes, machine  # noqa: E402
from tests.server_helpers import free_port, llama_server_binary, wait_until_up  # noqa: E402

from tempscope.engine.loader import embedded_gguf_path  # noqa: E402
from tempscope.engine.remote.wire import llama_server_fields, server_info  # noqa: E402
from tempscope.sampling import SamplingParams  # noqa: E402

TEMPSCOPE, LLAMA = "tempscope", "llama-server"
THREADS = 2  # per server
# Only the llama.cpp engine reads TEMPSCOPE_THREADS; torch's thread pool follows OMP_NUM_THREADS.
THREADS_ENV = {"TEMPSCOPE_THREADS": str(THREADS), "OMP_NUM_THREADS": str(THREADS)}
SERVE = "import sys; from tempscope.cli import main; sys.exit(main(sys.argv[1:]))"
BAN = -100.0  # logit_bias on end-of-generation tokens: the most both servers take
IDLE_PROMPT = "The cat slept on the"
LONG_PROMPT = "Once upon a time, in a small village by the sea,"


@dataclass(frozen=True)
class Sizes:
    """How much each measurement asks for; the defaults are the full run."""

    idle_runs: int = 5  # 1-token completions with nothing else running
    long_tokens: int = 1000  # the generation the short requests run beside
    long_lead: int = 50  # tokens it streams before the first short request
    short_runs: int = 5  # short requests during it, at most
    short_gap_s: float = 0.5  # pause between two of them
    loads: tuple[tuple[int, int], ...] = ((1, 4), (8, 4), (32, 2))  # (clients, requests each)
    load_tokens: int = 64
    load_rounds: int = 3  # rounds per load level, alternating between the servers
    one_client_rounds: int = 9  # the 1-client level's: its rounds are short (~2 s), drift is not
    branch_context: int = 1500  # tokens before the branch point
    branch_tokens: int = 4  # tokens the branch adds
    branch_runs: int = 3  # contexts, each new
    sweep_rows: int = 64
    sweep_prompts: int = 8  # rows cycle through this many prompts, a seed each
    sweep_tokens: int = 64


QUICK = Sizes(idle_runs=2, long_tokens=96, long_lead=8, short_runs=2, short_gap_s=0.1,
              loads=((1, 2), (8, 1), (32, 1)), load_tokens=8, load_rounds=1, one_client_rounds=1,
              branch_context=256, branch_runs=1, sweep_rows=16, sweep_prompts=4, sweep_tokens=8)


@dataclass(frozen=True)
class Workload:
    """The requests, the same for both servers (built once, before any server starts)."""

    sizes: Sizes
    prompts: list[str]  # short prompts: tempscope's built-in set
    prompt_tokens: int  # the longest of them, in tokens
    contexts: list[list[int]]  # branch: the context's token ids plus the branch's
    warm_context: list[int]  # one more, for the warm-up: the first long prefill is slower
    eos_bias: dict[str, float]  # {end-of-generation token id: BAN}


@dataclass
class Side:
    """One server under test, up: where it is and what every request to it carries."""

    name: str
    url: str
    fields: dict[str, Any]  # model, temperature, sampler switches
    eos_bias: dict[str, float]  # logit_bias that bans end of text
    prompt_cache: bool  # takes ``cache_prompt`` (llama-server)
    pid: int  # the server process
    setup: dict[str, Any] = field(default_factory=dict)  # recorded in the JSON


@dataclass(frozen=True)
class Reply:
    """One streamed completion as the client saw it; times in seconds from sending it."""

    first_token_s: float  # the first chunk carrying a token
    total_s: float  # the end of the stream
    tokens: int  # usage.completion_tokens
    cached: int | None  # llama-server: prompt tokens taken from its cache (timings.cache_n)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    """The ``q``-th percentile (linear interpolation between samples)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def complete(client: httpx.AsyncClient, side: Side, prompt: str | list[int],
                   max_tokens: int, seed: int, *, eos: bool = False, cache_prompt: bool = False,
                   on_token: Callable[[int], None] | None = None) -> Reply:
    """Stream one ``/v1/completions`` request and time it.

    Args:
        prompt: text, or token ids.
        eos: allow end of text; otherwise it is banned and anything but exactly
            ``max_tokens`` generated tokens is an error.
        cache_prompt: llama-server may reuse a slot's KV for a shared prefix.
        on_token: called with the number of token-carrying chunks so far, at each.
    """
    body: dict[str, Any] = {**side.fields, "prompt": prompt, "max_tokens": max_tokens,
                            "seed": seed, "stream": True,
                            "stream_options": {"include_usage": True}}
    if not eos:
        body["logit_bias"] = side.eos_bias
    if side.prompt_cache:
        body["cache_prompt"] = cache_prompt
    first: float | None = None
    usage: dict[str, Any] | None = None
    cached: int | None = None
    chunks = 0
    start = time.perf_counter()
    async with client.stream("POST", side.url + "/v1/completions", json=body) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")[:500]
            raise RuntimeError(f"{side.name} answered {response.status_code}: {text}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise RuntimeError(f"{side.name} streamed an error: {chunk['error']}")
            # A token's chunk has text, or no finish reason yet (llama-server's last chunk has
            # neither: it only says why it stopped).
            for choice in chunk.get("choices") or ():
                if choice.get("text") or choice.get("finish_reason") is None:
                    chunks += 1
                    first = time.perf_counter() - start if first is None else first
                    if on_token is not None:
                        on_token(chunks)
            usage = chunk.get("usage") or usage
            cached = (chunk.get("timings") or {}).get("cache_n", cached)
    total = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"{side.name} streamed no token")
    if usage is None:
        raise RuntimeError(f"{side.name} streamed no usage (stream_options.include_usage)")
    tokens = int(usage["completion_tokens"])
    if not eos and tokens != max_tokens:
        raise RuntimeError(f"{side.name} generated {tokens} tokens where {max_tokens} were asked "
                           "with end of text banned: the two sides would not do the same work")
    return Reply(first, total, tokens, cached)


# ----------------------------------------------------------------------------- measurements


async def idle(client: httpx.AsyncClient, side: Side, work: Workload) -> dict[str, Any]:
    """A 1-token completion with nothing else running: request to end of stream."""
    times = [(await complete(client, side, IDLE_PROMPT, 1, seed=i)).total_s
             for i in range(work.sizes.idle_runs)]
    return {"latency_s": times, "median_s": statistics.median(times)}


async def during_long(client: httpx.AsyncClient, side: Side, work: Workload) -> dict[str, Any]:
    """1-token completions sent one after another while a long streamed generation decodes."""
    s = work.sizes
    streamed = 0

    def progress(tokens: int) -> None:
        nonlocal streamed
        streamed = tokens

    long = asyncio.create_task(complete(client, side, LONG_PROMPT, s.long_tokens, seed=0,
                                        on_token=progress))
    while streamed < s.long_lead and not long.done():
        await asyncio.sleep(0.005)
    if long.done():
        long.result()  # its error, if it failed
        raise RuntimeError(f"{side.name}: the long generation ended before the short requests")
    shorts: list[dict[str, Any]] = []
    for i in range(s.short_runs):
        if i:
            await asyncio.sleep(s.short_gap_s)
        if long.done():
            break  # only requests sent while it runs count
        reply = await complete(client, side, IDLE_PROMPT, 1, seed=100 + i)
        shorts.append({"latency_s": reply.total_s, "long_still_running": not long.done()})
    done = await long
    times = [r["latency_s"] for r in shorts]
    return {"latency_s": times, "median_s": statistics.median(times), "max_s": max(times),
            "sent": len(shorts), "short": shorts,
            "long": {"tokens": done.tokens, "total_s": done.total_s,
                     "first_token_s": done.first_token_s,
                     "decode_tok_s": (done.tokens - 1) / (done.total_s - done.first_token_s)}}


async def _client(client: httpx.AsyncClient, side: Side, work: Workload, first: int,
                  requests: int, replies: list[Reply]) -> None:
    """One load client: ``requests`` completions back to back, request ids from ``first``."""
    for i in range(first, first + requests):
        replies.append(await complete(client, side, work.prompts[i % len(work.prompts)],
                                      work.sizes.load_tokens, seed=i))


async def load_level(client: httpx.AsyncClient, side: Side, work: Workload, clients: int,
                     each: int) -> list[Reply]:
    """``clients`` concurrent streaming clients, ``each`` requests back to back."""
    replies: list[Reply] = []
    await asyncio.gather(*(_client(client, side, work, c * each, each, replies)
                           for c in range(clients)))
    return replies


async def load(sides: list[Side], work: Workload,
               fresh: dict[str, Callable[[], Side]]) -> dict[str, dict[str, Any]]:
    """N concurrent streaming clients: generated tokens / wall, time to first token; each
    level in rounds that alternate between the servers. A server in ``fresh`` is restarted
    before each of its rounds (and warmed up by one untimed request). Returns each server's
    result."""
    out: dict[str, dict[str, Any]] = {side.name: {} for side in sides}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        for side in sides:
            # One untimed request first: the load is measured in a steady state, not on the
            # first request after the previous measurement (tempscope re-makes llama.cpp's
            # context for 64 short rows after the 1,000-token one, ~0.3 s).
            warm = await complete(client, side, work.prompts[0], work.sizes.load_tokens,
                                  seed=10**6)
            out[side.name]["warm_up_s"] = warm.total_s
        for clients, each in work.sizes.loads:
            rounds: dict[str, list[tuple[float, list[Reply]]]] = {s.name: [] for s in sides}
            n_rounds = work.sizes.one_client_rounds if clients == 1 else work.sizes.load_rounds
            for r in range(n_rounds):
                for i, side in enumerate(sides):
                    if side.name in fresh:
                        sides[i] = side = await asyncio.to_thread(fresh[side.name])
                        await complete(client, side, work.prompts[0], work.sizes.load_tokens,
                                       seed=10**6)
                    start = time.perf_counter()
                    replies = await load_level(client, side, work, clients, each)
                    rounds[side.name].append((time.perf_counter() - start, replies))
                    tok_s = sum(x.tokens for x in replies) / rounds[side.name][-1][0]
                    log(f"load {clients} client(s), round {r + 1}: {side.name} {tok_s:.1f} tok/s")
            for side in sides:
                walls = [wall for wall, _ in rounds[side.name]]
                replies = [x for _, rs in rounds[side.name] for x in rs]
                ttft = [x.first_token_s for x in replies]
                tokens = sum(x.tokens for x in replies)
                out[side.name][str(clients)] = {
                    "clients": clients, "requests_per_client": each,
                    "max_tokens": work.sizes.load_tokens, "rounds": len(walls),
                    "wall_s": sum(walls), "tokens": tokens, "tok_s": tokens / sum(walls),
                    "round_tok_s": [sum(x.tokens for x in rs) / wall
                                    for wall, rs in rounds[side.name]],
                    "ttft_s": ttft, "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99),
                    "latency_s": [x.total_s for x in replies]}
    if len(sides) == 2:
        a, b = (out[s.name] for s in sides)
        for clients, _ in work.sizes.loads:
            key = str(clients)
            a[key]["round_ratio"] = [x / y for x, y in zip(a[key]["round_tok_s"],
                                                           b[key]["round_tok_s"], strict=True)]
    return out


async def branch(client: httpx.AsyncClient, side: Side, work: Workload) -> dict[str, Any]:
    """A context (1-token completion), then the context plus a few tokens: time to first
    token of the second."""
    contexts: list[Reply] = []
    branches: list[Reply] = []
    for i, ids in enumerate(work.contexts):
        contexts.append(await complete(client, side, ids[:work.sizes.branch_context], 1,
                                       seed=i, cache_prompt=True))
        branches.append(await complete(client, side, ids, 1, seed=i, cache_prompt=True))
    return {"context_tokens": work.sizes.branch_context,
            "branch_tokens": work.sizes.branch_tokens,
            "context_s": [r.total_s for r in contexts],
            "branch_ttft_s": [r.first_token_s for r in branches],
            "branch_cached_tokens": [r.cached for r in branches],
            "context_median_s": statistics.median(r.total_s for r in contexts),
            "branch_ttft_median_s": statistics.median(r.first_token_s for r in branches)}


async def sweep(client: httpx.AsyncClient, side: Side, work: Workload) -> dict[str, Any]:
    """Every row of a sweep at once, end of text allowed: generated tokens / wall."""
    s = work.sizes
    start = time.perf_counter()
    replies = await asyncio.gather(*(
        complete(client, side, work.prompts[i % s.sweep_prompts], s.sweep_tokens, seed=i,
                 eos=True) for i in range(s.sweep_rows)))
    wall = time.perf_counter() - start
    tokens = [r.tokens for r in replies]
    return {"rows": s.sweep_rows, "prompts": s.sweep_prompts, "max_tokens": s.sweep_tokens,
            "wall_s": wall, "tokens": tokens, "tok_s": sum(tokens) / wall,
            "rows_ended_by_eos": sum(t < s.sweep_tokens for t in tokens)}


Measurement = Callable[[httpx.AsyncClient, Side, Workload], Awaitable[dict[str, Any]]]
# Measured one server at a time, the other idle; "load" runs on both in turn (after idle and
# during-long, before branch and sweep).
MEASUREMENTS: dict[str, Measurement] = {"idle": idle, "during-long": during_long,
                                        "branch": branch, "sweep": sweep}
NAMES = [*MEASUREMENTS, "load"]


async def measure(side: Side, work: Workload, names: list[str],
                  done: Callable[[str, dict[str, Any]], None]) -> None:
    """Warm the server up (untimed), then run each measurement in ``names``, handing each
    result to ``done`` as it comes."""
    # A new connection per request: llama-server may close one right after a streamed reply,
    # and a request sent on it before the close arrives fails ("Server disconnected").
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await asyncio.gather(*(complete(client, side, p, 8, seed=i)
                               for i, p in enumerate(work.prompts[:4])))
        await complete(client, side, work.warm_context, 1, seed=0)
        for name in names:
            log(f"{side.name}: {name}")
            done(name, await MEASUREMENTS[name](client, side, work))


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """A result's single numbers, raw lists left out (for the log)."""
    return {k: headline(v) if isinstance(v, dict) else round(v, 3)
            for k, v in result.items() if isinstance(v, dict | int | float)}


# ----------------------------------------------------------------------------- servers


def workload(sizes: Sizes) -> Workload:
    """The prompts, the branch contexts and the end-of-generation tokens, from the embedded
    model loaded in this process for a moment (before any server starts)."""
    from tempscope import load_model
    from tempscope.study.grid import builtin_prompts

    model = load_model(engine="llama.cpp")
    prompts = builtin_prompts()
    text = "\n".join(prompts) + "\n"
    need = sizes.branch_context + sizes.branch_tokens
    repeats = math.ceil(need / len(model.encode(text))) + 1
    # A different first token each ("0.", "1.", ...): no context shares a prefix with another.
    contexts = [model.encode(f"{i}. Notes\n" + text * repeats)[:need]
                for i in range(sizes.branch_runs + 1)]
    return Workload(sizes, prompts, max(len(model.encode(p)) for p in prompts), contexts[1:],
                    contexts[0], {str(t): BAN for t in model.eos_token_ids})


def pids_of(side: Side) -> Callable[[], list[int]]:
    return lambda: [side.pid]


class OtherWork:
    """CPU time the machine spends on processes other than this one and the servers measured:
    what shared the cores while a measurement ran (Linux: ``/proc``). A server up but idle
    counts as other: its share shows that it stayed idle."""

    def __init__(self, servers: Callable[[], list[int]]) -> None:
        self.servers = servers  # the servers measured, up now (the load: both)
        self.mark = self._now()

    def _now(self) -> tuple[float, float, float]:
        """(wall clock, CPU seconds of every process, of this one and the servers; a server
        stopped and waited for counts in this process's children's time)."""
        tick = os.sysconf("SC_CLK_TCK")
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        busy = sum(int(x) for i, x in enumerate(cpu) if i not in (3, 4)) / tick  # not idle, iowait
        ours = sum(os.times()[:4])  # this process and its children that ended
        for pid in self.servers():
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ours += (int(stat[11]) + int(stat[12])) / tick  # utime + stime
        return time.monotonic(), busy, ours

    def lap(self) -> dict[str, float]:
        """Wall time and other processes' CPU seconds since the last lap."""
        now = self._now()
        (wall, busy, ours), self.mark = (a - b for a, b in zip(now, self.mark, strict=True)), now
        return {"wall_s": wall, "other_cpu_s": max(0.0, busy - ours)}


def stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to a server's process group, SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()



@contextlib.contextmanager
def running(command: list[str], env: dict[str, str] | None, health: str, log_path: Path,
            timeout: float) -> Iterator[subprocess.Popen[str]]:
    """Run a server in a process group of its own until the block ends, waiting for its
    ``health`` URL; the group is killed at the end, on error too."""
    with log_path.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=env, start_new_session=True)
    try:
        wait_until_up(proc, health, log_path, timeout)
        yield proc
    finally:
        stop_group(proc)


@contextlib.contextmanager
def tempscope_server(engine: str, work: Workload, logs: Path) -> Iterator[Side]:
    """``tempscope serve`` on the embedded model, ``THREADS`` threads."""
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-c", SERVE, "serve", "--engine", engine, "--port",
               url.rsplit(":", 1)[1], "--log-level", "warning"]
    env = {**os.environ, **THREADS_ENV, "PYTHONUNBUFFERED": "1"}
    env.pop("TEMPSCOPE_API_KEY", None)
    with running(command, env, url + "/health", logs / "tempscope.log", 300) as proc:
        health = httpx.get(url + "/health", timeout=10).json()
        fields = {"model": health["model"], "temperature": 1.0}
        setup = {"command": command, "env": THREADS_ENV, "request_fields": fields,
                 "eos_bias": work.eos_bias, "health": health}
        yield Side(TEMPSCOPE, url, fields, work.eos_bias, prompt_cache=False, pid=proc.pid,
                   setup=setup)


def llama_slots(work: Workload) -> tuple[int, int]:
    """llama-server's slots (one per concurrent request of the largest load) and context per
    slot (the longest request: prompt plus generated tokens, rounded up to 256)."""
    s = work.sizes
    slots = max(2, s.sweep_rows, *(clients for clients, _ in s.loads))
    longest = max(s.branch_context + s.branch_tokens + 1,
                  work.prompt_tokens + max(s.long_tokens, s.load_tokens, s.sweep_tokens))
    return slots, 256 * math.ceil((longest + 16) / 256)


@contextlib.contextmanager
def llama_server(binary: Path, work: Workload, logs: Path, *, extra: tuple[str, ...] = (),
                 name: str = LLAMA) -> Iterator[Side]:
    """llama.cpp's ``llama-server`` on the same GGUF, ``THREADS`` threads, at its best for
    the load (:func:`llama_slots`), every default sampler switched off; ``extra`` arguments
    (e.g. ``-fa off``) go at the end of its command line, and the side is called ``name``."""
    url = f"http://127.0.0.1:{free_port()}"
    slots, per_slot = llama_slots(work)
    command = [str(binary), "-m", str(embedded_gguf_path()), "--host", "127.0.0.1", "--port",
               url.rsplit(":", 1)[1], "-t", str(THREADS), "-tb", str(THREADS), "-np",
               str(slots), "-c", str(slots * per_slot), "--no-webui", *extra]
    log_name = name.replace(" ", "_") + ".log"
    with running(command, None, url + "/health", logs / log_name, 120) as proc:
        props = httpx.get(url + "/props", timeout=10).json()
        model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
        sent, ignored = llama_server_fields(SamplingParams(temperature=1.0), server_info(props))
        if ignored:
            raise RuntimeError(f"llama-server cannot switch off {ignored}: not neutral")
        fields = {"model": model, "temperature": 1.0, **sent}
        kept = ("build_info", "total_slots", "model_path", "default_generation_settings")
        yield Side(name, url, fields, work.eos_bias, prompt_cache=True, pid=proc.pid, setup={
            "command": command, "slots": slots, "ctx_per_slot": per_slot,
            "request_fields": fields, "eos_bias": work.eos_bias,
            "cache_prompt": "false, except in the branch measurement",
            "props": {k: props.get(k) for k in kept}})


# ----------------------------------------------------------------------------- report


def versions(binary: Path | None) -> dict[str, Any]:
    """tempscope's version and the commit of the source that serves (the installed one), the
    llama-server build, httpx."""
    import tempscope

    src = Path(tempscope.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(src), *args], capture_output=True,
                              text=True).stdout.strip()

    server = None
    if binary is not None:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
        server = " ".join((done.stdout + done.stderr).split())
    return {"tempscope": importlib.metadata.version("tempscope"), "tempscope_source": str(src),
            "tempscope_commit": git("rev-parse", "HEAD"),
            "tempscope_dirty": bool(git("status", "--porcelain", "--", ".")),
            "llama_server": server, "llama_server_binary": str(binary) if binary else None,
            "httpx": httpx.__version__}


@dataclass(frozen=True)
class Goal:
    """One of the issue's goals: how the table shows it and whether a row meets it."""

    text: str
    met: Callable[[float, float | None], bool | None]  # (tempscope's, llama-server's value)


def _ratio(test: Callable[[float], bool]) -> Callable[[float, float | None], bool | None]:
    return lambda ours, base: None if not base else test(ours / base)


INTERACTIVE = Goal("<= 0.3 s", lambda ours, _: ours <= 0.3)
THROUGHPUT = Goal(">= 0.9x", _ratio(lambda r: r >= 0.9))
TTFT_P99 = Goal("<= 1.5x", _ratio(lambda r: r <= 1.5))


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every number of the table: what, tempscope's and llama-server's value (``None`` where
    not measured), the unit, the goal ("report" where none) and whether it is met."""
    s = res["sizes"]
    ours = res["sides"].get(TEMPSCOPE, {}).get("results", {})
    base = res["sides"].get(LLAMA, {}).get("results", {})
    out: list[dict[str, Any]] = []

    def add(what: str, key: str, pick: Callable[[dict[str, Any]], float], unit: str,
            goal: Goal | None = None) -> None:
        a = pick(ours[key]) if key in ours else None
        b = pick(base[key]) if key in base else None
        out.append({"what": what, TEMPSCOPE: a, LLAMA: b, "unit": unit,
                    "goal": goal.text if goal else "report",
                    "met": goal.met(a, b) if goal and a is not None else None})

    add(f"1-token completion, idle (median of {s['idle_runs']})", "idle",
        lambda r: r["median_s"], "s")
    during = f"1-token completion during a {s['long_tokens']}-token generation"
    add(f"{during}, median", "during-long", lambda r: r["median_s"], "s", INTERACTIVE)
    add(f"{during}, max", "during-long", lambda r: r["max_s"], "s")

    def at(clients: int, name: str) -> Callable[[dict[str, Any]], float]:
        return lambda r: float(r[str(clients)][name])

    top = max(clients for clients, _ in s["loads"])
    for clients, each in s["loads"]:
        what = f"{clients} client(s) x {each} x {s['load_tokens']} tokens"
        add(f"{what}: throughput", "load", at(clients, "tok_s"), "tok/s", THROUGHPUT)
        add(f"{what}: time to first token p50", "load", at(clients, "ttft_p50_s"), "s")
        add(f"{what}: time to first token p99", "load", at(clients, "ttft_p99_s"), "s",
            TTFT_P99 if clients == top else None)
    ctx = f"{s['branch_context']}-token context"
    add(f"branch at a {ctx} (+{s['branch_tokens']} tokens): time to first token", "branch",
        lambda r: r["branch_ttft_median_s"], "s")
    add(f"the {ctx} itself: 1-token completion", "branch", lambda r: r["context_median_s"], "s")
    add(f"{s['sweep_rows']}-row sweep x {s['sweep_tokens']} tokens, end of text allowed",
        "sweep", lambda r: r["tok_s"], "tok/s")
    return out


def markdown(res: dict[str, Any]) -> str:
    """The table: one row per number, tempscope beside llama-server, the goals."""
    m, v = res["machine"], res["versions"]
    skipped = res["sides"].get(LLAMA, {}).get("skipped")

    def share(laps: dict[str, dict[str, float]]) -> float:
        return 100 * sum(x["other_cpu_s"] for x in laps.values()) / sum(
            x["wall_s"] for x in laps.values())

    shared = ", ".join(f"{share(side['other_work']):.0f} % of a core during {name}'s"
                       for name, side in res["sides"].items() if side.get("other_work"))
    about = (
        f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores), {THREADS} threads per "
        f"server, both up, one measured at a time (the load levels in rounds alternating "
        f"between them)"
        + (f"; other processes used {shared} measurements (near 0 on a quiet machine)"
           if shared else "")
        + f". tempscope {v['tempscope']} "
        f"({res['engine']} engine, commit {v['tempscope_commit'][:10]}"
        f"{', uncommitted changes' if v['tempscope_dirty'] else ''})")
    if v["llama_server"]:
        about += f"; llama-server {v['llama_server']}"
    about += " (`bench/serve.py`"
    about += ", --quick: smoke-test sizes, not comparable)." if res["quick"] else ")."
    if skipped:
        about += f" llama-server {skipped}."
    lines = [about, "",
             "| measurement | tempscope | llama-server | tempscope / llama-server | goal | met |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows(res):
        a, b = r[TEMPSCOPE], r[LLAMA]
        cells = ["-" if x is None else f"{x:.3f} s" if r["unit"] == "s" else f"{x:.0f} tok/s"
                 for x in (a, b)]
        ratio = f"{a / b:.2f}x" if a is not None and b else "-"
        met = "-" if r["met"] is None else "yes" if r["met"] else "**no**"
        lines.append(f"| {r['what']} | {cells[0]} | {cells[1]} | {ratio} | {r['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--only", choices=NAMES,
                    help="one measurement, into the results already at --out")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON file (the table goes beside it as .md); default "
                         "bench/serve.json, or with --quick $TMPDIR/tempscope-serve-quick/")
    ap.add_argument("--engine", choices=["llama.cpp", "torch"], default="llama.cpp",
                    help="tempscope's engine (default llama.cpp)")
    ap.add_argument("--skip-llama-server", action="store_true",
                    help="measure tempscope only")
    args = ap.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the servers' process groups are killed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    sizes = QUICK if args.quick else Sizes()
    out: Path = args.out or (Path(tempfile.gettempdir()) / "tempscope-serve-quick" / "serve.json"
                             if args.quick else HERE / "serve.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="tempscope-serve-"))
    names = [args.only] if args.only else NAMES
    binary = None if args.skip_llama_server else llama_server_binary()

    results: dict[str, Any] = {}
    if args.only and out.exists():
        results = json.loads(out.read_text())
        if results.get("quick") != args.quick or results.get("engine") != args.engine:
            results = {}
    if results:
        results.setdefault("reruns", []).append(
            {"only": args.only, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    else:
        results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "quick": args.quick, "engine": args.engine, "sizes": asdict(sizes),
                   "sides": {}}
    results.update(machine=machine(), versions=versions(binary),
                   busy_processes_start=busy_processes())
    log(f"building the requests (server logs in {logs})")
    work = workload(sizes)

    starts: dict[str, Callable[[], contextlib.AbstractContextManager[Side]]] = {
        TEMPSCOPE: lambda: tempscope_server(args.engine, work, logs)}
    if binary is not None:
        starts[LLAMA] = lambda: llama_server(binary, work, logs)
    else:
        why = ("skipped (--skip-llama-server)" if args.skip_llama_server else
               "skipped: not built; run scripts/build-llama-server.sh (~10 min on 2 cores, "
               "once) or set TEMPSCOPE_LLAMA_SERVER to a llama-server binary")
        log(f"llama-server {why}")
        entry = results["sides"].setdefault(LLAMA, {})
        if not entry.get("results"):  # an --only rerun keeps the numbers already there
            entry["skipped"] = why

    def save() -> None:  # after every measurement: a run cut short keeps what it measured
        results.update(load_average_end=os.getloadavg())
        results["checks"] = [r for r in rows(results) if r["goal"] != "report"]
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(results))

    with contextlib.ExitStack() as stack:
        # Both servers up; one is measured at a time while the other idles (0 % of a core:
        # the "other processes" figure of each measurement checks it).
        sides: dict[str, Side] = {}
        others: dict[str, OtherWork] = {}
        servers: dict[str, contextlib.ExitStack] = {}

        def up(name: str) -> Side:
            """Start ``name``'s server, stopping the one running first (a restart)."""
            if name in servers:
                servers.pop(name).close()
            servers[name] = contextlib.ExitStack()
            sides[name] = side = servers[name].enter_context(starts[name]())
            results["sides"][name].update(side.setup)
            return side

        def stop_all() -> None:
            for server in servers.values():
                server.close()

        stack.callback(stop_all)
        for name in starts:
            entry = results["sides"].setdefault(name, {})
            entry.pop("skipped", None)
            entry.update(load_average_before=os.getloadavg(),
                         busy_processes_before=busy_processes())
            log(f"starting {name}")
            up(name)

        def done(name: str, key: str, result: dict[str, Any]) -> None:
            entry = results["sides"][name]
            entry.setdefault("results", {})[key] = result
            entry.setdefault("other_work", {})[key] = lap = others[name].lap()
            entry["load_average_after"] = os.getloadavg()
            save()
            log(f"{name} {key}: {json.dumps(headline(result))}; other processes: "
                f"{lap['other_cpu_s']:.1f} CPU s in {lap['wall_s']:.1f} s")

        def one_at_a_time(wanted: list[str]) -> None:
            for name, side in sides.items():
                others[name] = OtherWork(pids_of(side))
                asyncio.run(measure(side, work, [n for n in names if n in wanted],
                                    functools.partial(done, name)))

        # The load runs before branch and sweep, as in the earlier one-server-at-a-time runs:
        # those leave long contexts and 64 busy slots behind in llama-server.
        one_at_a_time(["idle", "during-long"])
        if "load" in names:
            for name in sides:
                others[name] = OtherWork(lambda: [s.pid for s in sides.values()])
            log("load: " + ", ".join(sides) + " in turn")
            # llama-server is restarted before each of its rounds: measured here, one started
            # afresh did 170-180 tok/s at 8 clients on a short prompt, and ~95-125 after some
            # hundreds of requests with the benchmark's prompts, until restarted. Its best.
            fresh: dict[str, Callable[[], Side]] = (
                {LLAMA: functools.partial(up, LLAMA)} if LLAMA in sides else {})
            for name, result in asyncio.run(load(list(sides.values()), work, fresh)).items():
                done(name, "load", result)
        one_at_a_time(["branch", "sweep"])
    log("servers stopped")
    results["busy_processes_end"] = busy_processes()
    save()
    print(markdown(results))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
