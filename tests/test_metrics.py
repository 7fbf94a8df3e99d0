"""Metric unit tests: every expected number below is worked out by hand in the comment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from tempscope.study.metrics import (
    bootstrap_ci,
    chosen_probability,
    chosen_rank,
    distinct_n,
    edit_distance,
    mean_logprob,
    ngrams,
    pairwise_edit_distance,
    repetition,
    self_bleu,
    step_metrics,
)
from tempscope.study.results import cell_table, samples_frame, summary_table


@dataclass
class Alt:
    token_id: int
    raw_prob: float
    prob: float = 0.0


@dataclass
class Step:
    token_id: int
    raw_logprob: float
    logprob: float
    entropy: float
    raw_entropy: float
    top: list[Alt] = field(default_factory=list)


# ---------------------------------------------------------------------------------- per step


def test_chosen_probability_and_rank() -> None:
    probs = [[0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]
    assert chosen_probability(probs, [2, 0]).tolist() == [0.3, 0.25]
    # row 0: token 2 (0.3) is beaten by 0.6 only -> rank 2; row 1: token 0 ties token 1 (both
    # 0.25) and is beaten by 0.5 only -> rank 2 (ties share the best rank).
    assert chosen_rank(probs, [2, 0]).tolist() == [2, 2]
    assert chosen_rank(probs, [1, 2]).tolist() == [1, 1]


def test_step_metrics_from_an_event() -> None:
    top = [Alt(5, 0.5), Alt(7, 0.3), Alt(9, 0.1)]
    # chosen token 7: p = 0.3 raw; processed log p = log 0.4; H = log 2 -> exp(H) = 2 tokens.
    m = step_metrics(Step(7, math.log(0.3), math.log(0.4), math.log(2), 1.2, top))
    assert m.rank == 2
    assert m.effective_vocab == pytest.approx(2.0)
    assert m.chosen_prob == pytest.approx(0.4)
    assert m.raw_chosen_prob == pytest.approx(0.3)
    assert (m.entropy, m.raw_entropy) == (pytest.approx(math.log(2)), 1.2)
    # a token outside the 3 recorded alternatives: rank "4" = not in the top 3.
    assert step_metrics(Step(1, math.log(0.05), math.log(0.05), 1.0, 1.0, top)).rank == 4
    # greedy step: H = 0 -> one effective token.
    assert step_metrics(Step(5, math.log(0.5), 0.0, 0.0, 1.0, top)).effective_vocab == 1.0


# -------------------------------------------------------------------------------- per sample


def test_mean_logprob() -> None:
    # (log 0.5 + log 0.25) / 2 = -(ln 2 + 2 ln 2)/2 = -1.5 ln 2 = -1.0397
    assert mean_logprob([math.log(0.5), math.log(0.25)]) == pytest.approx(-1.5 * math.log(2))
    assert math.isnan(mean_logprob([]))


def test_ngrams_and_repetition() -> None:
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []
    # ab ba ab ba ab: 2 distinct of 5 -> 1 - 2/5 = 0.6
    assert repetition(["a", "b", "a", "b", "a", "b"], 2) == pytest.approx(0.6)
    # a b c d: all 3 bigrams distinct -> 0
    assert repetition(["a", "b", "c", "d"], 2) == 0.0
    # x x x x with unigrams: 1 distinct of 4 -> 0.75
    assert repetition(list("xxxx"), 1) == pytest.approx(0.75)
    assert repetition(["one"], 2) == 0.0
    with pytest.raises(ValueError, match="n must be >= 1"):
        ngrams(["a"], 0)


# ---------------------------------------------------------------------------------- per cell


def test_distinct_n() -> None:
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran -> 4 distinct of 6
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 3 distinct of 4
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams: 2 distinct of 2
    assert distinct_n(texts, 3) == 1.0
    # 4 identical samples -> every n-gram seen 4 times -> 1/4
    assert distinct_n(["a b c"] * 4, 2) == pytest.approx(0.25)
    assert math.isnan(distinct_n(["a", "b"], 2))


def test_self_bleu() -> None:
    # hyp "a b c d" vs ref "a b c e": clipped precisions 3/4, 2/3, 1/2 and 0/1 for 4-grams,
    # which exp smoothing turns into 1/(2*1) = 1/2; BP = 1 (same length).
    # BLEU = (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = 0.125 ** 0.25 = 0.59460; symmetric pair.
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(0.125**0.25, abs=1e-6)
    assert self_bleu(["w x y z"] * 3) == pytest.approx(1.0)
    assert math.isnan(self_bleu(["only one"]))


def test_edit_distances() -> None:
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance([], [1, 2]) == 2
    # pairs: (abc, axc) 1/3, (abc, abc) 0, (axc, abc) 1/3 -> mean 2/9
    assert pairwise_edit_distance(["a b c", "a x c", "a b c"]) == pytest.approx(2 / 9)
    # "a b" vs "": 2 edits / max(2, 0) = 1; ("", "") counts 0
    assert pairwise_edit_distance(["a b", ""]) == 1.0
    assert pairwise_edit_distance(["", ""]) == 0.0
    assert math.isnan(pairwise_edit_distance(["x"]))


# -------------------------------------------------------------------------------- aggregates


def test_bootstrap_ci_hand_cases() -> None:
    const = bootstrap_ci([2.0, 2.0, 2.0])
    assert (const.estimate, const.low, const.high) == (2.0, 2.0, 2.0)
    # two values 0, 1: a resample's mean is 0, 0.5 or 1 with prob 1/4, 1/2, 1/4, so the 2.5%
    # and 97.5% quantiles of 2000 resamples are 0 and 1.
    ci = bootstrap_ci([0.0, 1.0, math.nan])  # NaN dropped
    assert (ci.estimate, ci.low, ci.high) == (0.5, 0.0, 1.0)
    assert math.isnan(bootstrap_ci([]).estimate)
    wide = bootstrap_ci(np.arange(10.0))
    assert wide.low < 4.5 < wide.high
    assert bootstrap_ci(np.arange(10.0)) == wide  # seeded
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_ci([1.0], level=95)


# ---------------------------------------------------------------------------------- tables


def _record(pi: int, t: float, k: int, text: str, lps: list[float]) -> dict[str, object]:
    return {
        "prompt_index": pi, "prompt": f"p{pi}", "config": "default", "temperature": t,
        "sample_index": k, "seed": k, "text": text, "n_tokens": len(lps),
        "finish_reason": "length",
        "steps": {"raw_logprob": lps, "logprob": lps, "entropy": [0.0, math.log(3)],
                  "raw_entropy": [1.0, 1.0], "rank": [1, 3]},
    }


def test_tables_from_records() -> None:
    records = [
        _record(0, 1.0, 0, "a b a b", [math.log(0.5), math.log(0.5)]),
        _record(0, 1.0, 1, "a c", [math.log(0.25), math.log(0.25)]),
        _record(1, 1.0, 0, "x y", [math.log(0.5), math.log(0.5)]),
        _record(1, 1.0, 1, "x y", [math.log(0.5), math.log(0.5)]),
    ]
    samples = samples_frame(records)
    first = samples.iloc[0]
    # effective vocab: mean(exp 0, exp log 3) = (1 + 3)/2 = 2; chosen prob = 0.5; rank (1+3)/2
    assert first["effective_vocab"] == pytest.approx(2.0)
    assert first["chosen_prob"] == pytest.approx(0.5)
    assert first["mean_rank"] == 2.0
    assert first["repetition"] == pytest.approx(1 / 3)  # ab ba ab: 2 distinct of 3
    assert math.isnan(first["judge_logprob"])
    cells = cell_table(samples)
    assert len(cells) == 2
    # prompt 0: unigrams a b a b a c -> 3 distinct of 6; prompt 1: x y x y -> 2 of 4
    assert cells["distinct_1"].tolist() == [pytest.approx(0.5), pytest.approx(0.5)]
    assert cells["edit_distance"].tolist()[1] == 0.0
    summary = summary_table(cells).set_index("metric")
    # mean log-prob per prompt: prompt 0 = (log .5 + log .25)/2, prompt 1 = log .5
    expected = ((math.log(0.5) + math.log(0.25)) / 2 + math.log(0.5)) / 2
    assert summary.loc["mean_logprob", "estimate"] == pytest.approx(expected)
    assert summary.loc["mean_logprob", "prompts"] == 2
    assert isinstance(summary, pd.DataFrame)


# ---------------------------------------------------------------------------- across models


def test_score_texts_matches_one_forward_per_token(tiny_model_dir: object) -> None:
    """Batched, padded, prompt-masked scoring == a plain loop of one forward per token."""
    import torch

    from tempscope.engine.loader import load_model
    from tempscope.study.metrics import score_texts

    model = load_model(str(tiny_model_dir))
    prompts = ["The cat", "A much longer prompt here", "The cat"]
    texts = [" sat on the mat", "!", ""]
    scores = score_texts(model, prompts, texts)
    for prompt, text, score in zip(prompts, texts, scores, strict=True):
        ids = model.encode(prompt + text)
        start = len(model.encode(prompt))
        total = 0.0
        with torch.no_grad():
            for i in range(start, len(ids)):
                logits = model.model(input_ids=torch.tensor([ids[:i]])).logits[0, -1].float()
                total += float(torch.log_softmax(logits, -1)[ids[i]])
        assert score.n_tokens == len(ids) - start == len(text.encode())  # 1 byte = 1 token
        assert score.logprob == pytest.approx(total, abs=1e-4)
    assert math.isnan(scores[2].mean_logprob) and scores[2].logprob == 0.0
    # tiny batches (one row per forward) give the same numbers
    small = score_texts(model, prompts, texts, max_batch_elements=1)
    assert [s.logprob for s in small] == pytest.approx([s.logprob for s in scores], abs=1e-5)
    with pytest.raises(ValueError, match="one prompt per text"):
        score_texts(model, ["a"], ["b", "c"])
