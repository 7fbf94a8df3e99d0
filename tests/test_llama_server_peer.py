"""The peer check over HTTP: for each sampler llama.cpp and tempscope both implement, the
distribution llama-server returns after its samplers (``post_sampling_probs`` with ``n_probs``
= the whole vocabulary) and the one tempscope's own chain computes from the same logits agree:
the same kept tokens, probabilities within :data:`TOLERANCE`.

"The same logits": llama-server returns every token's raw log-probability (``n_probs`` =
49,152, before its samplers), which is its logits less one constant, ``logsumexp(logits)``.
That constant is taken from tempscope's torch engine on the same GGUF (its weights dequantised
to float32); it matters only to the repetition penalty, which treats positive and negative
logits differently. The test also measures how far the two engines' logits are apart. The
numbers go to ``docs/remote.md`` (and ``test-artifacts/llama_server_peer.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tempscope.engine.remote.client import RemoteClient
from tempscope.engine.remote.wire import llama_server_fields, parse_logprobs
from tempscope.sampling import SamplingParams, probabilities
from tests.server_helpers import LiveServer, live_llama_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # largest |p_server - p_tempscope| allowed for a kept token
# Differences docs/samplers.md names ("Differences from llama.cpp"), allowed only where they
# apply: llama.cpp sums top-p's and typical's mass in float32, tempscope in float64, so over
# thousands of kept tokens the cut can land a few tokens apart (tempscope keeping more).
NAMED = {"top_p": "| top-p's boundary |", "typical_p": "| float32 sums at V = 49,152 |"}
MAX_BOUNDARY_TOKENS = 5  # at most this many tokens at the cut ...
MAX_BOUNDARY_MASS = 1e-3  # ... holding at most this much probability
PROMPTS = ["The cat slept on the", "Once upon a time, there was a",
           "one two three four one two three four one two three"]
# Each sampler both implement, alone and in chains, in tempscope's order (the request's
# ``samplers`` says the same order to llama-server). Those that keep the whole vocabulary
# (FULL: 49,152 probabilities per answer, ~3 s each) run on the repeating prompt only, where
# the penalties and DRY have something to do; the cuts run on every prompt.
FULL = ("temperature 0.5", "temperature 1.5", "dynatemp 0.8 +- 0.5", "repetition penalty 1.3",
        "frequency 0.5 + presence 0.5, window 4", "DRY 0.8", "logit bias")
CASES: dict[str, dict[str, Any]] = {
    "temperature 0.5": {"temperature": 0.5},
    "temperature 1.5": {"temperature": 1.5},
    "top-k 5": {"top_k": 5},
    "top-k 50, T 0.7": {"top_k": 50, "temperature": 0.7},
    "top-p 0.5": {"top_p": 0.5},
    "top-p 0.9, T 1.3": {"top_p": 0.9, "temperature": 1.3},
    "min-p 0.05": {"min_p": 0.05},
    "min-p 0.2, T 2": {"min_p": 0.2, "temperature": 2.0},
    "typical 0.9": {"typical_p": 0.9},
    "top-n-sigma 1": {"top_n_sigma": 1.0},
    "top-n-sigma 2.5, T 1.5": {"top_n_sigma": 2.5, "temperature": 1.5},
    "XTC 0.04 (probability 1)": {"xtc_threshold": 0.04},
    "dynatemp 0.8 +- 0.5": {"temperature": 0.8, "dynatemp_range": 0.5},
    "repetition penalty 1.3": {"repetition_penalty": 1.3},
    "frequency 0.5 + presence 0.5, window 4": {"frequency_penalty": 0.5,
                                               "presence_penalty": 0.5, "penalty_last_n": 4},
    "DRY 0.8": {"dry_multiplier": 0.8, "dry_allowed_length": 1},
    "logit bias": {"logit_bias": {28: 5.0, 253: -3.0}},
    "min-p 0.3, min_keep 4": {"min_p": 0.3, "min_keep": 4},
    "llama.cpp's defaults, temperature last": {
        "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
        "temperature_last": True},
    "top-k 40, top-p 0.9, min-p 0.02, T 1.2": {"top_k": 40, "top_p": 0.9, "min_p": 0.02,
                                                "temperature": 1.2},
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_llama_server(tmp_path_factory.mktemp("llama-peer") / "server.log", ctx=1024,
                           slots=1) as s:
        yield s


def _probs_by_id(data: dict[str, Any], n_vocab: int) -> tuple[np.ndarray, bool]:
    (tok,) = parse_logprobs(data["choices"][0]["logprobs"])[:1]
    out = np.zeros(n_vocab, dtype=np.float64)  # (V,) 0 = not returned
    for _, token_id, logprob in tok.top:
        assert token_id is not None
        out[token_id] = math.exp(logprob) if logprob > -math.inf else 0.0
    return out, tok.processed


def boundary_only(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray | None:
    """When the kept sets differ only by a few unlikely tokens tempscope keeps at a cut (the
    float32 sums), tempscope's distribution renormalised over llama.cpp's set; else ``None``."""
    extra = (ours > 0) & ~(theirs > 0)
    if ((theirs > 0) & ~(ours > 0)).any() or extra.sum() > MAX_BOUNDARY_TOKENS:
        return None
    if ours[extra].sum() > MAX_BOUNDARY_MASS or ours[extra].max() > ours[theirs > 0].min():
        return None  # not the tail of what was kept
    common = np.where(theirs > 0, ours, 0.0)
    return common / common.sum()


def test_processed_distributions_agree_with_llama_server(llama: LiveServer) -> None:
    from tempscope.engine.loader import load_model
    from tempscope.engine.loop import BackendVocab
    from tempscope.engine.nexttoken import last_logits

    # The embedded GGUF on the torch engine: an engine independent of llama.cpp's kernels.
    model = load_model(None, device="cpu", engine="torch")
    vocab = BackendVocab(model)
    c = RemoteClient(llama.base_url, timeout=300, max_retries=1)
    info = c.server
    v = c.n_vocab
    assert info.is_llama_server and v == model.vocab_size
    off = c.neutral_fields()
    measured: dict[str, Any] = {"prompts": PROMPTS, "tolerance": TOLERANCE, "cases": {}}
    engine_gap = 0.0
    failures: list[str] = []
    for prompt in PROMPTS:
        ids = model.encode(prompt)
        served = httpx.post(llama.url + "/tokenize", json={"content": prompt,
                                                            "add_special": True},
                            timeout=30).json()["tokens"]
        assert served == ids, "both engines must see the same prompt tokens (the history)"
        raw_body = {"prompt": prompt, "max_tokens": 1, "temperature": 1.0, **off,
                    "samplers": ["temperature"], "n_probs": v, "post_sampling_probs": False}
        raw, processed = _probs_by_id(c.completion(raw_body), v)
        # Every token's float32 probability: they sum to 1 within float32 rounding.
        assert not processed and math.isclose(raw.sum(), 1.0, rel_tol=1e-3)
        local = last_logits(model, ids).double().numpy()  # (V,)
        shift = float(np.log(np.exp(local - local.max()).sum()) + local.max())
        logits = np.log(np.maximum(raw / raw.sum(), 1e-45)) + shift  # (V,) the server's
        engine_gap = max(engine_gap, float(np.abs(logits - local).max()))
        for name, kw in CASES.items():
            if name in FULL and prompt != PROMPTS[-1]:
                continue
            params = SamplingParams(**kw)
            fields, ignored = llama_server_fields(params, info)
            assert ignored == [], (name, ignored)
            t = 1.0 if params.temperature is None else params.temperature
            body = {"prompt": prompt, "max_tokens": 1, "temperature": t, "seed": 0, **fields,
                    "n_probs": v, "post_sampling_probs": True}
            theirs, processed = _probs_by_id(c.completion(body), v)
            assert processed
            ours = probabilities(logits, params, history=ids, vocab=vocab).double().numpy()
            kept_theirs, kept_ours = theirs > 0, ours > 0
            entry = measured["cases"].setdefault(name, {
                "kept": [], "max_abs_diff": 0.0, "kept_sets_equal": 0, "boundary": [],
                "moved": 0.0})
            entry["kept"].append(int(kept_theirs.sum()))
            # How far the samplers moved the distribution (vs T = 1 alone): a case that moves
            # nothing would check nothing.
            entry["moved"] = max(entry["moved"], float(np.abs(theirs - raw / raw.sum()).max()))
            named = [NAMED[k] for k in kw if k in NAMED]
            compared = ours
            if np.array_equal(kept_theirs, kept_ours):
                entry["kept_sets_equal"] += 1
            elif named and (renormalised := boundary_only(ours, theirs)) is not None:
                compared = renormalised  # a difference the docs name: compare the rest
                entry["boundary"].append(int(kept_ours.sum() - kept_theirs.sum()))
            else:
                only_t = np.flatnonzero(kept_theirs & ~kept_ours)[:5].tolist()
                only_o = np.flatnonzero(kept_ours & ~kept_theirs)[:5].tolist()
                failures.append(f"{name!r} on {prompt!r}: kept {int(kept_theirs.sum())} "
                                f"there vs {int(kept_ours.sum())} here (only there: {only_t}, "
                                f"only here: {only_o})")
                continue
            diff = float(np.abs(theirs - compared).max())
            entry["max_abs_diff"] = max(entry["max_abs_diff"], diff)
            if diff > TOLERANCE:
                failures.append(f"{name!r} on {prompt!r}: max |dp| {diff:.3g} > {TOLERANCE}")
    measured["engine_logit_gap"] = engine_gap
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "llama_server_peer.json").write_text(
        json.dumps(measured, indent=2))
    assert not failures, "\n".join(failures)
    cases = measured["cases"]
    assert len(cases) == len(CASES)
    docs = (ROOT / "docs" / "samplers.md").read_text(encoding="utf-8")
    assert all(row in docs for row in NAMED.values())  # every allowed difference is named
    # Most comparisons keep exactly the same tokens; the boundary cases are the exception.
    runs = sum(len(e["kept"]) for e in cases.values())
    same = sum(e["kept_sets_equal"] for e in cases.values())
    assert same >= runs - 6, measured
    assert all(e["moved"] > 1e-3 for e in cases.values()), measured
    # The checks bite: some cases cut hard, some keep most of the vocabulary.
    assert min(min(e["kept"]) for e in cases.values()) <= 5
    assert max(max(e["kept"]) for e in cases.values()) == v
