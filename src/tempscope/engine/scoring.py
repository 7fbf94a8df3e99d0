"""How likely a model finds given text: the log-likelihood of continuations after prompts.

A second model scoring another's samples (a judge), and the human text of the studies, go
through :func:`score_texts`; :mod:`tempscope.study.metrics` re-exports it beside the metrics
that use it. It runs a model, so it lives in the engine layer; it does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend

__all__ = ["TextScore", "score_texts"]


@dataclass(frozen=True)
class TextScore:
    """The log-likelihood of one continuation under a model."""

    logprob: float  # sum_i log p(x_i | prompt, x_<i), nats
    n_tokens: int  # continuation tokens scored
    mean_logprob: float  # logprob / n_tokens (NaN for an empty continuation)


def score_texts(
    model: Backend,
    prompts: Sequence[str],
    texts: Sequence[str],
    *,
    max_batch_elements: int = 64_000_000,
) -> list[TextScore]:
    """Log-likelihood of each continuation ``texts[i]`` after ``prompts[i]`` under ``model``.

    ``logprob_i = sum_{t in continuation} log softmax(logits_{t-1})[x_t]`` at ``T = 1``,
    from :meth:`~tempscope.engine.backend.Backend.sequence_logprobs` (on torch one padded
    forward pass per batch). The continuation is what ``encode(prompt + text)`` adds after
    its common prefix with ``encode(prompt)``, so a model with another tokenizer (a judge)
    scores the same text.

    Args:
        model: any loaded causal LM, e.g. a second model acting as judge.
        prompts: ``(N,)`` prompts.
        texts: ``(N,)`` continuations.
        max_batch_elements: cap on ``rows * tokens * vocab`` logits per forward pass; larger
            inputs are split into several batches (a 262k-vocabulary judge needs that).

    Returns:
        ``N`` scores, in order.
    """
    if len(prompts) != len(texts):
        raise ValueError(
            f"score_texts needs one prompt per text, got {len(prompts)} prompts and "
            f"{len(texts)} texts"
        )
    encoded: list[tuple[list[int], int]] = []  # (ids, where the continuation starts)
    prompt_ids: dict[str, list[int]] = {}
    for prompt, text in zip(prompts, texts, strict=True):
        if prompt not in prompt_ids:
            prompt_ids[prompt] = model.encode(prompt)
        ids = model.encode(prompt + text)
        start = _common_prefix(prompt_ids[prompt], ids)
        encoded.append((ids, max(start, 1)))  # the first token has no context to score it
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # less padding
    scores: dict[int, TextScore] = {}
    while order:
        longest = len(encoded[order[-1]][0])
        rows = max(1, max_batch_elements // max(1, longest * model.vocab_size))
        batch, order = order[-rows:], order[:-rows]
        values = model.sequence_logprobs([encoded[i][0] for i in batch],
                                         [encoded[i][1] for i in batch])
        for i, lps in zip(batch, values, strict=True):
            total = float(sum(lps))
            scores[i] = TextScore(total, len(lps), total / len(lps) if lps else math.nan)
    return [scores[i] for i in range(len(encoded))]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
