"""What a set of samples says, as numbers: per step, per sample, per cell, across models.

Every metric is a pure function with its formula in the docstring. Levels:

- per step (one generated token): entropy ``H``, effective vocabulary ``exp(H)``, probability
  and rank of the chosen token (:func:`step_metrics` reads them off a generation step event);
- per sample (one generated text): mean log-probability at ``T = 1`` (coherence proxy), share
  of repeated n-grams, length (tokens) and finish reason (both recorded by the engine);
- per cell (``n`` samples of one prompt under one configuration): distinct-n across samples,
  self-BLEU (sacrebleu), mean pairwise normalized edit distance;
- across models: :func:`score_texts`, the log-likelihood of texts under a second (judge) model
  (it runs a model, so it lives in :mod:`tempscope.engine.scoring`; re-exported here);
- aggregates: :func:`bootstrap_ci`, a percentile bootstrap of the mean;
- degeneration (Holtzman et al. 2020): :func:`zipf_coefficient`, :func:`loop_rate` (their
  "repetition %"), :func:`cross_entropy` and :func:`text_perplexity` of a text under a model.

Text metrics work on whitespace-separated words (:func:`words`), so they compare models with
different tokenizers. This module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Protocol

import numpy as np

from tempscope.distribution import as_array
from tempscope.engine.scoring import TextScore, score_texts

__all__ = [
    "AlternativeLike",
    "ConfidenceInterval",
    "StepLike",
    "StepMetrics",
    "TextScore",
    "bootstrap_ci",
    "chosen_probability",
    "chosen_rank",
    "cross_entropy",
    "distinct_n",
    "edit_distance",
    "ends_in_loop",
    "loop_rate",
    "mean_logprob",
    "ngrams",
    "pairwise_edit_distance",
    "repetition",
    "score_texts",
    "self_bleu",
    "step_metrics",
    "text_perplexity",
    "words",
    "zipf_coefficient",
]


class AlternativeLike(Protocol):
    """One of the most likely tokens at a step (``tempscope.engine.loop.Alternative``)."""

    @property
    def token_id(self) -> int: ...
    @property
    def raw_prob(self) -> float: ...


class StepLike(Protocol):
    """The fields of ``tempscope.engine.loop.StepEvent`` the step metrics read."""

    @property
    def token_id(self) -> int: ...
    @property
    def raw_logprob(self) -> float: ...
    @property
    def logprob(self) -> float: ...
    @property
    def entropy(self) -> float: ...
    @property
    def raw_entropy(self) -> float: ...
    @property
    def top(self) -> Sequence[AlternativeLike]: ...


# ---------------------------------------------------------------------------------- per step


@dataclass(frozen=True)
class StepMetrics:
    """What one generation step says about the distribution it was drawn from."""

    entropy: float  # H of the processed distribution (after temperature and samplers), nats
    raw_entropy: float  # H of the model's own distribution at T = 1, nats
    effective_vocab: float  # exp(entropy): how many equally likely tokens it is worth
    chosen_prob: float  # probability the sampler gave the chosen token
    raw_chosen_prob: float  # probability the model gives it at T = 1
    rank: int  # 1 = the model's top token; len(top) + 1 = outside the recorded alternatives


def chosen_probability(probs: Any, token_ids: Any) -> Any:
    """``p[token]``: the probability of the chosen token, ``(...)``.

    Args:
        probs: ``(..., V)`` probabilities.
        token_ids: ``(...)`` integer ids of the chosen tokens.

    >>> float(chosen_probability([0.1, 0.6, 0.3], 2))
    0.3
    """
    p = np.asarray(as_array(probs), dtype=np.float64)
    ids = np.asarray(token_ids, dtype=np.int64)
    return np.take_along_axis(p, ids[..., None], axis=-1)[..., 0]


def chosen_rank(probs: Any, token_ids: Any) -> Any:
    """Rank of the chosen token: ``1 + #{v : p[v] > p[token]}``, ``(...)`` int64.

    1 is the most likely token; tokens tied in probability share the best rank.

    Args:
        probs: ``(..., V)`` probabilities (or logits: only the order matters).
        token_ids: ``(...)`` integer ids of the chosen tokens.

    >>> int(chosen_rank([0.1, 0.6, 0.3], 0))
    3
    """
    p = np.asarray(as_array(probs), dtype=np.float64)
    chosen = chosen_probability(p, token_ids)
    return 1 + np.sum(p > chosen[..., None], axis=-1).astype(np.int64)


def step_metrics(step: StepLike) -> StepMetrics:
    """Per-step metrics from a generation step event.

    ``effective_vocab = exp(entropy)``, ``chosen_prob = exp(logprob)``,
    ``raw_chosen_prob = exp(raw_logprob)``. The rank is the chosen token's rank under the model
    at ``T = 1`` among the recorded top alternatives: ``1 + #{a in top : a.raw_prob > p}``; a
    token outside them gets ``len(top) + 1`` (a lower bound: "not in the top k").
    """
    raw_p = math.exp(step.raw_logprob)
    mine = [a.raw_prob for a in step.top if a.token_id == step.token_id]
    p = mine[0] if mine else raw_p  # the table's own number avoids exp(log) rounding
    rank = 1 + sum(1 for a in step.top if a.raw_prob > p and a.token_id != step.token_id)
    if not mine:
        rank = max(rank, len(step.top) + 1)
    return StepMetrics(
        entropy=step.entropy,
        raw_entropy=step.raw_entropy,
        effective_vocab=math.exp(step.entropy),
        chosen_prob=math.exp(step.logprob),
        raw_chosen_prob=raw_p,
        rank=rank,
    )


# -------------------------------------------------------------------------------- per sample


def words(text: str) -> list[str]:
    """The units text metrics count: whitespace-separated words, case kept."""
    return text.split()


def mean_logprob(logprobs: Sequence[float]) -> float:
    """Mean log-probability per token, ``(1/n) sum_i log p(x_i | x_<i)``; NaN when empty.

    With the log-probs at ``T = 1`` (``StepEvent.raw_logprob``) this is the coherence proxy:
    how likely the model itself finds the text, per token (``exp(-mean)`` is its perplexity).
    """
    return float(np.mean(logprobs)) if len(logprobs) else math.nan


def ngrams(items: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    """All contiguous n-grams of ``items``, in order: ``len(items) - n + 1`` of them (or none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def repetition(items: Sequence[Hashable], n: int = 2) -> float:
    """Share of repeated n-grams in one sequence: ``1 - #distinct n-grams / #n-grams``.

    0 = no n-gram occurs twice; close to 1 = a loop. A sequence with no n-gram gives 0.

    Args:
        items: words (see :func:`words`) or token ids.
        n: n-gram length.

    >>> repetition("a b a b a b".split(), 2)  # ab ba ab ba ab: 2 distinct of 5
    0.6
    """
    grams = ngrams(items, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


# ---------------------------------------------------------------------------------- per cell


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n across samples: ``#distinct n-grams / #n-grams``, pooled over all ``texts``.

    1 = no n-gram repeats anywhere; ``1/k`` = ``k`` identical samples. NaN when no text has
    ``n`` words.

    >>> distinct_n(["a b", "a c"], 1)  # a b a c: 3 distinct of 4
    0.75
    """
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def self_bleu(texts: Sequence[str]) -> float:
    """Self-BLEU: mean over samples of ``BLEU(sample_i, references = the other samples) / 100``.

    sacrebleu's sentence BLEU (13a tokenizer, exponential smoothing, effective order):
    ``BP * exp(sum_k log(p_k) / 4)`` with clipped k-gram precisions ``p_k``. 1 = every sample
    repeats the others; near 0 = no shared n-grams. NaN for fewer than two texts.

    >>> round(self_bleu(["a b c d", "a b c e"]), 4)  # (3/4 * 2/3 * 1/2 * 1/2) ** (1/4)
    0.5946
    """
    import sacrebleu

    if len(texts) < 2:
        return math.nan
    scores = [
        sacrebleu.sentence_bleu(t, [u for j, u in enumerate(texts) if j != i]).score / 100.0
        for i, t in enumerate(texts)
    ]
    return float(np.mean(scores))


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance: fewest insertions, deletions and substitutions turning a into b."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def pairwise_edit_distance(texts: Sequence[str]) -> float:
    """Mean over pairs ``i < j`` of ``lev(w_i, w_j) / max(|w_i|, |w_j|)`` on words.

    0 = identical samples, 1 = nothing in common (two empty texts count as 0). NaN for fewer
    than two texts.

    >>> round(pairwise_edit_distance(["a b c", "a x c", "a b c"]), 4)  # (1/3 + 0 + 1/3) / 3
    0.2222
    """
    if len(texts) < 2:
        return math.nan
    tokens = [words(t) for t in texts]
    distances = [
        edit_distance(a, b) / max(len(a), len(b)) if a or b else 0.0
        for a, b in combinations(tokens, 2)
    ]
    return float(np.mean(distances))


# -------------------------------------------------------------------------------- aggregates


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap of the mean.

    ``estimate = mean(x)``; draw ``n_resamples`` resamples of ``x`` with replacement, take each
    one's mean ``m_b``; ``low, high`` = the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of
    the ``m_b``. NaN values are dropped first; no values give NaNs.

    Args:
        values: ``(N,)`` numbers, e.g. one mean per prompt (resampling prompts, not samples,
            keeps samples of one prompt, which are correlated, together).
        level: coverage in ``(0, 1)``.
        n_resamples: bootstrap draws.
        seed: makes the interval reproducible.

    >>> bootstrap_ci([0.0, 1.0]).estimate  # resample means 0, 0.5, 1 with prob 1/4, 1/2, 1/4
    0.5
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)  # (R,)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return ConfidenceInterval(float(x.mean()), float(low), float(high))


# ------------------------------------------------------- degeneration (Holtzman et al. 2020)


def zipf_coefficient(sequences: Sequence[Sequence[Hashable]], *, top: int = 5000) -> float:
    """Zipf coefficient ``s`` of the pooled unit frequencies of ``sequences``.

    The unit counts ``f_r`` sorted by rank ``r = 1, 2, ...`` are fitted by least squares as
    ``log f_r = c - s * log r`` over the ``top`` most frequent units (the Zipf coefficient
    of Holtzman et al. 2020): ``s = 1`` is Zipf's law, larger ``s`` a vocabulary more
    concentrated on its most frequent units. NaN with fewer than two distinct units.

    Args:
        sequences: ``(N, ~L)`` texts as units, e.g. token ids or words.
        top: how many of the most frequent units the fit uses.

    >>> round(zipf_coefficient([[1] * 12 + [2] * 6 + [3] * 4 + [4] * 3]), 6)  # f = 12 / r
    1.0
    """
    if top < 2:
        raise ValueError(f"top must be >= 2 units to fit a slope, got {top}")
    counts: dict[Hashable, int] = {}
    for seq in sequences:
        for unit in seq:
            counts[unit] = counts.get(unit, 0) + 1
    freqs = np.sort(np.fromiter(counts.values(), dtype=np.float64))[::-1][:top]  # (R,)
    if freqs.size < 2:
        return math.nan
    log_rank = np.log(np.arange(1, freqs.size + 1, dtype=np.float64))  # (R,)
    slope = np.polyfit(log_rank, np.log(freqs), 1)[0]
    return float(-slope)


def ends_in_loop(items: Sequence[Hashable], *, min_phrase: int = 2, repeats: int = 3) -> bool:
    """Whether ``items`` end in a repeating loop: the last ``repeats * n`` units are one phrase
    of ``n >= min_phrase`` units said ``repeats`` times in a row: the repetition of Holtzman
    et al. 2020, a phrase of at least 2 tokens repeated at least 3 times at the end.

    >>> ends_in_loop("he said that she said that she said that she said".split())
    True
    >>> ends_in_loop("no no no".split())  # a one-unit phrase is not a loop
    False
    """
    if min_phrase < 1 or repeats < 2:
        raise ValueError(f"need min_phrase >= 1 and repeats >= 2, got {min_phrase} and {repeats}")
    units = list(items)
    for n in range(min_phrase, len(units) // repeats + 1):
        phrase = units[len(units) - n:]
        if all(units[len(units) - (k + 1) * n: len(units) - k * n] == phrase
               for k in range(1, repeats)):
            return True
    return False


def loop_rate(sequences: Sequence[Sequence[Hashable]], *, min_phrase: int = 2,
              repeats: int = 3) -> float:
    """Share of ``sequences`` that :func:`ends_in_loop` (x 100 = the paper's "repetition %");
    NaN when there are none.

    >>> loop_rate([[1, 2, 1, 2, 1, 2], [1, 2, 3, 4]])
    0.5
    """
    if not sequences:
        return math.nan
    loops = sum(ends_in_loop(s, min_phrase=min_phrase, repeats=repeats) for s in sequences)
    return loops / len(sequences)


def cross_entropy(logprobs: Sequence[float], *, bits: bool = False) -> float:
    """Observed cross-entropy per token, ``-(1/n) sum_i log p(x_i | x_<i)``: the surprise of
    a text under a model, in nats (or bits); NaN when empty or when any log-prob is NaN.

    With the log-probs at ``T = 1`` this is what mirostat steers (in bits, its ``tau``) and
    the log of the text's perplexity (:func:`text_perplexity`).

    >>> cross_entropy([math.log(0.5), math.log(0.25)], bits=True)  # (1 + 2) / 2
    1.5
    """
    if not len(logprobs):
        return math.nan
    nats = -float(np.mean(np.asarray(logprobs, dtype=np.float64)))
    return nats / math.log(2) if bits else nats


def text_perplexity(logprobs: Sequence[float]) -> float:
    """Perplexity of a text under a model, ``exp(cross_entropy)``: the number of equally
    likely tokens the model was choosing among, on average (1 = it was sure of every token).

    Pool the log-probs of several texts into one list for the perplexity of the set (what
    Holtzman et al. report), rather than averaging per-text perplexities.

    >>> round(text_perplexity([math.log(0.5), math.log(0.25)]), 4)  # 2 ** 1.5
    2.8284
    """
    return math.exp(cross_entropy(logprobs))
