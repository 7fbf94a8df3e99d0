"""The top-k fast path: stages after top-k run on the k candidates only. It must give what the
full-vocabulary chain gives, for every local stage, per-row k, ties at the k-th and masks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tempscope.sampling import BatchSampler, SamplingParams, TopK
from tempscope.sampling import batch as batch_module

B, V = 6, 4096


def _logits(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g) * 3
    x[0] = torch.round(x[0])  # many exact ties, also at the k-th
    x[1, ::3] = -math.inf  # masked tokens
    x[2, 5:] = -math.inf  # fewer finite tokens than k
    return x


CHAINS = [
    dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),
    dict(temperature=1.3, top_k=200, typical_p=0.9, epsilon=3e-4, eta=6e-4),
    dict(temperature=0.7, top_k=50, top_n_sigma=1.5, xtc_threshold=0.1, xtc_probability=0.5),
    dict(temperature=1.0, top_k=100, dynatemp_range=0.5, min_p=0.02),
    dict(temperature=0.9, top_k=64, edt_theta=0.8, top_p=0.9),
    dict(temperature=1.2, top_k=30, mirostat_tau=5.0),
    dict(temperature=0.6, top_k=10, top_p=0.8, temperature_last=True),
]


def _run(rows: list[SamplingParams], x: torch.Tensor, steps: int,
         seeds: list[int] | None = None) -> list[torch.Tensor]:
    """Each step's processed logits, what the token was drawn from, and the tokens; row i
    seeded i unless ``seeds``."""
    s = BatchSampler(rows, vocab_size=V, seeds=seeds or list(range(len(rows))))
    out = []
    for _ in range(steps):
        processed = s.process(x)
        tokens = s.choose(processed)
        s.accept(tokens)
        out += [processed, s.distribution, tokens]  # distribution: what it was drawn from
    return out


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "-".join(sorted(c)))
@pytest.mark.parametrize("seed", [0, 1])
def test_candidates_path_equals_the_full_chain(
    chain: dict[str, Any], seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _logits(seed)
    ks = [1, 3, 40, 7, 5, chain["top_k"]]  # a different k per row, all small next to V
    rows = [SamplingParams(**{**chain, "top_k": int(k)}) for k in ks]
    assert BatchSampler(rows, vocab_size=V).groups[0].compact_at is not None
    fast = _run(rows, x, steps=3)
    monkeypatch.setattr(batch_module, "_COMPACT_SHARE", 10 * V)  # never take the fast path
    assert BatchSampler(rows, vocab_size=V).groups[0].compact_at is None
    slow = _run(rows, x, steps=3)
    for a, b in zip(fast, slow, strict=True):
        if a.dtype == torch.int64:
            assert a.tolist() == b.tolist()  # the same tokens drawn
        else:
            assert torch.equal(torch.isfinite(a), torch.isfinite(b))  # the same survivors
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_no_fast_path_when_a_row_keeps_everything_or_a_penalty_follows() -> None:
    def at(rows: list[SamplingParams]) -> int | None:
        return BatchSampler(rows, vocab_size=V).groups[0].compact_at

    assert at([SamplingParams(top_k=40, top_p=0.9)] * 2) is not None
    # A row that keeps every token beside one that does not: decided per row (the k = V row
    # runs on all V, see test_a_row_is_processed_the_same_beside_any_other_k).
    assert at([SamplingParams(top_k=40), SamplingParams(top_p=0.9)]) is not None
    assert at([SamplingParams(top_p=0.9)] * 2) is None  # no row has a k
    # greedy rows run the filters after temperature too (llama.cpp's order rule): on candidates
    assert at([SamplingParams(top_k=40, temperature=0)]) is not None
    assert at([SamplingParams(top_k=V // 2)]) is None  # k not small next to V
    late_penalty = SamplingParams(top_k=40, repetition_penalty=1.2,
                                  order=["top_k", "repetition_penalty", "temperature"])
    assert at([late_penalty]) is None


def test_top_k_candidates_keep_ties_in_token_order() -> None:
    x = torch.tensor([[1.0, 5.0, 3.0, 3.0, 3.0, 0.0, -math.inf, 2.0],
                      [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]])
    values, ids = TopK(torch.tensor([2, 1])).candidates(x)
    # Row 0: k = 2 ties three tokens at 3.0, so every row gets 4 candidates, in id order.
    assert ids[0].tolist() == [1, 2, 3, 4]
    assert values[0].tolist() == [5.0, 3.0, 3.0, 3.0]
    assert ids[1].tolist() == [0, 1, 2, 3] and values[1].tolist() == [9.0, 8.0, 7.0, 6.0]
    # A row with fewer finite tokens than k needs no more than k candidates.
    few = torch.full((2, 64), -math.inf)
    few[0, :3] = 1.0
    few[1] = torch.arange(64.0)
    assert TopK(5).candidates(few)[1].shape == (2, 6)
    kept = TopK(torch.tensor([2, 1])).apply(values)
    assert torch.isfinite(kept).tolist() == [[True] * 4, [True, False, False, False]]


@pytest.mark.parametrize("chain", [*CHAINS, dict(temperature=1.0, top_k=50, adaptive_target=0.4)],
                         ids=lambda c: "-".join(sorted(c)))
def test_a_row_is_processed_the_same_beside_any_other_k(chain: dict[str, Any]) -> None:
    """The seed promise inside the chain: a row's candidates are its own (its k, its ties),
    so its processed logits and tokens are the same to the bit alone and beside rows whose k
    is larger (a wider candidate set), smaller, or keeps all V. Before, one neighbour's
    larger k widened every row's candidates, and a sum over more columns (dynamic temperature
    after top-k) moved a row's logits by up to 3e-6."""
    x = _logits(0)
    target = SamplingParams(**{**chain, "temperature_last": True})
    alone = _run([target], x[:1], steps=3, seeds=[11])
    for other_k in (1, 7, 900, V):  # narrower, wider, too wide to compact, every token
        other = SamplingParams(**{**chain, "temperature_last": True, "top_k": other_k})
        for rows, at in (([target, other], 0), ([other, target, other], 1)):
            xs = torch.cat([x[1:2] if r is other else x[:1] for r in rows])
            seeds = [11 if r is target else 5 + i for i, r in enumerate(rows)]
            both = _run(rows, xs, steps=3, seeds=seeds)
            for a, b in zip(alone, both, strict=True):
                assert torch.equal(a[0], b[at]), (other_k, at)
