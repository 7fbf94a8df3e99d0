"""Table tests transcribed from the two reference test suites.

- llama.cpp ``tests/test-sampling.cpp`` (ggml-org/llama.cpp; the tail-free cases from the
  older ggerganov/llama.cpp version of the same file, before llama.cpp removed tail-free):
  4- and 5-token distributions given as probabilities (logits = log p), checked on the
  probabilities left after the sampler, plus the ``test_sampler_queue`` chains on 10 000
  tokens with logits ``log(id)``.
- transformers ``tests/generation/test_logits_process.py``: the ``*_dist_warper`` tests,
  including their ``min_tokens_to_keep`` cases.

Where tempscope's documented semantics differ from the source, the expected value is
tempscope's and the comment gives the source's value and why.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tempscope.sampling.base import HistoryView, Sampler
from tempscope.sampling.dry import DRY
from tempscope.sampling.tail_free import TailFree
from tempscope.sampling.truncation import Epsilon, Eta, MinP, TopK, TopNSigma, TopP, Typical
from tempscope.sampling.vocab import ListVocab
from tempscope.sampling.xtc import XTC

P4 = [0.1, 0.2, 0.3, 0.4]


def log_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs], dtype=torch.float32).log()  # (1, V); log 0 = -inf


def left(out: torch.Tensor) -> list[float]:
    """The renormalised probabilities of the kept tokens, largest first (llama.cpp's tester
    reads ``cur_p`` after ``dist``, which renormalises)."""
    p = torch.softmax(out[0].double(), dim=-1)
    return sorted((x for x in p.tolist() if x > 0), reverse=True)


def renormalised(probs: list[float]) -> list[float]:
    total = sum(probs)
    return sorted((p / total for p in probs), reverse=True)


# -- llama.cpp tests/test-sampling.cpp -----------------------------------------------------------

@pytest.mark.parametrize(("k", "expected"), [
    (1, [1.0]),
    (3, [0.44444, 0.33333, 0.22222]),
    (4, [0.4, 0.3, 0.2, 0.1]),
    # (0, ...): llama.cpp treats k <= 0 as a no-op; here k >= 1 and None is off.
])
def test_llama_top_k(k: int, expected: list[float]) -> None:
    assert left(TopK(k).apply(log_of(P4))) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("p", "expected"), [
    (1e-9, [1.0]),  # llama.cpp's case uses p = 0, outside (0, 1] here
    (0.7, [0.571429, 0.428571]),
    (0.8, [0.44444, 0.33333, 0.22222]),
    (1.0, [0.4, 0.3, 0.2, 0.1]),
])
def test_llama_top_p(p: float, expected: list[float]) -> None:
    assert left(TopP(p).apply(log_of(P4))) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("min_p", "kept"), [
    (0.00, [0.1, 0.2, 0.3, 0.4]),
    (0.24, [0.1, 0.2, 0.3, 0.4]),
    (0.26, [0.2, 0.3, 0.4]),
    (0.49, [0.2, 0.3, 0.4]),
    (0.51, [0.3, 0.4]),
    (0.74, [0.3, 0.4]),
    (0.76, [0.4]),
    (1.00, [0.4]),
    # (1.05, [0.4]): min_p must be in [0, 1] here; llama.cpp accepts it.
])
def test_llama_min_p(min_p: float, kept: list[float]) -> None:
    assert left(MinP(min_p).apply(log_of(P4))) == pytest.approx(renormalised(kept), abs=1e-5)


@pytest.mark.parametrize(("threshold", "kept"), [
    (0.09, [0.1]),  # "XTC should": every token but the least likely above the threshold goes
    (0.19, [0.2, 0.1]),
    (0.29, [0.3, 0.2, 0.1]),
    (0.39, [0.4, 0.3, 0.2, 0.1]),  # "XTC should not": only one token reaches 0.39
])
def test_llama_xtc(threshold: float, kept: list[float]) -> None:
    # llama.cpp's case uses probability 0.99 with seed 0, which fires; 1.0 always fires.
    out = XTC(threshold, 1.0, [torch.Generator().manual_seed(0)]).apply(log_of(P4[::-1]))
    assert left(out) == pytest.approx(renormalised(kept), abs=1e-5)


@pytest.mark.parametrize(("probs", "typical_p", "kept"), [
    ([0.97, 0.01, 0.01, 0.01], 0.5, [0.97]),
    ([0.4, 0.2, 0.2, 0.2], 0.5, [0.2, 0.2, 0.2]),
])
def test_llama_typical(probs: list[float], typical_p: float, kept: list[float]) -> None:
    assert left(Typical(typical_p).apply(log_of(probs))) == pytest.approx(
        renormalised(kept), abs=1e-5)


# DRY: llama.cpp feeds the history with accept() and uses token sequences as breakers; here
# the history is a HistoryView and the one breaker ({3}) is the text of token 3.
DRY_VOCAB = ListVocab(("a", "b", "c", "\n", "e"))


@pytest.mark.parametrize(("probs", "history", "expected", "multiplier", "base", "allowed",
                          "last_n", "breakers"), [
    ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
    ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, ["\n"]),
    ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818],
     2.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),
])
def test_llama_dry(probs: list[float], history: list[int], expected: list[float],
                   multiplier: float, base: float, allowed: int, last_n: int,
                   breakers: list[str]) -> None:
    x = log_of(probs)
    dry = DRY(multiplier, base, allowed, last_n, sequence_breakers=[breakers],
              vocab=DRY_VOCAB, history=HistoryView.of([history], x.shape[-1]))
    p = torch.softmax(dry.apply(x)[0].double(), dim=-1)  # in token-id order, as llama.cpp's
    assert p.tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("n", "expected"), [
    (1.0, [0.0, 0.0, 0.428571, 0.571429]),
    # llama.cpp: n = 0 is a no-op (since its PR #13345); here n = 0 keeps only the maximum
    # and None is off.
    (0.0, [0.0, 0.0, 0.0, 1.0]),
    (3.0, [0.1, 0.2, 0.3, 0.4]),
])
def test_llama_top_n_sigma(n: float, expected: list[float]) -> None:
    p = torch.softmax(TopNSigma(n).apply(log_of(P4))[0].double(), dim=-1)
    assert p.tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("z", "kept"), [
    # The older llama.cpp test-sampling.cpp (llama_sample_tail_free, min_keep 1) on
    # {0.1, 0.15, 0.2, 0.25, 0.3}: the second differences are all 0, so both take equal
    # weights 1/3. llama.cpp keeps {0.3}, {0.3, 0.25}, {0.3, 0.25}; tempscope follows
    # text-generation-webui's centred cut, one token more when the cut is past the first.
    (0.25, [0.3]),
    (0.75, [0.3, 0.25, 0.2]),
    (0.99, [0.3, 0.25, 0.2]),
])
def test_llama_tail_free(z: float, kept: list[float]) -> None:
    out = TailFree(z).apply(log_of([0.1, 0.15, 0.2, 0.25, 0.3]))
    assert left(out) == pytest.approx(renormalised(kept), abs=1e-5)


def _queue_expectation(s: str, n_vocab: int, size: int, min_token_id: int, top_k: int,
                       top_p: float, min_p: float) -> tuple[int, int]:
    """llama.cpp's ``test_sampler_queue`` bookkeeping for one sampler: the expected size and
    smallest kept id (float32 where the C code uses float). ``size`` is what is left."""
    if s == "k":
        return min(size, top_k), max(min_token_id, n_vocab - top_k)
    if s == "p":
        divisor = n_vocab * (n_vocab - 1) // 2 - min_token_id * (min_token_id - 1) // 2
        target = math.ceil(float(np.float32(top_p) * np.float32(divisor)))
        min_token_id, expected, cumsum = n_vocab, 0, 0
        while True:  # do-while: at least one token
            min_token_id -= 1
            expected += 1
            cumsum += min_token_id
            if cumsum >= target:
                break
        if min_token_id == 1:  # token 0 has p = 0 and rides along in llama.cpp's array
            min_token_id, expected = 0, expected + 1
        return expected, min_token_id
    expected = max(math.ceil(float((np.float32(1) - np.float32(min_p)) * n_vocab)), 1)
    expected = min(expected, size)
    low = max(math.floor(float(np.float32(min_p) * n_vocab)), 1, n_vocab - size)
    return expected, min(low, n_vocab - 1)


@pytest.mark.parametrize(("seq", "top_k", "top_p", "min_p"), [
    ("k", 10000, 1.0, 1.0),
    ("k", 1, 1.0, 1.0),
    ("p", 10000, 1.0, 1.0),
    ("m", 10000, 1.0, 1.0),
    ("m", 10000, 1.0, 1e-12),
    ("k", 100, 1.0, 1.0),
    ("p", 10000, 0.0003, 1.0),
    ("p", 10000, 0.8, 1.0),
    ("m", 10000, 1.0, 9997.9 / 9999.0),
    ("m", 10000, 1.0, 0.1),
    ("kp", 100, 0.8, 0.1),
    ("km", 100, 0.8, 0.1),
    ("pk", 100, 0.8, 0.1),
    ("pm", 100, 0.8, 0.1),
    ("mk", 100, 0.8, 0.1),
    ("mp", 100, 0.8, 9997.9 / 9999.0),
    ("mp", 100, 0.8, 0.1),
    ("kpm", 100, 0.8, 0.1),
    ("kmp", 100, 0.8, 0.1),
    ("pkm", 100, 0.8, 0.1),
    ("pmk", 100, 0.8, 0.1),
    ("mkp", 100, 0.8, 0.1),
    ("mpk", 100, 0.8, 0.1),
    # ("p", 10000, 0.0, 1.0): top_p = 0 is outside (0, 1] here.
])
def test_llama_sampler_queue(seq: str, top_k: int, top_p: float, min_p: float) -> None:
    """Logits ``log(id)`` on 10 000 tokens (token 0 is ``-inf``), samplers applied in turn
    (top-p and min-p with min_keep 1): after each, the number of tokens left and the smallest
    id left. llama.cpp counts token 0 when top-p keeps everything (it stays in its array with
    p = 0); tempscope counts finite logits, so token 0 is never among them."""
    n_vocab = 10000
    x = torch.arange(n_vocab, dtype=torch.float32).log()[None]  # (1, V)
    min_token_id = 0
    with_zero = True  # whether llama.cpp's array still holds token 0
    for s in seq:
        sampler: Sampler = (TopK(top_k) if s == "k" else TopP(top_p, min_keep=1) if s == "p"
                            else MinP(min_p, min_keep=1))
        x = sampler.apply(x)
        kept = torch.isfinite(x[0]).nonzero()[:, 0]
        size = int(kept.numel())
        if s == "k":  # top-k keeps token 0 only when it keeps the whole array
            with_zero = with_zero and top_k >= size + 1
        elif s == "m":  # min-p > 0 always drops a -inf logit
            with_zero = False
        expected, min_token_id = _queue_expectation(s, n_vocab, size + with_zero, min_token_id,
                                                    top_k, top_p, min_p)
        with_zero = with_zero and min_token_id == 0
        assert size == expected - with_zero, s
        assert int(kept.max()) == n_vocab - 1
        assert int(kept.min()) == max(min_token_id, 1), s


# -- transformers tests/generation/test_logits_process.py ----------------------------------------

def ramp(batch: int, vocab: int) -> torch.Tensor:
    """transformers' ``ramp_logits``: ``arange(V) - V // 2`` per row, the second row x 100."""
    x = (torch.arange(vocab, dtype=torch.float32) - vocab // 2).repeat(batch, 1)
    x[1] = x[1] * 100.0
    return x


def n_kept(out: torch.Tensor) -> list[int]:
    return torch.isfinite(out).sum(dim=-1).tolist()


def test_transformers_top_k() -> None:
    x = torch.arange(10, dtype=torch.float32).repeat(2, 1)
    x[1:, :5] += 10
    out = TopK(3).apply(x)
    assert torch.isinf(out[0]).tolist() == 7 * [True] + 3 * [False]
    assert torch.isinf(out[1]).tolist() == 2 * [True] + 3 * [False] + 5 * [True]
    uniform = torch.full((2, 5), 1 / 5)
    assert n_kept(TopK(1, min_keep=3).apply(uniform)) == [5, 5]  # uniform: not changed
    ramp5 = torch.arange(5, dtype=torch.float32).repeat(2, 1)
    assert n_kept(TopK(1, min_keep=3).apply(ramp5)) == [3, 3]  # min_keep overrides k


def test_transformers_top_p() -> None:
    dist = log_of([0.3, 0.1, 0.1, 0.5])
    dist = torch.cat([dist, log_of([0.15, 0.3, 0.3, 0.25])])
    out = torch.exp(TopP(0.8).apply(dist))
    expected = torch.tensor([[0.3, 0.0, 0.0, 0.5], [0.0, 0.3, 0.3, 0.25]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    # the second row alone would keep 1 token; min_keep = 2 keeps 2
    assert n_kept(TopP(0.9, min_keep=2).apply(ramp(2, 10))) == [3, 2]


def test_transformers_min_p() -> None:
    rows = [[0.9, 0.0274, 0.047, 0.0274], [0.15, 0.3, 0.3, 0.25], [0.97, 0.01, 0.01, 0.01]]
    out = torch.exp(MinP(0.05).apply(torch.cat([log_of(r) for r in rows])))
    expected = torch.tensor([[0.9, 0.0, 0.047, 0.0], [0.15, 0.3, 0.3, 0.25],
                             [0.97, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    assert n_kept(MinP(0.9, min_keep=2).apply(ramp(2, 10))) == [2, 2]


def test_transformers_typical() -> None:
    dist = torch.cat([log_of([0.97, 0.01, 0.01, 0.01]), log_of([0.4, 0.2, 0.2, 0.2])])
    out = torch.exp(Typical(0.5).apply(dist))
    expected = torch.tensor([[0.97, 0.0, 0.0, 0.0], [0.0, 0.2, 0.2, 0.2]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    uniform = torch.full((2, 5), 1 / 5)
    assert n_kept(Typical(0.5, min_keep=3).apply(uniform)) == [5, 5]  # uniform: not changed
    assert n_kept(Typical(0.7, min_keep=2).apply(ramp(2, 10))) == [2, 2]


def test_transformers_epsilon() -> None:
    dist = torch.cat([log_of([0.87, 0.099, 0.001, 0.03]), log_of([0.4, 0.299, 0.101, 0.2])])
    out = torch.exp(Epsilon(0.1).apply(dist))
    expected = torch.tensor([[0.87, 0, 0, 0], [0.4, 0.299, 0.101, 0.2]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    assert n_kept(Epsilon(5e-2, min_keep=2).apply(ramp(2, 10))) == [3, 2]


def test_transformers_eta() -> None:
    dist = torch.cat([log_of([0.0, 0.1, 0.8, 0.1]), log_of([0.01, 0.04, 0.9, 0.05])])
    out = torch.exp(Eta(0.0625).apply(dist))
    # cuts min(0.0625, 0.1320) and min(0.0625, 0.1644)
    expected = torch.tensor([[0.0, 0.1, 0.8, 0.1], [0.0, 0.0, 0.9, 0.0]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    assert n_kept(Eta(0.1, min_keep=2).apply(ramp(2, 10))) == [2, 2]
