"""From registry entries to sampler objects: one stage for the rows of a batch that share an
order, with per-row parameters (rows where the sampler is off get its neutral value).

Most samplers are built the same way, one column per knob (``SamplerSpec.impl``); the few whose
construction is different name a builder (``SamplerSpec.build``), a function here or in their
own module.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tempscope.sampling.base import HistoryView, Sampler

if TYPE_CHECKING:
    from tempscope.sampling.params import SamplingParams
    from tempscope.sampling.registry import Knob, SamplerSpec
    from tempscope.sampling.vocab import Vocab


@dataclass
class BuildContext:
    """What a stage is built from: its rows' params and the batch's shared state."""

    params: list[SamplingParams]
    vocab_size: int
    device: torch.device
    history: HistoryView
    generators: list[torch.Generator]
    vocab: Vocab | None = None

    def floats(self, values: Sequence[float]) -> Tensor:
        """A ``(B,)`` float64 column (float64 so a tiny temperature does not round to 0)."""
        return torch.tensor(list(values), device=self.device, dtype=torch.float64)

    def ints(self, values: Sequence[int]) -> Tensor:
        return torch.tensor(list(values), device=self.device, dtype=torch.int64)

    def min_keep(self) -> Tensor:
        """``(B,)`` each row's ``min_keep`` (1 when unset)."""
        return self.ints([p.min_keep or 1 for p in self.params])

    def penalty_last_n(self) -> Tensor:
        """``(B,)`` each row's penalty window (-1, the whole history, when unset)."""
        return self.ints([-1 if p.penalty_last_n is None else p.penalty_last_n
                          for p in self.params])


def resolve(path: str) -> Any:
    """``"module:attr"`` under ``tempscope.sampling`` -> the object."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(f"tempscope.sampling.{module}"), attr)


def build_stage(spec: SamplerSpec, ctx: BuildContext) -> list[Sampler]:
    """The stage(s) ``spec`` adds for ``ctx``'s rows; ``[]`` when no row switches it on."""
    if spec.build is not None:
        built: list[Sampler] = resolve(spec.build)(spec, ctx)
        return built
    on = [spec.on(p) for p in ctx.params]
    if not any(on) or spec.impl is None:
        return []
    kwargs = {knob.arg or knob.name: _column(knob, ctx, on) for knob in spec.knobs}
    for need in spec.needs:
        kwargs[need] = _context(need, spec, ctx, on)
    sampler: Sampler = resolve(spec.impl)(**kwargs)
    return [sampler]


def _column(knob: Knob, ctx: BuildContext, on: list[bool]) -> Any:
    values = [p.value(knob.name) if o else knob.neutral
              for p, o in zip(ctx.params, on, strict=True)]
    if knob.kind == "float":
        return ctx.floats(values)
    if knob.kind == "int":
        return ctx.ints(values)
    return [list(v or ()) for v in values]


def _context(need: str, spec: SamplerSpec, ctx: BuildContext, on: list[bool]) -> Any:
    if need == "history":
        return ctx.history
    if need == "generators":
        # Only rows that use the sampler draw from their generator.
        return [g if o else None for g, o in zip(ctx.generators, on, strict=True)]
    if need == "vocab_size":
        return ctx.vocab_size
    if need == "min_keep":
        return ctx.min_keep()
    if need == "penalty_last_n":
        return ctx.penalty_last_n()
    if need == "vocab":
        if ctx.vocab is None:
            raise ValueError(f"{spec.knobs[0].name} needs the model's tokenizer: use it through "
                             "a model (generate, next, the server), not on bare logits")
        return ctx.vocab
    raise ValueError(f"sampler {spec.name!r} needs unknown context {need!r}")


def build_temperature(spec: SamplerSpec, ctx: BuildContext) -> list[Sampler]:
    """Fixed temperature, llama.cpp's dynatemp or EDT, per row. ``T = 0`` is greedy: such a row
    keeps its argmax and its dynamic temperature (if any) is not used."""
    from tempscope.sampling.temperature import (
        DynamicTemperature,
        EntropyTemperature,
        Temperature,
    )

    ps = ctx.params
    base = [1.0 if p.temperature is None else p.temperature for p in ps]
    dyn = [p.dynatemp_range is not None and t != 0 for p, t in zip(ps, base, strict=True)]
    edt = [p.edt_theta is not None and t != 0 for p, t in zip(ps, base, strict=True)]
    fixed = [1.0 if d or e else t for t, d, e in zip(base, dyn, edt, strict=True)]
    out: list[Sampler] = []
    if any(t != 1 for t in fixed):
        out.append(Temperature(ctx.floats(fixed)))
    if any(dyn):
        out.append(DynamicTemperature(
            ctx.floats([t if d else 1.0 for t, d in zip(base, dyn, strict=True)]),
            ctx.floats([p.dynatemp_range if d else 0.0 for p, d in zip(ps, dyn, strict=True)]),
            ctx.floats([p.secondary("dynatemp_exponent") if d else 1.0
                        for p, d in zip(ps, dyn, strict=True)]),
        ))
    if any(edt):
        out.append(EntropyTemperature(
            ctx.floats([t if e else 1.0 for t, e in zip(base, edt, strict=True)]),
            ctx.floats([p.edt_theta if e else 0.0 for p, e in zip(ps, edt, strict=True)]),
            ctx.floats([p.secondary("edt_n") if e else 0.8 for p, e in zip(ps, edt, strict=True)]),
        ))
    return out


def build_top_k(spec: SamplerSpec, ctx: BuildContext) -> list[Sampler]:
    """Top-k with k clamped to the vocabulary (rows without top-k keep all ``V``)."""
    from tempscope.sampling.truncation import TopK

    ks = [p.top_k for p in ctx.params]
    if all(k is None for k in ks):
        return []
    v = ctx.vocab_size
    return [TopK(ctx.ints([v if k is None else min(int(k), v) for k in ks]),
                 min_keep=ctx.min_keep())]


def build_mirostat(spec: SamplerSpec, ctx: BuildContext) -> list[Sampler]:
    """Mirostat v1 and/or v2 (the ``mirostat`` knob per row; 2 when only tau is set). Rows that
    use the other version, or none, have ``mu = inf`` and pass through untouched."""
    from tempscope.sampling.mirostat import MirostatV1, MirostatV2

    out: list[Sampler] = []
    for version, cls in ((1, MirostatV1), (2, MirostatV2)):
        on = [spec.on(p) and p.value("mirostat") == version for p in ctx.params]
        if not any(on):
            continue
        tau = [p.secondary("mirostat_tau") if o else 1.0
               for p, o in zip(ctx.params, on, strict=True)]
        eta = [p.secondary("mirostat_eta") if o else 1.0
               for p, o in zip(ctx.params, on, strict=True)]
        mu = ctx.floats([2 * t if o else math.inf for t, o in zip(tau, on, strict=True)])
        kwargs: dict[str, Any] = {"vocab_size": ctx.vocab_size} if version == 1 else {}
        out.append(cls(ctx.floats(tau), ctx.floats(eta), mu=mu.float(), **kwargs))
    return out
