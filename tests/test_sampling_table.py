"""Table tests on 4-token distributions, one block per sampler, numbers checked by hand.

The base distribution is p = [0.4, 0.3, 0.2, 0.1] (logits = log p), entropy
H = 1.27985 nats, ln 4 = 1.38629.
"""

from __future__ import annotations

import math

import pytest
import torch

from tempscope.sampling import (
    XTC,
    DynamicTemperature,
    EntropyTemperature,
    Epsilon,
    Eta,
    FrequencyPenalty,
    LogitBias,
    MinP,
    MirostatV2,
    PresencePenalty,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopNSigma,
    TopP,
    Typical,
    probabilities,
)
from tempscope.sampling.params import SamplingParams

P4 = [0.4, 0.3, 0.2, 0.1]
TIES = [0.3, 0.3, 0.3, 0.1]
H4 = -sum(p * math.log(p) for p in P4)


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()  # (1, 4)


def kept(out: torch.Tensor) -> list[int]:
    return [i for i, x in enumerate(out[0].tolist()) if math.isfinite(x)]


def test_entropy_constant() -> None:
    assert pytest.approx(1.27985, abs=1e-5) == H4


@pytest.mark.parametrize(
    ("k", "probs", "expected"),
    [
        (1, P4, [0]),
        (2, P4, [0, 1]),
        (4, P4, [0, 1, 2, 3]),
        (50, P4, [0, 1, 2, 3]),  # k > V keeps all
        (1, TIES, [0, 1, 2]),  # ties at the cut are kept
        (2, TIES, [0, 1, 2]),
    ],
)
def test_top_k(k: int, probs: list[float], expected: list[int]) -> None:
    assert kept(TopK(k).apply(logits_of(probs))) == expected


@pytest.mark.parametrize(
    ("p", "probs", "expected"),
    [
        (0.3, P4, [0]),  # the top token alone already holds >= p
        (0.4, P4, [0]),  # mass exactly p: stop there
        (0.41, P4, [0, 1]),  # the token that crosses p is kept
        (0.7, P4, [0, 1]),
        (0.71, P4, [0, 1, 2]),
        (0.95, P4, [0, 1, 2, 3]),
        (1.0, P4, [0, 1, 2, 3]),
        (0.1, TIES, [0, 1, 2]),  # ties with the last kept token are kept
        (1e-9, P4, [0]),  # tiny p: at least one token
    ],
)
def test_top_p(p: float, probs: list[float], expected: list[int]) -> None:
    assert kept(TopP(p).apply(logits_of(probs))) == expected


def test_top_p_one_keeps_underflowing_tokens() -> None:
    x = torch.tensor([[0.0, -200.0, -1000.0]])
    assert kept(TopP(1.0).apply(x)) == [0, 1, 2]
    assert kept(TopP(0.999).apply(x)) == [0]


@pytest.mark.parametrize(
    ("m", "probs", "expected"),
    [
        (0.0, P4, [0, 1, 2, 3]),
        (0.3, P4, [0, 1, 2]),  # cut 0.3 * 0.4 = 0.12: only 0.1 falls below
        (0.6, P4, [0, 1]),  # cut 0.24
        (0.9, P4, [0]),  # cut 0.36
        (1.0, TIES, [0, 1, 2]),  # >=: every token tied with the max survives
        (1.0, P4, [0]),
    ],
)
def test_min_p(m: float, probs: list[float], expected: list[int]) -> None:
    assert kept(MinP(m).apply(logits_of(probs))) == expected


def test_typical_hand_computed() -> None:
    # |-ln p - H| = [0.364, 0.076, 0.329, 1.023]: typical order 1, 2, 0, 3 with masses
    # 0.3, 0.2, 0.4, 0.1 (cumulative 0.3, 0.5, 0.9, 1.0).
    x = logits_of(P4)
    assert kept(Typical(0.2).apply(x)) == [1]
    assert kept(Typical(0.4).apply(x)) == [1, 2]
    assert kept(Typical(0.6).apply(x)) == [0, 1, 2]
    assert kept(Typical(0.95).apply(x)) == [0, 1, 2, 3]
    assert kept(Typical(1.0).apply(x)) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("eps", "expected"), [(0.0, [0, 1, 2, 3]), (0.15, [0, 1, 2]), (0.35, [0]), (0.5, [0])]
)
def test_epsilon(eps: float, expected: list[int]) -> None:
    assert kept(Epsilon(eps).apply(logits_of(P4))) == expected


