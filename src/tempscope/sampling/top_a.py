"""Top-a (text-generation-webui's ``TopALogitsWarper``, KoboldCpp's ``top_a``)."""

from __future__ import annotations

from torch import Tensor

from tempscope.sampling.base import RowSampler, check_range, column, keep_only, per_row, probs_of
from tempscope.sampling.truncation import min_keep_of, min_keep_repr, with_min_keep


class TopA(RowSampler):
    """Keep tokens with ``p >= a * p_max ** 2``: a cut that tightens quickly as the model
    grows confident and all but vanishes when it is unsure.

    Args:
        a: a number or ``(B,)`` tensor in ``[0, 1]``; 0 keeps all. Practical 0.1-0.3.
        min_keep: keep at least this many of the most likely tokens (and their ties).

    >>> import torch
    >>> TopA(0.5).apply(torch.tensor([[0.6, 0.25, 0.15]]).log()).isfinite().tolist()
    [[True, True, False]]
    """

    name = "top_a"
    local = True
    row_attrs = ("a", "min_keep")

    def __init__(self, a: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.a = per_row(a)
        check_range("top_a", self.a, 0, 1)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        probs = probs_of(logits)  # (B, V)
        p_max = probs.amax(dim=-1, keepdim=True)  # (B, 1)
        keep = probs >= column(self.a, logits) * p_max * p_max
        return keep_only(logits, with_min_keep(keep, logits, self.min_keep))

    def __repr__(self) -> str:
        return f"TopA({self.a.tolist()}{min_keep_repr(self.min_keep)})"
