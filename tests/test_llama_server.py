"""The remote engine against llama.cpp's own C++ server (``llama-server``, built by
``scripts/build-llama-server.sh``) on the embedded GGUF: detection, every sampler switched off
or forwarded in llama.cpp's names, its log-probability shape, exact next-token views, raw and
processed side by side, and the CLI (``next``, ``generate``, ``sweep``, ``report``, ``study
degeneration``) through ``--endpoint``. Skipped, saying how to build it, when it is missing."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tempscope.engine.remote.client import RemoteClient
from tempscope.engine.remote.engine import remote_generate, remote_next_token
from tempscope.engine.remote.wire import LLAMA_SERVER_OFF
from tempscope.sampling import SamplingParams
from tests.conftest import run_cli
from tests.server_helpers import LiveServer, live_llama_server

pytestmark = pytest.mark.slow

PROMPT = "The cat slept on the"
SLOTS = 4
CTX = 2048  # 512 tokens per slot: the study's 35-token prompts and 8 new tokens fit
# Every sampler left off, as a sweep's manifest must record it (the DRY, XTC and
# top-n-sigma included).
OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0,
       "dry_multiplier": 0.0, "xtc_probability": 0.0, "top_n_sigma": -1.0, "mirostat": 0,
       "dynatemp_range": 0.0}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_llama_server(tmp_path_factory.mktemp("llama-server") / "server.log", ctx=CTX,
                           slots=SLOTS) as s:
        yield s


def client(server: LiveServer) -> RemoteClient:
    return RemoteClient(server.base_url, backoff=0.01, max_retries=2, timeout=120,
                        concurrency=SLOTS)


def test_detected_by_its_props_and_every_sampler_switched_off(llama: LiveServer) -> None:
    with client(llama) as c:
        info = c.server
        assert info.is_llama_server and info.n_ctx == CTX // SLOTS
        assert set(LLAMA_SERVER_OFF) <= info.accepts  # every switch it has, read from /props
        assert c.neutral_fields() == dict(LLAMA_SERVER_OFF) and c.neutral_refused == {}
        assert c.n_vocab == 49152
        assert c.logprobs_fields() == ({"post_sampling_probs": False}, True)


def test_cli_next_is_exact_at_every_temperature(llama: LiveServer) -> None:
    """The issue's failing command now works, and says it is exact: every token's
    log-probability came back (n_probs = 49,152)."""
    proc = run_cli("next", PROMPT, "-t", "0.5", "1", "2", "--top", "3", "--seed", "0",
                   "--endpoint", llama.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "exact over all 49,152 tokens" in proc.stdout and "renormalised" not in proc.stdout
    assert "dry_multiplier=0" in proc.stdout and "top_n_sigma=-1" in proc.stdout
    proc = run_cli("next", PROMPT, "-t", "0.5", "1", "2", "--top", "3", "--json",
                   "--endpoint", llama.base_url)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exact"] and data["approximation"] == "none" and data["top_n"] == 49152
    assert data["mass_outside_top_n"] < 1e-3
    half, one, two = data["results"]
    assert one["top"][0]["text"] == " couch" and all(r["exact"] for r in data["results"])
    # Exact over the whole vocabulary: p_T(i) = p(i)^(1/T) / sum_j p(j)^(1/T). At T = 1 that
    # is the server's own number (its 49,152 float32 probabilities sum to 1 within ~1e-4); at
    # T = 0.5 and 2 it follows from all of them.
    p1 = [row["probability"] for row in one["top"]]
    assert math.isclose(p1[0], math.exp(one["top"][0]["logprob"]), rel_tol=1e-3)
    ratio = half["top"][0]["probability"] / half["top"][1]["probability"]
    assert math.isclose(ratio, (p1[0] / p1[1]) ** 2, rel_tol=1e-6)
    assert two["entropy"] > one["entropy"] > half["entropy"] > 0


def test_cli_next_shows_raw_and_processed(llama: LiveServer) -> None:
    """With sampler options the server runs them, and each temperature shows the distribution
    before (exact, from every token's logprob) and after its samplers (post_sampling_probs)."""
    proc = run_cli("next", PROMPT, "-t", "0.5", "1", "--top-k", "3", "--top", "5", "--seed",
                   "0", "--json", "--endpoint", llama.base_url)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["chain"] == ["temperature", "top_k"]
    for view in data["results"]:
        rows = view["top"]
        assert view["kept"] == 3
        processed = [r["processed_probability"] for r in rows]
        assert processed[3:] == [0.0, 0.0] and math.isclose(sum(processed), 1.0, rel_tol=1e-5)
        # top-k after temperature keeps the three likeliest: their T-only shares renormalised
        head = [r["probability"] for r in rows[:3]]
        for p, q in zip(head, processed, strict=False):
            assert math.isclose(q, p / sum(head), rel_tol=1e-4)
        assert view["sampled"] in [r["text"] for r in rows[:3]]
    one = data["results"][1]["top"]
    assert [r["text"] for r in one[:3]] == [" couch", " mat", " bed"]
    assert round(one[0]["processed_probability"], 3) == 0.838  # the numbers
    table = run_cli("next", PROMPT, "-t", "1", "--top-k", "3", "--top", "4", "--endpoint",
                    llama.base_url)
    assert table.returncode == 0, table.stderr
    assert "processed" in table.stdout and "3 tokens survive the server's samplers" in (
        table.stdout)


def test_generate_raw_logprobs_ids_and_every_sampler_named(llama: LiveServer) -> None:
    with client(llama) as c:
        out = remote_generate(c, PROMPT, [SamplingParams(temperature=0),
                                          SamplingParams(temperature=1.5)],
                              n=2, max_new_tokens=8, seed=1)
        forwarded = remote_generate(
            c, PROMPT, SamplingParams(temperature=0.8, top_k=5, dry_multiplier=0.8,
                                      xtc_threshold=0.2, presence_penalty=0.3, epsilon=0.01),
            max_new_tokens=4, seed=2)
    greedy, _, hot, _ = out
    assert out[0].text == out[1].text and out[0].text  # greedy
    for s in out:
        assert s.logprobs_raw and math.isfinite(s.mean_logprob) and s.n_tokens >= 1
        assert all(st.token_id >= 0 for st in s.steps)  # llama-server gives token ids
        assert {k: s.sent[k] for k in OFF} == OFF and s.sent["samplers"] == ["temperature"]
        assert s.ignored == []
    # Raw log p at T = 1.5 with nothing cut off: far less likely text than the greedy one.
    assert hot.mean_logprob < greedy.mean_logprob - 1
    f = forwarded[0]
    assert f.ignored == ["epsilon"]  # llama.cpp has no epsilon sampler: said, not sent
    assert f.sent["samplers"] == ["penalties", "dry", "temperature", "top_k", "xtc"]
    assert f.sent["top_k"] == 5 and f.sent["dry_multiplier"] == 0.8
    assert f.sent["dry_penalty_last_n"] == CTX // SLOTS  # tempscope's whole history
    assert f.sent["dry_sequence_breakers"] == ["\n", ":", "\"", "*"]
    assert f.sent["repeat_last_n"] == CTX // SLOTS and f.sent["xtc_probability"] == 1.0
    # The same request as sent, and with the server's own defaults: the defaults differ.
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 1.5, "seed": hot.seed}
    told = httpx.post(llama.base_url + "/completions", json={**body, **hot.sent},
                      timeout=120).json()
    assert told["choices"][0]["text"] == hot.text
    settings = httpx.get(llama.url + "/props", timeout=10).json()[
        "default_generation_settings"]["params"]
    assert settings["top_k"] == 40 and settings["min_p"] > 0  # what the neutral values undo


