"""Continuous batching through a real ``tempscope serve`` over HTTP, on both engines (the tiny
GGUF, so it runs in seconds): a short request is answered while a long one streams, seeded
requests sent into a busy server give the tokens they give alone, a client that hangs up frees
its row at once, and on llama.cpp a prompt that extends a finished one reuses its cells and
gets the same probabilities as a fresh prefill."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import HAVE_LLAMA
from tests.server_helpers import LiveServer, live_server

ENGINES = ["torch", "llama.cpp"] if HAVE_LLAMA else ["torch"]
NO_EOS = {"256": -100}  # the tiny model's end of text banned: rows run to their budget
LONG = 120  # tokens of the long request (the tiny GGUF reads 128)


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest, tiny_gguf: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp(f"serve-{request.param}")
    with live_server(folder / "model", "--engine", request.param, model=str(tiny_gguf)) as s:
        yield s


def complete(server: LiveServer, prompt: str, tokens: int, **extra: Any) -> dict[str, Any]:
    body = {"model": server.model, "prompt": prompt, "max_tokens": tokens,
            "temperature": 1.0, "logit_bias": NO_EOS, **extra}
    r = httpx.post(server.base_url + "/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def stats(server: LiveServer) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(server.url + "/health").json()["batcher"]
    return out


def stream_long(server: LiveServer, tokens: int, got: list[str], started: threading.Event,
                **extra: Any) -> None:
    body = {"model": server.model, "prompt": "Long", "max_tokens": tokens, "stream": True,
            "temperature": 1.0, "logit_bias": NO_EOS, "logprobs": 0, **extra}
    with httpx.stream("POST", server.base_url + "/completions", json=body, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                got += (choice.get("logprobs") or {}).get("tokens") or []  # one per token
                started.set()


def test_a_short_request_is_answered_while_a_long_one_streams(server: LiveServer) -> None:
    got: list[str] = []
    started = threading.Event()
    long = threading.Thread(target=stream_long, args=(server, LONG, got, started))
    long.start()
    try:
        assert started.wait(60)
        short = complete(server, "Hi", 1)
        during = len(got)
    finally:
        long.join()
    assert short["usage"]["completion_tokens"] == 1
    assert during < LONG - 10, during  # the long stream was far from done
    assert len(got) == LONG  # and it went on to the end


def test_seeded_requests_into_a_busy_server_give_their_tokens_alone(
        server: LiveServer) -> None:
    """Each request alone first; then all of them sent at staggered moments while a long
    stream runs, so they join and leave a running session at different steps. Every other
    one asks for no log-probs the second time (its rows skip the step numbers): the same
    text still."""
    asks = [("The cat", 7, 12), ("Once", 8, 30), ("The cat", 9, 5), ("x" * 40, 10, 20),
            ("Hello there", 11, 1)]
    alone = [complete(server, p, n, seed=s, logprobs=1)["choices"][0] for p, s, n in asks]
    got: list[str] = []
    started = threading.Event()
    long = threading.Thread(target=stream_long, args=(server, LONG, got, started),
                            kwargs={"seed": 1})
    long.start()
    try:
        assert started.wait(60)

        def late(i: int) -> dict[str, Any]:
            time.sleep(0.03 * i)
            p, s, n = asks[i]
            numbers = {"logprobs": 1} if i % 2 == 0 else {}
            out: dict[str, Any] = complete(server, p, n, seed=s, **numbers)["choices"][0]
            return out

        with ThreadPoolExecutor(len(asks)) as pool:
            busy = list(pool.map(late, range(len(asks))))
    finally:
        long.join()
    for i, (a, b) in enumerate(zip(alone, busy, strict=True)):
        assert a["text"] == b["text"]
        if i % 2 == 0:
            assert a["logprobs"]["token_logprobs"] == b["logprobs"]["token_logprobs"]
        else:
            assert b["logprobs"] is None


def test_a_client_that_hangs_up_frees_its_row_at_once(server: LiveServer) -> None:
    before = stats(server)
    body = {"model": server.model, "prompt": "Go", "max_tokens": LONG, "stream": True,
            "temperature": 1.0, "logit_bias": NO_EOS}
    with httpx.stream("POST", server.base_url + "/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # one token arrived: hang up
    deadline = time.monotonic() + 30
    while stats(server)["rows_cancelled"] == before["rows_cancelled"]:
        assert time.monotonic() < deadline, "the row was never cancelled"
        time.sleep(0.02)
    after = stats(server)
    assert after["tokens"] - before["tokens"] < LONG
    assert after["running_jobs"] == 0
    assert complete(server, "Still here", 2)["usage"]["completion_tokens"] == 2


def test_a_prompt_extending_a_finished_one_reuses_its_cells(server: LiveServer) -> None:
    """llama.cpp: the branch's prompt (the first request's prompt and text) starts from the
    cells the first request left, and its first token's probabilities are those of a fresh
    prefill (/v1/distribution computes the same prompt from nothing)."""
    engine = httpx.get(server.url + "/health").json()["engine"]
    if engine != "llama.cpp":
        pytest.skip("prefix reuse is llama.cpp's (torch prefills each prompt afresh)")
    prompt = "The cat slept on the mat and then the dog came in to look around"
    answer = complete(server, prompt, 8, seed=3)
    first = answer["choices"][0]["text"]
    before = stats(server)["prefix_tokens_reused"]
    r = httpx.post(server.base_url + "/completions", timeout=60, json={
        "model": server.model, "prompt": prompt + first[:5], "max_tokens": 1,
        "temperature": 1.0, "seed": 0, "logprobs": 5})  # T = 1, no sampler: the raw numbers
    assert r.status_code == 200, r.text
    branch = r.json()
    reused = stats(server)["prefix_tokens_reused"] - before
    # All of the first prompt but its last token or two (merges may join them with the text).
    assert reused >= answer["usage"]["prompt_tokens"] - 2
    top = branch["choices"][0]["logprobs"]["top_logprobs"][0]
    dist = httpx.post(server.base_url + "/distribution",
                      json={"model": server.model, "prompt": prompt + first[:5],
                            "temperatures": [1.0], "top": 5}, timeout=60)
    assert dist.status_code == 200, dist.text
    answer = dist.json()
    fresh = {tok["text"]: p for tok, p in zip(answer["tokens"],
                                              answer["temperatures"][0]["raw_probs"],
                                              strict=True)}
    whole = {t: lp for t, lp in top.items() if "\ufffd" not in t}  # bytes share one text
    assert len(whole) >= 3
    for text, logprob in whole.items():
        assert math.exp(logprob) == pytest.approx(fresh[text], rel=1e-6, abs=1e-9)
