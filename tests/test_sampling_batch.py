"""SamplingParams validation and order; BatchSampler process / choose / accept / select."""

from __future__ import annotations

import math

import pytest
import torch

from tempscope.sampling import DEFAULT_ORDER, BatchSampler, SamplingParams, probabilities

P4 = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\] .*got 0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_k": -3}, "got -3"),
        ({"temperature": -0.5}, r"temperature must be in \[0, inf\]"),
        ({"temperature": math.nan}, "temperature must be in"),
        ({"min_p": math.nan}, "min_p must be in"),
        ({"repetition_penalty": 0.0}, r"repetition_penalty must be in \(0, inf\)"),
        ({"frequency_penalty": 3.0}, r"frequency_penalty must be in \[-2, 2\]"),
        ({"logit_bias": {5: 200.0}}, r"logit_bias for token 5 must be in \[-100, 100\]"),
        ({"logit_bias": {-1: 1.0}}, "token ids must be >= 0"),
        ({"dynatemp_exponent": 2.0}, "dynatemp_exponent is set but dynatemp_range is not"),
        ({"mirostat_eta": 0.1}, "mirostat_eta is set but mirostat_tau is not"),
        ({"dynatemp_range": 0.5, "edt_theta": 1.0}, "choose one dynamic temperature"),
        ({"order": ["top_k", "nucleus"]}, "unknown sampler 'nucleus'"),
        ({"order": ["top_k", "top_k"]}, "lists a sampler twice"),
        ({"top_p": 0.9, "order": ["top_k"]}, r"top_p is set but 'top_p' is not in order"),
        ({"temperature": 0.5, "order": ["top_k"]}, "temperature is set but"),
        ({"top_q": 1}, "top_q"),
        ({"top_k": "many"}, "top_k: Input should be a valid integer"),
    ],
)
def test_params_validation_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        SamplingParams(**fields)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_params_defaults_and_chain() -> None:
    p = SamplingParams()
    assert p.temperature == 1.0 and p.top_k is None and p.order is None
    assert p.chain == () and not p.is_greedy
    assert p.resolved_order == DEFAULT_ORDER
    q = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.1)
    assert q.chain == ("repetition_penalty", "temperature", "top_k", "top_p")
    last = q.model_copy(update={"temperature_last": True})
    assert last.chain == ("repetition_penalty", "top_k", "top_p", "temperature")
    m = SamplingParams(temperature=0.7, mirostat_tau=5, temperature_last=True)
    assert m.chain == ("temperature", "mirostat")  # mirostat reads the scaled distribution
    custom = SamplingParams(top_k=3, min_p=0.1, order=["min_p", "top_k"])
    assert custom.chain == ("min_p", "top_k")
    assert SamplingParams(temperature=0).is_greedy
    assert SamplingParams(top_k=1).is_greedy
    assert not SamplingParams(top_k=1, xtc_threshold=0.1).is_greedy
    bias: dict[object, float] = {"3": 1.0}  # JSON keys are strings
    assert SamplingParams.model_validate({"logit_bias": bias}).logit_bias == {3: 1.0}
    with pytest.raises(ValueError, match="frozen"):
        p.top_k = 3


def test_probabilities_shapes_and_history() -> None:
    p1 = probabilities(P4, SamplingParams(top_k=2))
    assert p1.shape == (4,)
    assert p1.tolist() == pytest.approx([4 / 7, 3 / 7, 0, 0])
    p2 = probabilities(torch.stack([P4, P4]), [SamplingParams(top_k=1), SamplingParams()])
    assert p2.shape == (2, 4) and p2[0].tolist() == [1, 0, 0, 0]
    assert p2[1].tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1])
    x = torch.tensor([2.0, 1.9, 0.0, 0.0])
    greedy = SamplingParams(temperature=0, repetition_penalty=2.0)
    assert probabilities(x, greedy, history=[0]).tolist() == [0, 1, 0, 0]  # 2/2 = 1 < 1.9
    assert probabilities(x, greedy).tolist() == [1, 0, 0, 0]
    per_row = probabilities(torch.stack([x, x]), greedy, history=[[0], [1]])
    assert per_row.argmax(-1).tolist() == [1, 0]
    assert probabilities([2.0, 4.0, 3.0]).tolist() == pytest.approx([0.0900306, 0.6652410,
                                                                      0.2447285], abs=1e-6)


