"""Continuous batching: requests join and leave one running decoding session at every step.

One worker thread owns a :class:`~tempscope.engine.loop.Decoder` (the generation loop rows
join and leave at any step) and runs it step by step. Between two steps it admits the
requests that arrived, oldest first, while they fit the caps (rows, prompt tokens waiting to
be prefilled, the session's KV room); a request's rows are prefilled in chunks between the
decode steps of the rows already streaming, so a long prompt never stalls them, and choose
their first token at the next step. A row that ends (its stop rule, or its client gone)
leaves the session at once and frees its slot. Every :class:`StepEvent` goes back to its
job's asyncio queue, numbered within the job.

::

    request A (2 rows) ─┐  admitted at step s   ┌─> A.queue: (0, ev), (1, ev), ..., Done
    request B (1 row)  ─┼─> one Decoder ────────┤
    request C (3 rows) ─┘  admitted at step s+k └─> B.queue ..., C.queue ...

A seeded row's tokens do not depend on what else runs beside it (batch invariance: every
engine computes each row as it would alone), so joining a busy session changes nothing but
the wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend
    from tempscope.engine.loop import Decoder, RowResult, RowSpec, StepEvent
    from tempscope.engine.loop import _Row as RowState

MakeDecoder = Callable[..., "Decoder"]
MIN_ROW_TOKENS = 512  # KV room per row the session is opened with at least (fewer reopenings)


def _prompt_tokens(rows: Sequence[RowSpec]) -> int:
    """Tokens an engine prefills for these rows: each distinct prompt once."""
    return sum(len(p) for p in {tuple(r.prompt_ids) for r in rows})


class BatcherBusy(Exception):
    """The queue already holds ``max_queued_rows`` rows; the client should retry later."""


@dataclass
class Done:
    """The last item on a job's queue: the job's results, or the error that ended it."""

    results: list[RowResult] | None
    error: BaseException | None = None


@dataclass
class Job:
    """One request's rows and the queue its events arrive on.

    Queue items are ``(local_row, StepEvent)`` tuples, then one :class:`Done`.
    """

    rows: list[RowSpec]
    top_alternatives: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[int, StepEvent] | Done] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: bool = False  # an event was sent: the job can no longer be retried alone
    events: bool = True  # False: only the final Done is queued (a non-streaming request)
    alone: bool = False  # run with no other job beside it (a retry after a failed step)
    states: list[RowState] = field(default_factory=list)  # the rows' decoding states
    left: int = 0  # rows not yet ended

    def cancel(self) -> None:
        """Stop this job's rows at the engine's next step (safe from any thread)."""
        self.cancelled.set()

    def _put(self, item: tuple[int, StepEvent] | Done) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel()


def _deliver(items: list[tuple[Job, tuple[int, StepEvent]]]) -> None:
    """On the event loop: queue a step's events, each on its job's queue, in order."""
    for job, item in items:
        job.queue.put_nowait(item)


class Batcher:
    """The server's scheduler: one continuously batched decoding session for every request.

    Args:
        model: the loaded model every job runs on.
        window_s: when the session is idle, how long to wait after a job arrives for others
            sent at the same moment (they then share the first prefill); 0 = start at once
            (the server's default: a job arriving a moment later joins at the next step).
        max_rows: most rows live or prefilling at once; a job is never split (one larger
            than this runs when nothing else does).
        max_queued_rows: rows allowed to wait; :meth:`submit` raises :class:`BatcherBusy`
            beyond it.
        max_prompt_tokens: most prompt tokens admitted and not yet prefilled at once; a job
            over it alone still runs (when nothing else waits to be prefilled). None = no cap.
        make_decoder: builds the decoder (``make_decoder(model, on_step=..., is_cancelled=
            ..., rows=..., tokens=..., on_decode=...)``); a stand-in can be given in tests.
    """

    def __init__(self, model: Backend, *, window_s: float = 0.0, max_rows: int = 64,
                 max_queued_rows: int = 1024, max_prompt_tokens: int | None = None,
                 make_decoder: MakeDecoder | None = None) -> None:
        if make_decoder is None:
            from tempscope.engine.loop import Decoder

            make_decoder = Decoder
        self.model = model
        self.window_s = window_s
        self.max_rows = max_rows
        self.max_queued_rows = max_queued_rows
        self.max_prompt_tokens = max_prompt_tokens
        self._make_decoder = make_decoder
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._pending: collections.deque[Job] = collections.deque()  # not yet admitted
        self._running: list[Job] = []  # admitted, rows not all ended
        self._owner: dict[int, tuple[Job, int]] = {}  # decoder row -> (job, local row)
        # A step's events, sent to the event loop(s) in one wake-up each (see _flush).
        self._outbox: list[tuple[Job, tuple[int, StepEvent]]] = []
        self._next_row = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.batches_run = 0  # engine decode steps so far (one backend call for all rows)
        self.rows_run = 0  # rows ended so far
        self.tokens_run = 0  # tokens generated so far
        self.rows_cancelled = 0  # rows stopped because their client went away
        self.jobs_admitted = 0

    # ------------------------------------------------------------------ event-loop side

    def start(self) -> None:
        """Start the worker thread (again after :meth:`stop`)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="tempscope-gen", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Cancel every job and stop the worker."""
        with self._lock:
            jobs = [*self._pending, *self._running]
            self._pending.clear()
        for job in jobs:
            job.cancel()
            job._put(Done(None, BatcherBusy("the server is shutting down; retry in a moment")))
        self._stop.set()
        self._wakeup.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 30)

    def submit(self, rows: Sequence[RowSpec], *, top_alternatives: int = 5,
               events: bool = True) -> Job:
        """Queue a job; call from the event loop. Read its events (when ``events``) and then
        its :class:`Done` from ``job.queue``."""
        self.start()
        job = Job(list(rows), top_alternatives, asyncio.get_running_loop(), events=events)
        with self._lock:
            queued = sum(len(j.rows) for j in self._pending)
            if queued + len(rows) > self.max_queued_rows:
                raise BatcherBusy(f"{queued} rows are already waiting; retry in a moment")
            self._pending.append(job)
        self._wakeup.set()
        return job

    def stats(self) -> dict[str, Any]:
        """Counters for /health: engine steps, rows, tokens, queue length."""
        reused = getattr(self.model, "prefix_tokens_reused", None)
        return {"batches": self.batches_run, "steps": self.batches_run, "rows": self.rows_run,
                "tokens": self.tokens_run, "rows_cancelled": self.rows_cancelled,
                "jobs": self.jobs_admitted, "queued_jobs": len(self._pending),
                "running_jobs": len(self._running), "prefix_tokens_reused": reused}

    # --------------------------------------------------------------------- worker side

    def _work(self) -> None:
        """The worker thread: admit, step, route; sleep while there is nothing to do."""
        import torch

        first = self._decoder()
        decoder: Decoder | None = first
        with torch.inference_mode():
            # The first request need not wait for the engine's memory; should making it fail,
            # the first request's session makes it again and reports what failed.
            with contextlib.suppress(Exception):
                first.warm()
            while not self._stop.is_set():
                if decoder is None:
                    decoder = self._decoder()
                if not decoder.busy and not self._pending:
                    self._wakeup.wait()
                    self._wakeup.clear()
                    if self.window_s > 0 and not self._stop.is_set():
                        # Requests sent at the same moment share the first prefill.
                        self._stop.wait(self.window_s)
                    continue
                try:
                    self._admit(decoder)
                    if not decoder.busy:
                        continue
                    before = decoder.decode_steps
                    ended = decoder.step()
                except Exception as exc:
                    self._flush()
                    self._failed(decoder, exc)
                    decoder = None
                    continue
                self._flush()  # the events of rows that ended, before their Done
                self.batches_run += decoder.decode_steps - before
                for row in ended:
                    self._ended(row)
        if decoder is not None:
            decoder.close()

    def _decoder(self) -> Decoder:
        # Sessions open with room for max_rows rows of at least MIN_ROW_TOKENS tokens (more
        # when the request that opens one needs it), again each time the server was idle.
        return self._make_decoder(self.model, on_step=self._on_step,
                                  is_cancelled=self._is_cancelled, rows=self.max_rows,
                                  tokens=MIN_ROW_TOKENS, on_decode=self._flush)

    def _admit(self, decoder: Decoder) -> None:
        """Move waiting jobs into the decoder, oldest first, while they fit."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                job = self._pending[0]
            if job.cancelled.is_set():
                self._drop_pending(job)
                job._put(Done(None, asyncio.CancelledError()))
                continue
            if self._running and (job.alone or any(j.alone for j in self._running)):
                return
            if not job.states:
                try:
                    job.states = decoder.check(job.rows, range(self._next_row,
                                                               self._next_row + len(job.rows)))
                except ValueError as exc:
                    self._drop_pending(job)
                    job._put(Done(None, exc))
                    continue
            if decoder.busy and not self._fits(decoder, job):
                return  # it waits, and so does every job behind it (arrival order)
            self._drop_pending(job)
            for local, state in enumerate(job.states):
                self._owner[state.index] = (job, local)
            self._next_row += len(job.rows)
            job.left = len(job.rows)
            self._running.append(job)
            self.jobs_admitted += 1
            decoder.admit(job.states, top_alternatives=job.top_alternatives)

    def _fits(self, decoder: Decoder, job: Job) -> bool:
        if not decoder.fits(job.states):
            return False
        if self.max_prompt_tokens is None:
            return True
        # Jobs admitted whose rows have not started yet still have prompts to prefill.
        waiting = sum(_prompt_tokens(j.rows) for j in self._running if not j.started)
        return waiting + _prompt_tokens(job.rows) <= self.max_prompt_tokens

    def _drop_pending(self, job: Job) -> None:
        with self._lock:
            if self._pending and self._pending[0] is job:
                self._pending.popleft()

    def _on_step(self, event: StepEvent) -> None:
        job, local = self._owner[event.row]
        job.started = True
        self.tokens_run += 1
        if job.events:
            self._outbox.append((job, (local, dataclasses.replace(event, row=local))))

    def _flush(self) -> None:
        """Send the events gathered since the last flush: one wake-up per event loop, not
        one per event (the decoder calls this before each engine step, so the event loop
        writes them out while the engine computes the next logits)."""
        if not self._outbox:
            return
        items, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, tuple[int, StepEvent]]]] = {}
        for job, item in items:
            by_loop.setdefault(job.loop, []).append((job, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                for job, _ in batch:
                    job.cancel()

    def _is_cancelled(self, row: int) -> bool:
        return self._owner[row][0].cancelled.is_set()

    def _ended(self, row: RowState) -> None:
        job, _ = self._owner.pop(row.index)
        self.rows_run += 1
        self.rows_cancelled += row.finish == "cancelled"
        job.left -= 1
        if job.left == 0:
            self._running.remove(job)
            job._put(Done([dataclasses.replace(s.result(), row=local)
                           for local, s in enumerate(job.states)]))

    def _failed(self, decoder: Decoder, exc: Exception) -> None:
        """A step failed. Jobs that already streamed get the error; the others are retried
        alone, each with a session of its own, so one bad request cannot fail the rest."""
        decoder.close()
        jobs, self._running = self._running, []
        self._owner.clear()
        retry: list[Job] = []
        for job in jobs:
            if job.started or job.alone or len(jobs) == 1:
                job._put(Done(None, exc))
            else:
                job.alone = True
                job.states = []
                retry.append(job)
        with self._lock:
            self._pending.extendleft(reversed(retry))
