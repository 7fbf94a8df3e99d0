"""Batched, KV-cached generation with per-row sampling parameters, seeds and stop rules.

All rows (prompts x parameter sets x samples) decode together in one decoding session of the
model's engine (:meth:`tempscope.engine.backend.Backend.open_session`): one backend call per
step for the whole batch, whichever engine runs it. Each row has its own sampler chain state
and its own seeded generator (see :class:`tempscope.sampling.BatchSampler`), so a seeded row
gives the same tokens alone or inside any batch. A row that finishes leaves the batch: its
cache rows are dropped, so it stops costing work. Text is detokenized incrementally, as vLLM
does: each step decodes a short window of the row's last tokens, never its whole text again.

One decoding step, for the ``b`` rows still running::

    logits (b, V) -> raw log-probs (T = 1, no samplers: what the model thinks)
                  -> BatchSampler.process -> processed logits (the row's chain) -> choose
                  -> StepEvent per row -> stop rules -> drop finished rows from the batch

Stop rules, checked after every token, first match wins: an end-of-sequence token (``eos``),
a stop string found in the decoded text, also across token boundaries (``stop``; the text is
cut before it, as in the OpenAI API), a newline when ``stop_at_newline`` (``stop``), the token
budget or the model's context length (``length``); ``is_cancelled(row)`` ends a row with
``cancelled``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend
    from tempscope.sampling import BatchSampler, SamplingParams

FinishReason = Literal["stop", "eos", "length", "cancelled"]

__all__ = [
    "Alternative",
    "FinishReason",
    "RowResult",
    "RowSpec",
    "Sample",
    "StepEvent",
    "derive_seed",
    "generate",
    "generate_rows",
]


@dataclass(frozen=True)
class Alternative:
    """A candidate token at one step: its raw (T = 1) and processed probability."""

    token_id: int
    text: str  # the token decoded alone, e.g. " mat"
    raw_prob: float  # softmax(logits) at T = 1, no samplers
    prob: float  # after the row's sampler chain (0 when the chain removed it)


@dataclass(frozen=True)
class StepEvent:
    """One generated token of one row: what was chosen, how likely it was, what else was likely.

    ``delta`` is the text this step adds to the row's output and that is safe to show now: it is
    held back while it could still be the start of a stop string or an incomplete UTF-8
    character, and released on a later step (streaming concatenates the deltas into ``text``).
    """

    row: int  # index into the rows given to generate_rows
    step: int  # 1-based
    token_id: int
    text: str  # the chosen token decoded alone
    raw_logprob: float  # log p(token) at T = 1 without samplers, nats
    logprob: float  # log p(token) under the processed distribution the token was drawn from
    entropy: float  # of the processed distribution, nats
    raw_entropy: float  # of the raw distribution at T = 1, nats
    top: list[Alternative]  # the likeliest tokens after processing, then by raw probability
    finished: FinishReason | None = None  # set on the step that ended the row
    delta: str = ""
    named: list[Alternative] = field(default_factory=list)  # params.logprob_token_ids, in order
    raw_rank: int = 0  # the token's rank in the raw distribution (1 = most likely; 0 = unknown)

    @property
    def raw_prob(self) -> float:
        return math.exp(self.raw_logprob)

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


@dataclass
class RowSpec:
    """What one row generates from and how; the server builds these per request."""

    prompt_ids: list[int]  # at least one token
    params: SamplingParams
    seed: int | None = None  # overrides params.seed; None = params.seed (None = unseeded)
    max_new_tokens: int = 64
    stop: list[str] = field(default_factory=list)  # strings that end the row (not included)
    stop_at_newline: bool = False
    ignore_eos: bool = False  # keep going past end-of-sequence tokens (benchmarks)


@dataclass
class _Stats:
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    steps: list[StepEvent]

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_logprob(self) -> float:
        """Mean raw log-probability (T = 1) of the chosen tokens: how plausible the model finds
        the text; NaN when no token was generated."""
        return _mean([s.raw_logprob for s in self.steps])

    @property
    def mean_entropy(self) -> float:
        """Mean raw entropy (T = 1) of the distributions the tokens came from, nats."""
        return _mean([s.raw_entropy for s in self.steps])


@dataclass
class RowResult(_Stats):
    """One finished row of :func:`generate_rows`.

    ``token_ids`` include an end-of-sequence token that ended the row; ``text`` never does, and
    stops before a matched stop string (``stop_text`` says which one, ``"\\n"`` for a newline).
    """

    row: int = 0
    stop_text: str | None = None


@dataclass
class Sample(_Stats):
    """One generated sample of :func:`generate`, with where it came from."""

    row: int = 0
    prompt_index: int = 0
    params_index: int = 0
    sample_index: int = 0
    prompt: str = ""
    params: SamplingParams | None = None
    seed: int | None = None
    stop_text: str | None = None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def derive_seed(seed: int | None, sample_index: int) -> int | None:
    """The seed of sample ``sample_index`` of a request seeded with ``seed``.

    Sample 0 uses ``seed`` itself (so ``n=1`` matches a plain seeded call); later samples get
    independent seeds mixed from ``(seed, index)``. Never depends on a row's batch position.

    >>> derive_seed(7, 0), derive_seed(None, 3)
    (7, None)
    """
    if seed is None or sample_index == 0:
        return seed
    state = np.random.SeedSequence([seed % 2**63, sample_index]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # 62 bits: fits a torch seed


class _Row:
    """Decoding state of one running row: its tokens, its text and the stop rules."""

    def __init__(self, index: int, spec: RowSpec, model: Backend, eos: set[int],
                 context_left: int) -> None:
        if not spec.prompt_ids:
            raise ValueError(f"row {index} has an empty prompt: give at least one token")
        if context_left <= 0:
            raise ValueError(
                f"row {index}: the prompt has {len(spec.prompt_ids)} tokens but the model reads "
                f"at most {len(spec.prompt_ids) + context_left}: shorten it"
            )
        if spec.max_new_tokens < 0:
            raise ValueError(
                f"max_new_tokens must be >= 0, got {spec.max_new_tokens} (row {index})"
            )
        outside = [t for t in spec.params.logprob_token_ids or () if t >= model.vocab_size]
        if outside:
            raise ValueError(f"logprob_token_ids: token id {outside[0]} is outside the "
                             f"vocabulary [0, {model.vocab_size})")
        self.index = index
        self.spec = spec
        self.model = model
        self.eos = set() if spec.ignore_eos else eos
        self.budget = min(spec.max_new_tokens, context_left)
        self.stops = [s for s in spec.stop if s] + (["\n"] if spec.stop_at_newline else [])
        # vLLM's min_tokens: stop strings are not looked for before this many tokens (the
        # sampler chain bans end-of-sequence tokens until then).
        self.min_tokens = spec.params.min_tokens or 0
        self.longest_stop = max((len(s) for s in self.stops), default=0)
        # Incremental detokenization over a window of ids: a few prompt tokens in front so
        # tokenizers that strip a leading space from the first token (SentencePiece) still
        # give the right text. `ids[prefix:read]` is already in `text`; what decoding
        # `ids[prefix:]` adds beyond it is new, once it ends in a whole character.
        self.ids = list(spec.prompt_ids[-4:])
        self.prefix, self.read = 0, len(self.ids)
        self.pending = ""  # decoded text not yet in `text`: it ends in a partial character
        self.token_ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.steps: list[StepEvent] = []
        self.finish: FinishReason | None = None if self.budget > 0 else "length"
        self.stop_text: str | None = None

    def add(self, token_id: int) -> str:
        """Append a token, apply the stop rules; returns the text safe to show now."""
        self.token_ids.append(token_id)
        if token_id in self.eos:
            self.finish = "eos"
            self.text += self.pending  # a partial character stays as U+FFFD, as decode gives
        else:
            before = len(self.text)
            self._detokenize(token_id)
            if len(self.token_ids) >= self.min_tokens:
                self._match_stops(max(0, before - self.longest_stop + 1))
        if self.finish is None and len(self.token_ids) >= self.budget:
            self.finish = "length"
            self.text += self.pending
        end = len(self.text) if self.finish else len(self.text) - self._held_back()
        delta = self.text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta

    def _detokenize(self, token_id: int) -> None:
        self.ids.append(token_id)
        known = self.model.decode(self.ids[self.prefix:self.read])
        full = self.model.decode(self.ids[self.prefix:])
        new = full[len(known):] if full.startswith(known) else full
        # An incomplete UTF-8 character: wait for its rest (a UTF-8 character is at most 4
        # bytes, so after a few tokens the bytes are invalid for good and shown as they are).
        if new.endswith("\ufffd") and len(self.ids) - self.read < 4:
            self.pending = new
            return
        self.text += new
        self.pending = ""
        self.prefix, self.read = self.read, len(self.ids)

    def _match_stops(self, start: int) -> None:
        hits = [(pos, s) for s in self.stops if (pos := self.text.find(s, start)) >= 0]
        if hits:
            pos, s = min(hits)
            self.text = self.text[:pos]
            self.finish = "stop"
            self.stop_text = s

    def _held_back(self) -> int:
        """Characters at the end of the text that must wait: a possible stop-string start or
        an incomplete UTF-8 character (decoded as U+FFFD)."""
        text = self.text
        held = len(text) - len(text.rstrip("\ufffd"))
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), held, -1):
                if text.endswith(s[:k]):
                    held = k
                    break
        return held

    def result(self) -> RowResult:
        assert self.finish is not None
        return RowResult(token_ids=self.token_ids, text=self.text, finish_reason=self.finish,
                         steps=self.steps, row=self.index, stop_text=self.stop_text)


@torch.inference_mode()
def generate_rows(
    model: Backend,
    rows: Sequence[RowSpec],
    *,
    on_step: Callable[[StepEvent], None] | None = None,
    is_cancelled: Callable[[int], bool] | None = None,
    top_alternatives: int = 5,
) -> list[RowResult]:
    """Decode all ``rows`` together, one model call per step; the low-level loop. An engine
    with a row limit (:attr:`Backend.max_rows`) gets the rows in groups of that many.

    Args:
        model: a loaded causal LM (:func:`tempscope.load_model`).
        rows: what each row generates; prompts may differ in length.
        on_step: called with every :class:`StepEvent`, in row order within a step.
        is_cancelled: asked before every step for each running row; ``True`` ends the row
            with ``finish_reason="cancelled"``.
        top_alternatives: how many candidate tokens each step event lists.

    Returns:
        One :class:`RowResult` per row, in the order given.
    """
    if top_alternatives < 0:
        raise ValueError(f"top_alternatives must be >= 0, got {top_alternatives}")
    eos = set(model.eos_token_ids)
    context = model.facts.context_length
    states = [_Row(i, r, model, eos, context - len(r.prompt_ids)) for i, r in enumerate(rows)]
    active = [s for s in states if s.finish is None]
    limit = model.max_rows or max(1, len(active))
    for start in range(0, len(active), limit):
        _decode(model, active[start:start + limit], top_alternatives, on_step, is_cancelled)
    return [s.result() for s in states]


def _decode(model: Backend, active: list[_Row], top_alternatives: int,
            on_step: Callable[[StepEvent], None] | None,
            is_cancelled: Callable[[int], bool] | None) -> None:
    """Run ``active`` rows to their end in one decoding session."""
    from tempscope.engine.backend import Cancelled
    from tempscope.sampling import BatchSampler

    sampler = BatchSampler(
        [s.spec.params for s in active], vocab_size=model.vocab_size, device=model.device,
        seeds=[s.spec.seed if s.spec.seed is not None else s.spec.params.seed for s in active],
        prompt_ids=[s.spec.prompt_ids for s in active], vocab=BackendVocab(model),
    )

    def nobody_waits() -> bool:  # every row's caller has gone: stop the prefill
        return is_cancelled is not None and all(is_cancelled(s.index) for s in active)

    try:
        session = model.open_session([s.spec.prompt_ids for s in active],
                                     budget=max(s.budget for s in active),
                                     should_stop=nobody_waits)
    except Cancelled:
        for s in active:
            s.finish = "cancelled"
        return
    try:
        logits = session.logits  # (B, V)
        step = 0
        while active:
            step += 1
            tokens = _step(model, sampler, logits, active, step, top_alternatives, on_step)
            if is_cancelled is not None:
                for s in active:
                    if s.finish is None and is_cancelled(s.index):
                        s.finish = "cancelled"
            keep = [i for i, s in enumerate(active) if s.finish is None]
            if not keep:
                break
            if len(keep) < len(active):
                # Finished rows leave the batch: their cache and sampler state go.
                session.keep(keep)
                index = torch.tensor(keep, dtype=torch.long, device=tokens.device)
                sampler.select(index.to(model.device))
                tokens = tokens[index]
                active = [active[i] for i in keep]
            logits = session.step(tokens)  # (b, V)
    finally:
        session.close()


def _step(model: Backend, sampler: BatchSampler, logits: torch.Tensor, active: list[_Row],
          step: int, top_alternatives: int,
          on_step: Callable[[StepEvent], None] | None) -> torch.Tensor:
    """Choose one token per running row, record the step events; returns the tokens ``(b,)``."""
    logits = logits.float()  # (b, V)
    raw_logp = torch.log_softmax(logits, dim=-1)  # (b, V)
    processed = sampler.process(logits)  # (b, V), removed tokens -inf
    tokens = sampler.choose(processed)  # (b,)
    # What each token was drawn from (adaptive-p draws itself and leaves one token in
    # ``processed``; this is its reshaped distribution).
    logp = torch.log_softmax(sampler.distribution, dim=-1)  # (b, V)
    sampler.accept(tokens)
    raw_entropy = -(raw_logp.exp() * raw_logp).sum(-1)  # (b,)
    p = logp.exp()
    entropy = torch.where(p > 0, -p * logp, torch.zeros_like(p)).sum(-1)  # (b,)
    chosen = tokens[:, None]
    chosen_raw = raw_logp.gather(1, chosen)  # (b, 1)
    rank = (raw_logp > chosen_raw).sum(-1) + 1  # (b,) 1 = the model's own favourite
    numbers = torch.stack([chosen_raw[:, 0], logp.gather(1, chosen)[:, 0],
                           entropy, raw_entropy, rank.to(entropy.dtype)], dim=1).tolist()
    top_ids = _alternatives(logp, raw_logp, min(top_alternatives, logits.shape[-1]))  # (b, k)
    top_raw = raw_logp.gather(1, top_ids).exp().tolist()
    top_p = p.gather(1, top_ids).tolist()
    top_list = top_ids.tolist()
    named = _named(model, active, raw_logp, p)
    for i, (s, token_id) in enumerate(zip(active, tokens.tolist(), strict=True)):
        delta = s.add(token_id)
        top = [Alternative(t, model.token_text(t), rp, pp)
               for t, rp, pp in zip(top_list[i], top_raw[i], top_p[i], strict=True)]
        raw_lp, lp, ent, raw_ent, raw_rank = numbers[i]
        event = StepEvent(row=s.index, step=step, token_id=token_id,
                          text=model.token_text(token_id), raw_logprob=raw_lp, logprob=lp,
                          entropy=ent, raw_entropy=raw_ent, top=top, finished=s.finish,
                          delta=delta, named=named[i], raw_rank=int(raw_rank))
        s.steps.append(event)
        if on_step is not None:
            on_step(event)
    return tokens


def _named(model: Backend, active: list[_Row], raw_logp: torch.Tensor,
           p: torch.Tensor) -> list[list[Alternative]]:
    """Each row's ``logprob_token_ids`` at this step, whatever their rank."""
    out: list[list[Alternative]] = []
    for i, s in enumerate(active):
        ids = s.spec.params.logprob_token_ids
        if not ids:
            out.append([])
            continue
        index = torch.tensor(ids, dtype=torch.long, device=p.device)
        raw = raw_logp[i].gather(0, index).exp().tolist()
        proc = p[i].gather(0, index).tolist()
        out.append([Alternative(t, model.token_text(t), rp, pp)
                    for t, rp, pp in zip(ids, raw, proc, strict=True)])
    return out


