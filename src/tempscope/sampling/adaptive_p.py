"""Adaptive-p (llama.cpp's ``llama_sampler_init_adaptive_p``): choose tokens whose probability
sits near a target, steering the running average of the chosen probabilities to it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tempscope.sampling.base import RowSampler, check_range, column, per_row, probs_of
from tempscope.sampling.choosers import inverse_cdf, uniforms

_WIDTH = 0.3  # llama.cpp's DISTRIBUTION_WIDTH: how far from the target a token still scores
_PEAK = 5.0  # PEAK_LOGIT_VALUE: the logit a token exactly at the target gets
_SHARPNESS = 10.0  # SHARPNESS: how fast the logit falls off with distance


class AdaptiveP(RowSampler):
    """Reshape the distribution around an adapted target probability and draw from it.

    Each step, with ``p`` the current probabilities and ``ema`` the decayed average of the
    (original) probabilities of the tokens chosen so far, ``t = clamp(2 * target - ema, 0, 1)``
    and every surviving token gets the logit ``5 - 10 * x**2 / (1 + x)``, ``x = |p - t| / 0.3``;
    one token is drawn from that with the row's generator. ``apply`` returns the logits with
    every other token set to ``-inf``, so the chooser after it picks it (``ends_chain``);
    :meth:`reshape` gives the distribution it drew from. ``accept`` adds the chosen token's
    original probability to the average, as llama.cpp does, only when the accepted token is
    the one drawn: the one with log-probability 0 under the final distribution (a forced
    other token has ``-inf``), which needs no token ids, so adaptive-p may run on top-k
    candidates (``local``).

    The average starts at ``target`` (llama.cpp initialises the sums to their converged
    values, ``target / (1 - decay)`` and ``1 / (1 - decay)``) and :meth:`reset` restores that.

    Args:
        target: per row, ``<= 1``: the probability to aim for; a negative value switches the
            row off (its logits pass unchanged and the chooser draws). Practical 0.3-0.7.
        decay: per row in ``[0, 0.99]``: the average's memory, about ``1 / (1 - decay)``
            tokens. llama.cpp's default 0.9.
        generators: one ``torch.Generator`` (or ``None`` = torch's global one) per row; a row
            draws one uniform per step, only while it is on.
    """

    name = "adaptive_p"
    local = True
    ends_chain = True
    row_attrs = ("target", "decay", "generators", "weighted_sum", "total_weight", "pending",
                 "chosen_p")

    def __init__(self, target: float | Tensor, decay: float | Tensor = 0.9, *,
                 generators: Sequence[torch.Generator | None]) -> None:
        self.target = per_row(target)
        bad = torch.isnan(self.target) | (self.target > 1)
        if bool(bad.any()):
            raise ValueError(f"adaptive_target must be in [0, 1] (a negative value switches "
                             f"the row off), got {float(self.target[bad].flatten()[0])!r}")
        self.decay = per_row(decay)
        # 0.99 in float32 is 0.99000001: allow float32's rounding of the upper bound
        check_range("adaptive_decay", self.decay, 0, float(torch.tensor(0.99).float()))
        self.generators = list(generators)
        self.reset()

    def reset(self) -> None:
        """Put the running average back to ``target`` and forget a pending draw."""
        b = len(self.generators)
        # Off rows (negative target) never read these sums.
        self.weighted_sum = (self.target / (1 - self.decay)).expand(b).clone()  # (B,)
        self.total_weight = (1 / (1 - self.decay)).expand(b).clone()  # (B,)
        self.pending = torch.zeros(b, dtype=torch.bool)  # (B,) drew a token this step
        self.chosen_p = torch.zeros(b)  # (B,) its probability before the reshaping

    def reshape(self, logits: Tensor) -> Tensor:
        """``(B, V)`` the logits a row draws from at this step (``-inf`` stays ``-inf``); rows
        that are off come back unchanged."""
        probs = probs_of(logits)  # (B, V) the distribution as it reached this sampler
        target = column(self.target, logits)  # (B, 1)
        t = target.clamp(0, 1)
        ws = self.weighted_sum.to(logits.device)[:, None]  # (B, 1)
        tw = self.total_weight.to(logits.device)[:, None]
        adapted = torch.where(tw == 0, t, 2 * t - ws / tw).clamp(0, 1)  # (B, 1)
        x = (probs - adapted).abs() * (1 / _WIDTH)  # (B, V)
        shaped = torch.where(torch.isfinite(logits), _PEAK - _SHARPNESS * x * x / (1 + x),
                             -math.inf)
        return torch.where(target >= 0, shaped, logits)

    def apply(self, logits: Tensor) -> Tensor:
        b = logits.shape[0]
        if b != len(self.generators):
            raise ValueError(f"AdaptiveP has {len(self.generators)} rows, got logits for {b}")
        on = (column(self.target, logits) >= 0).expand(b, 1)  # (B, 1)
        if not bool(on.any()):
            return logits
        u = uniforms(self.generators, on[:, 0].tolist(), logits.device)  # (B,)
        drawn = inverse_cdf(self.reshape(logits), u)  # (B,)
        chosen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, drawn[:, None], True)
        self.pending = on[:, 0].cpu()
        self.chosen_p = probs_of(logits).gather(-1, drawn[:, None])[:, 0].cpu()
        return logits.masked_fill(on & ~chosen, -math.inf)  # the drawn token keeps its logit

    def accept(self, tokens: Tensor, logprobs: Tensor) -> None:
        """Add the drawn token's original probability to each row's average where the accepted
        token is the one drawn, i.e. its ``logprobs`` ``(B,)`` under the final distribution
        is 0 (``tokens`` is not needed)."""
        del tokens
        hit = self.pending & (logprobs.cpu() == 0)  # (B,)
        decay = self.decay.expand(hit.shape[0])
        self.weighted_sum = torch.where(hit, self.chosen_p + decay * self.weighted_sum,
                                        self.weighted_sum)
        self.total_weight = torch.where(hit, 1 + decay * self.total_weight, self.total_weight)
        self.pending = torch.zeros_like(self.pending)

    def __repr__(self) -> str:
        return f"AdaptiveP(target={self.target.tolist()}, decay={self.decay.tolist()})"
