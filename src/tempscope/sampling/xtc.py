"""XTC, "exclude top choices" (the text-generation-webui / llama.cpp sampler)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tempscope.sampling.base import RowSampler, check_range, column, keep_only, per_row, probs_of
from tempscope.sampling.truncation import min_keep_of, min_keep_repr


class XTC(RowSampler):
    """With chance ``probability``, remove every token with ``p >= threshold`` except the least
    likely of them (and its ties). Nothing happens when fewer than two tokens reach the
    threshold, so at least one token always survives and ``threshold > 0.5`` never fires.

    ``min_keep`` follows llama.cpp: XTC fires only when at least ``min_keep`` tokens would be
    left; otherwise the row is untouched (it never removes just some of the top choices).

    Args:
        threshold: a number or ``(B,)`` tensor in ``[0, 1]``. Practical 0.1.
        probability: a number or ``(B,)`` tensor in ``[0, 1]``: the chance XTC fires per step.
        generators: one ``torch.Generator`` (or ``None`` = torch's global one) per row; each row
            draws one uniform per step from its own generator, only while its probability is
            ``> 0``, so a row's result never depends on the other rows.
        min_keep: per row, ``>= 0``; 0 and 1 both mean "at least one token".
    """

    name = "xtc"
    local = True
    row_attrs = ("threshold", "probability", "generators", "min_keep")

    def __init__(self, threshold: float | Tensor, probability: float | Tensor,
                 generators: Sequence[torch.Generator | None],
                 min_keep: int | Tensor = 1) -> None:
        self.threshold = per_row(threshold)
        self.probability = per_row(probability)
        check_range("xtc_threshold", self.threshold, 0, 1)
        check_range("xtc_probability", self.probability, 0, 1)
        self.generators = list(generators)
        self.min_keep = min_keep_of(min_keep)

    def coins(self, logits: Tensor) -> Tensor:
        """``(B, 1)`` bool: whether XTC fires on each row at this step."""
        prob = column(self.probability, logits).expand(logits.shape[0], 1)
        draws = []
        for row, gen in enumerate(self.generators):
            if float(prob[row]) > 0:
                dev = gen.device if gen is not None else logits.device
                draws.append(torch.rand((), generator=gen, device=dev).to(logits.device))
            else:
                draws.append(torch.ones((), device=logits.device))
        return torch.stack(draws).reshape(-1, 1) < prob

    def apply(self, logits: Tensor) -> Tensor:
        probs = probs_of(logits)  # (B, V)
        above = (probs >= column(self.threshold, logits)) & (probs > 0)  # (B, V) candidates
        least = torch.where(above, probs, math.inf).amin(dim=-1, keepdim=True)  # (B, 1)
        drop = above & (probs > least)  # (B, V) what firing removes
        left = torch.isfinite(logits).sum(-1, keepdim=True) - drop.sum(-1, keepdim=True)
        enough = left >= column(self.min_keep, logits)  # (B, 1)
        fire = self.coins(logits) & (above.sum(dim=-1, keepdim=True) >= 2) & enough
        return keep_only(logits, ~(fire & drop), keep_max=False)

    def __repr__(self) -> str:
        return (f"XTC(threshold={self.threshold.tolist()}, "
                f"probability={self.probability.tolist()}{min_keep_repr(self.min_keep)})")
