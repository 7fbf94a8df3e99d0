"""Mirostat v1 and v2 (Basu et al. 2021, as in llama.cpp): hold the surprise near a target.

Both keep ``mu`` per row, starting at ``2 * tau`` (or the ``mu`` given). After each step,
:meth:`accept` gets the chosen tokens' log-probabilities under the final distribution and sets
``mu -= eta * (-log2 p - tau)``. A row with ``tau = inf`` (or a starting ``mu = inf``) is off:
its logits pass unchanged and ``accept`` leaves it alone. A step whose update is not finite (a
forced token the chain had removed, ``p = 0``) leaves ``mu`` unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tempscope.sampling.base import RowSampler, check_range, column, keep_only, per_row


class _Mirostat(RowSampler):
    """The state both versions share: ``tau``, ``eta`` and the learned ``mu``, per row."""

    local = True

    def __init__(self, tau: float | Tensor, eta: float | Tensor, mu: Tensor | None) -> None:
        self.tau = per_row(tau)
        self.eta = per_row(eta)
        check_range("mirostat_tau", self.tau, 0, math.inf, low_open=True)
        check_range("mirostat_eta", self.eta, 0, 1, low_open=True)
        self.mu_start = 2 * self.tau if mu is None else per_row(mu)  # what reset restores
        self.mu = self.mu_start

    def reset(self) -> None:
        """Put ``mu`` back to its start: ``2 * tau`` (``inf`` for rows that are off)."""
        self.mu = self.mu_start

    def accept(self, tokens: Tensor, logprobs: Tensor) -> None:
        """Learn from one step: ``tokens`` ``(B,)`` were chosen with natural-log
        probabilities ``logprobs`` ``(B,)`` under the final distribution."""
        del tokens  # mirostat only needs how surprising the choice was
        self.update(logprobs)

    def update(self, chosen_logprob: Tensor) -> None:
        """``mu -= eta * (-log2 p - tau)`` from the chosen tokens' log-probabilities ``(B,)``."""
        mu = self.mu
        lp = chosen_logprob.to(device=mu.device, dtype=mu.dtype)
        new = mu - self.eta.to(mu.device) * (-lp / math.log(2) - self.tau.to(mu.device))
        self.mu = torch.where(torch.isfinite(mu) & torch.isfinite(new), new, mu)


class MirostatV2(_Mirostat):
    """Keep tokens whose surprise ``-log2 p`` is ``<= mu``; ``mu`` learns across steps.

    The most likely token always survives (llama.cpp keeps one token when none passes).

    Args:
        tau: target surprise in bits, a number or ``(B,)`` tensor, ``> 0``; ``inf`` = off for
            that row. Practical 3-5.
        eta: learning rate, a number or ``(B,)`` tensor in ``(0, 1]``. Practical 0.1.
        mu: optional starting state ``(B,)`` (``inf`` = off); default ``2 * tau``.

    >>> m = MirostatV2(1.0, 0.1)
    >>> m.apply(torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()).isfinite().tolist()
    [[True, True, False, False]]
    """

    name = "mirostat"
    row_attrs = ("tau", "eta", "mu_start", "mu")

    def __init__(self, tau: float | Tensor, eta: float | Tensor,
                 mu: Tensor | None = None) -> None:
        super().__init__(tau, eta, mu)

    def apply(self, logits: Tensor) -> Tensor:
        surprise = -torch.log_softmax(logits, dim=-1) / math.log(2)  # (B, V) bits
        return keep_only(logits, surprise <= column(self.mu, logits))

    def __repr__(self) -> str:
        return f"MirostatV2(tau={self.tau.tolist()}, mu={self.mu.tolist()})"


