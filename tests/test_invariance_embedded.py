"""A seed is a promise, on the embedded model and both engines: the same seeded row gives the
same tokens alone and in a bigger batch, in a 2-prompt and a 4-prompt sweep, across a kill and
a resume, and through the server while other requests load it (issue: reproducible seeds)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tempscope import load_model
from tempscope.engine.backend import Backend
from tempscope.study.grid import builtin_prompts, sweep
from tests.conftest import HAVE_LLAMA, kill_once_written, run_cli
from tests.server_helpers import live_server
from tests.test_invariance import logits_trace

pytestmark = pytest.mark.slow
ENGINES = ["llama.cpp", "torch"] if HAVE_LLAMA else ["torch"]
PROMPT = "The cat slept on the"
# torch decodes every row in a forward pass of its own: fewer tokens keep CI's budget.
TOKENS = {"llama.cpp": 48, "torch": 24}


@pytest.fixture(scope="module")
def models() -> dict[str, Backend]:
    return {engine: load_model(engine=engine) for engine in ENGINES}


def by_key(run: Path) -> dict[tuple[int, str, float, int], dict[str, Any]]:
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    return {(r["prompt_index"], r["config"], r["temperature"], r["sample_index"]): r
            for r in records}


@pytest.mark.parametrize("engine", ENGINES)
def test_generate_alone_equals_its_row_in_a_bigger_batch(engine: str) -> None:
    common = [PROMPT, "--engine", engine, "--seed", "5", "--max-new-tokens",
              str(TOKENS[engine]), "--json"]
    alone = run_cli("generate", *common, "-t", "1", "--n", "1")
    batch = run_cli("generate", *common, "-t", "1", "0.5", "1.5", "--n", "4")
    assert alone.returncode == 0 and batch.returncode == 0, alone.stderr + batch.stderr
    (one,) = json.loads(alone.stdout)
    rows = json.loads(batch.stdout)
    assert len(rows) == 12
    same = [r for r in rows if r["params"]["temperature"] == 1 and r["sample_index"] == 0]
    assert same[0]["token_ids"] == one["token_ids"]
    assert [s["raw_logprob"] for s in same[0]["steps"]] == [
        s["raw_logprob"] for s in one["steps"]]
    assert len(one["token_ids"]) > 11  # past the 12th token, where the two used to part


@pytest.mark.parametrize("engine", ENGINES)
def test_two_and_four_prompt_sweeps_and_a_resume_agree(models: dict[str, Backend],
                                                      engine: str, tmp_path: Path) -> None:
    """The samples of a 2-prompt sweep equal the same samples of a 4-prompt sweep; that
    sweep cut at a random record (a kill in the middle of a write) and resumed equals itself
    uninterrupted, though the resumed batch holds other rows than the first run's."""
    model = models[engine]
    prompts = builtin_prompts()[:4]
    n = 4 if engine == "llama.cpp" else 2  # torch: a forward pass per row, CI's budget
    args: dict[str, Any] = {"n": n, "max_new_tokens": TOKENS[engine] * 2 // 3, "seed": 0}
    temps = [0.5, 1.0, 1.5]
    two, four = tmp_path / "two", tmp_path / "four"
    sweep(model, prompts[:2], temps, out=two, **args)
    sweep(model, prompts, temps, out=four, **args)
    small, big = by_key(two), by_key(four)
    assert len(small) == 2 * 3 * n and len(big) == 4 * 3 * n
    for key, record in small.items():
        assert big[key]["token_ids"] == record["token_ids"], key
    assert json.loads((four / "manifest.json").read_text())["reproducible"] is True

    cut = tmp_path / "cut"
    shutil.copytree(four, cut)
    lines = (cut / "samples.jsonl").read_text().splitlines(keepends=True)
    at = random.Random(engine).randrange(1, len(lines) - 1)
    (cut / "samples.jsonl").write_text("".join(lines[:at]) + lines[at][: len(lines[at]) // 2])
    sweep(model, prompts, temps, out=cut, **args)
    resumed = by_key(cut)
    assert resumed.keys() == big.keys()
    for key, record in big.items():
        assert resumed[key]["token_ids"] == record["token_ids"], (at, key)


@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
def test_a_rows_logits_do_not_move_with_its_neighbours_context_length(
        models: dict[str, Backend]) -> None:
    """llama.cpp attends over the KV cells of the longest stream in a step, padded (to 128
    cells in tempscope's build, 256 in the stock one): a row alone under 128 cells, then past
    them, must give the same logits bit for bit as beside a 300-token row, where every step
    attends over 384 or more cells."""
    model = models["llama.cpp"]
    target = model.encode(" ".join(["The cat slept on the mat."] * 17))
    long = model.encode(" ".join(["Once upon a time there was a river."] * 34))
    assert len(target) < 128 - 8 and 300 < len(long) < 384, (len(target), len(long))
    forced = model.encode(" and then it woke up and walked to the door to see")[:16]
    alone = logits_trace(model, [target], 0, forced)
    beside = logits_trace(model, [target, long], 0, forced)
    assert len(target) + len(forced) > 128  # the row alone crosses a padding step
    for step, (a, b) in enumerate(zip(alone, beside, strict=True)):
        assert (a == b).all(), f"step {step}: {(a - b).abs().max()} apart"


@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
def test_a_sweep_killed_at_a_random_moment_resumes_to_the_same_samples(tmp_path: Path) -> None:
    """SIGKILL at a random moment of a real `tempscope sweep`, rerun it: every sample equals
    an uninterrupted run's (2 prompts a batch: the resumed batches are other compositions)."""
    common = ["sweep", "--limit", "6", "--n", "4", "-t", "0.5", "1", "1.5",
              "--max-new-tokens", "24", "--batch-rows", "24"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    r = run_cli(*common, "--out", str(clean))
    assert r.returncode == 0, r.stderr
    kill_once_written([*common, "--out", str(killed)], killed / "samples.jsonl",
                      wait=random.Random(os.getpid()).uniform(0, 1.5))
    r = run_cli(*common, "--out", str(killed))
    assert r.returncode == 0, r.stderr
    resumed, reference = by_key(killed), by_key(clean)
    assert resumed.keys() == reference.keys() and len(reference) == 6 * 3 * 4
    for key, record in reference.items():
        assert resumed[key]["token_ids"] == record["token_ids"], key


@pytest.mark.parametrize("engine", ENGINES)
def test_a_seeded_request_under_load_equals_the_same_request_alone(engine: str,
                                                                  tmp_path: Path) -> None:
    body = {"prompt": PROMPT, "max_tokens": 32, "temperature": 1.0, "seed": 5}
    load = [{"prompt": p, "max_tokens": 48, "temperature": t, "seed": i, "n": 2}
            for i, (p, t) in enumerate(zip(builtin_prompts()[:6], [0.7, 1, 1.3] * 2,
                                           strict=True))]
    with live_server(tmp_path, "--engine", engine, model=None) as s:
        url = s.base_url + "/completions"

        def post(b: dict[str, Any]) -> str:
            r = httpx.post(url, json={"model": s.model, **b}, timeout=600)
            assert r.status_code == 200, r.text
            return str(r.json()["choices"][0]["text"])

        alone = post(body)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            others = [pool.submit(post, b) for b in load[:3]]
            time.sleep(0.2)  # the seeded request joins a server already busy
            busy = pool.submit(post, body)
            others += [pool.submit(post, b) for b in load[3:]]
            assert busy.result() == alone
            assert all(o.result() for o in others)
        assert httpx.get(s.url + "/health").json()["reproducible"] is True
