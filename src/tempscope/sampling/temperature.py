"""Temperature and its two dynamic forms (llama.cpp dynatemp, EDT).

``scale`` is the one place logits are divided by a temperature: ``T = 0`` keeps only the first
argmax (greedy; no division), ``T = inf`` makes every remaining token equal, and a row whose
``logits / T`` would overflow float32 is shifted by its maximum first, so every T stays finite.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tempscope.sampling.base import RowSampler, check_range, column, entropy_of, per_row


def scale(logits: Tensor, temperature: Tensor) -> Tensor:
    """``logits / T`` per row, with ``T = 0`` greedy and no overflow.

    Args:
        logits: ``(B, V)``; ``-inf`` marks removed tokens, which stay ``-inf``.
        temperature: ``(B, 1)`` or ``(1, 1)``, each ``>= 0`` (``inf`` allowed).

    Returns:
        ``(B, V)``. Rows with ``T = 0`` keep the first maximum's logit and ``-inf`` elsewhere.
    """
    greedy = temperature == 0  # (B, 1)
    # T below float32's smallest normal number gives the same probabilities as that number
    # (every token below the max already rounds to 0), so clamping keeps tiny T from becoming
    # 0 (greedy) in float32 without computing in float64.
    tiny = torch.finfo(torch.float32).tiny
    t = torch.where(greedy, 1.0, temperature.double().clamp(min=tiny)).to(logits.dtype)
    out = logits / t  # (B, V)
    # The usual step (finite logits, finite T, no overflow) costs the division and one scan.
    low, high = torch.aminmax(out)
    if bool(high == math.inf) or bool(low == -math.inf):  # masked tokens, or an overflow
        finite = torch.isfinite(logits)  # (B, V)
        overflow = (finite & torch.isinf(out)).any(dim=-1, keepdim=True)  # (B, 1)
        if bool(overflow.any()):  # e.g. 100 / 1e-37: shift by the max so entries stay <= 0
            shifted = (logits - logits.amax(dim=-1, keepdim=True)) / t
            out = torch.where(overflow, shifted, out)
    if bool(torch.isinf(t).any()):
        out = torch.where(torch.isfinite(logits), out, logits)  # -inf / inf would be NaN
    if bool(greedy.any()):
        first_max = torch.zeros_like(logits, dtype=torch.bool).scatter_(
            -1, logits.argmax(-1, keepdim=True), True)
        out = torch.where(greedy & ~first_max, -math.inf, out)
    return out


class Temperature(RowSampler):
    """Divide logits by ``T``: ``T < 1`` sharpens, ``T > 1`` flattens, ``T = 0`` is greedy.

    Args:
        temperature: a number or a ``(B,)`` tensor, each in ``[0, inf]``. Practical range
            0-2; 1 leaves the distribution unchanged.

    >>> Temperature(0.5).apply(torch.tensor([[1.0, 2.0]])).tolist()
    [[2.0, 4.0]]
    """

    name = "temperature"
    local = True
    row_attrs = ("temperature",)

    def __init__(self, temperature: float | Tensor) -> None:
        self.temperature = per_row(temperature, dtype=torch.float64)
        check_range("temperature", self.temperature, 0, math.inf)

    def apply(self, logits: Tensor) -> Tensor:
        return scale(logits, column(self.temperature, logits))

    def __repr__(self) -> str:
        return f"Temperature({self.temperature.tolist()})"


class DynamicTemperature(RowSampler):
    """llama.cpp's entropy-based temperature (``dynatemp``).

    ``T_dyn = T_lo + (T_hi - T_lo) * (H / H_max) ** exponent`` with ``T_lo = max(0, T - r)``,
    ``T_hi = T + r``, ``H`` the entropy of the current candidates at T = 1 and
    ``H_max = ln(number of candidates)``. Confident steps get a low T, uncertain ones a high T.

    Args:
        temperature: base ``T`` per row, ``>= 0``.
        dynatemp_range: ``r >= 0`` per row (``0`` = a fixed ``T``).
        exponent: ``> 0`` per row; 1 is linear.
    """

    name = "dynatemp"
    local = True
    row_attrs = ("temperature", "range", "exponent")

    def __init__(self, temperature: float | Tensor, dynatemp_range: float | Tensor,
                 exponent: float | Tensor = 1.0) -> None:
        self.temperature = per_row(temperature, dtype=torch.float64)
        self.range = per_row(dynatemp_range)
        self.exponent = per_row(exponent)
        check_range("temperature", self.temperature, 0, math.inf)
        check_range("dynatemp_range", self.range, 0, math.inf, high_open=True)
        check_range("dynatemp_exponent", self.exponent, 0, math.inf, high_open=True)

    def temperatures(self, logits: Tensor) -> Tensor:
        """``(B, 1)`` the temperature each row gets at this step."""
        t = column(self.temperature, logits)
        r = column(self.range, logits)
        n = torch.isfinite(logits).sum(dim=-1, keepdim=True).to(logits.dtype)  # (B, 1)
        h_max = torch.log(n)
        ratio = torch.where(n > 1, entropy_of(logits) / torch.where(n > 1, h_max, 1.0), 0.0)
        lo = torch.clamp(t - r, min=0.0)
        hi = t + r
        return lo + (hi - lo) * ratio.clamp(0.0, 1.0) ** column(self.exponent, logits)

    def apply(self, logits: Tensor) -> Tensor:
        return scale(logits, self.temperatures(logits))

    def __repr__(self) -> str:
        return (f"DynamicTemperature(temperature={self.temperature.tolist()}, "
                f"range={self.range.tolist()}, exponent={self.exponent.tolist()})")


class EntropyTemperature(RowSampler):
    """EDT (Zhang et al. 2024): ``T = T0 * N ** (theta / H)``.

    ``H`` is the entropy (nats) of the current distribution at T = 1. With ``N < 1`` a
    confident step (small ``H``) gets ``T`` near 0 and an uncertain one gets ``T`` near ``T0``.
    ``H = 0`` gives ``T = 0`` (greedy) when ``theta > 0``.

    Args:
        temperature: ``T0`` per row, ``>= 0``.
        theta: ``>= 0`` per row; ``0`` = a fixed ``T0``. Practical 0.5-1.5.
        n: the base ``N`` in ``(0, 1]``; the paper uses 0.8.
    """

    name = "edt"
    local = True
    row_attrs = ("temperature", "theta", "n")

    def __init__(self, temperature: float | Tensor, theta: float | Tensor,
                 n: float | Tensor = 0.8) -> None:
        self.temperature = per_row(temperature, dtype=torch.float64)
        self.theta = per_row(theta)
        self.n = per_row(n)
        check_range("temperature", self.temperature, 0, math.inf)
        check_range("edt_theta", self.theta, 0, math.inf, high_open=True)
        check_range("edt_n", self.n, 0, 1, low_open=True)

    def temperatures(self, logits: Tensor) -> Tensor:
        """``(B, 1)`` the temperature each row gets at this step."""
        h = entropy_of(logits)
        theta = column(self.theta, logits)
        exponent = torch.where(
            h > 0, theta / torch.where(h > 0, h, 1.0), torch.where(theta > 0, math.inf, 0.0)
        )
        return column(self.temperature, logits) * column(self.n, logits) ** exponent

    def apply(self, logits: Tensor) -> Tensor:
        return scale(logits, self.temperatures(logits))

    def __repr__(self) -> str:
        return (f"EntropyTemperature(temperature={self.temperature.tolist()}, "
                f"theta={self.theta.tolist()}, n={self.n.tolist()})")
