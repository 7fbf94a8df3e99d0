"""XTC, "exclude top choices" (the text-generation-webui / llama.cpp sampler)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tempscope.sampling.base import check_range, column, keep_only, per_row, probs_of


class XTC:
    """With chance ``probability``, remove every token with ``p >= threshold`` except the least
    likely of them (and its ties). Nothing happens when fewer than two tokens reach the
    threshold, so at least one token always survives and ``threshold > 0.5`` never fires.

    Args:
        threshold: a number or ``(B,)`` tensor in ``[0, 1]``. Practical 0.1.
        probability: a number or ``(B,)`` tensor in ``[0, 1]``: the chance XTC fires per step.
        generators: one ``torch.Generator`` (or ``None`` = torch's global one) per row; each row
            draws one uniform per step from its own generator, only while its probability is
            ``> 0``, so a row's result never depends on the other rows.
    """

    name = "xtc"

    def __init__(self, threshold: float | Tensor, probability: float | Tensor,
                 generators: Sequence[torch.Generator | None]) -> None:
        self.threshold = per_row(threshold)
        self.probability = per_row(probability)
        check_range("xtc_threshold", self.threshold, 0, 1)
        check_range("xtc_probability", self.probability, 0, 1)
        self.generators = list(generators)

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
        fire = self.coins(logits) & (above.sum(dim=-1, keepdim=True) >= 2)  # (B, 1)
        return keep_only(logits, ~(fire & above & (probs > least)), keep_max=False)

    def __repr__(self) -> str:
        return f"XTC(threshold={self.threshold.tolist()}, probability={self.probability.tolist()})"
