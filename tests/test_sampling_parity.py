"""Parity with transformers' own logits processors on random logits.

Intended differences (none shows up on random float logits, which have no ties):
- transformers keeps exactly ``min_tokens_to_keep = 1`` token when a filter would empty a row;
  tempscope keeps the maximum and every token tied with it (typical: the most typical token).
- ties at a cut: transformers' top-k keeps them (as tempscope does); its top-p breaks them by
  sort order, tempscope keeps every token tied with the last one kept.
- top-p: tempscope sums the mass in float64 and treats mass that reaches p within 1e-7 as
  reaching it (float32 rounding of the probabilities); transformers sums in float32.
- transformers rejects ``top_p = 1``, ``typical_p = 1`` and ``epsilon = 0``; here they are
  documented no-ops (``None`` is still the way to switch a sampler off).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from tempscope.sampling import (
    BatchSampler,
    Epsilon,
    Eta,
    MinP,
    RepetitionPenalty,
    SamplingParams,
    Temperature,
    TopK,
    TopP,
    Typical,
)

B, V = 6, 257


def random_logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, generator=g) * scale


IDS: Any = torch.zeros(B, 1, dtype=torch.long)  # warpers ignore input_ids


def same_filter(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))
    finite = torch.isfinite(ours)
    torch.testing.assert_close(ours[finite], theirs[finite])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("t", [0.05, 0.5, 1.0, 1.7, 20.0])
def test_temperature(seed: int, t: float) -> None:
    x = random_logits(seed)
    torch.testing.assert_close(Temperature(t).apply(x), TemperatureLogitsWarper(t)(IDS, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 2, 10, 256, 257])
def test_top_k(seed: int, k: int) -> None:
    x = random_logits(seed)
    same_filter(TopK(k).apply(x), TopKLogitsWarper(k)(IDS, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("p", [0.05, 0.3, 0.8, 0.95, 0.999])
def test_top_p(seed: int, p: float) -> None:
    x = random_logits(seed)
    same_filter(TopP(p).apply(x), TopPLogitsWarper(p)(IDS, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("m", [0.0, 0.01, 0.1, 0.5, 0.99])
def test_min_p(seed: int, m: float) -> None:
    x = random_logits(seed)
    same_filter(MinP(m).apply(x), MinPLogitsWarper(m)(IDS, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mass", [0.1, 0.5, 0.9, 0.99])
def test_typical(seed: int, mass: float) -> None:
    x = random_logits(seed)
    same_filter(Typical(mass).apply(x), TypicalLogitsWarper(mass)(IDS, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eps", [1e-4, 3e-3, 0.05, 0.5])
def test_epsilon(seed: int, eps: float) -> None:
    x = random_logits(seed)
    same_filter(Epsilon(eps).apply(x), EpsilonLogitsWarper(eps)(IDS, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eta", [1e-4, 2e-3, 0.05, 0.5])
def test_eta(seed: int, eta: float) -> None:
    x = random_logits(seed)
    same_filter(Eta(eta).apply(x), EtaLogitsWarper(eta, device="cpu")(IDS, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("r", [0.5, 1.0, 1.3, 3.0])
def test_repetition_penalty(seed: int, r: float) -> None:
    x = random_logits(seed)
    g = torch.Generator().manual_seed(100 + seed)
    history = torch.randint(0, V, (B, 40), generator=g)
    counts = torch.zeros(B, V).scatter_add_(1, history, torch.ones(B, 40))
    expected = RepetitionPenaltyLogitsProcessor(r)(history, x.clone())
    torch.testing.assert_close(RepetitionPenalty(r, counts).apply(x), expected)
    # The same through the batch sampler, the history given as prompts.
    sampler = BatchSampler([SamplingParams(repetition_penalty=r)] * B, vocab_size=V,
                           prompt_ids=history.tolist())
    torch.testing.assert_close(sampler.process(x), expected)


@pytest.mark.parametrize("seed", range(3))
def test_transformers_pipeline_order(seed: int) -> None:
    """temperature -> top-k -> top-p, transformers' order, through ``SamplingParams``."""
    x = random_logits(seed)
    expected = TopPLogitsWarper(0.9)(IDS, TopKLogitsWarper(40)(IDS, TemperatureLogitsWarper(0.7)(
        IDS, x)))
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9)
    out = BatchSampler([params] * B, vocab_size=V).process(x)
    same_filter(out, expected)


def test_masked_inputs_agree() -> None:
    x = random_logits(7)
    x[:, ::3] = -math.inf
    same_filter(TopP(0.9).apply(x), TopPLogitsWarper(0.9)(IDS, x))
    same_filter(MinP(0.05).apply(x), MinPLogitsWarper(0.05)(IDS, x))
    same_filter(Typical(0.9).apply(x), TypicalLogitsWarper(0.9)(IDS, x))
