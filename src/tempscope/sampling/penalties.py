"""Logit processors that use the history: repetition, frequency and presence penalties, and
the logit bias. They shift logits; none removes a token.

History is a ``(B, V)`` float tensor of counts: how many times each token occurs in the row's
prompt plus what it generated so far (llama.cpp style; vLLM and OpenAI count only generated
tokens for the frequency and presence penalties).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tempscope.sampling.base import check_range, column, per_row


def _check_counts(counts: Tensor) -> Tensor:
    if counts.ndim != 2:
        raise ValueError(f"counts must be (B, V), got shape {tuple(counts.shape)}")
    return counts


class RepetitionPenalty:
    """CTRL / transformers repetition penalty over tokens seen in the history.

    A seen token's logit ``l`` becomes ``l / r`` if ``l > 0`` else ``l * r``; ``r > 1``
    discourages repeats, ``r = 1`` is a no-op.

    Args:
        penalty: ``r > 0``, a number or ``(B,)`` tensor. Practical 1.05-1.3.
        counts: ``(B, V)`` token counts in the history.
    """

    name = "repetition_penalty"

    def __init__(self, penalty: float | Tensor, counts: Tensor) -> None:
        self.penalty = per_row(penalty)
        check_range("repetition_penalty", self.penalty, 0, math.inf, low_open=True,
                    high_open=True)
        self.counts = _check_counts(counts)

    def apply(self, logits: Tensor) -> Tensor:
        r = column(self.penalty, logits)  # (B, 1)
        penalised = torch.where(logits > 0, logits / r, logits * r)
        return torch.where(self.counts > 0, penalised, logits)

    def __repr__(self) -> str:
        return f"RepetitionPenalty({self.penalty.tolist()})"


class FrequencyPenalty:
    """OpenAI frequency penalty: ``l -= f * count``. Args: ``f`` in ``[-2, 2]``; counts
    ``(B, V)``."""

    name = "frequency_penalty"

    def __init__(self, penalty: float | Tensor, counts: Tensor) -> None:
        self.penalty = per_row(penalty)
        check_range("frequency_penalty", self.penalty, -2, 2)
        self.counts = _check_counts(counts)

    def apply(self, logits: Tensor) -> Tensor:
        return logits - column(self.penalty, logits) * self.counts

    def __repr__(self) -> str:
        return f"FrequencyPenalty({self.penalty.tolist()})"


class PresencePenalty:
    """OpenAI presence penalty: ``l -= p`` once for every token seen. Args: ``p`` in
    ``[-2, 2]``; counts ``(B, V)``."""

    name = "presence_penalty"

    def __init__(self, penalty: float | Tensor, counts: Tensor) -> None:
        self.penalty = per_row(penalty)
        check_range("presence_penalty", self.penalty, -2, 2)
        self.counts = _check_counts(counts)

    def apply(self, logits: Tensor) -> Tensor:
        return logits - column(self.penalty, logits) * (self.counts > 0).to(logits.dtype)

    def __repr__(self) -> str:
        return f"PresencePenalty({self.penalty.tolist()})"


class LogitBias:
    """Add a fixed bias to chosen tokens' logits (OpenAI ``logit_bias``).

    Args:
        bias: ``(B, V)`` or ``(V,)`` dense biases, finite.
    """

    name = "logit_bias"

    def __init__(self, bias: Tensor) -> None:
        if not bool(torch.isfinite(bias).all()):
            raise ValueError("logit_bias values must be finite numbers in [-100, 100]")
        self.bias = bias

    @classmethod
    def from_dicts(cls, biases: list[dict[int, float] | None], vocab_size: int,
                   device: torch.device | str = "cpu") -> LogitBias:
        """Build the dense ``(B, V)`` bias from one ``{token_id: bias}`` dict per row."""
        dense = torch.zeros(len(biases), vocab_size, dtype=torch.float32)
        for row, entries in enumerate(biases):
            for token, value in (entries or {}).items():
                if not 0 <= token < vocab_size:
                    raise ValueError(
                        f"logit_bias token id {token} is outside the vocabulary [0, {vocab_size})"
                    )
                dense[row, token] = value
        return cls(dense.to(device))

    def apply(self, logits: Tensor) -> Tensor:
        return logits + self.bias.to(logits.device)

    def __repr__(self) -> str:
        return f"LogitBias(nonzero={int((self.bias != 0).sum())})"
