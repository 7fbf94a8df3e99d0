"""Filters that cut the tail: top-k, top-p, min-p, typical, epsilon, eta, top-n-sigma.

Each keeps a subset of tokens and sets the rest to ``-inf``; none rescales the kept logits.
Shared boundary choices: each row's maximum (with its ties) always survives (typical keeps
its most typical token instead), and a token tied with the last one kept is kept too, so the
result never depends on token order.

``min_keep`` (per row, default 1; 0 means the same as 1) is llama.cpp's floor: a filter never
keeps fewer than the ``min_keep`` most likely tokens (typical: the most typical), plus ties.
Every filter here acts only on the tokens that are still finite, so it gives the same answer
on the top-k candidates alone (``local``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tempscope.sampling.base import (
    RowSampler,
    check_range,
    column,
    entropy_of,
    is_max,
    keep_only,
    per_row,
    probs_of,
    sorted_desc,
)


def min_keep_of(min_keep: int | Tensor) -> Tensor:
    """``min_keep`` as a checked 0-d or ``(B,)`` int64 tensor, each ``>= 0``."""
    t = per_row(min_keep, dtype=torch.int64)
    check_range("min_keep", t, 0, math.inf, high_open=True)
    return t


def with_min_keep(keep: Tensor, order: Tensor, min_keep: Tensor) -> Tensor:
    """``keep`` plus each row's ``min_keep`` highest entries of ``order`` (and their ties).

    Args:
        keep: ``(B, V)`` bool, what a filter keeps.
        order: ``(B, V)`` the ranking the floor follows (logits; ``-inf`` = already removed).
        min_keep: 0-d or ``(B,)`` int64.
    """
    if int(min_keep.max()) <= 1:  # the usual case, every row: the filter's own floor
        return keep
    b, v = order.shape
    n = column(min_keep, order).expand(b, 1).clamp(1, v)  # (B, 1)
    nth = order.topk(int(n.max()), dim=-1).values.gather(-1, n - 1)  # (B, 1) the n-th best
    return keep | (order >= nth)


def min_keep_repr(min_keep: Tensor) -> str:
    """``", min_keep=[...]"`` for a ``repr``, or nothing when every row keeps the default."""
    return "" if bool((min_keep <= 1).all()) else f", min_keep={min_keep.tolist()}"


class TopK(RowSampler):
    """Keep the ``k`` highest logits; ties with the k-th are kept too (as in transformers).

    Args:
        k: an int or ``(B,)`` int tensor, each ``>= 1``; ``k >= V`` keeps every token.
        min_keep: keep ``max(k, min_keep)`` (llama.cpp and transformers do the same).

    >>> TopK(2).apply(torch.tensor([[1.0, 3.0, 2.0, 0.0]])).tolist()
    [[-inf, 3.0, 2.0, -inf]]
    """

    name = "top_k"
    local = True
    row_attrs = ("k", "min_keep")

    def __init__(self, k: int | Tensor, min_keep: int | Tensor = 1) -> None:
        self.k = per_row(k, dtype=torch.int64)
        check_range("top_k", self.k, 1, math.inf, high_open=True)
        self.min_keep = min_keep_of(min_keep)

    def _k(self, logits: Tensor) -> Tensor:
        """``(B, 1)`` the k each row keeps: ``max(k, min_keep)``."""
        k = torch.maximum(self.k, self.min_keep.to(self.k.device))
        return column(k, logits).expand(logits.shape[0], 1)

    def apply(self, logits: Tensor) -> Tensor:
        v = logits.shape[-1]
        k = self._k(logits)  # (B, 1)
        everything = k >= v  # rows with k >= V keep every token
        k = torch.where(everything, 1, k)
        top = logits.topk(int(k.max()), dim=-1).values  # (B, max k), largest first
        kth = top.gather(-1, k - 1)  # (B, 1) the k-th largest logit
        return keep_only(logits, (logits >= kth) | everything)

    def _widths(self, logits: Tensor) -> tuple[list[int], tuple[Tensor, Tensor]]:
        """Each row's candidate count, from that row alone (so the same in any batch): its k
        best plus one spare (which ``apply`` on the candidates removes), or, when tokens tied
        with its k-th run past that, every token ``>=`` its k-th; at most ``V``. And the
        ``topk`` taken on the way (the widest plain width), for reuse."""
        v = logits.shape[-1]
        k = self._k(logits).clamp(max=v)  # (B, 1)
        m = (k + 1).clamp(max=v)  # (B, 1) one spare column shows whether ties run past k
        found = logits.topk(int(m.max()), dim=-1)
        top = found.values  # (B, max m), largest first
        kth = top.gather(-1, k - 1)  # (B, 1)
        # A row whose k-th is -inf has fewer finite tokens than k: all of them are in already.
        cut = kth.masked_fill(kth == -math.inf, math.inf)  # (B, 1)
        tied = (m < v) & (top.gather(-1, m - 1) >= cut)  # ties with the k-th go further
        if not bool(tied.any()):
            return m[:, 0].tolist(), (found.values, found.indices)
        count = torch.count_nonzero(logits >= cut, dim=-1).unsqueeze(-1)  # (B, 1)
        return torch.where(tied, count, m)[:, 0].tolist(), (found.values, found.indices)

    def candidates(self, logits: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
        """The tokens ``apply`` may keep, gathered: each row's ``width`` best (default: the
        widest of :meth:`candidates_and_widths`' widths, enough for every row's k and ties).

        Args:
            logits: ``(B, V)``.
            width: candidates per row, at least every row's width.

        Returns:
            ``(values, ids)``, each ``(B, width)``, ordered by token id, so ``apply(values)``
            scattered back to ``ids`` equals ``apply(logits)``.
        """
        if width is None:
            width = max(self._widths(logits)[0])
        values, ids = logits.topk(width, dim=-1)  # (B, width), largest first
        return _in_id_order(values, ids)

    def candidates_and_widths(self, logits: Tensor) -> tuple[list[int], tuple[Tensor, Tensor]]:
        """Each row's candidate count (its own k and ties, so the same in any batch), and the
        candidates of the widest plain width (``k + 1``) taken on the way, in token-id order:
        when every row has that width they are every row's."""
        widths, (values, ids) = self._widths(logits)
        return widths, _in_id_order(values, ids)

    def __repr__(self) -> str:
        return f"TopK({self.k.tolist()}{min_keep_repr(self.min_keep)})"


