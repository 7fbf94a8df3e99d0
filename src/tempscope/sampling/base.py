"""The sampler interface and the tensor helpers every sampler shares.

A sampler maps ``(B, V)`` float32 logits to new ``(B, V)`` logits; a removed token gets
``-inf``. Parameters are per row: a 0-d tensor (or a Python number) applies to every row, a
``(B,)`` tensor gives each row its own value. Samplers never mutate their input.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Protocol, Self

import torch
from torch import Tensor

from tempscope.sampling.registry import interval


class Sampler(Protocol):
    """One step of a chain, in llama.cpp's spirit.

    ``apply`` turns ``(B, V)`` logits into ``(B, V)`` logits (removed tokens ``-inf``). A
    stateful sampler also has ``accept(tokens, logprobs)``, called once per step with the
    chosen ``(B,)`` tokens and their ``(B,)`` log-probabilities under the final distribution,
    and ``reset()``, which puts its state back to the start. ``BatchSampler`` finds those two
    by name; it never special-cases a sampler class. ``select(index)`` returns the sampler for
    a subset of its rows (:class:`RowSampler` gives it for free).
    """

    name: str
    local: bool  # result depends only on the finite logits (may run on top-k candidates)

    def apply(self, logits: Tensor) -> Tensor: ...

    def select(self, index: Tensor) -> Sampler: ...


class RowSampler:
    """Base for samplers: ``select`` keeps a subset of rows of every per-row attribute.

    Subclasses list their per-row attributes in ``row_attrs``: ``(B,)`` (or ``(B, ...)``)
    tensors, whose 0-d form means "every row", and lists with one entry per row.
    """

    name = "sampler"
    local = False
    row_attrs: tuple[str, ...] = ()

    def select(self, index: Tensor) -> Self:
        """A copy holding only the rows ``index`` (int64, positions in this sampler's rows)."""
        out = copy.copy(self)
        for attr in self.row_attrs:
            value = getattr(self, attr)
            if isinstance(value, Tensor):
                if value.ndim >= 1:
                    setattr(out, attr, value[index.to(value.device)])
            elif isinstance(value, list):
                setattr(out, attr, [value[int(i)] for i in index.tolist()])
            elif isinstance(value, HistoryView):
                setattr(out, attr, value.select(index))
        return out


class History:
    """Every row's tokens so far (prompt + generated), shared by the samplers that read it.

    Rows keep their first number for life: a finished row stays (it stops growing), so a
    :class:`HistoryView` of some rows never needs renumbering. ``BatchSampler`` appends each
    step's chosen tokens; samplers read through views at apply time. The ``(B, V)`` count table
    is built on first use and kept up to date from then on.

    Args:
        ids: one list of token ids per row (the prompt; may be empty).
        vocab_size: ``V``.
        device: where ``counts`` lives.
    """

    def __init__(self, ids: Sequence[Sequence[int]], vocab_size: int,
                 device: torch.device | str = "cpu") -> None:
        self.ids: list[list[int]] = [[int(t) for t in row] for row in ids]
        self.n_prompt: list[int] = [len(row) for row in self.ids]
        self.vocab_size = int(vocab_size)
        self.device = torch.device(device)
        self._counts: Tensor | None = None
        for row in self.ids:
            if row and (min(row) < 0 or max(row) >= self.vocab_size):
                raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {row}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def counts(self) -> Tensor:
        """``(B, V)`` float32: how often each token occurs in each row's history."""
        if self._counts is None:
            counts = torch.zeros(len(self.ids), self.vocab_size, device=self.device)
            for row, ids in enumerate(self.ids):
                t = torch.as_tensor(ids, dtype=torch.int64, device=self.device)
                counts[row].index_add_(0, t, torch.ones(t.numel(), device=self.device))
            self._counts = counts
        return self._counts

    def append(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Add one chosen token to each of ``rows``."""
        if len(tokens) != len(rows):
            raise ValueError(f"got {len(tokens)} tokens for {len(rows)} rows")
        for row, token in zip(rows, tokens, strict=True):
            self.ids[row].append(int(token))
        if self._counts is not None and rows:
            t = torch.as_tensor(list(tokens), dtype=torch.int64, device=self.device)
            r = torch.as_tensor(list(rows), dtype=torch.int64, device=self.device)
            self._counts.index_put_((r, t), torch.ones(len(rows), device=self.device),
                                    accumulate=True)


class HistoryView:
    """A sampler's window on :class:`History`: some of its rows, read at apply time, so it
    always sees the tokens chosen so far without anyone pushing them in."""

    def __init__(self, history: History, rows: Sequence[int]) -> None:
        self.history = history
        self.rows = [int(r) for r in rows]

    @classmethod
    def of(cls, ids: Sequence[Sequence[int]], vocab_size: int) -> HistoryView:
        """A view of every row of a fresh :class:`History` (a sampler used on its own)."""
        return cls(History(ids, vocab_size), range(len(ids)))

    @property
    def ids(self) -> list[list[int]]:
        """Each row's tokens so far (prompt + generated)."""
        return [self.history.ids[r] for r in self.rows]

    @property
    def n_generated(self) -> list[int]:
        """How many tokens each row generated."""
        h = self.history
        return [len(h.ids[r]) - h.n_prompt[r] for r in self.rows]

    @property
    def counts(self) -> Tensor:
        """``(B, V)`` token counts of this view's rows."""
        c = self.history.counts
        if self.rows == list(range(c.shape[0])):
            return c
        return c[torch.as_tensor(self.rows, dtype=torch.int64, device=c.device)]

    def select(self, index: Tensor) -> HistoryView:
        """The view of the rows at positions ``index``."""
        return HistoryView(self.history, [self.rows[int(i)] for i in index.tolist()])


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
