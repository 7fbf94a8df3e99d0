"""`tempscope next` with sampler options: raw and processed side by side, through the real
command on the tiny model, checked against an independent numpy computation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempscope.engine.loader import load_model
from tempscope.engine.nexttoken import next_token
from tempscope.sampling import SamplingParams
from tests.conftest import run_cli

PROMPT = "The cat slept on the"


def _raw(tiny_model_dir: Path) -> np.ndarray:
    """softmax(logits) at T = 1 from the library's own logits, in float64."""
    r = next_token(load_model(str(tiny_model_dir)), PROMPT, [1], seed=0)
    x = r.logits.astype(np.float64)
    p = np.exp(x - x.max())
    return np.asarray(p / p.sum())


def test_json_top_k_renormalises_the_k_best(tiny_model_dir: Path) -> None:
    r = run_cli("next", PROMPT, "-m", str(tiny_model_dir), "-t", "1", "0", "--top", "7",
                "--seed", "3", "--top-k", "5", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    raw = _raw(tiny_model_dir)
    best5 = np.argsort(-raw, kind="stable")[:5]
    at1, greedy = d["results"]
    assert at1["chain"] == ["top_k"] and at1["kept"] == 5
    rows = at1["top"]
    assert [row["token_id"] for row in rows[:5]] == best5.tolist()
    for row in rows:
        assert row["raw_probability"] == pytest.approx(raw[row["token_id"]], rel=1e-5)
    expected = raw[best5] / raw[best5].sum()  # top-k at T = 1: the 5 best, renormalised
    assert [row["probability"] for row in rows[:5]] == pytest.approx(expected.tolist(),
                                                                     rel=1e-5)
    assert [row["probability"] for row in rows[5:]] == [0.0, 0.0]
    assert [row["rank"] for row in rows] == list(range(1, 8))
    assert at1["entropy"] == pytest.approx(float(-(expected * np.log(expected)).sum()),
                                           rel=1e-5)
    assert at1["sampled"]["token_id"] in best5.tolist()
    # T = 0: greedy, one token survives and it is the argmax.
    assert greedy["kept"] == 1 and greedy["chain"] == ["temperature", "top_k"]
    assert greedy["sampled"]["token_id"] == int(best5[0]) and greedy["entropy"] == 0.0


def assert_same(got: Any, want: Any, where: str = "") -> None:
    """``got == want`` throughout nested JSON, floats to float32 rounding (rel 1e-5)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), where
    else:
        assert got == want, where


def test_json_agrees_with_the_library(tiny_model_dir: Path) -> None:
    r = run_cli("next", PROMPT, "-m", str(tiny_model_dir), "-t", "0.7", "--top", "4",
                "--seed", "9", "--min-p", "0.3", "--top-k", "20", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    lib = next_token(load_model(str(tiny_model_dir)), PROMPT, [0.7], top=4, seed=9,
                     params=SamplingParams(min_p=0.3, top_k=20))
    # Numbers to float32 rounding: two loads of one model (the CLI's process and this one)
    # can differ in a logit's last bits where MKL's kernels depend on the weights' memory
    # alignment (docs/engines.md, "Seeds and batches"); everything else exactly.
    assert_same(json.loads(r.stdout), json.loads(json.dumps(lib.to_dict())))
    (res,) = lib.results
    # min-p at T = 0.7 after top-k 20: tokens with p_T >= 0.3 * max p_T, i.e. logits within
    # 0.7 * ln(1 / 0.3) of the best (the top 20 all qualify or not on the same rule).
    x = lib.logits.astype(np.float64)
    in_top20 = x >= np.sort(x)[-20]
    survive = in_top20 & (x >= x.max() + 0.7 * math.log(0.3) - 1e-6)
    assert res.kept == int(survive.sum())
    assert res.probabilities.sum() == pytest.approx(1.0, abs=1e-12)
    assert int(np.count_nonzero(res.probabilities)) == res.kept


def test_table_shows_raw_and_processed_and_survivors(tiny_model_dir: Path) -> None:
    r = run_cli("next", PROMPT, "-m", str(tiny_model_dir), "-t", "1", "--top", "3",
                "--seed", "1", "--top-k", "5", "--top-p", "0.99", "--order", "top_p", "top_k",
                timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "T = 1: top_p -> top_k" in out
    assert "raw (T=1)" in out and "processed" in out
    assert "5 of 257 tokens survive" in out
    assert "LLM Temperature: 1 → The cat slept on the" in out


def test_without_samplers_the_output_is_unchanged(tiny_model_dir: Path) -> None:
    plain = next_token(load_model(str(tiny_model_dir)), PROMPT, [0, 1, 5], top=5, seed=2)
    off = next_token(load_model(str(tiny_model_dir)), PROMPT, [0, 1, 5], top=5, seed=2,
                     params=SamplingParams())
    assert off.to_dict(full=True) == plain.to_dict(full=True)
    assert "chain" not in plain.to_dict()["results"][0]


def test_bad_sampler_value_is_one_line_before_loading() -> None:
    # No -m: the embedded model would take seconds to load; the error comes first.
    r = run_cli("next", PROMPT, "--top-p", "1.5", timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "top_p must be in (0, 1]" in lines[0] and "1.5" in lines[0]