def _in_id_order(values: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """``topk`` output reordered by token id: "first maximum" rules see V's order."""
    ids, order = ids.sort(dim=-1)
    return values.gather(-1, order), ids


class TopP(RowSampler):
    """Nucleus: keep the smallest set of most likely tokens whose mass is ``>= p``.

    The token that crosses ``p`` is kept (so a single token is kept when the top one alone
    holds ``p``), and tokens tied with it are kept too; once the mass before a token reaches
    ``p`` (within 1e-7, float32 rounding) that token is cut. ``p = 1`` keeps every token, even
    those whose probability underflows to 0.

    Args:
        p: a number or ``(B,)`` tensor in ``(0, 1]``. Practical 0.8-0.95.
        min_keep: keep at least this many of the most likely tokens.

    >>> TopP(0.7).apply(torch.log(torch.tensor([[0.1, 0.6, 0.3]]))).isfinite().tolist()
    [[False, True, True]]
    """

    name = "top_p"
    local = True
    row_attrs = ("p", "min_keep")

    def __init__(self, p: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.p = per_row(p)
        check_range("top_p", self.p, 0, 1, low_open=True)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        p = column(self.p, logits)  # (B, 1)
        probs = probs_of(logits)  # (B, V)
        # A token with p < (1 - p_top) / V is always cut: it and every less likely token hold
        # under V * (1 - p_top) / V together. Zeroing them first leaves fewer tokens to sort.
        sure_out = probs < (1 - p) / logits.shape[-1]
        ranked = sorted_desc(probs.masked_fill(sure_out, 0.0))  # (B, V) most likely first
        wide = ranked.double()  # summing 49k float32 terms in float32 drifts by ~1e-5
        before = wide.cumsum(dim=-1) - wide  # mass strictly before each token
        # Mass that reaches p up to the rounding of float32 probabilities counts as reaching it.
        n_keep = (before < p.double() - 1e-7).sum(dim=-1, keepdim=True).clamp(min=1)  # (B, 1)
        cut = ranked.gather(-1, n_keep - 1)  # (B, 1) probability of the last token kept
        keep = with_min_keep((probs >= cut) | (p >= 1), logits, self.min_keep)
        return keep_only(logits, keep)

    def __repr__(self) -> str:
        return f"TopP({self.p.tolist()}{min_keep_repr(self.min_keep)})"


class MinP(RowSampler):
    """Keep tokens with ``p >= min_p * p_max`` (ties at the cut kept).

    Args:
        min_p: a number or ``(B,)`` tensor in ``[0, 1]``: 0 keeps all, 1 keeps only the top.
            Practical 0.02-0.1.
        min_keep: keep at least this many of the most likely tokens.
    """

    name = "min_p"
    local = True
    row_attrs = ("min_p", "min_keep")

    def __init__(self, min_p: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.min_p = per_row(min_p)
        check_range("min_p", self.min_p, 0, 1)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        probs = probs_of(logits)  # (B, V)
        cut = column(self.min_p, logits) * probs.amax(dim=-1, keepdim=True)  # (B, 1)
        return keep_only(logits, with_min_keep(probs >= cut, logits, self.min_keep))

    def __repr__(self) -> str:
        return f"MinP({self.min_p.tolist()}{min_keep_repr(self.min_keep)})"


class Typical(RowSampler):
    """Locally typical sampling (Meister et al. 2022), as transformers computes it.

    Tokens are ranked by ``|-log p - H|`` (closest to the entropy first) and the smallest
    prefix holding mass ``>= typical_p`` is kept; tokens tied with the last one kept stay.

    Args:
        typical_p: a number or ``(B,)`` tensor in ``(0, 1]``; 1 keeps all. Practical 0.2-0.95.
        min_keep: keep at least this many of the most *typical* tokens (the order this filter
            ranks by, as in llama.cpp and transformers).
    """

    name = "typical_p"
    local = True
    row_attrs = ("mass", "min_keep")

    def __init__(self, typical_p: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.mass = per_row(typical_p)
        check_range("typical_p", self.mass, 0, 1, low_open=True)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        mass = column(self.mass, logits)  # (B, 1)
        # Ranked in float64: two logits one float32 step apart (Hypothesis found 0 and
        # 1.2e-7) are that close in -log p and H too, so in float32 their order flipped with
        # an ulp of log Z, and log Z rounds differently over V tokens than over the top-k
        # candidates alone (how BatchSampler runs the stages after a small top-k).
        x = logits.double()
        lp = torch.log_softmax(x, dim=-1)  # (B, V)
        h = entropy_of(x)  # (B, 1)
        distance = torch.where(torch.isfinite(lp), (-lp - h).abs(), math.inf)  # (B, V)
        ranked, order = distance.sort(dim=-1)  # most typical first
        cum = lp.exp().gather(-1, order).cumsum(dim=-1)  # (B, V)
        last = (cum < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
        keep = with_min_keep(distance <= ranked.gather(-1, last), -distance, self.min_keep)
        # The most typical token always survives (it may not be the most likely).
        return keep_only(logits, keep | (mass >= 1), keep_max=False)

    def __repr__(self) -> str:
        return f"Typical({self.mass.tolist()}{min_keep_repr(self.min_keep)})"


class Epsilon(RowSampler):
    """Epsilon (truncation) sampling (Hewitt et al. 2022): keep tokens with ``p >= epsilon``.

    Args:
        epsilon: a number or ``(B,)`` tensor in ``[0, 1]``; 0 keeps all. Practical 3e-4 to 9e-4.
        min_keep: keep at least this many of the most likely tokens.
    """

    name = "epsilon"
    local = True
    row_attrs = ("epsilon", "min_keep")

    def __init__(self, epsilon: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.epsilon = per_row(epsilon)
        check_range("epsilon", self.epsilon, 0, 1)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        keep = probs_of(logits) >= column(self.epsilon, logits)
        return keep_only(logits, with_min_keep(keep, logits, self.min_keep))

    def __repr__(self) -> str:
        return f"Epsilon({self.epsilon.tolist()}{min_keep_repr(self.min_keep)})"


class Eta(RowSampler):
    """Eta sampling (Hewitt et al. 2022): keep ``p >= min(eta, sqrt(eta) * exp(-H))``.

    ``H`` is the entropy (nats) of the current distribution, so the cut loosens when the model
    is unsure.

    Args:
        eta: a number or ``(B,)`` tensor in ``[0, 1]``; 0 keeps all. Practical 3e-4 to 2e-3.
        min_keep: keep at least this many of the most likely tokens.
    """

    name = "eta"
    local = True
    row_attrs = ("eta", "min_keep")

    def __init__(self, eta: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.eta = per_row(eta)
        check_range("eta", self.eta, 0, 1)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        eta = column(self.eta, logits)  # (B, 1)
        cut = torch.minimum(eta, eta.sqrt() * torch.exp(-entropy_of(logits)))  # (B, 1)
        return keep_only(logits, with_min_keep(probs_of(logits) >= cut, logits, self.min_keep))

    def __repr__(self) -> str:
        return f"Eta({self.eta.tolist()}{min_keep_repr(self.min_keep)})"


class TopNSigma(RowSampler):
    """Top-n-sigma (Tang et al. 2024): keep logits ``>= max - n * std``.

    ``std`` is the population standard deviation of the row's finite logits. The cut does not
    move with temperature (both sides scale by ``1/T``). ``n = 0`` keeps only the maximum and
    its ties (llama.cpp treats ``n <= 0`` as off; here ``None`` is off).

    Args:
        n: a number or ``(B,)`` tensor, ``>= 0``; ``inf`` keeps all. Practical 1-2.
        min_keep: keep at least this many of the most likely tokens (llama.cpp's top-n-sigma
            has no ``min_keep``).
    """

    name = "top_n_sigma"
    local = True
    row_attrs = ("n", "min_keep")

    def __init__(self, n: float | Tensor, min_keep: int | Tensor = 1) -> None:
        self.n = per_row(n)
        check_range("top_n_sigma", self.n, 0, math.inf)
        self.min_keep = min_keep_of(min_keep)

    def apply(self, logits: Tensor) -> Tensor:
        finite = torch.isfinite(logits)  # (B, V)
        count = finite.sum(dim=-1, keepdim=True)  # (B, 1), >= 1
        x = torch.where(finite, logits, 0.0)
        mean = x.sum(dim=-1, keepdim=True) / count
        var = torch.where(finite, (x - mean) ** 2, 0.0).sum(dim=-1, keepdim=True) / count
        top = logits.amax(dim=-1, keepdim=True)
        n = column(self.n, logits)  # (B, 1)
        # n = inf keeps every token, also when std is 0 (inf * 0 would be NaN and cut them)
        keep = (logits >= top - n * var.sqrt()) | is_max(logits) | torch.isinf(n)
        return keep_only(logits, with_min_keep(keep, logits, self.min_keep))

    def __repr__(self) -> str:
        return f"TopNSigma({self.n.tolist()}{min_keep_repr(self.min_keep)})"