def test_greedy_rows_ignore_filters_but_see_penalties() -> None:
    x = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    p = SamplingParams(temperature=0, top_p=0.1, min_p=0.9, xtc_threshold=0.0,
                       mirostat_tau=0.1, logit_bias={3: 10.0})
    assert probabilities(x, p).tolist() == [[0, 0, 0, 1]]


def test_seeded_draws_repeat_and_differ() -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0)).expand(3, 50)
    params = [SamplingParams(temperature=1.3, seed=s) for s in (1, 2, 1)]

    def run() -> list[list[int]]:
        s = BatchSampler(params, vocab_size=50)
        out = []
        for _ in range(20):
            t = s.choose(s.process(logits))
            s.accept(t)
            out.append(t.tolist())
        return out

    a, b = run(), run()
    assert a == b
    col = list(zip(*a, strict=True))
    assert col[0] == col[2] != col[1]  # same seed, same logits -> same tokens


def test_batch_invariance_and_seeds_override() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 64, generator=g)
    target = SamplingParams(temperature=0.9, top_p=0.95, xtc_threshold=0.05, seed=11)
    alone = BatchSampler([target], vocab_size=64)
    others = [SamplingParams(temperature=0), SamplingParams(top_k=3, seed=5),
              SamplingParams(mirostat_tau=3.0), SamplingParams(min_p=0.2, order=["min_p"])]
    mixed = BatchSampler([others[0], others[1], target, others[2], others[3]], vocab_size=64)
    via_seeds = BatchSampler([target.model_copy(update={"seed": 99})], vocab_size=64,
                             seeds=[11])
    for step in range(15):
        a = alone.choose(alone.process(logits[2:3]))
        m = mixed.choose(mixed.process(logits))
        v = via_seeds.choose(via_seeds.process(logits[2:3]))
        assert a.item() == m[2].item() == v.item(), step
        alone.accept(a)
        mixed.accept(m)
        via_seeds.accept(v)


def test_choose_never_picks_removed_tokens() -> None:
    logits = torch.randn(64, 100, generator=torch.Generator().manual_seed(1))
    s = BatchSampler([SamplingParams(top_k=3, seed=i) for i in range(64)], vocab_size=100)
    processed = s.process(logits)
    for _ in range(20):
        t = s.choose(processed)
        assert torch.isfinite(processed.gather(1, t[:, None])).all()


def test_draw_frequencies_match_probabilities() -> None:
    x = P4.reshape(1, 4)
    s = BatchSampler([SamplingParams(seed=0)], vocab_size=4)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[s.choose(x)] += 1
    assert (counts / 4000).tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1], abs=0.03)


def test_accept_counts_and_penalties() -> None:
    s = BatchSampler([SamplingParams(presence_penalty=1.0, temperature=0)], vocab_size=4,
                     prompt_ids=[[1, 1]])
    x = torch.tensor([[0.0, 0.5, 0.2, 0.1]])
    assert s.choose(s.process(x)).tolist() == [2]  # 0.5 - 1 < 0.2
    s.accept(torch.tensor([2]))
    assert s.counts is not None and s.counts.tolist() == [[0, 2, 1, 0]]
    assert s.choose(s.process(x)).tolist() == [3]


