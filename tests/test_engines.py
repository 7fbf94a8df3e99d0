"""Engine-level behaviour, the same on every backend.

Fast tests load one tiny GGUF file (float32 weights) on both engines, so they must agree to
rounding; the slow tests hold the two engines to each other on the embedded Q4_1 model.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch

from tempscope import generate, next_token
from tempscope.engine.backend import Backend
from tempscope.engine.loader import load_model
from tempscope.engine.loop import RowSpec, generate_rows
from tempscope.engine.scoring import score_texts
from tempscope.errors import ModelLoadError
from tempscope.sampling import SamplingParams
from tests.conftest import HAVE_LLAMA, run_cli
from tests.server_helpers import live_server

ENGINES = ["torch", pytest.param("llama.cpp", marks=pytest.mark.skipif(
    not HAVE_LLAMA, reason="llama-cpp-python is not installed"))]
GREEDY = SamplingParams(temperature=0)


@pytest.fixture(params=ENGINES)
def model(request: pytest.FixtureRequest, models: dict[str, Backend]) -> Backend:
    return models[request.param]


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum())


def greedy_by_hand(model: Backend, ids: list[int], n: int) -> list[int]:
    """n greedy tokens, each from a fresh forward pass over the whole sequence (no cache)."""
    seq, out = list(ids), []
    for _ in range(n):
        token = int(model.last_logits(seq).argmax())
        out.append(token)
        seq.append(token)
    return out


def test_facts_say_which_engine(model: Backend) -> None:
    f = model.facts
    assert f.engine == model.engine
    assert (f.vocab_size, f.layers, f.embedding_dim, f.context_length) == (258, 2, 32, 128)
    assert model.eos_token_ids == [256] and model.bos_token_id == 256
    assert model.decode(model.encode("The cat")) == "The cat"
    assert model.token_bytes(model.encode("→")[0]) == b"\xe2"


@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
def test_both_engines_give_the_same_logits_on_float32_weights(
        models: dict[str, Backend]) -> None:
    a, b = models["torch"], models["llama.cpp"]
    for text in ["The cat", "hello world, again", "a→b"]:
        assert a.encode(text) == b.encode(text)
        assert kl(a.last_logits(a.encode(text)), b.last_logits(b.encode(text))) < 1e-4


def test_greedy_generation_equals_fresh_forward_passes(model: Backend) -> None:
    prompts = ["The cat", "A much longer prompt in front"]
    samples = generate(model, prompts, GREEDY, max_new_tokens=10, ignore_eos=True)
    for prompt, sample in zip(prompts, samples, strict=True):
        assert sample.token_ids == greedy_by_hand(model, model.encode(prompt), 10)
        assert sample.finish_reason == "length"


def test_rows_that_finish_early_leave_the_others_unchanged(model: Backend) -> None:
    ids = model.encode("The cat")
    rows = [RowSpec(prompt_ids=ids, params=GREEDY, max_new_tokens=k, ignore_eos=True)
            for k in (2, 9, 5)]
    results = generate_rows(model, rows)
    full = greedy_by_hand(model, ids, 9)
    assert [r.token_ids for r in results] == [full[:2], full, full[:5]]
    assert [r.finish_reason for r in results] == ["length"] * 3


def test_seeded_rows_repeat_and_do_not_depend_on_the_batch(model: Backend) -> None:
    hot = SamplingParams(temperature=1.5)
    one = generate(model, "Hi", hot, n=3, max_new_tokens=12, seed=7, ignore_eos=True)
    again = generate(model, "Hi", hot, n=3, max_new_tokens=12, seed=7, ignore_eos=True)
    assert [s.token_ids for s in one] == [s.token_ids for s in again]
    batch = generate(model, ["Other prompt", "Hi"], [SamplingParams(temperature=0.7), hot],
                     n=3, max_new_tokens=12, seed=7, ignore_eos=True)
    mine = [s for s in batch if s.prompt == "Hi" and s.params == hot]
    assert [s.token_ids for s in mine] == [s.token_ids for s in one]
    assert len({tuple(s.token_ids) for s in one}) > 1  # samples differ from each other


def test_stop_strings_and_finish_reasons(model: Backend) -> None:
    free = generate(model, "The cat", GREEDY, max_new_tokens=12, ignore_eos=True)[0]
    cut = free.text[3:5]
    assert cut
    stopped = generate(model, "The cat", GREEDY, max_new_tokens=12, stop=cut,
                       ignore_eos=True)[0]
    assert stopped.finish_reason == "stop" and stopped.stop_text == cut
    assert stopped.text == free.text[:free.text.index(cut)]
    # the step deltas, streamed, add up to the text
    assert "".join(s.delta for s in stopped.steps) == stopped.text


def test_eos_ends_a_row(model: Backend) -> None:
    bias = SamplingParams(temperature=0, logit_bias={256: 100.0})  # EOS is certain
    sample = generate(model, "The cat", bias, max_new_tokens=5)[0]
    assert sample.token_ids == [256] and sample.finish_reason == "eos" and sample.text == ""


def test_step_logprobs_are_those_of_the_logits(model: Backend) -> None:
    sample = generate(model, "The cat", SamplingParams(temperature=0.8), max_new_tokens=4,
                      seed=3, ignore_eos=True)[0]
    seq = model.encode("The cat")
    for step in sample.steps:
        logp = torch.log_softmax(model.last_logits(seq).double(), -1)
        assert step.raw_logprob == pytest.approx(float(logp[step.token_id]), abs=1e-4)
        seq.append(step.token_id)
    prompt = model.encode("The cat")
    (scored,) = model.sequence_logprobs([prompt + sample.token_ids], [len(prompt)])
    assert scored == pytest.approx([s.raw_logprob for s in sample.steps], abs=1e-4)
    text = score_texts(model, ["The cat"], [" sat on"])[0]  # re-encodes prompt + text
    assert text.n_tokens == 7 and text.logprob < 0


def test_next_token_is_one_call_at_many_temperatures(model: Backend) -> None:
    r = next_token(model, "The cat", [0, 1, 100], top=3, seed=0)
    assert [x.temperature for x in r.results] == [0, 1, 100]
    assert r.results[0].top[0].probability == 1.0
    logits = model.last_logits(model.encode("The cat"))
    assert r.results[0].sampled.token_id == int(logits.argmax())


def test_more_rows_than_the_engine_holds_run_in_groups(model: Backend) -> None:
    ids = model.encode("Hi")
    rows = [RowSpec(prompt_ids=ids, params=SamplingParams(temperature=1.0), seed=i,
                    max_new_tokens=3, ignore_eos=True) for i in range(70)]
    results = generate_rows(model, rows)
    alone = generate_rows(model, rows[66:68])
    assert [r.token_ids for r in results[66:68]] == [r.token_ids for r in alone]
    assert all(len(r.token_ids) == 3 for r in results)


def test_chat_without_a_template_is_a_clear_error(model: Backend) -> None:
    with pytest.raises(ValueError, match="no chat template"):
        model.encode("hi", chat=True)


def test_llama_engine_refuses_what_it_cannot_run(tiny_model_dir: Path, tiny_gguf: Path
                                                 ) -> None:
    with pytest.raises(ModelLoadError, match=r"reads \.gguf files"):
        load_model(str(tiny_model_dir), engine="llama.cpp")
    with pytest.raises(ValueError, match="unknown engine"):
        load_model(str(tiny_gguf), engine="vllm")
    if HAVE_LLAMA:
        with pytest.raises(ValueError, match="--dtype is for the torch engine"):
            load_model(str(tiny_gguf), engine="llama.cpp", dtype="bfloat16")


def test_auto_picks_llama_for_gguf_and_torch_for_folders(tiny_model_dir: Path,
                                                         tiny_gguf: Path) -> None:
    assert load_model(str(tiny_model_dir)).engine == "torch"
    expected = "llama.cpp" if HAVE_LLAMA and not torch.cuda.is_available() else "torch"
    assert load_model(str(tiny_gguf)).engine == expected
    assert load_model(str(tiny_gguf), dtype="float32").engine == "torch"


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_info_and_generate_on_each_engine(tiny_gguf: Path, engine: str) -> None:
    info = run_cli("info", "-m", str(tiny_gguf), "--engine", engine)
    assert info.returncode == 0, info.stderr
    assert engine in info.stdout
    out = run_cli("generate", "The cat", "-m", str(tiny_gguf), "--engine", engine,
                  "-t", "0", "--max-new-tokens", "4", "--json")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_server_on_each_engine(tiny_gguf: Path, engine: str, tmp_path: Path) -> None:
    with live_server(tmp_path, "--engine", engine, model=str(tiny_gguf)) as s:
        assert httpx.get(s.url + "/health").json()["engine"] == engine
        models = httpx.get(s.base_url + "/models").json()
        assert models["data"][0]["engine"] == engine
        body = {"model": s.model, "prompt": "The cat", "max_tokens": 6, "temperature": 1.2,
                "seed": 5, "logprobs": 2}
        a = httpx.post(s.base_url + "/completions", json=body, timeout=60).json()
        b = httpx.post(s.base_url + "/completions", json=body, timeout=60).json()
        assert a["choices"][0]["text"] == b["choices"][0]["text"]
        dist = httpx.post(s.base_url + "/distribution", json={
            "prompt": "The cat", "temperatures": [0.5, 1], "top": 3}, timeout=60).json()
        assert dist["vocab_size"] == 258 and len(dist["temperatures"]) == 2


# ------------------------------------------------------------------ the embedded model


PROMPTS = ["The cat slept on the", "Once upon a time", "The capital of France is",
           "def fibonacci(n):", "I think that", "In 1492, Columbus", "The best way to learn",
           "Water boils at", "My favourite colour is"]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
def test_engines_agree_on_the_embedded_model() -> None:
    """KL(torch || llama.cpp) at T = 1 over 9 prompts: the float32 dequantized weights
    against llama.cpp's Q4_1 kernels."""
    a, b = load_model(engine="torch"), load_model(engine="llama.cpp")
    kls = [kl(a.last_logits(a.encode(p)), b.last_logits(b.encode(p))) for p in PROMPTS]
    assert all(a.encode(p) == b.encode(p) for p in PROMPTS)
    assert max(kls) <= 0.05, kls
    # Same seeded request, same batch: same tokens.
    hot = [SamplingParams(temperature=t) for t in (0.7, 1.0, 1.5)]
    one = generate(b, PROMPTS[:2], hot, n=2, max_new_tokens=16, seed=1)
    two = generate(b, PROMPTS[:2], hot, n=2, max_new_tokens=16, seed=1)
    assert [s.token_ids for s in one] == [s.token_ids for s in two]
