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

import collections
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from tempscope import distribution
from tempscope.engine.backend import Cancelled

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend, Prefill, Session
    from tempscope.sampling import BatchSampler, SamplingParams

PREFILL_TOKENS = 512  # prompt tokens prefilled per step while other rows decode
DEFAULT_ROWS = 64  # rows a Decoder makes room for when neither caller nor engine says

FinishReason = Literal["stop", "eos", "length", "cancelled"]

__all__ = [
    "Alternative",
    "Decoder",
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
    numbers: bool = True  # each step's log-probs, entropies and alternatives; False: the
    # token and its text only, numbers NaN (a client that asked for none: no passes over the
    # vocabulary beyond the sampler's own)


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

    @property
    def cells(self) -> int:
        """KV room the row may need: its prompt, its budget and the token after it."""
        return len(self.spec.prompt_ids) + self.budget + 1

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
    max_rows: int | None = None,
    on_result: Callable[[int, RowResult], None] | None = None,
) -> list[RowResult]:
    """Decode all ``rows`` together, one model call per step; the low-level loop. With a row
    limit (``max_rows``, or the engine's :attr:`Backend.max_rows`) that many run at once, and
    as a row ends the next one waiting takes its place (continuous batching: the batch stays
    full).

    Args:
        model: a loaded causal LM (:func:`tempscope.load_model`).
        rows: what each row generates; prompts may differ in length.
        on_step: called with every :class:`StepEvent`, in row order within a step.
        is_cancelled: asked before every step for each running row; ``True`` ends the row
            with ``finish_reason="cancelled"``.
        top_alternatives: how many candidate tokens each step event lists.
        max_rows: most rows decoding at once (None: the engine's limit, else all).
        on_result: called with ``(index, result)`` as each row ends, in the order they end.

    Returns:
        One :class:`RowResult` per row, in the order given.
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    decoder = Decoder(model, top_alternatives=top_alternatives, on_step=on_step,
                      is_cancelled=is_cancelled, rows=max_rows or max(1, len(rows)),
                      tokens=max((len(r.prompt_ids) + r.max_new_tokens for r in rows),
                                 default=1))
    limit = decoder.max_rows
    states = decoder.check(rows, range(len(rows)))
    waiting = [s for s in states if s.finish is None]
    # The first batch starts together; then each row that ends lets the next one in.
    first, rest = waiting[:limit], waiting[limit:]
    try:
        if first:
            decoder.admit(first)
        for s in states:
            if s.finish is not None and on_result is not None:
                on_result(s.index, s.result())
        while decoder.busy:
            for s in decoder.step():
                if on_result is not None:
                    on_result(s.index, s.result())
            while rest and decoder.room() > 0:
                take = rest[:decoder.room()]
                rest = rest[len(take):]
                decoder.admit(take)
    finally:
        decoder.close()
    return [s.result() for s in states]


class Decoder:
    """One running decoding session that rows join and leave at any step: the generation
    loop under :func:`generate_rows`, the server's scheduler and the sweeps.

    Each :meth:`step` does, in order: waiting prompts short enough to fit whole in
    :data:`PREFILL_TOKENS` are prefilled and their rows join; every live row chooses a token
    from its logits (step events, stop rules, cancellation); the rows that ended leave the
    session; one backend call decodes the others' tokens; then the oldest prompt still
    loading computes one more chunk (at most 512 tokens). So a long prompt never stalls the
    rows already streaming for more than a chunk a step, and a short request that arrives
    while it loads gets its first token at the next step. Rows admitted together share one sampler
    chain (:class:`~tempscope.sampling.BatchSampler`); chains without per-row state merge
    into one as groups join, so a step costs one chain pass, not one per request.

    Args:
        model: the loaded model.
        top_alternatives: candidate tokens listed per step event.
        on_step: called with every step event (``event.row`` is the index given to
            :meth:`admit`).
        is_cancelled: asked every step for every row, live or waiting.
        rows: rows the session should make room for (an engine may size its cache by it).
        tokens: prompt plus generated tokens one row should have room for.
        on_decode: called once a step when every live row has chosen its token, just before
            the engine computes the next logits: the server sends the step's events then,
            while the engine works, instead of waking its event loop once per event.
    """

    def __init__(self, model: Backend, *, top_alternatives: int = 5,
                 on_step: Callable[[StepEvent], None] | None = None,
                 is_cancelled: Callable[[int], bool] | None = None,
                 rows: int | None = None, tokens: int | None = None,
                 on_decode: Callable[[], None] | None = None) -> None:
        if top_alternatives < 0:
            raise ValueError(f"top_alternatives must be >= 0, got {top_alternatives}")
        self.model = model
        self.top_alternatives = top_alternatives
        self.on_step = on_step
        self.on_decode = on_decode
        # An engine that hands its calls to a thread of its own may let the decoding thread
        # call it directly (llama.cpp: LlamaCppModel.calls_here).
        self._calls_here: Callable[[], contextlib.AbstractContextManager[object]] = getattr(
            model, "calls_here", contextlib.nullcontext)
        self.is_cancelled = is_cancelled
        self.eos = set(model.eos_token_ids)
        self.context = model.facts.context_length
        caps = [n for n in (rows, model.max_rows) if n]
        self._rows = min(caps) if caps else DEFAULT_ROWS
        self._tokens = tokens or 1
        self._session: Session | None = None
        self._cohorts: list[_Cohort] = []  # live rows, in the session's order
        self._joining: collections.deque[_Joining] = collections.deque()  # arrival order
        self._done: list[_Row] = []  # ended before decoding (a zero budget, cancelled waiting)
        self.steps = 0  # calls to step()
        self.decode_steps = 0  # backend calls that decoded a token for every live row
        self.prefill_chunks = 0

    def warm(self) -> None:
        """Make the engine's session memory now, at the shape the first session will ask for
        (llama.cpp: a context with a KV stream per row, ~1 s for 64 rows), so the first
        request does not wait for it; an engine keeps it while later sessions fit."""
        if self._session is None and not self.busy and getattr(self.model, "joinable", False):
            self.model.open_session([], rows=self._rows, tokens=self._tokens).close()

    # ----------------------------------------------------------------------- admission

    def check(self, specs: Sequence[RowSpec], indices: Sequence[int]) -> list[_Row]:
        """Validate rows (raises ``ValueError`` naming the bad one); their states."""
        return [_Row(i, spec, self.model, self.eos, self.context - len(spec.prompt_ids))
                for i, spec in zip(indices, specs, strict=True)]

    @property
    def busy(self) -> bool:
        """Rows are live or waiting to join."""
        return bool(self._cohorts or self._joining or self._done)

    @property
    def max_rows(self) -> int:
        """Most rows live or joining at once (``rows``, within the engine's limit)."""
        return self._rows

    @property
    def live(self) -> int:
        return sum(len(c.rows) for c in self._cohorts)

    def reserved(self) -> int:
        """Rows live or waiting to join."""
        return self.live + sum(len(j.rows) for j in self._joining)

    def room(self) -> int:
        """How many more rows may join now."""
        session = self._session
        rows = self._rows
        if session is not None:
            cap = session.capacity[0]
            rows = min(rows, cap) if cap is not None else rows
            if not session.can_join and self._cohorts:
                return 0
        return max(0, rows - self.reserved())

    def fits(self, rows: Sequence[_Row]) -> bool:
        """True when these rows may join the running session now (rows and KV room)."""
        if len(rows) > self.room():
            return False
        session = self._session
        if session is None or not (self._cohorts or self._joining):
            return True  # a new session is sized for them
        return self._room_for(session, rows)

    def admit(self, rows: Sequence[_Row], *, top_alternatives: int | None = None) -> None:
        """Queue rows (from :meth:`check`) to join: prefilled from the next step on, in
        arrival order; they share one sampler chain and list ``top_alternatives`` candidates
        per step event (default: the decoder's). Rows already ended are returned by the next
        :meth:`step`."""
        ready = [r for r in rows if r.finish is None]
        self._done += [r for r in rows if r.finish is not None]
        if ready:
            k = self.top_alternatives if top_alternatives is None else top_alternatives
            self._joining.append(_Joining(ready, k))

    # --------------------------------------------------------------------------- steps

    def step(self) -> list[_Row]:
        """One step (see the class docstring); returns the rows that ended in it."""
        with self._calls_here():
            return self._one_step()

    def _one_step(self) -> list[_Row]:
        ended, self._done = self._done, []
        ended += self._prefill()
        if self._cohorts:
            ended += self._decode()
        self._advance_oldest()
        self.steps += 1
        return ended

    def _decode(self) -> list[_Row]:
        """Live rows choose their tokens; the rows that ended leave; the others decode."""
        session = self._session
        assert session is not None
        logits = session.logits  # (b, V)
        chosen: list[torch.Tensor] = []
        start = 0
        for cohort in self._cohorts:
            n = len(cohort.rows)
            chosen.append(_step(self.model, cohort.sampler, logits[start:start + n],
                                cohort.rows, cohort.top_alternatives, self.on_step))
            start += n
        rows = [r for c in self._cohorts for r in c.rows]
        if self.is_cancelled is not None:
            for r in rows:
                if r.finish is None and self.is_cancelled(r.index):
                    r.finish = "cancelled"
        tokens = torch.cat(chosen)  # (b,)
        ended = [r for r in rows if r.finish is not None]
        if ended:
            keep = [i for i, r in enumerate(rows) if r.finish is None]
            session.keep(keep)
            tokens = tokens[torch.tensor(keep, dtype=torch.long, device=tokens.device)]
            cohorts: list[_Cohort] = []
            for cohort in self._cohorts:
                local = [i for i, r in enumerate(cohort.rows) if r.finish is None]
                if len(local) < len(cohort.rows):
                    # Finished rows leave the batch: their cache and sampler state go.
                    cohort.sampler.select(torch.tensor(local, dtype=torch.long,
                                                       device=self.model.device))
                    cohort.rows = [cohort.rows[i] for i in local]
                if cohort.rows:
                    cohorts.append(cohort)
            self._cohorts = cohorts
        if self._cohorts:
            if self.on_decode is not None:
                self.on_decode()
            session.step(tokens)
            self.decode_steps += 1
        return ended

    def _prefill(self) -> list[_Row]:
        """Start the waiting groups that fit, in arrival order, and advance their prompts
        within this step's budget; groups whose prompts are all in join the session.

        The budget: every waiting prompt that fits whole in :data:`PREFILL_TOKENS` is
        prefilled, oldest first, before the step's decode (a short prompt does not wait
        behind a long one: its rows choose their first token in this very step), and after
        the decode the oldest prompt still loading advances one chunk
        (:meth:`_advance_oldest`: a long prompt loads at a steady pace).
        """
        ended: list[_Row] = []
        if self.is_cancelled is not None:  # groups nobody waits for leave, wherever they are
            for group in [g for g in self._joining
                          if all(self.is_cancelled(r.index) for r in g.rows)]:
                for job in group.jobs or ():
                    job.cancel()
                for r in group.rows:
                    r.finish = "cancelled"
                ended += group.rows
                self._joining.remove(group)
        for group in list(self._joining):
            if group.jobs is None and not self._start(group):
                break  # no room yet: it waits, and so do the ones behind it
        budget = PREFILL_TOKENS
        for group in self._joining:
            for job in group.jobs or ():
                if not job.done and job.pending <= budget:
                    budget -= job.pending
                    while not job.advance():
                        self.prefill_chunks += 1
                    self.prefill_chunks += 1
        self._join_ready()
        return ended

    def _advance_oldest(self) -> None:
        """The oldest prompt still loading computes one more chunk (after this step's
        decode: the rows already streaming do not wait for it within the step)."""
        head = next((job for g in self._joining for job in g.jobs or () if not job.done),
                    None)
        if head is not None:
            head.advance()
            self.prefill_chunks += 1
            self._join_ready()

    def _join_ready(self) -> None:
        """Groups whose prompts are all in join the session (they choose at the next
        decode)."""
        for group in [g for g in self._joining if g.jobs]:
            if all(job.done for job in group.jobs or ()):
                self._joining.remove(group)
                self._join(group)

    def _start(self, group: _Joining) -> bool:
        """Begin ``group``'s prefills; False when it must wait for rows to finish."""
        rows = group.rows
        need = max(r.cells for r in rows)
        session = self._session
        idle = not self._cohorts and not any(j.jobs is not None for j in self._joining)
        if session is not None and (idle or not self._room_for(session, rows)):
            if not idle:
                return False  # the session is busy: wait until it drains
            # Idle: open again, shaped for what comes now (an engine keeps its cache when
            # the shape still fits: a long request before must not leave too few rows).
            session.close()
            self._session = session = None
        if session is None:
            if getattr(self.model, "joinable", False):
                session = self.model.open_session(
                    [], rows=max(self._rows, len(rows)), tokens=max(self._tokens, need))
                self._session = session
            if session is None or not self._room_for(session, rows):
                if session is not None:
                    session.close()
                    self._session = None
                self._open()  # rows that cannot join later all start together
                return True
        prompts: dict[tuple[int, ...], list[_Row]] = {}
        for r in rows:
            prompts.setdefault(tuple(r.spec.prompt_ids), []).append(r)
        group.jobs = [session.prefill(p, copies=len(rs)) for p, rs in prompts.items()]
        group.rows = [r for rs in prompts.values() for r in rs]  # the joining order
        return True

    def _room_for(self, session: Session, rows: Sequence[_Row]) -> bool:
        """``rows`` can join ``session`` now: KV room for each, and row room (a group alone
        in the session may use every row the engine has)."""
        cap_rows, cap_tokens = session.capacity
        if session.reserved == 0:
            limit = cap_rows
        else:
            limit = self._rows if cap_rows is None else min(self._rows, cap_rows)
        return (session.can_join and max(r.cells for r in rows) <= cap_tokens
                and (limit is None or session.reserved + len(rows) <= limit))

    def _open(self) -> None:
        """A new session for the waiting groups at the head that fit together, all of their
        prompts prefilled now (no row is running to be stalled): for a layout whose rows
        cannot join later."""
        groups: list[_Joining] = []
        n = 0
        for group in self._joining:
            if group.jobs is not None or (groups and n + len(group.rows) > self._rows):
                break
            groups.append(group)
            n += len(group.rows)
        rows = [r for g in groups for r in g.rows]
        prompts = [r.spec.prompt_ids for r in rows]

        def nobody_waits() -> bool:
            return self.is_cancelled is not None and all(self.is_cancelled(r.index)
                                                         for r in rows)

        tokens = max(self._tokens, *(r.cells for r in rows))
        for group in groups:
            self._joining.remove(group)
        try:
            self._session = self.model.open_session(
                prompts, budget=max(r.budget for r in rows), should_stop=nobody_waits,
                rows=max(self._rows, len(rows)), tokens=tokens)
        except Cancelled:
            for r in rows:
                r.finish = "cancelled"
            self._done += rows
            return
        for group in groups:
            group.jobs = []
            self._cohorts.append(self._cohort(group))
            self._merge()

    def _join(self, group: _Joining) -> None:
        session = self._session
        assert session is not None and group.jobs is not None
        for job in group.jobs:
            session.join(job)
        self._cohorts.append(self._cohort(group))
        self._merge()

    def _cohort(self, group: _Joining) -> _Cohort:
        from tempscope.sampling import BatchSampler

        rows = group.rows
        sampler = BatchSampler(
            [r.spec.params for r in rows], vocab_size=self.model.vocab_size,
            device=self.model.device,
            seeds=[r.spec.seed if r.spec.seed is not None else r.spec.params.seed
                   for r in rows],
            prompt_ids=[r.spec.prompt_ids for r in rows], vocab=BackendVocab(self.model))
        return _Cohort(rows, sampler, group.top_alternatives)

    def _merge(self) -> None:
        """The last two cohorts share one chain when neither holds per-row state."""
        from tempscope.sampling import BatchSampler

        if len(self._cohorts) < 2:
            return
        a, b = self._cohorts[-2], self._cohorts[-1]
        merged = BatchSampler.merge([a.sampler, b.sampler])
        if merged is not None:
            k = max(a.top_alternatives, b.top_alternatives)
            self._cohorts[-2:] = [_Cohort(a.rows + b.rows, merged, k)]

    def close(self) -> None:
        """End the session; rows still running or waiting are left as they are."""
        for group in self._joining:
            for job in group.jobs or ():
                job.cancel()
        if self._session is not None:
            self._session.close()
            self._session = None


@dataclass
class _Cohort:
    """Live rows that share one sampler chain; a contiguous run of the session's rows."""

    rows: list[_Row]
    sampler: BatchSampler
    top_alternatives: int


@dataclass
class _Joining:
    """Rows waiting to join: their prefills, once started (one per distinct prompt)."""

    rows: list[_Row]
    top_alternatives: int
    jobs: list[Prefill] | None = None


def _step(model: Backend, sampler: BatchSampler, logits: torch.Tensor, active: list[_Row],
          top_alternatives: int, on_step: Callable[[StepEvent], None] | None) -> torch.Tensor:
    """Choose one token per running row, record the step events; returns the tokens ``(b,)``."""
    logits = logits.float()  # (b, V)
    processed = sampler.process(logits)  # (b, V), removed tokens -inf
    tokens = sampler.choose(processed)  # (b,)
    # What each token was drawn from (adaptive-p draws itself and leaves one token in
    # ``processed``; this is its reshaped distribution).
    shown = sampler.distribution
    sampler.accept(tokens)
    k = min(top_alternatives, logits.shape[-1])
    token_list = tokens.tolist()
    wanted = [i for i, s in enumerate(active) if s.spec.numbers]
    stats: list[_TokenStats] = [_NO_STATS] * len(active)
    if wanted:
        full = len(wanted) == len(active)
        pick = None if full else torch.tensor(wanted, dtype=torch.long, device=logits.device)
        some_logits = logits if pick is None else logits[pick]
        some_shown = shown if pick is None else shown[pick]
        some_active = active if full else [active[i] for i in wanted]
        if logits.device.type == "cpu":
            found = _stats_cpu(some_logits, some_shown, [token_list[i] for i in wanted], k,
                               some_active)
        else:
            found = _stats_torch(some_logits, some_shown,
                                 tokens if pick is None else tokens[pick], k, some_active)
        for i, row_stats in zip(wanted, found, strict=True):
            stats[i] = row_stats
    for s, token_id, (numbers, top, named) in zip(active, token_list, stats, strict=True):
        delta = s.add(token_id)
        raw_lp, lp, ent, raw_ent, raw_rank = numbers
        event = StepEvent(row=s.index, step=len(s.token_ids), token_id=token_id,
                          text=model.token_text(token_id), raw_logprob=raw_lp, logprob=lp,
                          entropy=ent, raw_entropy=raw_ent,
                          top=[Alternative(t, model.token_text(t), rp, pp) for t, rp, pp in top],
                          finished=s.finish, delta=delta,
                          named=[Alternative(t, model.token_text(t), rp, pp)
                                 for t, rp, pp in named],
                          raw_rank=int(raw_rank))
        s.steps.append(event)
        if on_step is not None:
            on_step(event)
    return tokens


# A row's step statistics: (raw log-prob, log-prob, entropy, raw entropy, raw rank) of the
# chosen token, the alternatives and the named tokens as (id, raw prob, prob).
_TokenStats = tuple[list[float], list[tuple[int, float, float]],
                    list[tuple[int, float, float]]]
_NO_STATS: _TokenStats = ([math.nan] * 4 + [0.0], [], [])  # a row that asked for none


def _stats_cpu(logits: torch.Tensor, shown: torch.Tensor, tokens: list[int], k: int,
               active: list[_Row]) -> list[_TokenStats]:
    """:func:`_step`'s numbers on the CPU, row by row in numpy: each distribution is
    normalised once (``exp(x - max)`` and its sum), and entropies come from one dot product
    (``H = log Z - sum(e * x) / Z``), without a (b, V) log-softmax each. Every token's
    statistics cost a few passes over the vocabulary, so this path is kept lean."""
    raw_all, shown_all = logits.numpy(), shown.numpy()
    ranks = distribution.rank_of(raw_all, np.asarray(tokens)).tolist()  # (b,) numpy
    alternatives = _alternatives(shown, logits, k).tolist()  # (b, k)
    out: list[_TokenStats] = []
    for row, t in enumerate(tokens):
        raw_e, raw_z, raw_x = _normalised(raw_all[row])
        e, z, x = _normalised(shown_all[row])
        log_raw_z, log_z = math.log(raw_z), math.log(z)
        numbers = [float(raw_x[t]) - log_raw_z, float(x[t]) - log_z,
                   log_z - float(np.dot(e, x)) / z, log_raw_z - float(np.dot(raw_e, raw_x)) / raw_z,
                   float(ranks[row])]
        ids = alternatives[row]
        named_ids = active[row].spec.params.logprob_token_ids or []
        out.append((numbers,
                    [(i, float(raw_e[i]) / raw_z, float(e[i]) / z) for i in ids],
                    [(i, float(raw_e[i]) / raw_z, float(e[i]) / z) for i in named_ids]))
    return out


def _normalised(row: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """``(e, Z, x)`` for one row of logits: ``x = logits - max`` (``-inf`` kept as the lowest
    float, so ``e * x`` is 0 there), ``e = exp(x)``, ``Z = sum(e)``; ``log_softmax = x - log Z``."""
    x = row - row.max()
    np.maximum(x, np.finfo(np.float32).min, out=x)
    e = np.exp(x)
    return e, float(e.sum(dtype=np.float64)), x


def _stats_torch(logits: torch.Tensor, shown: torch.Tensor, tokens: torch.Tensor, k: int,
                 active: list[_Row]) -> list[_TokenStats]:
    """:func:`_step`'s numbers with tensor ops on the model's device (a GPU): the whole batch
    at once, a few small lists copied back."""
    raw_logp = torch.log_softmax(logits, dim=-1)  # (b, V)
    logp = torch.log_softmax(shown, dim=-1)  # (b, V)
    raw_entropy = -(raw_logp.exp() * raw_logp).sum(-1)  # (b,)
    p = logp.exp()
    entropy = -(p * logp).nansum(-1)  # (b,) a removed token: 0 * -inf = NaN, counted as 0
    chosen = tokens[:, None]
    rank = distribution.rank_of(raw_logp, tokens).to(entropy.device)  # (b,) 1 = the favourite
    numbers = torch.stack([raw_logp.gather(1, chosen)[:, 0], logp.gather(1, chosen)[:, 0],
                           entropy, raw_entropy, rank.to(entropy.dtype)], dim=1).tolist()
    top_ids = _alternatives(shown, logits, k)  # (b, k)
    top_raw = raw_logp.gather(1, top_ids).exp().tolist()
    top_p = p.gather(1, top_ids).tolist()
    out: list[_TokenStats] = []
    for i, (row, ids) in enumerate(zip(active, top_ids.tolist(), strict=True)):
        named_ids = row.spec.params.logprob_token_ids or []
        named: list[tuple[int, float, float]] = []
        if named_ids:
            index = torch.tensor(named_ids, dtype=torch.long, device=p.device)
            named = list(zip(named_ids, raw_logp[i].gather(0, index).exp().tolist(),
                             p[i].gather(0, index).tolist(), strict=True))
        out.append((numbers[i], list(zip(ids, top_raw[i], top_p[i], strict=True)), named))
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
    the ones it removed, in the model's own (raw) order (ties: the lower token id first).
    Logits or log-probabilities alike: only each row's order and its ``-inf`` entries count."""
    if k == 0:
        return torch.empty((logp.shape[0], 0), dtype=torch.long, device=logp.device)
    first_ids: torch.Tensor = distribution.top_ids(logp, k).to(logp.device)  # (b, k)
    if bool(torch.isfinite(logp.gather(1, first_ids[:, -1:])).all()):
        return first_ids  # every row kept at least k tokens (the usual case)
    kept = torch.isfinite(logp)  # (b, V)
    rest = distribution.top_ids(torch.where(kept, -math.inf, raw_logp), k).to(logp.device)
    n_kept = kept.sum(-1, keepdim=True).clamp(max=k)  # (b, 1)
    j = torch.arange(k, device=logp.device)  # (k,)
    pick = torch.where(j < n_kept, j, k + j - n_kept)  # (b, k) into cat([first, rest])
    return torch.cat([first_ids, rest], dim=1).gather(1, pick)


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