class MirostatV1(_Mirostat):
    """Mirostat v1: estimate the Zipf exponent ``s`` from the top ``m`` tokens, derive ``k``
    from it and ``mu``, and keep the top ``k``.

    ``s_hat = sum(t_i b_i) / sum(t_i^2)`` with ``t_i = ln((i + 2) / (i + 1))`` and
    ``b_i = ln(p_i / p_{i+1})`` over the ``m`` most likely tokens; with
    ``eps = s_hat - 1``, ``k = (eps * 2^mu / (1 - N^-eps)) ** (1 / s_hat)`` where ``N`` is the
    vocabulary size. Boundary choices (llama.cpp leaves these to float overflow or an
    undefined ``int`` cast): ``eps = 0`` uses the limit ``2^mu / ln N``; a ``k`` that is
    infinite or NaN keeps every token; ``k`` is truncated to an int and clamped to
    ``[1, V]``; tokens tied with the k-th are kept. A row with fewer than two finite tokens is
    untouched.

    Args:
        tau: target surprise in bits, ``> 0``; ``inf`` = off for that row. Practical 3-5.
        eta: learning rate in ``(0, 1]``. Practical 0.1.
        m: how many top tokens estimate ``s`` (llama.cpp uses 100), ``>= 2``.
        vocab_size: ``N``, the model's vocabulary size.
        mu: optional starting state ``(B,)`` (``inf`` = off); default ``2 * tau``.

    >>> m = MirostatV1(3.0, 0.1, vocab_size=4)
    >>> m.apply(torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()).isfinite().tolist()
    [[True, True, True, True]]
    """

    name = "mirostat"  # one stage in the registry; its `mirostat` knob picks the version
    row_attrs = ("tau", "eta", "m", "mu_start", "mu")

    def __init__(self, tau: float | Tensor, eta: float | Tensor, m: int | Tensor = 100, *,
                 vocab_size: int, mu: Tensor | None = None) -> None:
        super().__init__(tau, eta, mu)
        self.m = per_row(m, dtype=torch.int64)
        check_range("mirostat_m", self.m, 2, math.inf, high_open=True)
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    def k(self, logits: Tensor) -> Tensor:
        """``(B, 1)`` float64 the ``k`` each row keeps at this step (``inf`` = every token)."""
        b, v = logits.shape
        m = column(self.m, logits).expand(b, 1)  # (B, 1)
        width = min(int(m.max()), v)
        top = logits.topk(width, dim=-1).values.double()  # (B, w) most likely first
        n_finite = torch.isfinite(logits).sum(-1, keepdim=True)  # (B, 1)
        i = torch.arange(width - 1, device=logits.device)  # (w - 1,)
        valid = (i < m - 1) & (i < n_finite - 1)  # (B, w - 1)
        t = torch.log((i + 2.0) / (i + 1.0)).double()  # (w - 1,)
        # ln(p_i / p_{i+1}) is the logit difference: exact even where p underflows.
        gap = torch.where(valid, top[:, :-1] - top[:, 1:], 0.0)  # (B, w - 1)
        s_hat = (t * gap).sum(-1, keepdim=True) / (valid * t**2).sum(-1, keepdim=True)
        eps = s_hat - 1
        two_mu = torch.exp2(column(self.mu, logits).double())  # (B, 1)
        n = float(self.vocab_size)
        near_one = eps.abs() < 1e-9
        safe = torch.where(near_one, 1.0, eps)
        ratio = torch.where(near_one, two_mu / math.log(n), safe * two_mu / (1 - n ** -safe))
        k = ratio ** (1 / s_hat)
        return torch.where(torch.isfinite(k) & (n_finite >= 2), k, math.inf)

    def apply(self, logits: Tensor) -> Tensor:
        v = logits.shape[-1]
        k = self.k(logits)
        everything = k >= v  # (B, 1) rows that keep every token (off rows: mu = inf)
        if bool(everything.all()):
            return logits
        kk = torch.where(everything, 1.0, k).floor().clamp(1, v).long()  # C's int(k) for k >= 0
        kth = logits.topk(int(kk.max()), dim=-1).values.gather(-1, kk - 1)  # (B, 1)
        return keep_only(logits, (logits >= kth) | everything)

    def __repr__(self) -> str:
        return (f"MirostatV1(tau={self.tau.tolist()}, m={self.m.tolist()}, "
                f"mu={self.mu.tolist()})")