@pytest.mark.parametrize(
    ("eta", "cut", "expected"),
    [
        (0.15, 0.10770, [0, 1, 2]),  # min(0.15, sqrt(.15) e^-H)
        (0.9, 0.26381, [0, 1]),
        (0.05, 0.05, [0, 1, 2, 3]),  # eta itself is the smaller one
    ],
)
def test_eta(eta: float, cut: float, expected: list[int]) -> None:
    assert min(eta, math.sqrt(eta) * math.exp(-H4)) == pytest.approx(cut, abs=1e-5)
    assert kept(Eta(eta).apply(logits_of(P4))) == expected


@pytest.mark.parametrize(("n", "expected"), [(0.0, [0]), (1.0, [0, 1]), (2.0, [0, 1, 2]),
                                              (3.0, [0, 1, 2, 3])])
def test_top_n_sigma(n: float, expected: list[int]) -> None:
    # logits 4, 3, 2, 1: mean 2.5, population std sqrt(1.25) = 1.118
    x = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert kept(TopNSigma(n).apply(x)) == expected
    assert kept(TopNSigma(n).apply(x / 0.1)) == expected  # temperature does not move it


def test_temperature_values_and_boundaries() -> None:
    assert Temperature(0.5).apply(torch.tensor([[1.0, 2.0]])).tolist() == [[2.0, 4.0]]
    greedy = Temperature(0).apply(torch.tensor([[2.0, 2.0, 1.0]]))
    assert kept(greedy) == [0]  # ties: the first maximum
    for t in (1e-6, 1e-30, 1e6, 1e30, math.inf):
        p = torch.softmax(Temperature(t).apply(torch.tensor([[1.0, 2.0, -math.inf]])), -1)
        assert torch.isfinite(p).all() and p.sum().item() == pytest.approx(1)
        assert p[0, 2] == 0
    p = torch.softmax(Temperature(math.inf).apply(torch.tensor([[1.0, 5.0, 3.0]])), -1)
    assert p[0].tolist() == pytest.approx([1 / 3] * 3)
    p = torch.softmax(Temperature(1e-30).apply(torch.tensor([[1.0, 5.0, 3.0]])), -1)
    assert p.tolist() == [[0.0, 1.0, 0.0]]


def test_per_row_temperature() -> None:
    out = Temperature(torch.tensor([1.0, 0.5, 0.0])).apply(torch.tensor([[1.0, 2.0]] * 3))
    assert out.tolist() == [[1.0, 2.0], [2.0, 4.0], [-math.inf, 2.0]]


def test_dynatemp() -> None:
    x = logits_of(P4)
    ratio = H4 / math.log(4)  # 0.92323
    t = DynamicTemperature(1.0, 0.5, 1.0).temperatures(x)
    assert t.item() == pytest.approx(0.5 + ratio, abs=1e-5)
    t = DynamicTemperature(1.0, 0.5, 2.0).temperatures(x)
    assert t.item() == pytest.approx(0.5 + ratio**2, abs=1e-5)
    uniform = torch.zeros(1, 4)
    assert DynamicTemperature(1.0, 0.5).temperatures(uniform).item() == pytest.approx(1.5)
    one = torch.tensor([[0.0, -math.inf, -math.inf]])
    assert DynamicTemperature(1.0, 0.5).temperatures(one).item() == pytest.approx(0.5)
    assert DynamicTemperature(0.3, 0.5).temperatures(one).item() == 0.0  # T_lo clamps at 0


def test_edt() -> None:
    x = logits_of(P4)
    t = EntropyTemperature(1.0, 1.0, 0.8).temperatures(x)
    assert t.item() == pytest.approx(0.8 ** (1 / H4), abs=1e-5)  # 0.84001
    assert t.item() == pytest.approx(0.84001, abs=1e-5)
    assert EntropyTemperature(0.7, 0.0).temperatures(x).item() == pytest.approx(0.7)
    one = torch.tensor([[0.0, -math.inf]])
    assert EntropyTemperature(1.0, 1.0).temperatures(one).item() == 0.0  # H = 0 -> greedy
    assert kept(EntropyTemperature(1.0, 1.0).apply(one)) == [0]