def test_cli_generate_warns_about_what_it_cannot_apply(llama: LiveServer) -> None:
    proc = run_cli("generate", PROMPT, "-t", "0", "1", "--n", "2", "--max-new-tokens", "6",
                   "--seed", "1", "--json", "--endpoint", llama.base_url)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 4 and rows[0]["text"] == rows[1]["text"]
    assert all(r["remote"]["logprobs_raw"] and r["remote"]["ignored_settings"] == []
               for r in rows)
    proc = run_cli("generate", PROMPT, "--top-a", "0.2", "--max-new-tokens", "3", "--seed",
                   "0", "--endpoint", llama.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "top_a" in proc.stderr and "NOT applied" in proc.stderr
    assert not re.search(r"\bnan\b", proc.stdout, re.IGNORECASE)


def test_cli_generate_steps_show_raw_and_processed(llama: LiveServer) -> None:
    """``generate --json`` against llama-server: each step has its raw log p and the one after
    the server's samplers (a second request, same seed, post_sampling_probs)."""
    proc = run_cli("generate", PROMPT, "-t", "1", "--top-k", "3", "--top", "5",
                   "--max-new-tokens", "5", "--seed", "4", "--json", "--endpoint",
                   llama.base_url)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["remote"]["sent_settings"]["samplers"] == ["temperature", "top_k"]
    for step in row["steps"]:
        raw, after = step["raw_logprob"], step["logprob"]
        assert math.isfinite(raw) and math.isfinite(after)
        assert after >= raw - 1e-6  # top-k renormalises over fewer tokens: p can only grow
        probs = [a["prob"] for a in step["top"]]
        assert sum(p > 0 for p in probs) <= 3 and probs[3:] == [0.0] * len(probs[3:])
        assert math.isclose(sum(probs), 1.0, rel_tol=1e-4)  # the three kept, renormalised
    trace = run_cli("generate", PROMPT, "-t", "1", "--top-k", "3", "--max-new-tokens", "3",
                    "--seed", "4", "--trace", "--endpoint", llama.base_url)
    assert trace.returncode == 0, trace.stderr
    assert "(T=1: " in trace.stdout and not re.search(r"\bnan\b", trace.stdout, re.I)


def test_cli_sweep_manifest_and_report(llama: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("sweep", "-p", PROMPT, "-p", "Once upon a time", "-t", "0", "1.5", "--n",
                   "2", "--max-new-tokens", "6", "--seed", "1", "--out", str(out),
                   "--endpoint", llama.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "8 samples" in proc.stdout
    remote = json.loads((out / "manifest.json").read_text())["remote"]
    assert remote["logprobs_raw"] and remote["ignored"] == [] and remote["refused"] == {}
    assert remote["neutral"] == dict(LLAMA_SERVER_OFF) and remote["neutral_refused"] == {}
    sent = remote["sent"]["default"]
    assert {k: sent[k] for k in OFF} == OFF and sent["samplers"] == ["temperature"]
    records = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(r["text"] for r in records)
    proc = run_cli("report", str(out))
    assert proc.returncode == 0, proc.stderr
    text = re.sub(r"data:[^\"')]+", "", (out / "report.html").read_text())
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_cli_study_degeneration(llama: LiveServer, tmp_path: Path) -> None:
    from tempscope.study.degeneration import DECODERS, load_study

    out = tmp_path / "degen"
    proc = run_cli("study", "degeneration", "--endpoint", llama.base_url, "--prompts", "2",
                   "--max-new-tokens", "6", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "NOT applied" not in proc.stderr  # llama.cpp has every decoder's sampler
    _, rows = load_study(out)
    human, *decoders = rows
    assert math.isnan(human.perplexity)  # a server does not score given text
    assert len(decoders) == len(DECODERS)
    for row in decoders:
        assert row.texts == 2 and 0 < row.tokens <= 12
        assert math.isfinite(row.perplexity)  # llama-server's logprobs are raw
    assert (out / "report.md").exists()


def test_next_token_raw_matches_the_generation_request(llama: LiveServer) -> None:
    """One number two ways: the first generated token's raw log p equals the exact view's."""
    with client(llama) as c:
        view = remote_next_token(c, PROMPT, [1.0], top=5, seed=0)
        (s,) = remote_generate(c, PROMPT, SamplingParams(temperature=0), max_new_tokens=1)
    assert view.exact and s.steps[0].text == view.results[0].tokens[0]
    assert math.isclose(s.steps[0].raw_logprob, view.results[0].logprobs[0], abs_tol=1e-4)
