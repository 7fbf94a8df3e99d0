"""``BatchSampler``: per-row chains, history and seeds for a batch of B rows; ``probabilities``.

Pipeline per step (vLLM style): ``process`` runs each row's chain (the stages in its order,
each a tensor op over the rows that share that order, with per-row parameter tensors; rows
with a sampler off get its neutral value), ``choose`` takes greedy rows' argmax (a mask) and
draws the others with one uniform from each row's own generator, ``accept`` appends the tokens
to the history and updates mirostat. Rows with ``temperature = 0`` are greedy: only the logit
bias and penalties touch them, then the temperature stage keeps their argmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tempscope.sampling.base import Sampler
from tempscope.sampling.choosers import inverse_cdf, uniforms
from tempscope.sampling.mirostat import MirostatV2
from tempscope.sampling.params import SamplingParams
from tempscope.sampling.penalties import (
    FrequencyPenalty,
    LogitBias,
    PresencePenalty,
    RepetitionPenalty,
)
from tempscope.sampling.temperature import DynamicTemperature, EntropyTemperature, Temperature
from tempscope.sampling.truncation import Epsilon, Eta, MinP, TopK, TopNSigma, TopP, Typical
from tempscope.sampling.xtc import XTC

_PENALTIES = ("repetition_penalty", "frequency_penalty", "presence_penalty")
# Stages whose result on a row depends only on its finite logits and leaves -inf tokens -inf,
# so they give the same answer on the top-k candidates alone (penalties and the logit bias
# look tokens up by id and are not among them).
_LOCAL = (Temperature, DynamicTemperature, EntropyTemperature, TopK, TopP, MinP, Typical,
          Epsilon, Eta, TopNSigma, XTC, MirostatV2)
# Run the stages after top-k on the candidates when k is at most this share of the vocabulary.
_COMPACT_SHARE = 4
# filter stage -> (class, the value that makes it a no-op for a row)
_FILTERS: dict[str, tuple[Any, float]] = {
    "top_k": (TopK, math.inf),
    "top_p": (TopP, 1.0),
    "min_p": (MinP, 0.0),
    "typical_p": (Typical, 1.0),
    "epsilon": (Epsilon, 0.0),
    "eta": (Eta, 0.0),
    "top_n_sigma": (TopNSigma, math.inf),
}


class BatchSampler:
    """Sampling state for a batch: one ``SamplingParams``, generator and history per row.

    Args:
        params: one ``SamplingParams`` per row.
        vocab_size: ``V``, the size of the logits' last axis.
        device: where the logits live.
        seeds: per-row seeds overriding ``params[i].seed`` (``None`` = keep the params').
        prompt_ids: per-row prompt token ids, the starting history for the penalties.

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
    ) -> None:
        self.params = list(params)
        self.vocab_size = int(vocab_size)
        self.device = torch.device(device)
        b = len(self.params)
        if seeds is not None and len(seeds) != b:
            raise ValueError(f"got {len(seeds)} seeds for {b} rows: give one per row")
        if prompt_ids is not None and len(prompt_ids) != b:
            raise ValueError(f"got {len(prompt_ids)} prompts for {b} rows: give one per row")
        self.generators = [
            _generator(self.device, p.seed if seeds is None or seeds[i] is None else seeds[i])
            for i, p in enumerate(self.params)
        ]
        self.counts: Tensor | None = None  # (B, V) history counts, only when a row penalises
        if any(getattr(p, n) is not None for p in self.params for n in _PENALTIES):
            self.counts = torch.zeros(b, self.vocab_size, device=self.device)
            for row, ids in enumerate(prompt_ids or []):
                self._count(row, ids)
        self.bias: Tensor | None = None
        if any(p.logit_bias for p in self.params):
            self.bias = LogitBias.from_dicts(
                [p.logit_bias for p in self.params], self.vocab_size, self.device
            ).bias
        miro = [p.mirostat_tau is not None and not p.is_greedy for p in self.params]
        self.mu = torch.tensor(  # (B,) mirostat state; inf = off
            [2 * p.mirostat_tau if on and p.mirostat_tau else math.inf
             for p, on in zip(self.params, miro, strict=True)],
            device=self.device,
        )
        self._last: Tensor | None = None
        # (values, ids) of each row's candidates when the last ``process`` ran on them; lets
        # ``choose`` draw from k tokens instead of V.
        self._candidates: tuple[Tensor, Tensor] | None = None
        self._regroup()

    def _count(self, row: int, ids: Sequence[int]) -> None:
        assert self.counts is not None
        t = torch.as_tensor(list(ids), dtype=torch.int64, device=self.device)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {t.tolist()}")
        self.counts[row].index_add_(0, t, torch.ones(t.numel(), device=self.device))

    def _regroup(self) -> None:
        # Rows that share a chain order run together; nearly always that is one group. Chains
        # are built here, once per batch shape, not on every step.
        groups: dict[tuple[str, ...], list[int]] = {}
        for row, p in enumerate(self.params):
            groups.setdefault(p.resolved_order, []).append(row)
        whole = len(groups) == 1
        self.groups = [
            _Group(rows, None if whole else torch.tensor(rows, device=self.device), stages,
                   _compact_after(stages, self.vocab_size))
            for rows in groups.values()
            for stages in [self.chain(rows)]
        ]
        self.greedy = torch.tensor([p.is_greedy for p in self.params], device=self.device,
                                   dtype=torch.bool)
        self._draw = [not p.is_greedy for p in self.params]
        self._tau = torch.tensor([p.mirostat_tau or 0.0 for p in self.params],
                                 device=self.device)
        self._eta = torch.tensor([p.secondary("mirostat_eta") if p.mirostat_tau else 0.0
                                  for p in self.params], device=self.device)

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        chains = sorted({" -> ".join((*p.chain, "greedy" if p.is_greedy else "draw"))
                         for p in self.params})
        return f"BatchSampler(rows={len(self)}, chains={chains})"

    def chain(self, rows: Sequence[int]) -> list[Sampler]:
        """The samplers that rows sharing one order run, in that order, with per-row tensors."""
        ps = [self.params[r] for r in rows]
        index = torch.tensor(list(rows), device=self.device)
        stages: list[Sampler] = []
        for name in ps[0].resolved_order:
            stages.extend(self._stage(name, ps, rows, index))
        return stages

    def _stage(self, name: str, ps: list[SamplingParams], rows: Sequence[int],
               index: Tensor) -> list[Sampler]:
        zero_t = [p.temperature == 0 for p in ps]
        dev = self.device

        def col(values: Sequence[float]) -> Tensor:
            # float64 so a tiny temperature does not round to 0; samplers cast the rest.
            return torch.tensor(list(values), device=dev, dtype=torch.float64)

        if name == "logit_bias":
            on = [bool(p.logit_bias) for p in ps]
            return [LogitBias(self.bias[index])] if any(on) and self.bias is not None else []
        if name in _PENALTIES:
            vals = [getattr(p, name) for p in ps]
            if all(v is None for v in vals) or self.counts is None:
                return []
            neutral = 1.0 if name == "repetition_penalty" else 0.0
            cls: Any = {"repetition_penalty": RepetitionPenalty,
                        "frequency_penalty": FrequencyPenalty,
                        "presence_penalty": PresencePenalty}[name]
            return [cls(col([neutral if v is None else v for v in vals]), self.counts[index])]
        if name in _FILTERS:
            cls, neutral = _FILTERS[name]
            vals = [None if z else getattr(p, name) for p, z in zip(ps, zero_t, strict=True)]
            if all(v is None for v in vals):
                return []
            if name == "top_k":
                k = [self.vocab_size if v is None else min(int(v), self.vocab_size) for v in vals]
                return [TopK(torch.tensor(k, device=dev))]
            return [cls(col([neutral if v is None else v for v in vals]))]
        if name == "temperature":
            return self._temperature(ps, zero_t, col)
        if name == "xtc":
            on = [p.xtc_threshold is not None and not z for p, z in zip(ps, zero_t, strict=True)]
            if not any(on):
                return []
            return [XTC(
                col([p.xtc_threshold if o and p.xtc_threshold is not None else 1.0
                     for p, o in zip(ps, on, strict=True)]),
                col([p.secondary("xtc_probability") if o else 0.0
                     for p, o in zip(ps, on, strict=True)]),
                [self.generators[r] if o else None for r, o in zip(rows, on, strict=True)],
            )]
        # mirostat
        mu = self.mu[index]
        if not bool(torch.isfinite(mu).any()):
            return []
        on = [p.mirostat_tau is not None for p in ps]
        return [MirostatV2(
            col([p.mirostat_tau if o and p.mirostat_tau else 1.0 for p, o in zip(ps, on,
                                                                              strict=True)]),
            col([p.secondary("mirostat_eta") if o else 1.0 for p, o in zip(ps, on, strict=True)]),
            mu=mu,
        )]

    def _temperature(self, ps: list[SamplingParams], zero_t: list[bool],
                     col: Any) -> list[Sampler]:
        base = [1.0 if p.temperature is None else p.temperature for p in ps]
        dyn = [p.dynatemp_range is not None and not z for p, z in zip(ps, zero_t, strict=True)]
        edt = [p.edt_theta is not None and not z for p, z in zip(ps, zero_t, strict=True)]
        fixed = [1.0 if d or e else t for t, d, e in zip(base, dyn, edt, strict=True)]
        out: list[Sampler] = []
        if any(t != 1 for t in fixed):
            out.append(Temperature(col(fixed)))
        if any(dyn):
            out.append(DynamicTemperature(
                col([t if d else 1.0 for t, d in zip(base, dyn, strict=True)]),
                col([p.dynatemp_range if d else 0.0 for p, d in zip(ps, dyn, strict=True)]),
                col([p.secondary("dynatemp_exponent") if d else 1.0
                     for p, d in zip(ps, dyn, strict=True)]),
            ))
        if any(edt):
            out.append(EntropyTemperature(
                col([t if e else 1.0 for t, e in zip(base, edt, strict=True)]),
                col([p.edt_theta if e else 0.0 for p, e in zip(ps, edt, strict=True)]),
                col([p.secondary("edt_n") if e else 0.8 for p, e in zip(ps, edt, strict=True)]),
            ))
        return out

    def process(self, logits: Tensor) -> Tensor:
        """Run every row's chain.

        Args:
            logits: ``(B, V)`` raw scores (any float dtype; computed in float32).

        Returns:
            ``(B, V)`` float32 processed logits; removed tokens are ``-inf``.
        """
        x = _check_logits(logits, len(self), self.vocab_size).to(self.device)
        self._candidates = None
        if not self.groups:  # every row finished
            return x.clone()
        if len(self.groups) == 1:
            out = self._run(x, self.groups[0])
        else:
            out = torch.empty_like(x)
            for group in self.groups:
                assert group.index is not None
                out[group.index] = self._run(x[group.index], group)
        self._last = out
        return out

    def _run(self, x: Tensor, group: _Group) -> Tensor:
        for n, stage in enumerate(group.stages):
            # The history and mirostat state change every step: hand the stage its rows' view.
            if isinstance(stage, RepetitionPenalty | FrequencyPenalty | PresencePenalty):
                assert self.counts is not None
                stage.counts = self.counts if group.index is None else self.counts[group.index]
            elif isinstance(stage, MirostatV2):
                stage.mu = self.mu if group.index is None else self.mu[group.index]
            if n == group.compact_at:
                return self._run_on_candidates(x, group, n)
            x = stage.apply(x)
        return x

    def _run_on_candidates(self, x: Tensor, group: _Group, at: int) -> Tensor:
        """Top-k and every later stage on each row's k candidates only, scattered back.

        The same answer as running them on all ``V`` tokens: the candidates are the k best
        plus anything tied with the k-th (what top-k keeps), kept in token-id order so ties
        and "first maximum" rules see the same order; the later stages are all ``_LOCAL``.
        """
        top_k = group.stages[at]
        assert isinstance(top_k, TopK)
        values, ids = top_k.candidates(x)  # (B, m), (B, m) in id order
        for stage in group.stages[at:]:
            if isinstance(stage, MirostatV2):
                stage.mu = self.mu if group.index is None else self.mu[group.index]
            values = stage.apply(values)
        if group.index is None:
            self._candidates = (values, ids)
        return torch.full_like(x, -math.inf).scatter_(-1, ids, values)  # (B, V)

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
        drawn = inverse_cdf(processed, u)
        return torch.where(greedy, processed.argmax(dim=-1), drawn)

    def accept(self, tokens: Tensor) -> None:
        """Append ``(B,)`` chosen tokens to each row's history and update mirostat's ``mu``."""
        t = tokens.to(device=self.device, dtype=torch.int64).reshape(-1)
        if t.numel() != len(self):
            raise ValueError(f"accept got {t.numel()} tokens for {len(self)} rows")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
            raise ValueError(f"accept: token ids must be in [0, {self.vocab_size}), got "
                             f"{t.tolist()}")
        if self.counts is not None:
            rows = torch.arange(len(self), device=self.device)
            self.counts.index_put_((rows, t), torch.ones(len(self), device=self.device),
                                   accumulate=True)
        on = torch.isfinite(self.mu)
        if bool(on.any()) and self._last is not None:
            lp = torch.log_softmax(self._last, dim=-1).gather(-1, t[:, None]).squeeze(-1)
            new = self.mu - self._eta * (-lp / math.log(2) - self._tau)
            # A forced token the chain had removed (p = 0) would send mu to -inf: skip it.
            self.mu = torch.where(on & torch.isfinite(new), new, self.mu)

    def select(self, rows: Tensor | Sequence[int]) -> None:
        """Keep only these rows (int64 indices), in this order."""
        keep = [int(r) for r in (rows.tolist() if isinstance(rows, Tensor) else rows)]
        index = torch.tensor(keep, dtype=torch.int64, device=self.device)
        self.params = [self.params[r] for r in keep]
        self.generators = [self.generators[r] for r in keep]
        if self.counts is not None:
            self.counts = self.counts[index]
        if self.bias is not None:
            self.bias = self.bias[index]
        self.mu = self.mu[index]
        self._last = None if self._last is None else self._last[index]
        self._candidates = None
        self._regroup()


