"""A sweep's records as tables: one row per sample, per cell, and per config x temperature with
bootstrap confidence intervals. pandas only; no model, no torch.

Columns of :func:`samples_frame` (one row per sample):

=================  ===========================================================================
prompt_index       which prompt (0-based), and ``prompt`` its text
config             the sampler config's name; ``temperature`` the temperature of the cell
sample_index       ``0 .. n-1``; ``seed`` its seed
text, n_tokens     the continuation and how many tokens it took; ``finish_reason`` why it ended
mean_logprob       mean log p(token) under the model at T = 1 (coherence proxy), nats/token
raw_entropy        mean entropy of the model's own (T = 1) distribution along the text, nats
entropy            mean entropy of the distribution the tokens were drawn from, nats
effective_vocab    mean exp(entropy) over steps: how many tokens each draw chose among
chosen_prob        mean probability the sampler gave the chosen token
mean_rank          mean rank of the chosen token under the model (11 = outside the top 10)
repetition         share of repeated word bigrams within the sample
judge_logprob      mean log p(token) under the judge model (NaN without a judge)
=================  ===========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tempscope.study.metrics import (
    bootstrap_ci,
    distinct_n,
    pairwise_edit_distance,
    repetition,
    self_bleu,
    words,
)

__all__ = [
    "cell_table",
    "samples_frame",
    "summary_table",
]

CELL = ["prompt_index", "config", "temperature"]
SAMPLE_METRICS = ["mean_logprob", "judge_logprob", "raw_entropy", "entropy", "effective_vocab",
                  "chosen_prob", "mean_rank", "repetition", "n_tokens"]
CELL_METRICS = ["distinct_1", "distinct_2", "distinct_3", "self_bleu", "edit_distance"]


def samples_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per sample record (see the module docstring for the columns)."""
    rows = []
    for r in records:
        steps = r["steps"]
        judge = r.get("judge") or {}
        rows.append({
            "prompt_index": r["prompt_index"], "prompt": r["prompt"], "config": r["config"],
            "temperature": float(r["temperature"]), "sample_index": r["sample_index"],
            "seed": r["seed"], "text": r["text"], "n_tokens": r["n_tokens"],
            "finish_reason": r["finish_reason"],
            "mean_logprob": _mean(steps["raw_logprob"]),
            "raw_entropy": _mean(steps["raw_entropy"]),
            "entropy": _mean(steps["entropy"]),
            "effective_vocab": _mean([math.exp(h) for h in steps["entropy"]]),
            "chosen_prob": _mean([math.exp(lp) for lp in steps["logprob"]]),
            "mean_rank": _mean(steps["rank"]),
            "repetition": repetition(words(r["text"]), 2),
            "judge_logprob": math.nan if judge.get("mean_logprob") is None
            else float(judge["mean_logprob"]),
        })
    frame = pd.DataFrame(rows, columns=[
        "prompt_index", "prompt", "config", "temperature", "sample_index", "seed", "text",
        "n_tokens", "finish_reason", *[m for m in SAMPLE_METRICS if m != "n_tokens"],
    ])
    return frame.sort_values([*CELL, "sample_index"], kind="stable").reset_index(drop=True)


def cell_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: distinct-1/2/3, self-BLEU and pairwise edit distance across its samples
    (:mod:`tempscope.study.metrics`), and the mean of every per-sample metric."""
    rows = []
    for (pi, config, t), group in samples.groupby(CELL, sort=True):
        texts = group["text"].tolist()
        row: dict[str, Any] = {"prompt_index": pi, "config": config, "temperature": t,
                               "n": len(texts)}
        for k in (1, 2, 3):
            row[f"distinct_{k}"] = distinct_n(texts, k)
        row["self_bleu"] = self_bleu(texts)
        row["edit_distance"] = pairwise_edit_distance(texts)
        for m in SAMPLE_METRICS:
            row[m] = float(group[m].mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=["prompt_index", "config", "temperature", "n",
                                       *CELL_METRICS, *SAMPLE_METRICS])


def summary_table(cells: pd.DataFrame, *, level: float = 0.95, n_resamples: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Per config x temperature x metric: the mean over prompts with a bootstrap CI.

    The resampled unit is the prompt (its cell's value), so the interval says how much the
    number would move with other prompts of the same kind; with one prompt it is a point.

    Returns:
        Long form: ``config, temperature, metric, estimate, low, high, prompts``.
    """
    rows = []
    for (config, t), group in cells.groupby(["config", "temperature"], sort=True):
        for m in [*CELL_METRICS, *SAMPLE_METRICS]:
            ci = bootstrap_ci(group[m].to_numpy(dtype=np.float64), level=level,
                              n_resamples=n_resamples, seed=seed)
            rows.append({"config": config, "temperature": t, "metric": m,
                         "estimate": ci.estimate, "low": ci.low, "high": ci.high,
                         "prompts": int(group[m].notna().sum())})
    return pd.DataFrame(rows, columns=["config", "temperature", "metric", "estimate", "low",
                                       "high", "prompts"])


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan
