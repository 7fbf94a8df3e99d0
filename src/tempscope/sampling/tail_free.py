"""Tail-free sampling (Bricken 2019), as text-generation-webui's ``TailFreeLogitsWarper``."""

from __future__ import annotations

import torch
from torch import Tensor

from tempscope.sampling.base import (
    RowSampler,
    check_range,
    column,
    keep_only,
    per_row,
    probs_of,
    sorted_desc,
)
from tempscope.sampling.truncation import min_keep_of, min_keep_repr, with_min_keep


class TailFree(RowSampler):
    """Cut the tail where the sorted probabilities stop curving.

    With the surviving tokens' probabilities sorted, ``p_0 >= p_1 >= ... >= p_{n-1}``, the
    weights ``w_i = |p_i - 2 p_{i+1} + p_{i+2}|`` (the second difference, ``i < n - 2``) are
    normalised to sum to 1. Position ``j`` (``1 <= j <= n - 2``) is cut when the weights before
    it, ``w_0 + ... + w_{j-1}``, exceed ``z``, and the last position is always cut: the
    "centred" cut of text-generation-webui (llama.cpp's old ``tfs_z`` keeps one token fewer).
    Boundary choices, as llama.cpp: a row with at most two finite tokens is untouched, and when
    the weights sum to at most 1e-6 (a straight line) they are taken as equal. Tokens tied
    with the last one kept are kept.

    Args:
        z: a number or ``(B,)`` tensor in ``[0, 1]``; 1 keeps all. Practical 0.9-0.99.
        min_keep: keep at least this many of the most likely tokens.

    >>> x = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]]).log()
    >>> TailFree(0.5).apply(x).isfinite().tolist()
    [[True, True, False, False, False]]
    """

    name = "tfs"  # the registry's stage name (llama.cpp's tfs_z)
    local = True
    row_attrs = ("z", "min_keep")

    def __init__(self, z: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.z = per_row(z)
        check_range("tfs_z", self.z, 0, 1)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        v = logits.shape[-1]
        if v <= 2:
            return logits
        z = column(self.z, logits)  # (B, 1)
        n = torch.isfinite(logits).sum(dim=-1, keepdim=True)  # (B, 1) surviving tokens
        probs = probs_of(logits)  # (B, V)
        ranked = sorted_desc(probs)  # (B, V) most likely first; removed tokens are 0 at the end
        wide = ranked.double()
        d2 = (wide[:, :-2] - 2 * wide[:, 1:-1] + wide[:, 2:]).abs()  # (B, V - 2)
        valid = torch.arange(v - 2, device=logits.device) < n - 2  # (B, V - 2) within survivors
        d2 = torch.where(valid, d2, 0.0)
        total = d2.sum(dim=-1, keepdim=True)  # (B, 1)
        even = valid / (n - 2).clamp(min=1)  # equal weights for a straight line
        cdf = torch.where(total > 1e-6, d2 / total, even).cumsum(dim=-1)  # (B, V - 2)
        n_keep = 1 + ((cdf <= z.double()) & valid).sum(dim=-1, keepdim=True)  # (B, 1)
        cut = ranked.gather(-1, n_keep - 1)  # (B, 1) probability of the last token kept
        keep = (probs >= cut) | (z >= 1) | (n <= 2)
        return keep_only(logits, with_min_keep(keep, logits, self.min_keep))

    def __repr__(self) -> str:
        return f"TailFree({self.z.tolist()}{min_keep_repr(self.min_keep)})"