def test_mirostat_state_per_row() -> None:
    x = torch.stack([P4, P4])
    s = BatchSampler([SamplingParams(mirostat_tau=1.0, mirostat_eta=0.1, seed=0),
                      SamplingParams(seed=1)], vocab_size=4)
    (mirostat,) = s.groups[0].stages  # the state lives in the sampler, not in BatchSampler
    assert mirostat.mu.tolist() == [2.0, math.inf]
    processed = s.process(x)
    assert torch.isfinite(processed[0]).tolist() == [True, True, False, False]
    s.accept(torch.tensor([0, 3]))
    (mirostat,) = s.groups[0].stages
    assert mirostat.mu[0].item() == pytest.approx(2 - 0.1 * (-math.log2(4 / 7) - 1), abs=1e-5)
    assert mirostat.mu[1].item() == math.inf
    s.select([0])  # the surviving row keeps its learnt state
    assert s.groups[0].stages[0].mu.tolist() == [mirostat.mu[0].item()]
    s.reset()
    assert s.groups[0].stages[0].mu.tolist() == [2.0]


def test_select_keeps_rows_in_order() -> None:
    params = [SamplingParams(temperature=0), SamplingParams(top_k=1),
              SamplingParams(temperature=0, logit_bias={0: 50.0})]
    s = BatchSampler(params, vocab_size=4)
    x = torch.stack([P4.roll(1), P4, P4.roll(2)])
    assert s.choose(s.process(x)).tolist() == [1, 0, 0]
    s.select(torch.tensor([2, 0]))
    assert len(s) == 2
    assert s.choose(s.process(x[[2, 0]])).tolist() == [0, 1]
    s.select([1])
    assert s.choose(s.process(x[[0]])).tolist() == [1]
    assert "greedy" in repr(s)


def test_rows_with_different_orders() -> None:
    x = torch.stack([P4, P4])
    first = SamplingParams(temperature=2, min_p=0.6)
    last = SamplingParams(temperature=2, min_p=0.6, temperature_last=True)
    s = BatchSampler([first, last], vocab_size=4)
    kept = torch.isfinite(s.process(x)).sum(-1).tolist()
    assert kept == [3, 2]


def test_process_rejects_bad_logits() -> None:
    s = BatchSampler([SamplingParams()], vocab_size=4)
    with pytest.raises(ValueError, match=r"logits must be \(1, 4\)"):
        s.process(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="NaN"):
        s.process(torch.tensor([[0.0, math.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="every logit in a row is -inf"):
        s.process(torch.full((1, 4), -math.inf))
    with pytest.raises(ValueError, match="2 seeds for 1 rows"):
        BatchSampler([SamplingParams()], vocab_size=4, seeds=[1, 2])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        BatchSampler([SamplingParams(logit_bias={7: 1.0})], vocab_size=4)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 4\), got \[9\]"):
        s.accept(torch.tensor([9]))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 4\), got \[-1\]"):
        s.accept(torch.tensor([-1]))
    two = BatchSampler([SamplingParams(), SamplingParams()], vocab_size=4)
    fine = [0.0, 1.0, -math.inf, 2.0]
    with pytest.raises(ValueError, match=r"NaN or \+inf"):  # only the second row is bad
        two.process(torch.tensor([fine, [0.0, math.inf, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="every logit in a row is -inf"):
        two.process(torch.tensor([fine, [-math.inf] * 4]))
    with pytest.raises(ValueError, match=r"got \[1, 4\]"):
        two.accept(torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="token ids must be in"):
        BatchSampler([SamplingParams(presence_penalty=1)], vocab_size=4, prompt_ids=[[4]])


def test_half_precision_logits_are_upcast() -> None:
    s = BatchSampler([SamplingParams(top_k=2)], vocab_size=4)
    out = s.process(P4.reshape(1, 4).half())
    assert out.dtype == torch.float32


def test_top_n_sigma_off_row_beside_an_on_row_keeps_everything() -> None:
    """A row without top-n-sigma gets n = inf; with a standard deviation that is 0 in float32
    (inf * 0 = NaN) it must still keep every token. Found by Hypothesis."""
    x = torch.zeros(2, 6)
    x[:, 1] = 1.1754943508222875e-38  # float32's smallest normal: its square underflows to 0
    s = BatchSampler([SamplingParams(), SamplingParams(top_n_sigma=0.0)], vocab_size=6)
    out = s.process(x)
    assert torch.isfinite(out[0]).all()
    assert torch.isfinite(out[1]).tolist() == [False, True] + [False] * 4  # n = 0: the max
