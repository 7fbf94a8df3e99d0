"""Hypothesis invariants of the chain: a distribution that sums to 1, never empty; greedy rows
unaffected by filters; seeded determinism; a seeded row's draws independent of its batch."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tempscope.sampling import BatchSampler, SamplingParams, probabilities
from tempscope.sampling.params import DEFAULT_ORDER

logit = st.floats(-30, 30, allow_nan=False, width=32)
logit_rows = st.lists(logit, min_size=2, max_size=12)
unit = st.floats(0.0, 1.0)
open_unit = st.floats(1e-6, 1.0)


WIDE = 64  # a vocabulary on which a top-k of 16 or fewer runs the chain on candidates
SMALL_K = st.integers(1, 20)


@st.composite
def sampling_params(draw: st.DrawFn, vocab: int = 12,
                    top_k: st.SearchStrategy[int] = SMALL_K) -> SamplingParams:
    def maybe(strategy: st.SearchStrategy[object]) -> object:
        return draw(st.none() | strategy)

    fields: dict[str, object] = {
        "temperature": maybe(st.sampled_from([0.0, 1e-6, 0.3, 1.0, 1.7, 1e6])),
        "top_k": maybe(top_k),
        "top_p": maybe(open_unit),
        "min_p": maybe(unit),
        "typical_p": maybe(open_unit),
        "epsilon": maybe(st.floats(0, 0.5)),
        "eta": maybe(st.floats(0, 0.5)),
        "top_n_sigma": maybe(st.floats(0, 3)),
        "xtc_threshold": maybe(unit),
        "mirostat_tau": maybe(st.floats(0.1, 8)),
        "repetition_penalty": maybe(st.floats(0.5, 2)),
        "frequency_penalty": maybe(st.floats(-2, 2)),
        "presence_penalty": maybe(st.floats(-2, 2)),
        "logit_bias": maybe(st.dictionaries(st.integers(0, vocab - 1), st.floats(-100, 100),
                                            max_size=3)),
        "seed": draw(st.integers(0, 2**32)),
        "temperature_last": draw(st.booleans()),
    }
    dyn = draw(st.sampled_from(["none", "dynatemp", "edt"]))
    if dyn == "dynatemp":
        fields["dynatemp_range"] = draw(st.floats(0, 2))
        fields["dynatemp_exponent"] = maybe(st.floats(0.1, 3))
    elif dyn == "edt":
        fields["edt_theta"] = draw(st.floats(0, 2))
        fields["edt_n"] = maybe(st.floats(0.1, 1))
    if draw(st.booleans()):
        fields["order"] = draw(st.permutations(list(DEFAULT_ORDER)))
    return SamplingParams(**fields)


def pad(values: list[float], vocab: int = 12) -> torch.Tensor:
    return torch.tensor((values * vocab)[:vocab], dtype=torch.float32)


@settings(max_examples=150, deadline=None)
@given(logit_rows, sampling_params(), st.lists(st.integers(0, 11), max_size=6))
def test_sums_to_one_never_empty(values: list[float], params: SamplingParams,
                                 history: list[int]) -> None:
    p = probabilities(pad(values), params, history=history)
    assert torch.isfinite(p).all()
    assert abs(p.sum().item() - 1) < 1e-5
    assert (p > 0).sum() >= 1


@settings(max_examples=100, deadline=None)
@given(logit_rows, sampling_params())
def test_greedy_rows_unaffected_by_filters(values: list[float], params: SamplingParams) -> None:
    """T = 0 keeps the argmax of what the samplers before temperature left (llama.cpp's rule):
    the filters after temperature change nothing, those before it may."""
    x = pad(values)
    greedy = params.model_copy(update={"temperature": 0.0, "dynatemp_range": None,
                                       "dynatemp_exponent": None, "edt_theta": None,
                                       "edt_n": None})
    filters = {"top_k": ["top_k"], "top_p": ["top_p"], "min_p": ["min_p"],
               "typical_p": ["typical_p"], "epsilon": ["epsilon"], "eta": ["eta"],
               "top_n_sigma": ["top_n_sigma"], "xtc": ["xtc_threshold", "xtc_probability"],
               "mirostat": ["mirostat_tau", "mirostat_eta"]}
    order = greedy.resolved_order
    after = [f for stage, fs in filters.items()
             if order.index(stage) > order.index("temperature") for f in fs]
    plain = greedy.model_copy(update=dict.fromkeys(after))  # same order, penalties, early ones
    p = probabilities(x, greedy, history=[1, 2])
    assert p.max().item() == 1.0
    assert torch.equal(p, probabilities(x, plain, history=[1, 2]))
    before = [s for s in greedy.chain if order.index(s) < order.index("temperature")]
    if not before:
        assert int(p.argmax()) == int(x.argmax())


@settings(max_examples=60, deadline=None)
@given(st.lists(logit_rows, min_size=1, max_size=4), st.lists(sampling_params(), min_size=1,
                                                               max_size=4), st.integers(0, 3))
def test_seeded_determinism_and_batch_invariance(rows: list[list[float]],
                                                 params: list[SamplingParams],
                                                 which: int) -> None:
    n = min(len(rows), len(params))
    x = torch.stack([pad(r) for r in rows[:n]])
    ps = params[:n]
    i = which % n

    def tokens(batch: list[SamplingParams], logits: torch.Tensor, row: int) -> list[int]:
        s = BatchSampler(batch, vocab_size=12, prompt_ids=[[0, 1]] * len(batch))
        out = []
        for _ in range(6):
            t = s.choose(s.process(logits))
            s.accept(t)
            out.append(int(t[row]))
        return out

    together = tokens(ps, x, i)
    assert together == tokens(ps, x, i)  # seeded: the same again
    assert together == tokens([ps[i]], x[i : i + 1], 0)  # the other rows do not matter


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.floats(0, 1e3, allow_nan=False))
def test_temperature_only_matches_distribution_softmax(values: list[float], t: float) -> None:
    import numpy as np

    from tempscope.distribution import softmax

    x = pad(values)
    p = probabilities(x, SamplingParams(temperature=t))
    with np.errstate(over="ignore"):  # numpy warns on (l - max) / 1e-300; the result is right
        ref = softmax(x.double().numpy(), t)
    assert max(abs(a - b) for a, b in zip(p.tolist(), ref.tolist(), strict=True)) < 1e-5
    assert not math.isnan(p.sum().item())


@settings(max_examples=60, deadline=None)
@given(st.lists(logit_rows, min_size=2, max_size=4),
       st.lists(sampling_params(), min_size=2, max_size=4))
def test_per_row_parameters_match_rows_alone(rows: list[list[float]],
                                             params: list[SamplingParams]) -> None:
    """Each row of a mixed batch is processed exactly as it would be on its own, to the bit
    (batch invariance: a seeded row's tokens must not depend on its company), and draws the
    same token from the same seed."""
    _rows_match_alone(rows, params, vocab=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(logit, min_size=8, max_size=64), min_size=2, max_size=4),
       st.lists(sampling_params(vocab=WIDE, top_k=st.integers(1, 40)), min_size=2, max_size=4))
def test_rows_match_alone_where_top_k_runs_on_candidates(rows: list[list[float]],
                                                          params: list[SamplingParams]) -> None:
    """The same on a vocabulary where a small top-k makes the chain run on each row's
    candidates only (k <= V / 4) and rows of one batch have other k: a row's candidates are
    its own whatever its neighbours' k."""
    _rows_match_alone(rows, params, vocab=WIDE)


def _rows_match_alone(rows: list[list[float]], params: list[SamplingParams], vocab: int) -> None:
    n = min(len(rows), len(params))
    x = torch.stack([pad(r, vocab) for r in rows[:n]])
    history = [[i, 2 * i] for i in range(n)]
    batch = BatchSampler(params[:n], vocab_size=vocab, prompt_ids=history,
                         seeds=list(range(n)))
    together = batch.process(x)
    chosen = batch.choose(together)
    for i in range(n):
        alone = BatchSampler([params[i]], vocab_size=vocab, prompt_ids=[history[i]], seeds=[i])
        mine = alone.process(x[i : i + 1])
        assert torch.equal(together[i : i + 1], mine), (params[i], together[i], mine)
        assert int(alone.choose(mine)) == int(chosen[i])
