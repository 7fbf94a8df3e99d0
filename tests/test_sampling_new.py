"""The samplers added for issue 12 (DRY, top-a, tail-free, quadratic smoothing, adaptive-p,
mirostat v1), ``min_keep`` on every truncation sampler, and the ``RowSampler`` contract.

Hand-checked tables first, then parity with text-generation-webui's warpers (their code,
from oobabooga/text-generation-webui ``modules/sampler_hijack.py``, transcribed below as the
reference), a naive DRY reference, and Hypothesis invariants for every sampler: at least one
token survives, probabilities sum to 1, the off value is the identity, per-row parameters
equal running rows one at a time, and ``select(index)`` equals building with those rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tempscope.sampling.adaptive_p import AdaptiveP
from tempscope.sampling.base import HistoryView, RowSampler, Sampler
from tempscope.sampling.dry import DRY, Restarts, repeat_lengths, restarts_of
from tempscope.sampling.mirostat import MirostatV1, MirostatV2
from tempscope.sampling.smoothing import QuadraticSmoothing
from tempscope.sampling.tail_free import TailFree
from tempscope.sampling.temperature import DynamicTemperature, EntropyTemperature, Temperature
from tempscope.sampling.top_a import TopA
from tempscope.sampling.truncation import Epsilon, Eta, MinP, TopK, TopNSigma, TopP, Typical
from tempscope.sampling.vocab import ListVocab, Vocab, byte_vocab
from tempscope.sampling.xtc import XTC

P4 = [0.4, 0.3, 0.2, 0.1]
P5 = [0.5, 0.2, 0.15, 0.1, 0.05]


def log_of(*rows: Sequence[float]) -> torch.Tensor:
    return torch.tensor([list(r) for r in rows], dtype=torch.float32).log()  # (B, V)


def kept(out: torch.Tensor, row: int = 0) -> list[int]:
    return torch.isfinite(out[row]).nonzero()[:, 0].tolist()


def gens(*seeds: int) -> list[torch.Generator | None]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# -- top-a ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "min_keep", "expected"), [
    (0.0, 1, [0, 1, 2, 3, 4]),  # off
    (0.5, 1, [0, 1, 2]),  # cut 0.5 * 0.25 = 0.125
    (1.0, 1, [0]),  # cut 0.25: 0.2 is below it
    (1.0, 3, [0, 1, 2]),
    (0.3, 1, [0, 1, 2, 3]),  # cut 0.075
])
def test_top_a(a: float, min_keep: int, expected: list[int]) -> None:
    assert kept(TopA(a, min_keep=min_keep).apply(log_of(P5))) == expected


# -- tail-free ------------------------------------------------------------------------------------

def test_tail_free_hand_computed() -> None:
    # p = .5 .3 .1 .06 .04: second differences |.5 - .6 + .1| = 0, |.3 - .2 + .06| = .16,
    # |.1 - .12 + .04| = .02 -> weights 0, .889, .111, cumulative 0, .889, 1. Position j is
    # cut once the weights before it exceed z; the last position always goes.
    x = log_of([0.5, 0.3, 0.1, 0.06, 0.04])
    assert kept(TailFree(0.5).apply(x)) == [0, 1]
    assert kept(TailFree(0.95).apply(x)) == [0, 1, 2]
    assert kept(TailFree(1.0).apply(x)) == [0, 1, 2, 3, 4]  # 1 = off
    assert kept(TailFree(0.5, min_keep=4).apply(x)) == [0, 1, 2, 3]


def test_tail_free_boundaries() -> None:
    two = torch.tensor([[1.0, 0.0, -math.inf, -math.inf]])
    assert kept(TailFree(0.1).apply(two)) == [0, 1]  # two survivors: untouched (llama.cpp)
    # p = .4 .25 .25 .1: weights .5, .5; z = .6 keeps two, and the token tied with the second
    assert kept(TailFree(0.6).apply(log_of([0.4, 0.25, 0.25, 0.1]))) == [0, 1, 2]
    masked = torch.tensor([[math.log(0.5), -math.inf, math.log(0.3), math.log(0.1),
                            math.log(0.06), math.log(0.04)]])
    # removed tokens do not count: the same cut as on the five survivors alone
    assert kept(TailFree(0.5).apply(masked)) == [0, 2]


# -- quadratic smoothing --------------------------------------------------------------------------

@pytest.mark.parametrize(("factor", "curve", "expected"), [
    (0.5, 1.0, [2.0, 1.5, 0.0]),  # 2 - .5 d^2
    (0.5, 3.0, [2.0, 1.5, -2.0]),  # 2 + .5 d^3
    (0.5, 2.0, [2.0, 1.5, -1.0]),  # 2 - .25 d^2 + .25 d^3
    (0.0, 1.0, [2.0, 1.0, 0.0]),  # off
])
def test_smoothing(factor: float, curve: float, expected: list[float]) -> None:
    out = QuadraticSmoothing(factor, curve).apply(torch.tensor([[2.0, 1.0, 0.0]]))
    assert out[0].tolist() == pytest.approx(expected)


def test_smoothing_boundaries() -> None:
    out = QuadraticSmoothing(1.0).apply(torch.tensor([[1.0, -math.inf, 0.0]]))
    assert out[0].tolist() == [1.0, -math.inf, 0.0]
    for curve in (1.0, 3.0):  # d^2 and d^3 overflow float32: float64 gives -inf, not NaN
        huge = QuadraticSmoothing(1.0, curve).apply(torch.tensor([[3e38, -3e38]]))
        assert huge[0, 0] == torch.tensor(3e38) and huge[0, 1] == -math.inf
    with pytest.raises(ValueError, match=r"smoothing_curve must be in \[1, inf\), got 0.5"):
        QuadraticSmoothing(0.3, 0.5)


# -- mirostat v1 ----------------------------------------------------------------------------------

def zipf(s: float, v: int) -> torch.Tensor:
    return -s * torch.log(torch.arange(1, v + 1, dtype=torch.float32))[None]  # p ~ 1 / i^s


@pytest.mark.parametrize(("tau", "k", "n"), [
    # Exact Zipf, s = 2, N = 4: s_hat = 2, eps = 1, k = sqrt(2^mu / (1 - 1/4)), mu = 2 tau.
    (0.5, math.sqrt(2 / 0.75), 1),  # 1.633
    (1.0, math.sqrt(4 / 0.75), 2),  # 2.309
    (2.0, math.sqrt(16 / 0.75), 4),  # 4.619 -> all 4
])
def test_mirostat_v1_zipf(tau: float, k: float, n: int) -> None:
    m = MirostatV1(tau, 0.1, vocab_size=4)
    x = zipf(2.0, 4)
    assert m.k(x).item() == pytest.approx(k, rel=1e-5)
    assert kept(m.apply(x)) == list(range(n))


def test_mirostat_v1_s_hat_one_and_m() -> None:
    # s = 1: eps = 0, k = 2^mu / ln N (the limit llama.cpp would compute as 0 / 0)
    assert MirostatV1(1.0, 0.1, vocab_size=4).k(zipf(1.0, 4)).item() == pytest.approx(
        4 / math.log(4), rel=1e-5)
    # Only the top m tokens estimate s: logits 0, -1, -1.5, -10 with m = 2 use b_0 alone:
    # s_hat = 1 / ln 2; with m = 100 the steep last gap raises it.
    x = torch.tensor([[0.0, -1.0, -1.5, -10.0]])
    s2 = 1 / math.log(2)
    k2 = ((s2 - 1) * 4 / (1 - 4 ** -(s2 - 1))) ** (1 / s2)  # mu = 2
    assert MirostatV1(1.0, 0.1, 2, vocab_size=4).k(x).item() == pytest.approx(k2, rel=1e-5)
    assert MirostatV1(1.0, 0.1, 100, vocab_size=4).k(x).item() < k2


def test_mirostat_v1_boundaries() -> None:
    x = zipf(2.0, 4)
    assert torch.equal(MirostatV1(math.inf, 0.1, vocab_size=4).apply(x), x)  # off row
    one = torch.tensor([[0.0, -math.inf, -math.inf]])
    assert kept(MirostatV1(0.1, 0.1, vocab_size=3).apply(one)) == [0]
    flat = torch.zeros(1, 4)  # s_hat = 0: k = (2^mu / (N - 1)) ** inf
    assert kept(MirostatV1(1.0, 0.1, vocab_size=4).apply(flat)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"mirostat_m must be in \[2, inf\), got 1"):
        MirostatV1(1.0, 0.1, 1, vocab_size=4)


# -- mirostat state: accept, reset, off rows, select ----------------------------------------------

@pytest.mark.parametrize("make", [
    lambda tau: MirostatV2(tau, 0.1),
    lambda tau: MirostatV1(tau, 0.1, vocab_size=4),
])
def test_mirostat_state(make: Callable[[Any], MirostatV1 | MirostatV2]) -> None:
    m = make(torch.tensor([1.0, 1.0, math.inf]))
    assert m.mu.tolist() == [2.0, 2.0, math.inf]
    # surprises 1 bit (no change), 2 bits (mu -= 0.1), row 2 is off
    m.accept(torch.tensor([0, 1, 2]), torch.tensor([math.log(0.5), math.log(0.25), -5.0]))
    assert m.mu.tolist() == pytest.approx([2.0, 1.9, math.inf])
    m.accept(torch.tensor([0, 0, 0]), torch.tensor([-math.inf, math.log(0.25), 0.0]))
    assert m.mu.tolist() == pytest.approx([2.0, 1.8, math.inf])  # p = 0: mu unchanged
    part = m.select(torch.tensor([1]))
    assert part.mu.tolist() == pytest.approx([1.8])
    assert part.tau.tolist() == [1.0]
    m.reset()
    assert m.mu.tolist() == [2.0, 2.0, math.inf]
    assert part.mu.tolist() == pytest.approx([1.8])  # the selected copy is independent


def test_mirostat_v2_off_by_starting_mu_survives_reset() -> None:
    m = MirostatV2(torch.tensor([1.0, 1.0]), 0.1, mu=torch.tensor([2.0, math.inf]))
    m.accept(torch.tensor([0, 0]), torch.tensor([math.log(0.25)] * 2))
    m.reset()
    assert m.mu.tolist() == [2.0, math.inf]


# -- adaptive-p -----------------------------------------------------------------------------------

def test_adaptive_p_reshape_hand_computed() -> None:
    # target .5, decay .9: the sums start at .5 / .1 = 5 and 1 / .1 = 10, so the average is .5
    # and the adapted target 2 * .5 - .5 = .5. x = |p - .5| / .3 = 0, 2/3, 1 -> logits
    # 5 - 10 x^2 / (1 + x) = 5, 5 - 8/3, 0.
    a = AdaptiveP(0.5, 0.9, generators=gens(0))
    x = log_of([0.5, 0.3, 0.2])
    assert a.reshape(x)[0].tolist() == pytest.approx([5.0, 5 - 8 / 3, 0.0], abs=1e-5)
    e = [math.exp(5), math.exp(5 - 8 / 3), 1.0]
    share = e[0] / sum(e)  # 0.9247
    draws = [kept(a.apply(x))[0] for _ in range(2000)]
    assert all(len(kept(a.apply(x))) == 1 for _ in range(5))  # one finite token: it ends a chain
    assert abs(draws.count(0) / 2000 - share) < 0.03


def final_logprob(out: torch.Tensor, token: int) -> torch.Tensor:
    return torch.log_softmax(out, dim=-1)[:, token]  # (1,)


def test_adaptive_p_state() -> None:
    a = AdaptiveP(0.5, 0.9, generators=gens(3))
    x = log_of([0.5, 0.3, 0.2])
    out = a.apply(x)
    token = kept(out)[0]
    p = [0.5, 0.3, 0.2][token]
    a.accept(torch.tensor([token]), final_logprob(out, token))
    assert a.weighted_sum.tolist() == pytest.approx([p + 0.9 * 5])
    assert a.total_weight.tolist() == pytest.approx([1 + 0.9 * 10])
    # a token other than the one drawn (forced: p = 0 in the final distribution) leaves the
    # average alone, as in llama.cpp
    out = a.apply(x)
    other = (kept(out)[0] + 1) % 3
    before = a.weighted_sum.clone()
    a.accept(torch.tensor([other]), final_logprob(out, other))
    assert torch.equal(a.weighted_sum, before)
    a.accept(torch.tensor([token]), torch.zeros(1))  # nothing pending any more
    assert torch.equal(a.weighted_sum, before)
    a.reset()
    assert a.weighted_sum.tolist() == pytest.approx([5.0])
    assert a.total_weight.tolist() == pytest.approx([10.0])
    assert AdaptiveP.ends_chain


def test_adaptive_p_off_rows_pass_and_do_not_draw() -> None:
    g = gens(1, 2)
    a = AdaptiveP(torch.tensor([-1.0, 0.4]), 0.9, generators=g)
    assert g[0] is not None
    state = g[0].get_state()
    x = log_of(P4, P4)
    out = a.apply(x)
    assert torch.equal(out[0], x[0])
    assert len(kept(out, 1)) == 1
    assert torch.equal(g[0].get_state(), state)
    with pytest.raises(ValueError, match=r"adaptive_target must be in \[0, 1\]"):
        AdaptiveP(1.5, 0.9, generators=gens(0))
    with pytest.raises(ValueError, match=r"adaptive_decay must be in \[0, 0.99\], got 1.0"):
        AdaptiveP(0.5, 1.0, generators=gens(0))


# -- DRY ------------------------------------------------------------------------------------------

def test_restarts_of_finds_heads_and_tails() -> None:
    v = byte_vocab(["Xa", "zX", "cXa", "q"])
    r = restarts_of(v, ["Xa"])
    assert r.tails[ord("X")] == ((ord("a"),),)  # "X" ends with a prefix: the rest is "a"
    assert r.tails[256] == ((),)  # "Xa" contains the breaker: a breaker by itself
    assert r.tails[257] == ((ord("a"),),)  # "zX"
    assert r.tails[258] == ((),)  # "cXa"
    assert set(r.tails) == {ord("X"), 256, 257, 258}
    assert r.singles == frozenset({256, 258})
    # An empty breaker is skipped; a long one is cut to 40 characters (so the 45-"q" token
    # contains it) and a tail to 20 tokens, as in llama.cpp.
    long = restarts_of(byte_vocab(["q" * 45]), ["", "q" * 50])
    assert long.singles == frozenset({256})
    assert long.tails[ord("q")] == ((ord("q"),) * 20,)


def dry_row(history: str, breakers: list[str], *, multiplier: float = 1.0, base: float = 2.0,
            allowed: int = 2, last_n: int = -1) -> dict[int, float]:
    """What DRY subtracts from each token, on a byte vocabulary."""
    v = byte_vocab()
    h = HistoryView.of([[ord(c) for c in history]], v.size)
    dry = DRY(multiplier, base, allowed, last_n, sequence_breakers=[breakers], vocab=v,
              history=h)
    out = dry.apply(torch.zeros(1, v.size))[0]
    return {i: -float(out[i]) for i in (out != 0).nonzero()[:, 0].tolist()}


@pytest.mark.parametrize(("breakers", "last_n", "expected"), [
    ([], -1, {ord("X"): 4.0}),  # "abcd" repeats (L = 4): X would extend it, 2^(4 - 2)
    (["Xa"], -1, {ord("X"): 2.0}),  # the restart "Xa" leaves 3 tokens after it: L = 3
    (["bc"], -1, {}),  # "bc" leaves only "d" after it: the cap 1 is below allowed 2
    (["X"], -1, {}),  # X is a breaker by itself: never penalised
    ([], 5, {}),  # the last 5 tokens "Xabcd" hold no repeat
    ([], 8, {ord("X"): 2.0}),  # "bcdXabcd": the repeat "bcd" (L = 3)
])
def test_dry_hand_computed(breakers: list[str], last_n: int, expected: dict[int, float]) -> None:
    assert dry_row("abcdXabcd", breakers, last_n=last_n) == expected


def test_dry_overlapping_repeats_take_the_longest() -> None:
    # "ab" then "c" once; "xab" then "d": at the end "xab", L = 3 for d and L = 2 for c.
    assert dry_row("abcxabdxab", [], base=2.0) == {ord("d"): 2.0, ord("c"): 1.0}


def test_dry_exponent_clamp_and_masked_tokens() -> None:
    # a repeat of 300 tokens: 2^(299 - 2) would overflow float32; llama.cpp clamps the
    # exponent at int(88.72 / ln 2) = 127.
    text = "".join(chr(65 + (i * 7) % 26) + chr(97 + (i * 11) % 26) for i in range(150))
    got = dry_row(text + "!" + text, [], base=2.0)
    assert got[ord("!")] == 2.0**127  # finite in float32 (2^128 would not be)
    assert max(got.values()) == 2.0**127
    v = byte_vocab()
    h = HistoryView.of([[ord(c) for c in "abXab"]], v.size)
    dry = DRY(1.0, 2.0, 2, -1, sequence_breakers=[[]], vocab=v, history=h)
    x = torch.zeros(1, v.size)
    x[0, ord("X")] = -math.inf
    assert dry.apply(x)[0, ord("X")] == -math.inf


def test_dry_reads_the_history_at_apply_time() -> None:
    v = byte_vocab()
    h = HistoryView.of([[ord(c) for c in "abXa"]], v.size)
    dry = DRY(1.0, 2.0, 2, -1, sequence_breakers=[[]], vocab=v, history=h)
    assert bool((dry.apply(torch.zeros(1, v.size)) == 0).all())
    h.history.append([0], [ord("b")])
    assert dry.apply(torch.zeros(1, v.size))[0, ord("X")] == -1.0


def test_dry_validation() -> None:
    v = byte_vocab()
    h = HistoryView.of([[1, 2]], v.size)
    with pytest.raises(ValueError, match=r"dry_base must be in \[1, inf\), got 0.5"):
        DRY(1.0, 0.5, 2, -1, sequence_breakers=[[]], vocab=v, history=h)
    with pytest.raises(ValueError, match="one list per row"):
        DRY(1.0, 1.75, 2, -1, sequence_breakers=[[], []], vocab=v, history=h)
    with pytest.raises(ValueError, match=r"dry_penalty_last_n must be in \[-1, inf\), got -2"):
        DRY(1.0, 1.75, 2, -2, sequence_breakers=[[]], vocab=v, history=h)


def naive_dry(window: list[int], breakers: list[list[int]], allowed: int) -> dict[int, int]:
    """DRY's matching straight from its definition, O(n^2): the cap is the number of tokens
    after the most recent complete breaker sequence; each earlier position's match is the
    longest common suffix with the whole window."""
    n = len(window)
    if n <= allowed:
        return {}
    cap = n
    for start in range(n - 1, -1, -1):
        ends = [start + len(b) for b in breakers
                if start + len(b) <= n and window[start:start + len(b)] == b]
        if ends:
            cap = n - max(ends)
            break
    if cap < allowed:
        return {}
    out: dict[int, int] = {}
    for i in range(n - 1):
        length = 0
        while length <= i and window[i - length] == window[n - 1 - length]:
            length += 1
        length = min(length, cap)
        if length >= allowed:
            out[window[i + 1]] = max(out.get(window[i + 1], 0), length)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40),
       st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=3), max_size=3),
       st.integers(0, 4))
def test_dry_matches_naive_reference(window: list[int], breakers: list[list[int]],
                                     allowed: int) -> None:
    got = repeat_lengths(window, Restarts.of_tokens(breakers), allowed)
    assert got == naive_dry(window, breakers, allowed)


# -- min_keep on every truncation sampler ---------------------------------------------------------

@pytest.mark.parametrize(("make", "strict"), [
    (lambda mk: TopK(1, min_keep=mk), [0]),
    (lambda mk: TopP(0.1, min_keep=mk), [0]),
    (lambda mk: MinP(0.9, min_keep=mk), [0]),
    (lambda mk: Epsilon(0.4, min_keep=mk), [0]),
    (lambda mk: Eta(0.6, min_keep=mk), [0]),
    (lambda mk: TopNSigma(0.0, min_keep=mk), [0]),
    (lambda mk: TopA(1.0, min_keep=mk), [0]),
    (lambda mk: TailFree(0.0, min_keep=mk), [0]),
])
def test_min_keep_floor(make: Callable[[int], Sampler], strict: list[int]) -> None:
    x = log_of(P5)
    assert kept(make(0).apply(x)) == strict  # 0 means the same as 1
    assert kept(make(1).apply(x)) == strict
    assert kept(make(3).apply(x)) == [0, 1, 2]  # the 3 most likely
    assert kept(make(9).apply(x)) == [0, 1, 2, 3, 4]  # more than V: all of them


def test_min_keep_typical_counts_in_typical_order() -> None:
    # P4: |-ln p - H| ranks tokens 1, 2, 0, 3 (see test_sampling_table.py)
    x = log_of(P4)
    assert kept(Typical(0.2).apply(x)) == [1]
    assert kept(Typical(0.2, min_keep=2).apply(x)) == [1, 2]
    assert kept(Typical(0.2, min_keep=3).apply(x)) == [0, 1, 2]


def test_min_keep_xtc_is_all_or_nothing() -> None:
    x = log_of(P4)
    # threshold .1 would leave one token: with min_keep 2 XTC does not fire at all
    assert kept(XTC(0.1, 1.0, gens(0)).apply(x)) == [3]
    assert kept(XTC(0.1, 1.0, gens(0), min_keep=2).apply(x)) == [0, 1, 2, 3]
    # threshold .25 leaves three: it fires
    assert kept(XTC(0.25, 1.0, gens(0), min_keep=3).apply(x)) == [1, 2, 3]
    assert kept(XTC(0.25, 1.0, gens(0), min_keep=4).apply(x)) == [0, 1, 2, 3]


def test_min_keep_per_row_and_top_k_candidates() -> None:
    x = log_of(P5, P5)
    out = MinP(0.9, min_keep=torch.tensor([1, 4])).apply(x)
    assert kept(out, 0) == [0]
    assert kept(out, 1) == [0, 1, 2, 3]
    top = TopK(torch.tensor([1, 1]), min_keep=torch.tensor([2, 3]))
    values, ids = top.candidates(x)
    back = torch.full_like(x, -math.inf).scatter(-1, ids, top.apply(values))
    assert torch.equal(back, top.apply(x))
    assert [kept(back, r) for r in range(2)] == [[0, 1], [0, 1, 2]]
    assert repr(top) == "TopK([1, 1], min_keep=[2, 3])"
    with pytest.raises(ValueError, match=r"min_keep must be in \[0, inf\), got -1"):
        TopP(0.5, min_keep=-1)


# -- the RowSampler contract ----------------------------------------------------------------------

def test_every_sampler_is_a_row_sampler() -> None:
    local = [TopK, TopP, MinP, Typical, Epsilon, Eta, TopNSigma, XTC, TopA, TailFree,
             QuadraticSmoothing, Temperature, DynamicTemperature, EntropyTemperature,
             MirostatV1, MirostatV2, AdaptiveP]
    for cls in local:
        assert issubclass(cls, RowSampler) and cls.local, cls
    assert issubclass(DRY, RowSampler) and not DRY.local  # it looks tokens up by id


def test_vocab_helpers() -> None:
    v: Vocab = ListVocab(("a", "b", "ab", "\n"), eos_token_ids=(3,))
    assert v.encode("abba\n") == [2, 1, 0, 3]
    assert v.size == 4 and list(v.eos_token_ids) == [3]
    with pytest.raises(ValueError, match="'z' at position 1 of 'az' is not in the vocabulary"):
        v.encode("az")
    b = byte_vocab(["hello"], eos_token_ids=[0])
    assert b.encode("hello!") == [256, 33] and b.token_text(104) == "h"


# -- parity with text-generation-webui's warpers (their code, as the reference) --------------------

def tgw_top_a(scores: torch.Tensor, top_a: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    sorted_logits, sorted_indices = torch.sort(scores, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    probs_max = probs[..., 0, None]
    sorted_indices_to_remove = probs < probs_max * probs_max * top_a
    if min_tokens_to_keep > 1:
        sorted_indices_to_remove[..., :min_tokens_to_keep] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices,
                                                         sorted_indices_to_remove)
    return scores.masked_fill(indices_to_remove, -math.inf)


def tgw_tail_free(scores: torch.Tensor, tfs: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    sorted_logits, sorted_indices = torch.sort(scores, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    d2 = probs.diff().diff().abs()
    normalized_d2 = d2 / d2.sum(dim=-1, keepdim=True)
    normalized_d2_cdf = normalized_d2.cumsum(dim=-1)
    sorted_indices_to_remove = normalized_d2_cdf > tfs
    sorted_indices_to_remove = torch.cat((
        torch.zeros(scores.shape[0], 1, dtype=torch.bool),
        sorted_indices_to_remove,
        torch.ones(scores.shape[0], 1, dtype=torch.bool),
    ), dim=-1)
    if min_tokens_to_keep > 1:
        sorted_indices_to_remove[..., :min_tokens_to_keep] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices,
                                                         sorted_indices_to_remove)
    return scores.masked_fill(indices_to_remove, -math.inf)


def tgw_quadratic(scores: torch.Tensor, smoothing_factor: float,
                  smoothing_curve: float) -> torch.Tensor:
    max_logit = scores.max()
    diff = scores - max_logit
    k = (3 - smoothing_curve) / 2
    s = (smoothing_curve - 1) / 2
    return torch.where(scores != float("-inf"),
                       -(k * smoothing_factor * diff**2) + (s * smoothing_factor * diff**3)
                       + max_logit, scores)


def random_logits(seed: int, v: int = 60, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(1, v, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("a", "min_keep"), [(0.05, 1), (0.3, 1), (0.9, 1), (0.9, 5)])
def test_top_a_matches_text_generation_webui(seed: int, a: float, min_keep: int) -> None:
    x = random_logits(seed)
    assert torch.equal(TopA(a, min_keep).apply(x), tgw_top_a(x, a, min_keep))


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("z", "min_keep"), [(0.3, 1), (0.9, 1), (0.97, 1), (0.5, 10)])
def test_tail_free_matches_text_generation_webui(seed: int, z: float, min_keep: int) -> None:
    """Every token finite and no straight-line rows: where tempscope and tgw agree exactly
    (tempscope ignores removed tokens and takes equal weights for a straight line)."""
    x = random_logits(seed)
    assert torch.equal(TailFree(z, min_keep).apply(x), tgw_tail_free(x, z, min_keep))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(("factor", "curve"), [(0.2, 1.0), (0.5, 1.5), (3.0, 2.5), (1.0, 3.0)])
def test_smoothing_matches_text_generation_webui(seed: int, factor: float, curve: float) -> None:
    x = random_logits(seed)
    x[0, seed] = -math.inf
    torch.testing.assert_close(QuadraticSmoothing(factor, curve).apply(x),
                               tgw_quadratic(x, factor, curve))


# -- Hypothesis invariants for every sampler ------------------------------------------------------

V = 8
logit = st.floats(-30, 30, allow_nan=False, width=32)


@st.composite
def logit_rows(draw: st.DrawFn, b: int) -> torch.Tensor:
    rows = []
    for _ in range(b):
        row = draw(st.lists(logit | st.just(-math.inf), min_size=V, max_size=V))
        row[draw(st.integers(0, V - 1))] = draw(logit)  # at least one finite token
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


class Case:
    """How to build one sampler from per-row parameter lists, what a row's parameters look
    like, and the parameters that switch a row off."""

    def __init__(self, name: str, params: Callable[[st.DrawFn], dict[str, Any]],
                 off: dict[str, Any],
                 build: Callable[[dict[str, list[Any]], int], Sampler],
                 filters: bool = True) -> None:
        self.name, self.params, self.off, self.build, self.filters = (
            name, params, off, build, filters)


def histories(draw: st.DrawFn) -> list[int]:
    return draw(st.lists(st.integers(0, 3), max_size=20))


def gens_for(p: dict[str, list[Any]]) -> list[torch.Generator | None]:
    return [torch.Generator().manual_seed(int(s)) for s in p["seed"]]


BREAKER_VOCAB = ListVocab(tuple("abcdefgh"))

CASES = [
    Case("top_k", lambda d: {"k": d(st.integers(1, 10)), "min_keep": d(st.integers(0, 9))},
         {"k": V, "min_keep": 1}, lambda p, b: TopK(torch.tensor(p["k"]),
                                                    torch.tensor(p["min_keep"]))),
    Case("top_p", lambda d: {"p": d(st.floats(1e-6, 1)), "min_keep": d(st.integers(0, 9))},
         {"p": 1.0, "min_keep": 1}, lambda p, b: TopP(torch.tensor(p["p"]),
                                                      torch.tensor(p["min_keep"]))),
    Case("min_p", lambda d: {"m": d(st.floats(0, 1)), "min_keep": d(st.integers(0, 9))},
         {"m": 0.0, "min_keep": 1}, lambda p, b: MinP(torch.tensor(p["m"]),
                                                      torch.tensor(p["min_keep"]))),
    Case("typical", lambda d: {"m": d(st.floats(1e-6, 1)), "min_keep": d(st.integers(0, 9))},
         {"m": 1.0, "min_keep": 1}, lambda p, b: Typical(torch.tensor(p["m"]),
                                                         torch.tensor(p["min_keep"]))),
    Case("epsilon", lambda d: {"e": d(st.floats(0, 1)), "min_keep": d(st.integers(0, 9))},
         {"e": 0.0, "min_keep": 1}, lambda p, b: Epsilon(torch.tensor(p["e"]),
                                                         torch.tensor(p["min_keep"]))),
    Case("eta", lambda d: {"e": d(st.floats(0, 1)), "min_keep": d(st.integers(0, 9))},
         {"e": 0.0, "min_keep": 1}, lambda p, b: Eta(torch.tensor(p["e"]),
                                                     torch.tensor(p["min_keep"]))),
    Case("top_n_sigma", lambda d: {"n": d(st.floats(0, 4)), "min_keep": d(st.integers(0, 9))},
         {"n": math.inf, "min_keep": 1}, lambda p, b: TopNSigma(torch.tensor(p["n"]),
                                                                torch.tensor(p["min_keep"]))),
    Case("xtc", lambda d: {"t": d(st.floats(0, 1)), "prob": d(st.floats(0, 1)),
                           "min_keep": d(st.integers(0, 9)), "seed": d(st.integers(0, 99))},
         {"t": 1.0, "prob": 0.0, "min_keep": 1, "seed": 0},
         lambda p, b: XTC(torch.tensor(p["t"]), torch.tensor(p["prob"]), gens_for(p),
                          torch.tensor(p["min_keep"]))),
    Case("top_a", lambda d: {"a": d(st.floats(0, 1)), "min_keep": d(st.integers(0, 9))},
         {"a": 0.0, "min_keep": 1}, lambda p, b: TopA(torch.tensor(p["a"]),
                                                      torch.tensor(p["min_keep"]))),
    Case("tail_free", lambda d: {"z": d(st.floats(0, 1)), "min_keep": d(st.integers(0, 9))},
         {"z": 1.0, "min_keep": 1}, lambda p, b: TailFree(torch.tensor(p["z"]),
                                                          torch.tensor(p["min_keep"]))),
    Case("smoothing", lambda d: {"f": d(st.floats(0, 5)), "c": d(st.floats(1, 4))},
         {"f": 0.0, "c": 1.0}, lambda p, b: QuadraticSmoothing(torch.tensor(p["f"]),
                                                               torch.tensor(p["c"])),
         filters=False),
    Case("mirostat_v1", lambda d: {"tau": d(st.floats(0.1, 8)), "eta": d(st.floats(0.05, 1)),
                                   "m": d(st.integers(2, 100))},
         {"tau": math.inf, "eta": 0.1, "m": 100},
         lambda p, b: MirostatV1(torch.tensor(p["tau"]), torch.tensor(p["eta"]),
                                 torch.tensor(p["m"]), vocab_size=V)),
    Case("mirostat_v2", lambda d: {"tau": d(st.floats(0.1, 8)), "eta": d(st.floats(0.05, 1))},
         {"tau": math.inf, "eta": 0.1},
         lambda p, b: MirostatV2(torch.tensor(p["tau"]), torch.tensor(p["eta"]))),
    Case("adaptive_p", lambda d: {"t": d(st.floats(0, 1)), "d": d(st.floats(0, 0.99)),
                                  "seed": d(st.integers(0, 99))},
         {"t": -1.0, "d": 0.9, "seed": 0},
         lambda p, b: AdaptiveP(torch.tensor(p["t"]), torch.tensor(p["d"]),
                                generators=gens_for(p))),
    Case("dry", lambda d: {"mult": d(st.floats(0, 3)), "base": d(st.floats(1, 3)),
                           "allowed": d(st.integers(0, 4)), "last_n": d(st.integers(-1, 20)),
                           "breakers": d(st.lists(st.sampled_from(["a", "bc", "dab"]),
                                                  max_size=2)),
                           "history": histories(d)},
         {"mult": 0.0, "base": 1.75, "allowed": 2, "last_n": -1, "breakers": [], "history": []},
         lambda p, b: DRY(torch.tensor(p["mult"]), torch.tensor(p["base"]),
                          torch.tensor(p["allowed"]), torch.tensor(p["last_n"]),
                          sequence_breakers=p["breakers"], vocab=BREAKER_VOCAB,
                          history=HistoryView.of(p["history"], V)),
         filters=False),
]


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [r[key] for r in rows] for key in rows[0]}


@st.composite
def batches(draw: st.DrawFn) -> tuple[Case, list[dict[str, Any]], torch.Tensor]:
    case = draw(st.sampled_from(CASES))
    b = draw(st.integers(1, 4))
    rows = [case.off if draw(st.integers(0, 4)) == 0 else case.params(draw) for _ in range(b)]
    return case, rows, draw(logit_rows(b))


@settings(max_examples=400, deadline=None)
@given(batches())
def test_invariants(batch: tuple[Case, list[dict[str, Any]], torch.Tensor]) -> None:
    case, rows, x = batch
    b = len(rows)
    out = case.build(columns(rows), b).apply(x)
    p = torch.softmax(out, dim=-1)
    assert not torch.isnan(out).any() and not (out == math.inf).any(), case.name
    assert (torch.isfinite(out).sum(-1) >= 1).all(), case.name  # a token survives
    torch.testing.assert_close(p.sum(-1), torch.ones(b))  # sums to 1
    assert not (torch.isfinite(out) & ~torch.isfinite(x)).any(), case.name  # -inf stays
    if case.filters:  # a filter keeps logits as they were, or removes them
        assert torch.equal(out[torch.isfinite(out)], x[torch.isfinite(out)]), case.name
    for r, params in enumerate(rows):
        alone = case.build(columns([params]), 1).apply(x[r:r + 1])
        assert torch.equal(alone, out[r:r + 1]), (case.name, params)  # rows are independent
        if params == case.off:
            assert torch.equal(alone, x[r:r + 1]), case.name  # off is the identity
    index = [r for r in range(b) if r % 2 == 0] + [r for r in range(b) if r % 2]
    picked = case.build(columns(rows), b).select(torch.tensor(index))
    direct = case.build(columns([rows[i] for i in index]), len(index))
    assert torch.equal(picked.apply(x[index]), direct.apply(x[index])), case.name


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.1, 8), min_size=1, max_size=4), logit_rows(4),
       st.sampled_from([1, 2]))
def test_mirostat_select_keeps_learned_state(taus: list[float], x: torch.Tensor,
                                             version: int) -> None:
    b = len(taus)
    x = x[:b]

    def make() -> MirostatV1 | MirostatV2:
        if version == 1:
            return MirostatV1(torch.tensor(taus), 0.3, vocab_size=V)
        return MirostatV2(torch.tensor(taus), 0.3)

    m = make()
    out = m.apply(x)
    tokens = out.argmax(-1)
    m.accept(tokens, torch.log_softmax(out, -1).gather(-1, tokens[:, None])[:, 0])
    for r in range(b):
        part = m.select(torch.tensor([r]))
        assert torch.equal(part.apply(x[r:r + 1]), m.apply(x)[r:r + 1])
        assert part.mu.tolist() == [m.mu.tolist()[r]]


@settings(max_examples=300, deadline=None)
@given(batches(), st.integers(1, V))
def test_local_samplers_agree_on_top_k_candidates(
        batch: tuple[Case, list[dict[str, Any]], torch.Tensor], k: int) -> None:
    """``local = True`` promises the same result on the top-k candidates alone (how
    ``BatchSampler`` runs the stages after a small top-k)."""
    case, rows, x = batch
    full_sampler = case.build(columns(rows), len(rows))
    if not full_sampler.local:
        return
    top = TopK(k)
    values, ids = top.candidates(x)
    full = full_sampler.apply(top.apply(x))
    on_candidates = case.build(columns(rows), len(rows)).apply(top.apply(values))
    back = torch.full_like(x, -math.inf).scatter(-1, ids, on_candidates)
    torch.testing.assert_close(back, full, rtol=1e-6, atol=1e-6)
