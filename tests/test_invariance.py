"""Batch invariance on the tiny models: a row's logits, and so its seeded tokens, are the same
alone and inside any batch, on both engines (docs/engines.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tempscope.engine.backend import Backend
from tempscope.engine.loader import load_model
from tempscope.engine.loop import RowSpec, generate_rows
from tempscope.sampling import SamplingParams
from tests.conftest import HAVE_LLAMA

ENGINES = ["torch", "llama.cpp"] if HAVE_LLAMA else ["torch"]
TEXTS = ["The cat slept on the", "Hi", "A much longer prompt, to shift every other row",
         "x", "Once upon a time there was", "0123456789"]


@pytest.fixture(params=ENGINES)
def model(request: pytest.FixtureRequest, models: dict[str, Backend]) -> Backend:
    return models[request.param]


def logits_trace(model: Backend, prompts: list[list[int]], row: int,
                 forced: list[int]) -> list[torch.Tensor]:
    """Row ``row``'s logits at the prefill and after each forced token (others greedy)."""
    session = model.open_session(prompts, budget=len(forced) + 1)
    try:
        out = [session.logits[row].clone()]
        for token in forced:
            tokens = session.logits.argmax(-1)
            tokens[row] = token
            out.append(session.step(tokens)[row].clone())
    finally:
        session.close()
    return out


def test_a_rows_logits_are_bit_identical_alone_and_in_a_batch(model: Backend) -> None:
    target = model.encode("The cat slept on the")
    others = [model.encode(t) for t in TEXTS[1:]]
    forced = [ord(c) for c in " mat and then"]
    alone = logits_trace(model, [target], 0, forced)
    for prompts, row in (([others[0], target], 1), ([target, target, *others], 1),
                         ([*others, target, *others, *others], len(others))):
        together = logits_trace(model, prompts, row, forced)
        for step, (a, b) in enumerate(zip(alone, together, strict=True)):
            assert torch.equal(a, b), (f"{model.engine}: step {step} of a batch of "
                                       f"{len(prompts)} differs by {(a - b).abs().max()}")


rows_strategy = st.lists(
    st.tuples(st.sampled_from(TEXTS), st.sampled_from([0.0, 0.7, 1.0, 1.5, 3.0]),
              st.sampled_from([None, 5, 40]), st.integers(0, 2**31), st.integers(1, 12)),
    min_size=2, max_size=20)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, pick=st.integers(0, 19))
def test_seeded_rows_give_the_same_tokens_alone_and_in_random_batches(
        model: Backend, rows: list[tuple[str, float, int | None, int, int]], pick: int) -> None:
    """Random compositions: other prompts and lengths, other samplers, rows finishing early
    (their own token budgets, end of text allowed); one row run alone must match."""
    specs = [RowSpec(prompt_ids=model.encode(text),
                     params=SamplingParams(temperature=t, top_k=k), seed=seed,
                     max_new_tokens=budget)
             for text, t, k, seed, budget in rows]
    together = generate_rows(model, specs)
    i = pick % len(specs)
    (alone,) = generate_rows(model, [specs[i]])
    assert together[i].token_ids == alone.token_ids
    assert [s.raw_logprob for s in together[i].steps] == [s.raw_logprob for s in alone.steps]


def test_torch_batched_layout_is_a_switch(models: dict[str, Backend]) -> None:
    """``reproducible = False`` batches the rows into one left-padded pass: the same text
    tokens up to float rounding, flagged so sweeps and the server can record it."""
    model = models["torch"]
    specs = [RowSpec(prompt_ids=model.encode(t), params=SamplingParams(temperature=0),
                     max_new_tokens=6) for t in TEXTS]
    exact = generate_rows(model, specs)
    model.reproducible = False
    try:
        batched = generate_rows(model, specs)
    finally:
        model.reproducible = True
    for a, b in zip(exact, batched, strict=True):
        assert a.steps[0].raw_logprob == pytest.approx(b.steps[0].raw_logprob, abs=1e-4)


def test_load_model_takes_the_switch(tmp_path: Path) -> None:
    from tests.tiny_model import save_tiny

    folder = save_tiny(tmp_path / "tiny")
    assert load_model(str(folder)).reproducible is True
    assert load_model(str(folder), reproducible=False).reproducible is False


@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
def test_llama_cpp_has_one_layout_and_it_is_batch_invariant(tiny_gguf: Path) -> None:
    model = load_model(str(tiny_gguf), engine="llama.cpp", reproducible=False)
    assert model.reproducible is True