def test_xtc() -> None:
    x = logits_of(P4)
    gens = [torch.Generator().manual_seed(0)]
    assert kept(XTC(0.25, 1.0, gens).apply(x)) == [1, 2, 3]  # 0.4, 0.3 reach: drop 0.4
    assert kept(XTC(0.15, 1.0, gens).apply(x)) == [2, 3]
    assert kept(XTC(0.35, 1.0, gens).apply(x)) == [0, 1, 2, 3]  # one token above: no-op
    assert kept(XTC(0.6, 1.0, gens).apply(x)) == [0, 1, 2, 3]
    assert kept(XTC(0.15, 0.0, gens).apply(x)) == [0, 1, 2, 3]  # never fires
    assert kept(XTC(0.2, 1.0, gens).apply(logits_of(TIES))) == [0, 1, 2, 3]  # ties: no-op
    fired = [len(kept(XTC(0.25, 0.5, gens).apply(x))) == 3 for _ in range(400)]
    assert 0.4 < sum(fired) / 400 < 0.6


def test_mirostat_v2() -> None:
    x = logits_of(P4)  # surprise in bits 1.32, 1.74, 2.32, 3.32
    m = MirostatV2(1.0, 0.1)
    assert m.mu.item() == 2.0  # 2 * tau
    out = m.apply(x)
    assert kept(out) == [0, 1]
    lp = torch.log_softmax(out, -1)[:, 0]  # token 0 at 0.4 / 0.7
    m.update(lp)
    assert m.mu.item() == pytest.approx(2 - 0.1 * (-math.log2(4 / 7) - 1), abs=1e-6)
    assert kept(MirostatV2(0.01, 0.1).apply(x)) == [0]  # at least one token


def test_penalties_and_bias() -> None:
    x = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    counts = torch.tensor([[0.0, 2.0, 1.0, 0.0]])
    assert RepetitionPenalty(2.0, counts).apply(x).tolist() == [[2.0, -2.0, 0.25, 1.0]]
    assert FrequencyPenalty(0.5, counts).apply(x).tolist() == [[2.0, -2.0, 0.0, 1.0]]
    assert PresencePenalty(0.5, counts).apply(x).tolist() == [[2.0, -1.5, 0.0, 1.0]]
    bias = LogitBias.from_dicts([{3: 5.0}], 4)
    assert bias.apply(x).tolist() == [[2.0, -1.0, 0.5, 6.0]]
    with pytest.raises(ValueError, match=r"token id 9 is outside the vocabulary \[0, 4\)"):
        LogitBias.from_dicts([{9: 1.0}], 4)


def test_filters_keep_masked_tokens_masked() -> None:
    x = torch.tensor([[1.0, -math.inf, 0.5, 0.0]])
    for f in (TopK(10), TopP(1.0), MinP(0.0), Typical(1.0), Epsilon(0.0), Eta(0.0),
              TopNSigma(5.0), Temperature(2.0)):
        assert kept(f.apply(x)) == [0, 2, 3], f


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TopK(0), r"top_k must be in \[1, inf\), got 0"),
        (lambda: TopP(0.0), r"top_p must be in \(0, 1\], got 0.0"),
        (lambda: TopP(1.5), r"top_p must be in \(0, 1\], got 1.5"),
        (lambda: MinP(-0.1), "min_p must be in"),
        (lambda: Temperature(-1), r"temperature must be in \[0, inf\], got -1.0"),
        (lambda: Temperature(math.nan), "temperature must be in"),
        (lambda: TopNSigma(-1), "top_n_sigma must be in"),
    ],
)
def test_sampler_validation(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_order_matters_for_min_p() -> None:
    # T = 2 first flattens p to [.327, .283, .231, .163]: min_p 0.6 keeps three tokens;
    # with temperature last, min_p sees the raw p and keeps two.
    first = probabilities(logits_of(P4)[0], SamplingParams(temperature=2, min_p=0.6))
    last = probabilities(
        logits_of(P4)[0], SamplingParams(temperature=2, min_p=0.6, temperature_last=True)
    )
    assert (first > 0).tolist() == [True, True, True, False]
    assert (last > 0).tolist() == [True, True, False, False]
    # kept tokens at T = 2 are proportional to sqrt(p)
    s = math.sqrt(0.4) + math.sqrt(0.3)
    assert last[:2].tolist() == pytest.approx([math.sqrt(0.4) / s, math.sqrt(0.3) / s], abs=1e-6)
