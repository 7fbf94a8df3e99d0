"""The sampler interface and the tensor helpers every sampler shares.

A sampler maps ``(B, V)`` float32 logits to new ``(B, V)`` logits; a removed token gets
``-inf``. Parameters are per row: a 0-d tensor (or a Python number) applies to every row, a
``(B,)`` tensor gives each row its own value. Samplers never mutate their input.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from tempscope.sampling.params import interval


class Sampler(Protocol):
    """One step of a chain: ``apply`` turns ``(B, V)`` logits into ``(B, V)`` logits."""

    name: str

    def apply(self, logits: Tensor) -> Tensor: ...


def per_row(value: float | Tensor, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """A parameter as a 0-d or ``(B,)`` tensor of ``dtype``."""
    t = torch.as_tensor(value, dtype=dtype)
    if t.ndim > 1:
        raise ValueError(f"a sampler parameter must be a number or a (B,) tensor, got shape "
                         f"{tuple(t.shape)}")
    return t


def column(param: Tensor, logits: Tensor) -> Tensor:
    """``(B, 1)`` (or ``(1, 1)``) view of a per-row parameter, on the logits' device."""
    return param.to(device=logits.device).reshape(-1, 1)


def check_range(
    name: str, values: Tensor, low: float, high: float, *, low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ValueError`` naming the parameter, the first bad value and the valid range."""
    v = values.double()
    bad = torch.isnan(v) | (v <= low if low_open else v < low) | (
        v >= high if high_open else v > high
    )
    if bool(bad.any()):
        first = float(v[bad].flatten()[0])
        raise ValueError(
            f"{name} must be in {interval(low, high, low_open, high_open)}, got {first!r}"
        )


def is_max(logits: Tensor) -> Tensor:
    """``(B, V)`` mask of each row's maximum (all ties): the tokens a filter always keeps."""
    return logits == logits.amax(dim=-1, keepdim=True)


def keep_only(logits: Tensor, keep: Tensor, *, keep_max: bool = True) -> Tensor:
    """Set tokens outside ``keep`` to ``-inf``; each row's maximum survives unless
    ``keep_max`` is False (for samplers that may drop the top token and keep another)."""
    return logits.masked_fill(~(keep | is_max(logits) if keep_max else keep), -math.inf)


def probs_of(logits: Tensor) -> Tensor:
    """``softmax`` over the vocabulary, in float32 or wider."""
    return torch.softmax(logits.float() if logits.dtype.itemsize < 4 else logits, dim=-1)


def entropy_of(logits: Tensor) -> Tensor:
    """``(B, 1)`` entropy (nats) of ``softmax(logits)``; removed tokens contribute 0."""
    lp = torch.log_softmax(logits, dim=-1)
    terms = torch.where(torch.isfinite(lp), -lp.exp() * lp, torch.zeros_like(lp))
    return terms.sum(dim=-1, keepdim=True)


def sorted_desc(values: Tensor) -> Tensor:
    """``(B, V)`` each row sorted largest first. When filters already removed most tokens
    (``-inf`` logits or 0 probabilities), only the survivors are sorted (``topk``) and the
    rest filled with the row minimum, which is what a full sort would put there."""
    v = values.shape[-1]
    low = values.amin(dim=-1, keepdim=True)  # (B, 1)
    m = int((values > low).sum(dim=-1).max()) + 1  # enough to reach each row's minimum
    if m >= v // 2:
        return values.sort(dim=-1, descending=True).values
    top = values.topk(m, dim=-1).values  # (B, m) sorted
    return torch.cat([top, low.expand(-1, v - m)], dim=-1)
