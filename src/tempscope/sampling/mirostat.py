"""Mirostat v2 (Basu et al. 2021, as in llama.cpp): hold the surprise near a target."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tempscope.sampling.base import check_range, column, keep_only, per_row


class MirostatV2:
    """Keep tokens whose surprise ``-log2 p`` is ``<= mu``; ``mu`` learns across steps.

    ``mu`` starts at ``2 * tau``. After each chosen token with probability ``p`` in the final
    distribution, :meth:`update` sets ``mu -= eta * (-log2 p - tau)``. The most likely token
    always survives. Rows with ``mu = inf`` are untouched.

    Args:
        tau: target surprise in bits, a number or ``(B,)`` tensor, ``> 0``. Practical 3-5.
        eta: learning rate, a number or ``(B,)`` tensor in ``(0, 1]``. Practical 0.1.
        mu: optional starting state ``(B,)``; default ``2 * tau``.
    """

    name = "mirostat"

    def __init__(self, tau: float | Tensor, eta: float | Tensor,
                 mu: Tensor | None = None) -> None:
        self.tau = per_row(tau)
        self.eta = per_row(eta)
        check_range("mirostat_tau", self.tau, 0, math.inf, low_open=True, high_open=True)
        check_range("mirostat_eta", self.eta, 0, 1, low_open=True)
        self.mu = 2 * self.tau.clone() if mu is None else mu

    def apply(self, logits: Tensor) -> Tensor:
        surprise = -torch.log_softmax(logits, dim=-1) / math.log(2)  # (B, V) bits
        return keep_only(logits, surprise <= column(self.mu, logits))

    def update(self, chosen_logprob: Tensor) -> None:
        """Learn from the chosen tokens' natural-log probabilities ``(B,)``."""
        surprise = -chosen_logprob.to(self.mu.device) / math.log(2)
        self.mu = self.mu - self.eta.to(self.mu.device) * (surprise - self.tau.to(self.mu.device))

    def __repr__(self) -> str:
        return f"MirostatV2(tau={self.tau.tolist()}, mu={self.mu.tolist()})"
