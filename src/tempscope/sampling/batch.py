"""``BatchSampler``: per-row chains, history and seeds for a batch of B rows; ``probabilities``.

Pipeline per step (vLLM style): ``process`` runs each row's chain (the stages in its order,
each a tensor op over the rows that share that order, with per-row parameter tensors; rows
with a sampler off get its neutral value), ``choose`` takes greedy rows' argmax (a mask) and
draws the others with one uniform from each row's own generator, ``accept`` appends the tokens
to the shared history and hands them to every stateful stage. The stages come from the
registry (:mod:`tempscope.sampling.registry`); ``BatchSampler`` knows no sampler by name or
class. Rows with ``temperature = 0`` are greedy: the samplers before temperature in their
order run, then temperature keeps the first argmax (llama.cpp's rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tempscope.sampling.base import History, HistoryView, Sampler
from tempscope.sampling.build import BuildContext, build_stage
from tempscope.sampling.choosers import greedy as greedy_choice
from tempscope.sampling.choosers import inverse_cdf, uniforms
from tempscope.sampling.params import SamplingParams
from tempscope.sampling.registry import BY_NAME

if TYPE_CHECKING:
    from tempscope.sampling.vocab import Vocab

# Run the stages after top-k on the candidates when k is at most this share of the vocabulary.
_COMPACT_SHARE = 4


class BatchSampler:
    """Sampling state for a batch: one ``SamplingParams``, generator and history per row.

    Args:
        params: one ``SamplingParams`` per row.
        vocab_size: ``V``, the size of the logits' last axis.
        device: where the logits live.
        seeds: per-row seeds overriding ``params[i].seed`` (``None`` = keep the params').
        prompt_ids: per-row prompt token ids, the starting history (penalties, DRY).
        vocab: the tokenizer, for the samplers that read text (``bad_words``, DRY's sequence
            breakers, ``min_tokens``' end-of-sequence tokens).
        generators, history: the rows' generators and history as they are (instead of
            ``seeds`` and ``prompt_ids``), for :meth:`merge`.

    >>> s = BatchSampler([SamplingParams(temperature=0), SamplingParams(top_k=2, seed=1)],
    ...                  vocab_size=4)
    >>> logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]] * 2)
    >>> s.choose(s.process(logits)).tolist()[0]
    1
    """

    def __init__(
        self,
        params: Sequence[SamplingParams],
        *,
        vocab_size: int,
        device: torch.device | str = "cpu",
        seeds: Sequence[int | None] | None = None,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        vocab: Vocab | None = None,
        generators: Sequence[torch.Generator] | None = None,
        history: History | None = None,
    ) -> None:
        self.params = list(params)
        self.vocab_size = int(vocab_size)
        self.device = torch.device(device)
        self.vocab = vocab
        b = len(self.params)
        if seeds is not None and len(seeds) != b:
            raise ValueError(f"got {len(seeds)} seeds for {b} rows: give one per row")
        if prompt_ids is not None and len(prompt_ids) != b:
            raise ValueError(f"got {len(prompt_ids)} prompts for {b} rows: give one per row")
        self.generators = list(generators) if generators is not None else [
            _generator(self.device, p.seed if seeds is None or seeds[i] is None else seeds[i])
            for i, p in enumerate(self.params)
        ]
        #: every row's tokens so far; ``slots[i]`` is live row ``i``'s row in it
        self.history = history if history is not None else History(
            prompt_ids or [[] for _ in range(b)], self.vocab_size, self.device)
        self.slots = list(range(b))
        self._last: Tensor | None = None
        self._shown: Tensor | None = None
        # (values, ids) of each row's candidates when the last ``process`` ran on them; lets
        # ``choose`` draw from k tokens instead of V.
        self._candidates: tuple[Tensor, Tensor] | None = None
        # Rows that share a chain order run together; nearly always that is one group. Chains
        # are built here, once; dropping rows selects from them.
        orders: dict[tuple[str, ...], list[int]] = {}
        for row, p in enumerate(self.params):
            orders.setdefault(p.resolved_order, []).append(row)
        self.groups = [_Group(rows, self.chain(rows)) for rows in orders.values()]
        for group in self.groups:
            group.compact_at = _compact_after(group.stages, self.vocab_size)
        self._index_groups()

    def _index_groups(self) -> None:
        whole = len(self.groups) == 1
        for group in self.groups:
            group.index = None if whole else torch.tensor(group.rows, device=self.device)
        self.greedy = torch.tensor([p.is_greedy for p in self.params], device=self.device,
                                   dtype=torch.bool)
        self._draw = [not p.is_greedy for p in self.params]
        self._stateful = any(hasattr(s, "accept") for g in self.groups for s in g.stages)

    @classmethod
    def merge(cls, parts: Sequence[BatchSampler]) -> BatchSampler | None:
        """One sampler for the rows of ``parts``, in order, each row going on exactly as it
        would in its own part: its generator and its history carry over and its chain is
        built from its params again (rows are independent in a chain, so the company does
        not change a row's numbers). None when a part's chain holds per-row state a rebuild
        would lose (mirostat's mu, adaptive-p's average), or the parts disagree on ``V`` or
        the device.
        """
        first = parts[0]
        if any(p._stateful for p in parts) or any(
                p.vocab_size != first.vocab_size or p.device != first.device for p in parts):
            return None
        rows = [(p, slot) for p in parts for slot in p.slots]
        history = History([p.history.ids[slot] for p, slot in rows], first.vocab_size,
                          first.device)
        history.n_prompt = [p.history.n_prompt[slot] for p, slot in rows]
        return cls([q for p in parts for q in p.params], vocab_size=first.vocab_size,
                   device=first.device, vocab=first.vocab,
                   generators=[g for p in parts for g in p.generators], history=history)

    @property
    def counts(self) -> Tensor:
        """``(B, V)`` how often each token occurs in each live row's history."""
        return HistoryView(self.history, self.slots).counts

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        chains = sorted({" -> ".join((*p.chain, "greedy" if p.is_greedy else "draw"))
                         for p in self.params})
        return f"BatchSampler(rows={len(self)}, chains={chains})"

    def chain(self, rows: Sequence[int]) -> list[Sampler]:
        """The samplers that rows sharing one order run, in that order, with per-row tensors."""
        ctx = BuildContext(
            params=[self.params[r] for r in rows], vocab_size=self.vocab_size,
            device=self.device, history=HistoryView(self.history, [self.slots[r] for r in rows]),
            generators=[self.generators[r] for r in rows], vocab=self.vocab)
        stages: list[Sampler] = []
        for name in ctx.params[0].resolved_order:
            stages.extend(build_stage(BY_NAME[name], ctx))
        return stages

    def process(self, logits: Tensor) -> Tensor:
        """Run every row's chain.

        Args:
            logits: ``(B, V)`` raw scores (any float dtype; computed in float32).

        Returns:
            ``(B, V)`` float32 processed logits; removed tokens are ``-inf``. A sampler that
            chooses the token itself (adaptive-p) leaves only that token: the distribution it
            drew from is :attr:`distribution`.
        """
        x = _check_logits(logits, len(self), self.vocab_size).to(self.device)
        self._candidates = None
        if not self.groups:  # every row finished
            self._last = self._shown = x.clone()
            return self._last
        if len(self.groups) == 1:
            out, shown = self._run(x, self.groups[0])
        else:
            out, shown = torch.empty_like(x), torch.empty_like(x)
            for group in self.groups:
                assert group.index is not None
                out[group.index], shown[group.index] = self._run(x[group.index], group)
        self._last, self._shown = out, shown
        return out

    @property
    def distribution(self) -> Tensor:
        """``(B, V)`` the logits each row's token was drawn from at the last ``process``: the
        processed logits, or, where a sampler chose the token itself (adaptive-p), the
        distribution it drew from."""
        if self._shown is None:
            raise ValueError("no step processed yet: call process first")
        return self._shown

    def _run(self, x: Tensor, group: _Group) -> tuple[Tensor, Tensor]:
        at = group.compact_at
        if at is None:
            out, shown, _ = _run_stages(group.stages, x, x.shape[-1])
            return out, shown
        x, _, _ = _run_stages(group.stages[:at], x, x.shape[-1])
        return self._run_on_candidates(x, group, at)

    def _run_on_candidates(self, x: Tensor, group: _Group, at: int) -> tuple[Tensor, Tensor]:
        """Top-k and every later stage on each row's k candidates only, scattered back.

        What running them on all ``V`` tokens gives (the same survivors; values within
        float32 rounding): the candidates are the k best plus anything tied with the k-th (what
        top-k keeps), kept in token-id order so ties and "first maximum" rules see the same
        order; the later stages are all ``local``.

        A row's candidates are its own (:meth:`TopK.candidates_and_widths`: its k, its ties),
        never widened for a neighbour with a larger k: the later stages' sums then run over the
        same values alone and in any batch, so a row's processed logits are the same to the bit
        (a neighbour's wider set would add masked columns, and float32 sums over another length
        round differently). Rows with the same width run together; a row whose k is not small
        next to ``V`` runs on all ``V`` tokens, as it would alone.
        """
        stages = group.stages[at:]
        v = x.shape[-1]
        widths, taken = stages[0].candidates_and_widths(x)  # type: ignore[attr-defined]
        buckets: dict[int, list[int]] = {}
        for row, width in enumerate(widths):
            buckets.setdefault(width if width * _COMPACT_SHARE <= v else v, []).append(row)
        if len(buckets) == 1:
            (width, _), = buckets.items()
            out, shown, candidates = _run_stages(
                stages, x, width, taken if taken[0].shape[-1] == width else None)
            if group.index is None:
                self._candidates = candidates  # choose draws from these k
            return out, shown
        out, shown = torch.empty_like(x), torch.empty_like(x)  # every row is in one bucket
        for width, rows in buckets.items():
            index = torch.tensor(rows, dtype=torch.long, device=x.device)
            selected = [s.select(index) for s in stages]
            out[index], shown[index], _ = _run_stages(selected, x[index], width)
            for stage, part in zip(stages, selected, strict=True):
                _write_back(stage, part, index)
        return out, shown

    def choose(self, processed: Tensor) -> Tensor:
        """``(B,)`` int64 tokens: greedy rows take the argmax, others one seeded draw each.

        Pass the tensor ``process`` returned, unchanged: when the chain ended on top-k
        candidates the draw searches those (the same token as searching all ``V``).
        """
        u = uniforms(self.generators, self._draw, processed.device)
        greedy = self.greedy.to(processed.device)
        if self._candidates is not None and processed is self._last:
            # The chain ended on k candidates per row (in id order): search those, not V.
            values, ids = self._candidates
            at = torch.where(greedy, values.argmax(dim=-1), inverse_cdf(values, u))  # (B,)
            return ids.gather(-1, at[:, None])[:, 0]
        if not any(self._draw):
            return greedy_choice(processed)
        drawn = inverse_cdf(processed, u)
        if all(self._draw):
            return drawn
        return torch.where(greedy, greedy_choice(processed), drawn)

    def accept(self, tokens: Tensor) -> None:
        """Append ``(B,)`` chosen tokens to the history and hand them to the stateful stages
        (with their log-probabilities under the last ``process``'s distribution)."""
        t = tokens.to(device=self.device, dtype=torch.int64).reshape(-1)
        if t.numel() != len(self):
            raise ValueError(f"accept got {t.numel()} tokens for {len(self)} rows")
        ids = t.tolist()  # one copy off the device, checked and kept in the history
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            raise ValueError(f"accept: token ids must be in [0, {self.vocab_size}), got {ids}")
        if self._stateful:
            if self._last is not None:
                lp = torch.log_softmax(self._last, dim=-1).gather(-1, t[:, None])[:, 0]
            else:  # accepted without a process (a forced token): nothing to learn from
                lp = torch.full((len(self),), math.nan, device=self.device)
            for group in self.groups:
                rows = t if group.index is None else t[group.index]
                lps = lp if group.index is None else lp[group.index]
                for stage in group.stages:
                    accept = getattr(stage, "accept", None)
                    if accept is not None:
                        accept(rows, lps)
        self.history.append(self.slots, ids)
        self._last = None

    def reset(self) -> None:
        """Put every stateful stage back to its starting state (the history stays)."""
        for group in self.groups:
            for stage in group.stages:
                reset = getattr(stage, "reset", None)
                if reset is not None:
                    reset()

    def select(self, rows: Tensor | Sequence[int]) -> None:
        """Keep only these rows (int64 indices), in this order."""
        keep = [int(r) for r in (rows.tolist() if isinstance(rows, Tensor) else rows)]
        new_position = {old: new for new, old in enumerate(keep)}
        self.params = [self.params[r] for r in keep]
        self.generators = [self.generators[r] for r in keep]
        self.slots = [self.slots[r] for r in keep]
        groups = []
        for group in self.groups:
            local = [i for i, r in enumerate(group.rows) if r in new_position]
            if not local:
                continue
            index = torch.tensor(local, dtype=torch.int64, device=self.device)
            group.stages = [stage.select(index) for stage in group.stages]
            group.rows = [new_position[group.rows[i]] for i in local]
            groups.append(group)
        if len(groups) > 1 and sorted(r for g in groups for r in g.rows) != list(range(len(keep))):
            raise AssertionError("rows lost while selecting")  # pragma: no cover
        # Rows kept in a new order: each group's rows must follow the batch's order.
        for group in groups:
            order = sorted(range(len(group.rows)), key=lambda i: group.rows[i])
            if order != list(range(len(order))):
                index = torch.tensor(order, dtype=torch.int64, device=self.device)
                group.stages = [stage.select(index) for stage in group.stages]
                group.rows = [group.rows[i] for i in order]
        self.groups = groups
        index = torch.tensor(keep, dtype=torch.int64, device=self.device)
        self._last = None if self._last is None else self._last[index]
        self._shown = None if self._shown is None else self._shown[index]
        self._candidates = None
        self._index_groups()


@dataclass
class _Group:
    """Rows that share one order: their positions in the batch, the chain, its index."""

    rows: list[int]
    stages: list[Sampler]
    compact_at: int | None = None  # the top-k stage from which the chain runs on candidates
    index: Tensor | None = None  # ``rows`` as a tensor; None when the group is the whole batch


def _compact_after(stages: list[Sampler], vocab_size: int) -> int | None:
    """Index of a top-k stage after which the chain may run on each row's candidates alone:
    every later stage is ``local``. Which rows do is decided per row, at each step, by the
    row's own k (:meth:`BatchSampler._run_on_candidates`); a k that keeps every token
    (``>= V``) in every row leaves nothing to compact."""
    for n, stage in enumerate(stages):
        if hasattr(stage, "candidates"):
            later_local = all(getattr(s, "local", False) for s in stages[n + 1:])
            k: Any = getattr(stage, "k", None)
            if later_local and k is not None and int(k.min()) * _COMPACT_SHARE <= vocab_size:
                return n
            return None
    return None


def _run_stages(stages: list[Sampler], x: Tensor, width: int,
                taken: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """``stages`` on ``x`` ``(b, V)``: ``(out, shown, candidates)``, ``out`` the processed
    logits and ``shown`` what the token is drawn from (``out`` unless a stage reshaped it),
    both ``(b, V)``. When ``width`` is below ``V`` the stages run on each row's ``width``
    best tokens (``taken``: those, already gathered) and ``candidates`` holds the processed
    ``(values, ids)`` there; else it is ``None``."""
    full, ids = x, None
    if width < x.shape[-1]:
        x, ids = taken if taken is not None else stages[0].candidates(  # type: ignore[attr-defined]
            x, width)
    shown = None
    for stage in stages:
        reshape = getattr(stage, "reshape", None)
        if reshape is not None:  # it draws the token itself: keep what it drew from
            shown = reshape(x)
        x = stage.apply(x)
    if ids is None:
        return x, x if shown is None else shown, None
    out = torch.full_like(full, -math.inf).scatter_(-1, ids, x)
    if shown is not None:
        shown = torch.full_like(full, -math.inf).scatter_(-1, ids, shown)
    return out, out if shown is None else shown, (x, ids)


def _write_back(stage: Sampler, part: Sampler, index: Tensor) -> None:
    """What ``part`` (``stage.select(index)``) learned in ``apply`` (adaptive-p's pending
    draw), put back into ``stage``'s rows ``index`` for its ``accept``."""
    if not hasattr(stage, "accept"):
        return
    for attr in getattr(stage, "row_attrs", ()):
        old, new = getattr(stage, attr), getattr(part, attr)
        if isinstance(old, Tensor) and old.ndim >= 1 and isinstance(new, Tensor):
            merged = old.clone()
            merged[index.to(old.device)] = new.to(device=old.device, dtype=old.dtype)
            setattr(stage, attr, merged)


def _generator(device: torch.device, seed: int | None) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def _check_logits(logits: Tensor, rows: int, vocab_size: int) -> Tensor:
    if logits.ndim != 2 or logits.shape[0] != rows or logits.shape[1] != vocab_size:
        raise ValueError(f"logits must be ({rows}, {vocab_size}), got {tuple(logits.shape)}")
    x = logits.float() if logits.dtype != torch.float32 else logits
    # One pass: a row's maximum is NaN if any entry is NaN, +inf if any is +inf, and -inf
    # only when the whole row is. Checked in Python on the (B,) maxima: one copy off the
    # device instead of a few small tensor ops and two syncs (every step pays this).
    top = x.amax(dim=-1).tolist()  # (B,)
    if not all(t < math.inf for t in top):  # False for NaN and +inf
        raise ValueError("logits must be finite or -inf (a masked token); got NaN or +inf")
    if -math.inf in top:
        raise ValueError("every logit in a row is -inf: at least one token must stay possible")
    return x


def probabilities(logits: Any, params: SamplingParams | Sequence[SamplingParams] | None = None,
                  *, history: Sequence[int] | Sequence[Sequence[int]] | None = None,
                  vocab: Vocab | None = None) -> Tensor:
    """The final distribution after the chain: removed tokens have probability 0.

    Args:
        logits: ``(V,)`` or ``(B, V)`` scores (tensor, numpy array or list).
        params: one ``SamplingParams`` for every row, or one per row; ``None`` = defaults.
        history: token ids seen so far (prompt + generated) for the penalties: one list for
            every row, or one list per row.
        vocab: the tokenizer, for samplers that read text (``bad_words``, DRY).

    Returns:
        float32 tensor shaped like ``logits``; each row sums to 1. For greedy rows, one-hot.
        With adaptive-p, the distribution it draws from (:attr:`BatchSampler.distribution`).

    >>> probabilities([2.0, 4.0, 3.0], SamplingParams(top_k=2)).tolist()
    [0.0, 0.7310585975646973, 0.2689414322376251]
    """
    x = torch.as_tensor(logits, dtype=torch.float32)
    one = x.ndim == 1
    x2 = x.reshape(1, -1) if one else x
    if x2.ndim != 2:
        raise ValueError(f"logits must be (V,) or (B, V), got shape {tuple(x.shape)}")
    b, v = x2.shape
    if params is None or isinstance(params, SamplingParams):
        rows = [params or SamplingParams()] * b
    else:
        rows = list(params)
        if len(rows) != b:
            raise ValueError(f"got {len(rows)} SamplingParams for {b} rows of logits: give one, "
                             f"or one per row")
    prompts: list[list[int]] | None = None
    if history is not None:
        hist: list[Any] = list(history)
        nested = bool(hist) and not isinstance(hist[0], int)
        prompts = [list(h) for h in hist] if nested else [[int(t) for t in hist]] * b
    sampler = BatchSampler(rows, vocab_size=v, device=x2.device, prompt_ids=prompts,
                           vocab=vocab)
    sampler.process(x2)
    out = torch.softmax(sampler.distribution, dim=-1)
    return out.reshape(-1) if one else out
