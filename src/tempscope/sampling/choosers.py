"""Choosers: the last step of every chain. Greedy takes the argmax; the seeded draw takes one
uniform per row from that row's own ``torch.Generator`` and inverts the CDF with tensor ops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tempscope import distribution


def greedy(logits: Tensor) -> Tensor:
    """``(B,)`` int64: each row's first maximum."""
    out: Tensor = distribution.row_argmax(logits).to(logits.device)
    return out


def uniforms(generators: Sequence[torch.Generator | None], draw: Sequence[bool],
             device: torch.device) -> Tensor:
    """``(B,)`` one uniform in ``[0, 1)`` per row where ``draw``, else 0; each from its row's
    generator (``None`` = torch's global generator)."""
    out = []
    for gen, wanted in zip(generators, draw, strict=True):
        if wanted:
            dev = gen.device if gen is not None else device
            one = torch.rand((), generator=gen, device=dev, dtype=torch.float64)
            out.append(one if dev == device else one.to(device))
        else:
            out.append(torch.zeros((), dtype=torch.float64, device=device))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64, device=device)


def inverse_cdf(logits: Tensor, u: Tensor) -> Tensor:
    """``(B,)`` int64 token ids: :func:`tempscope.distribution.inverse_cdf` on
    ``softmax(logits)``; ``-inf`` tokens have probability 0 and are never chosen.

    Args:
        logits: ``(B, V)``.
        u: ``(B,)`` uniforms in ``[0, 1)``.
    """
    # Unnormalised float32 weights suffice: the target is u times each row's total.
    weights = (logits - logits.amax(dim=-1, keepdim=True)).exp_()  # (B, V), max entry 1
    out: Tensor = distribution.inverse_cdf(weights, u)
    return out


def draw(logits: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor:
    """``(B,)`` seeded draws from ``softmax(logits)``, one generator per row."""
    u = uniforms(generators, [True] * logits.shape[0], logits.device)
    return inverse_cdf(logits, u)
