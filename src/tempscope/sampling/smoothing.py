"""Quadratic ("smoothing") sampling: text-generation-webui's ``QuadraticSamplingLogitsWarper``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tempscope.sampling.base import RowSampler, check_range, column, per_row


class QuadraticSmoothing(RowSampler):
    """Bend each logit by its distance below the row's maximum.

    With ``d = l - max <= 0``, ``k = (3 - curve) / 2`` and ``s = (curve - 1) / 2``:
    ``l' = max - k * factor * d**2 + s * factor * d**3``. The maximum stays put; a small
    ``factor`` (below about 0.3 for typical logits) flattens the head of the distribution, a
    large one sharpens it. ``curve = 1`` is the plain quadratic, ``curve = 3`` a pure cubic;
    above 3 the map is no longer monotone (tokens just below the top can overtake it).

    Boundary choices: ``factor = 0`` leaves the row unchanged (text-generation-webui switches
    the warper off there; the formula itself would make every token equal); ``-inf`` stays
    ``-inf``; the arithmetic is float64 so huge logits give ``-inf``, never NaN, and a result
    above float32's maximum is clamped to it.

    Args:
        factor: a number or ``(B,)`` tensor, ``>= 0``; 0 = off. Practical 0.2-0.5.
        curve: a number or ``(B,)`` tensor, ``>= 1``; 1 = plain quadratic. Practical 1-2.

    >>> QuadraticSmoothing(0.5).apply(torch.tensor([[2.0, 1.0, 0.0]])).tolist()
    [[2.0, 1.5, 0.0]]
    """

    name = "smoothing"
    local = True
    row_attrs = ("factor", "curve")

    def __init__(self, factor: float | Tensor, curve: float | Tensor = 1.0) -> None:
        self.factor = per_row(factor, dtype=torch.float64)
        self.curve = per_row(curve, dtype=torch.float64)
        check_range("smoothing_factor", self.factor, 0, math.inf, high_open=True)
        check_range("smoothing_curve", self.curve, 1, math.inf, high_open=True)

    def apply(self, logits: Tensor) -> Tensor:
        x = logits.double()
        top = x.amax(dim=-1, keepdim=True)  # (B, 1)
        d = x - top  # (B, V), <= 0; -inf for removed tokens
        f = column(self.factor, logits)  # (B, 1)
        c = column(self.curve, logits)
        k, s = (3 - c) / 2, (c - 1) / 2
        bent = top - k * f * d * d + s * f * d**3  # (B, V)
        out = torch.where(torch.isfinite(x) & (f > 0), bent, x)
        return out.clamp(max=torch.finfo(torch.float32).max).to(logits.dtype)

    def __repr__(self) -> str:
        return f"QuadraticSmoothing(factor={self.factor.tolist()}, curve={self.curve.tolist()})"