@dataclass
class _Group:
    """Rows that share one order: their indices (``None`` = the whole batch) and chain."""

    rows: list[int]
    index: Tensor | None
    stages: list[Sampler]
    compact_at: int | None = None  # the top-k stage from which the chain runs on candidates


def _compact_after(stages: list[Sampler], vocab_size: int) -> int | None:
    """Index of a top-k stage after which the chain may run on the k candidates alone: every
    row's k is small next to ``V`` and every later stage is ``_LOCAL``."""
    for n, stage in enumerate(stages):
        if isinstance(stage, TopK) and all(isinstance(s, _LOCAL) for s in stages[n + 1:]):
            if int(stage.k.max()) * _COMPACT_SHARE <= vocab_size:
                return n
            return None
    return None


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
    # only when the whole row is.
    top = x.amax(dim=-1)  # (B,)
    if not bool((top < math.inf).all()):  # False for NaN and +inf
        raise ValueError("logits must be finite or -inf (a masked token); got NaN or +inf")
    if bool((top == -math.inf).any()):
        raise ValueError("every logit in a row is -inf: at least one token must stay possible")
    return x


def probabilities(logits: Any, params: SamplingParams | Sequence[SamplingParams] | None = None,
                  *, history: Sequence[int] | Sequence[Sequence[int]] | None = None) -> Tensor:
    """The final distribution after the chain: removed tokens have probability 0.

    Args:
        logits: ``(V,)`` or ``(B, V)`` scores (tensor, numpy array or list).
        params: one ``SamplingParams`` for every row, or one per row; ``None`` = defaults.
        history: token ids seen so far (prompt + generated) for the penalties: one list for
            every row, or one list per row.

    Returns:
        float32 tensor shaped like ``logits``; each row sums to 1. For greedy rows, one-hot.

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
    sampler = BatchSampler(rows, vocab_size=v, device=x2.device, prompt_ids=prompts)
    out = torch.softmax(sampler.process(x2), dim=-1)
    return out.reshape(-1) if one else out
