"""Dynamic batching: requests that arrive together share one :func:`generate_rows` call.

The batcher collects jobs for ``window_s`` (a few milliseconds), merges their rows into one
engine call that runs in a worker thread (the event loop stays free to accept and stream), and
routes every :class:`StepEvent` back to its job's asyncio queue with the row renumbered to the
job's own rows. While one batch decodes, new jobs queue up and form the next batch. A job
whose client went away is marked cancelled; the engine drops its rows at the next step.

::

    request A (2 rows) ─┐                       ┌─> A.queue: (0, ev), (1, ev), ..., Done
    request B (1 row)  ─┼─> one generate_rows ──┤
    request C (3 rows) ─┘   (6 rows, 1 thread)  └─> B.queue ..., C.queue ...
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend
    from tempscope.generation import RowResult, RowSpec, StepEvent

GenerateRows = Callable[..., "list[RowResult]"]


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

    def cancel(self) -> None:
        """Stop this job's rows at the engine's next step (safe from any thread)."""
        self.cancelled.set()

    def _put(self, item: tuple[int, StepEvent] | Done) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel()


class Batcher:
    """Merge concurrent generation jobs into batched engine calls.

    Args:
        model: the loaded model every job runs on.
        window_s: how long to wait after the first job of a batch for others to join.
        max_rows: most rows in one engine call; a job is never split across calls.
        max_queued_rows: rows allowed to wait; :meth:`submit` raises :class:`BatcherBusy`
            beyond it.
        max_prompt_tokens: most prompt tokens one engine call prefills; a job over it alone
            still runs (alone). None = no cap.
        generate_rows: the engine loop (a stand-in can be given in tests).
    """

    def __init__(self, model: Backend, *, window_s: float = 0.005, max_rows: int = 64,
                 max_queued_rows: int = 1024, max_prompt_tokens: int | None = None,
                 generate_rows: GenerateRows | None = None) -> None:
        if generate_rows is None:
            from tempscope.generation import generate_rows as engine

            generate_rows = engine
        self.model = model
        self.window_s = window_s
        self.max_rows = max_rows
        self.max_queued_rows = max_queued_rows
        self.max_prompt_tokens = max_prompt_tokens
        self._generate = generate_rows
        self._pending: collections.deque[Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tempscope-gen")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._running: list[Job] = []
        self.batches_run = 0  # engine calls so far
        self.rows_run = 0  # rows decoded so far
        self.tokens_run = 0  # tokens generated so far
        self.rows_cancelled = 0  # rows stopped because their client went away

    def start(self) -> None:
        """Start the worker task on the running event loop (again after :meth:`stop`, or on a
        new loop: an app can outlive one ``asyncio.run``)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._wakeup = asyncio.Event()
        if self._closed:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="tempscope-gen")
            self._closed = False
        self._task = loop.create_task(self._worker())
        if self._pending:
            self._wakeup.set()

    async def stop(self) -> None:
        """Cancel every job and stop the worker."""
        for job in [*self._pending, *self._running]:
            job.cancel()
            job._put(Done(None, BatcherBusy("the server is shutting down; retry in a moment")))
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._closed = True

    def submit(self, rows: Sequence[RowSpec], *, top_alternatives: int = 5,
               events: bool = True) -> Job:
        """Queue a job; call from the event loop. Read its events (when ``events``) and then
        its :class:`Done` from ``job.queue``."""
        self.start()
        queued = sum(len(j.rows) for j in self._pending)
        if queued + len(rows) > self.max_queued_rows:
            raise BatcherBusy(f"{queued} rows are already waiting; retry in a moment")
        job = Job(list(rows), top_alternatives, asyncio.get_running_loop(), events=events)
        self._pending.append(job)
        self._wakeup.set()
        return job

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                # Give requests sent at the same moment time to arrive and join this batch.
                await asyncio.sleep(self.window_s)
            batch = self._take()
            if not batch:
                continue
            self._running = batch
            try:
                await loop.run_in_executor(self._executor, self._run, batch)
            finally:
                self._running = []

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        size = prefill = 0
        while self._pending:
            job = self._pending[0]
            if job.cancelled.is_set():
                self._pending.popleft()
                job._put(Done(None, asyncio.CancelledError()))
                continue
            if batch and size + len(job.rows) > self.max_rows:
                break
            tokens = _prompt_tokens(job.rows)
            if (batch and self.max_prompt_tokens is not None
                    and prefill + tokens > self.max_prompt_tokens):
                break  # a long prefill waits for the next engine call instead of growing this
            batch.append(self._pending.popleft())
            size += len(job.rows)
            prefill += tokens
        return batch

    def _run(self, batch: list[Job]) -> None:
        """Worker thread: one engine call for the whole batch; on failure retry jobs alone so
        one bad request cannot fail the others."""
        try:
            self._call(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0]._put(Done(None, exc))
                return
            for job in batch:
                if job.started:
                    job._put(Done(None, exc))
                    continue
                try:
                    self._call([job])
                except Exception as single:
                    job._put(Done(None, single))

    def _call(self, batch: list[Job]) -> None:
        rows: list[RowSpec] = []
        owner: list[tuple[Job, int]] = []
        for job in batch:
            for local, spec in enumerate(job.rows):
                rows.append(spec)
                owner.append((job, local))

        def on_step(event: StepEvent) -> None:
            job, local = owner[event.row]
            job.started = True
            self.tokens_run += 1
            if job.events:
                job._put((local, event))

        def is_cancelled(row: int) -> bool:
            return owner[row][0].cancelled.is_set()

        top = max(job.top_alternatives for job in batch)
        results = self._generate(self.model, rows, on_step=on_step, is_cancelled=is_cancelled,
                                 top_alternatives=top)
        self.batches_run += 1
        self.rows_run += len(rows)
        self.rows_cancelled += sum(r.finish_reason == "cancelled" for r in results)
        start = 0
        for job in batch:
            job._put(Done(list(results[start:start + len(job.rows)])))
            start += len(job.rows)

    def stats(self) -> dict[str, Any]:
        """Counters for /health: engine calls, rows, queue length."""
        return {"batches": self.batches_run, "rows": self.rows_run, "tokens": self.tokens_run,
                "rows_cancelled": self.rows_cancelled, "queued_jobs": len(self._pending),
                "running_jobs": len(self._running)}