class BackendVocab:
    """The sampler chain's view of a model's tokenizer (:class:`tempscope.sampling.vocab.
    Vocab`): text -> ids without special tokens, a token's text, the end-of-sequence ids."""

    def __init__(self, model: Backend) -> None:
        self.model = model
        self.size = model.vocab_size
        self.eos_token_ids = list(model.eos_token_ids)

    def encode(self, text: str) -> list[int]:
        ids = self.model.encode(text)
        bos = self.model.bos_token_id
        return ids[1:] if ids and bos is not None and ids[0] == bos else ids

    def token_text(self, token_id: int) -> str:
        return self.model.token_text(token_id)


def _alternatives(logp: torch.Tensor, raw_logp: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` tokens to show per row ``(b, k)``: those the chain kept, likeliest first, then
    the ones it removed, in the model's own (raw) order."""
    if k == 0:
        return torch.empty((logp.shape[0], 0), dtype=torch.long, device=logp.device)
    kept = torch.isfinite(logp)  # (b, V)
    first = logp.topk(k, dim=-1).indices  # (b, k), kept tokens lead
    rest = torch.where(kept, -math.inf, raw_logp).topk(k, dim=-1).indices  # (b, k)
    n_kept = kept.sum(-1, keepdim=True).clamp(max=k)  # (b, 1)
    j = torch.arange(k, device=logp.device)  # (k,)
    pick = torch.where(j < n_kept, j, k + j - n_kept)  # (b, k) into cat([first, rest])
    return torch.cat([first, rest], dim=1).gather(1, pick)


def generate(
    model: Backend,
    prompts: str | Sequence[str],
    params: SamplingParams | Sequence[SamplingParams],
    *,
    n: int = 1,
    max_new_tokens: int = 64,
    stop: str | Sequence[str] | None = None,
    stop_at_newline: bool = False,
    seed: int | None = None,
    chat: bool = False,
    on_step: Callable[[StepEvent], None] | None = None,
    top_alternatives: int = 5,
    ignore_eos: bool = False,
) -> list[Sample]:
    """Generate ``n`` samples for every prompt and parameter set, all in one batch.

    Args:
        model: a loaded causal LM (:func:`tempscope.load_model`).
        prompts: one prompt or a list.
        params: one :class:`~tempscope.sampling.SamplingParams` or a list (e.g. one per
            temperature to compare).
        n: samples per (prompt, params) pair.
        max_new_tokens: token budget per row.
        stop: string(s) that end a row; the text stops before them.
        stop_at_newline: end a row at its first newline (the seed article's rule).
        seed: base seed for every row (overrides ``params.seed``); sample ``i`` of every
            (prompt, params) pair gets ``derive_seed(seed, i)``, so the same seed gives the same
            text alone or in any batch, and rows at different temperatures share their random
            numbers (a fairer comparison).
        chat: wrap each prompt in the model's chat template.
        on_step: called with every step event (``event.row`` is the sample's ``row``).
        top_alternatives: candidate tokens listed per step.
        ignore_eos: do not stop at end-of-sequence tokens (for benchmarks of fixed length).

    Returns:
        ``len(prompts) * len(params) * n`` samples, prompt-major, then params, then sample.

    Example (needs a model)::

        model = tempscope.load_model()
        for s in generate(model, "The cat slept on the",
                          [SamplingParams(temperature=0.5), SamplingParams(temperature=10)],
                          max_new_tokens=20, seed=0):
            print(s.params.temperature, s.text, s.mean_logprob)
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    params_list = [params] if not isinstance(params, Sequence) else list(params)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if n < 1:
        raise ValueError(f"n must be >= 1 sample per prompt and parameter set, got {n}")
    if not prompt_list or not params_list:
        raise ValueError("give at least one prompt and one set of sampling parameters")
    encoded = []
    for text in prompt_list:
        ids = model.encode(text, chat=chat)
        if not ids:
            bos = model.bos_token_id
            if bos is None:
                raise ValueError("the prompt is empty and the model has no BOS token to start "
                                 "from: give a prompt of at least one token")
            ids = [int(bos)]
        encoded.append(ids)
    specs: list[RowSpec] = []
    where: list[tuple[int, int, int]] = []
    for pi, ids in enumerate(encoded):
        for qi, p in enumerate(params_list):
            base = seed if seed is not None else p.seed
            for si in range(n):
                specs.append(RowSpec(prompt_ids=ids, params=p, seed=derive_seed(base, si),
                                     max_new_tokens=max_new_tokens, stop=stops,
                                     stop_at_newline=stop_at_newline, ignore_eos=ignore_eos))
                where.append((pi, qi, si))
    results = generate_rows(model, specs, on_step=on_step, top_alternatives=top_alternatives)
    return [
        Sample(token_ids=r.token_ids, text=r.text, finish_reason=r.finish_reason, steps=r.steps,
               row=r.row, prompt_index=pi, params_index=qi, sample_index=si,
               prompt=prompt_list[pi], params=params_list[qi], seed=spec.seed,
               stop_text=r.stop_text)
        for r, spec, (pi, qi, si) in zip(results, specs, where, strict=True)
    ]
