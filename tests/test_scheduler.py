"""Continuous batching on the tiny models, every engine: rows join a running session and leave
it at any step (:class:`tempscope.engine.loop.Decoder`), and the server's scheduler
(:class:`tempscope.server.batcher.Batcher`) built on it. A seeded row gives the same tokens
whenever it joins and whatever runs beside it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import torch

from tempscope.engine import loop
from tempscope.engine.loop import Decoder, RowSpec, StepEvent, generate_rows
from tempscope.sampling import SamplingParams
from tempscope.server.batcher import Batcher, BatcherBusy, Done, Job
from tests.conftest import rows_per_step

ENGINES = ["torch", "llama.cpp"]


@pytest.fixture(params=ENGINES)
def model(request: pytest.FixtureRequest, models: dict[str, Any]) -> Any:
    if request.param not in models:
        pytest.skip("llama-cpp-python is not installed")
    return models[request.param]


def spec(prompt: list[int], seed: int, tokens: int = 12, **params: Any) -> RowSpec:
    return RowSpec(prompt_ids=prompt, params=SamplingParams(**{"temperature": 1.0, **params}),
                   seed=seed, max_new_tokens=tokens, ignore_eos=True)


ROWS = [spec([5, 6, 7], 1), spec([5, 6, 7], 2, top_k=5), spec([9, 3], 3, tokens=4),
        spec([11] * 30, 4, temperature=0.3), spec([5, 6, 7, 8], 5, tokens=20, min_p=0.1),
        spec([2], 6, tokens=1)]


def alone(model: Any, row: RowSpec) -> list[int]:
    return generate_rows(model, [row])[0].token_ids


def test_rows_joining_at_every_step_give_their_tokens_alone(model: Any) -> None:
    """Each row joins a session that is already decoding others (a new one every step, some
    sharing a prompt with a running row), and leaves when done: the tokens of each are
    those it gives alone."""
    want = [alone(model, r) for r in ROWS]
    got: dict[int, list[int]] = {}
    decoder = Decoder(model, rows=8, tokens=64)
    states = decoder.check(ROWS, range(len(ROWS)))
    waiting = list(states)
    try:
        while waiting or decoder.busy:
            if waiting:
                decoder.admit([waiting.pop(0)])
            for row in decoder.step():
                got[row.index] = row.token_ids
    finally:
        decoder.close()
    assert [got[i] for i in range(len(ROWS))] == want


def test_generate_rows_keeps_the_batch_full_and_the_tokens_the_same(
        model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for 2 rows, 6 rows run 2 at a time: when one ends the next takes its slot at
    once (never more than 2 live, and the short rows do not wait for the long ones)."""
    want = [alone(model, r) for r in ROWS]
    monkeypatch.setattr(model, "max_rows", 2)
    live = rows_per_step(monkeypatch)
    out = generate_rows(model, ROWS)
    assert [r.token_ids for r in out] == want
    assert max(live) == 2
    # Steps: far fewer than running the pairs one after another to their longest row.
    assert len(live) < sum(max(r.max_new_tokens for r in ROWS[i:i + 2]) + 1
                           for i in range(0, len(ROWS), 2))


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(
        model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running row keeps getting a token at every step while a long prompt loads."""
    monkeypatch.setattr(loop, "PREFILL_TOKENS", 8)
    if model.engine == "torch":
        from tempscope.engine import torch_backend

        monkeypatch.setattr(torch_backend, "PREFILL_CHUNK", 8)
    else:
        from tempscope.engine import llamacpp

        monkeypatch.setattr(llamacpp, "N_BATCH", 8)
    events: list[StepEvent] = []
    decoder = Decoder(model, rows=4, tokens=100, on_step=events.append)
    running, long = decoder.check([spec([5, 6, 7], 1, tokens=40), spec(list(range(3, 60)), 2,
                                                                       tokens=3)], [0, 1])
    try:
        decoder.admit([running])
        decoder.step()
        decoder.step()
        decoder.admit([long])
        steps = 0
        while not any(e.row == 1 for e in events):
            before = sum(e.row == 0 for e in events)
            decoder.step()
            steps += 1
            assert sum(e.row == 0 for e in events) == before + 1  # the stream goes on
        assert steps >= 57 // 8  # the prompt came in chunks, one per step
        while decoder.busy:
            decoder.step()
    finally:
        decoder.close()
    assert long.token_ids == alone(model, long.spec)
    assert running.token_ids == alone(model, running.spec)


def test_merged_sampler_chains_keep_each_rows_tokens(model: Any) -> None:
    """Groups admitted apart share one chain once both are live (no per-row state): the
    decoder ends up with one cohort, and the tokens are still each row's own."""
    decoder = Decoder(model, rows=8, tokens=64)
    a, b = decoder.check([spec([5, 6], 1, top_p=0.9), spec([7], 2, typical_p=0.8)], [0, 1])
    try:
        decoder.admit([a])
        decoder.step()
        decoder.admit([b])
        decoder.step()
        decoder.step()
        assert len(decoder._cohorts) == 1 and decoder.live == 2
        while decoder.busy:
            decoder.step()
    finally:
        decoder.close()
    assert a.token_ids == alone(model, a.spec) and b.token_ids == alone(model, b.spec)


def test_stateful_chains_are_not_merged_and_keep_their_state(model: Any) -> None:
    decoder = Decoder(model, rows=8, tokens=64)
    rows = decoder.check([spec([5, 6], 1, mirostat=2), spec([7], 2)], [0, 1])
    try:
        decoder.admit(rows[:1])
        decoder.step()
        decoder.admit(rows[1:])
        while decoder.busy:
            decoder.step()
    finally:
        decoder.close()
    assert [r.token_ids for r in rows] == [alone(model, r.spec) for r in rows]


def test_a_cancelled_waiting_row_leaves_without_being_prefilled(model: Any) -> None:
    gone: set[int] = set()
    decoder = Decoder(model, rows=1, tokens=64, is_cancelled=gone.__contains__)
    first, second = decoder.check([spec([5], 1, tokens=30), spec([6], 2)], [0, 1])
    try:
        decoder.admit([first])
        decoder.admit([second])
        decoder.step()
        decoder.step()
        gone.add(1)
        ended = decoder.step()
        assert second in ended and second.finish == "cancelled" and not second.token_ids
        gone.add(0)
        assert first in decoder.step() and first.finish == "cancelled"
        assert not decoder.busy
    finally:
        decoder.close()


def test_prefix_reuse_gives_the_logits_of_a_fresh_prefill(models: dict[str, Any]) -> None:
    """llama.cpp: a prompt that extends a held one (a finished row's prompt and text, a
    running row's) starts from a copy of its cells, and its logits are bit-identical to a
    fresh prefill's."""
    if "llama.cpp" not in models:
        pytest.skip("llama-cpp-python is not installed")
    model = models["llama.cpp"]
    prompt = [int(t) for t in torch.randint(3, 200, (40,), generator=torch.Generator()
                                            .manual_seed(0))]
    session = model.open_session([prompt], budget=8, rows=4, tokens=64)
    text: list[int] = []
    try:
        for _ in range(5):
            token = session.logits.argmax(-1)
            text.append(int(token[0]))
            session.step(token)
        before = model.prefix_tokens_reused
        job = session.prefill(prompt + text[:3])  # a branch off the running row
        while not job.advance():
            pass
        branch = session.join(job)[0].clone()
        assert model.prefix_tokens_reused - before == len(prompt) + 2
    finally:
        session.close()
    again = model.open_session([prompt + text[:3]], budget=1)  # the finished rows' cells
    reused = model.prefix_tokens_reused
    second = again.logits[0].clone()
    again.close()
    fresh = model.last_logits(prompt + text[:3])  # the one-off sequence: no reuse
    assert reused - before > 2 * len(prompt)
    assert torch.equal(branch, fresh)
    assert torch.equal(second, fresh)


# --------------------------------------------------------------------- the scheduler


async def drain(job: Job) -> tuple[list[tuple[int, StepEvent]], Done]:
    events = []
    while True:
        item = await job.queue.get()
        if isinstance(item, Done):
            return events, item
        events.append(item)


def test_jobs_share_steps_and_see_only_their_own_rows(model: Any) -> None:
    async def main() -> None:
        batcher = Batcher(model, window_s=0.02)
        jobs = [batcher.submit([spec([5, 6], 1, tokens=6)] * 2),
                batcher.submit([spec([7], 2, tokens=6)]),
                batcher.submit([spec([8], 3, tokens=6)] * 3)]
        outs = await asyncio.gather(*(drain(j) for j in jobs))
        stats = batcher.stats()
        await batcher.stop()
        for (events, done), n in zip(outs, (2, 1, 3), strict=True):
            assert done.error is None and done.results is not None
            assert sorted({row for row, _ in events}) == list(range(n))
            assert all(ev.row == row for row, ev in events)
            assert [r.row for r in done.results] == list(range(n))
            assert all(len(r.token_ids) == 6 for r in done.results)
        assert stats["tokens"] == 36 and stats["rows"] == 6
        assert stats["steps"] < 36 / 2  # rows of different requests decode in the same steps

    asyncio.run(main())


def test_a_short_job_finishes_while_a_long_one_decodes(model: Any) -> None:
    async def main() -> None:
        batcher = Batcher(model, window_s=0)
        long = batcher.submit([spec([5, 6], 1, tokens=100)])
        first = await long.queue.get()
        assert not isinstance(first, Done)
        short = batcher.submit([spec([7], 2, tokens=1)])
        _, done = await drain(short)
        assert done.results is not None and len(done.results[0].token_ids) == 1
        streamed = long.queue.qsize()
        assert streamed < 90  # the long job was still running
        _, finished = await drain(long)
        assert finished.results is not None and len(finished.results[0].token_ids) == 100
        await batcher.stop()
        assert done.results[0].token_ids == alone(model, spec([7], 2, tokens=1))
        assert finished.results[0].token_ids == alone(model, spec([5, 6], 1, tokens=100))

    asyncio.run(main())


def test_a_cancelled_job_frees_its_row_within_a_step(model: Any) -> None:
    async def main() -> None:
        batcher = Batcher(model, window_s=0)
        keep = batcher.submit([spec([1], 1, tokens=60)])
        drop = batcher.submit([spec([2], 2, tokens=60)])
        first = await drop.queue.get()
        assert not isinstance(first, Done)
        drop.cancel()
        at_cancel = len(drop.states[0].token_ids)  # the worker may be mid-step now
        _, done = await drain(drop)
        assert done.results is not None and done.results[0].finish_reason == "cancelled"
        assert len(done.results[0].token_ids) - at_cancel <= 1  # gone at the next step
        _, kept = await drain(keep)
        assert kept.results is not None and len(kept.results[0].token_ids) == 60
        assert batcher.stats()["rows_cancelled"] == 1
        await batcher.stop()

    asyncio.run(main())


def test_a_failing_step_fails_only_the_job_that_broke_it(models: dict[str, Any]) -> None:
    """A step that raises: the jobs that had not streamed yet are retried alone, so the bad
    one fails and the others finish."""

    class Fragile(Decoder):
        def _cohort(self, group: Any) -> Any:  # a chain that cannot be built
            if any(r.spec.prompt_ids[0] == 66 for r in group.rows):
                raise ValueError("bad row")
            return super()._cohort(group)

    async def main() -> None:
        batcher = Batcher(models["torch"], window_s=0.05, make_decoder=Fragile)
        good = batcher.submit([spec([1], 1, tokens=3)])
        bad = batcher.submit([spec([66], 2, tokens=3)])
        (_, good_done), (_, bad_done) = await asyncio.gather(drain(good), drain(bad))
        await batcher.stop()
        assert good_done.error is None and good_done.results is not None
        assert isinstance(bad_done.error, ValueError)

    asyncio.run(main())


def test_a_bad_row_is_refused_alone(models: dict[str, Any]) -> None:
    async def main() -> None:
        batcher = Batcher(models["torch"], window_s=0.05)
        good = batcher.submit([spec([1], 1, tokens=3)])
        bad = batcher.submit([spec([1], 2, tokens=3, logprob_token_ids=[10**6])])
        (_, good_done), (_, bad_done) = await asyncio.gather(drain(good), drain(bad))
        await batcher.stop()
        assert good_done.error is None
        assert isinstance(bad_done.error, ValueError) and "vocabulary" in str(bad_done.error)

    asyncio.run(main())


def test_queue_cap(models: dict[str, Any]) -> None:
    async def main() -> None:
        batcher = Batcher(models["torch"], window_s=1, max_queued_rows=4)
        batcher.submit([spec([1], 1)] * 3)
        with pytest.raises(BatcherBusy):
            batcher.submit([spec([1], 1)] * 2)
        await batcher.stop()

    asyncio.run(main())


def test_the_engine_runs_off_the_event_loop_thread(models: dict[str, Any]) -> None:
    seen: list[str] = []

    async def main() -> None:
        batcher = Batcher(models["torch"])
        job = batcher.submit([spec([1], 1, tokens=2)])
        job_events, _ = await drain(job)
        seen.append(threading.current_thread().name)
        await batcher.stop()
        assert job_events

    asyncio.run(main())
    assert seen == ["MainThread"]


def test_max_prompt_tokens_caps_the_prompts_waiting_to_be_prefilled(
        models: dict[str, Any]) -> None:
    waiting: list[int] = []

    class Watched(Decoder):
        def admit(self, rows: Any, **kw: Any) -> None:
            super().admit(rows, **kw)
            waiting.append(sum(len(r.spec.prompt_ids) for g in self._joining for r in g.rows
                               if g.jobs is None))

    async def main() -> None:
        batcher = Batcher(models["torch"], window_s=0.05, max_prompt_tokens=100,
                          make_decoder=Watched)
        jobs = [batcher.submit([spec([65] * 60, i, tokens=2)]) for i in range(3)]
        for job in jobs:
            await drain(job)
        await batcher.stop()

    asyncio.run(main())
    assert len(waiting) == 3 and max(waiting) <= 100  # 120 > 100: never two at once


def test_the_batcher_survives_a_new_event_loop(models: dict[str, Any]) -> None:
    batcher = Batcher(models["torch"])

    async def once() -> None:
        _, done = await drain(batcher.submit([spec([1], 1, tokens=2)]))
        assert done.error is None

    asyncio.run(once())
    asyncio.run(once())  # the first loop is gone; the worker serves this one


def test_the_batched_torch_layout_runs_requests_that_arrive_together_together(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Its rows cannot join a running session: requests sent at once share a session, and a
    later one waits for it to finish, then runs."""
    model = models["torch"]
    monkeypatch.setattr(model, "reproducible", False)
    sessions: list[int] = []
    real = model.open_session

    def counted(prompts: Any, **kw: Any) -> Any:
        sessions.append(len(prompts))
        return real(prompts, **kw)

    monkeypatch.setattr(model, "open_session", counted)

    async def main() -> None:
        batcher = Batcher(model, window_s=0.05)
        first = [batcher.submit([spec([5, 6], i, tokens=8)]) for i in range(3)]
        await first[0].queue.get()
        late = batcher.submit([spec([7], 9, tokens=2)])
        outs = await asyncio.gather(*(drain(j) for j in [*first, late]))
        await batcher.stop()
        assert all(done.error is None for _, done in outs)

    asyncio.run(main())
    assert sessions == [3, 1]


def test_the_engine_memory_is_made_before_the_first_request(tiny_gguf: Any) -> None:
    """llama.cpp: the batcher makes the context its sessions use when it starts, so the first
    request does not wait for it (~1 s for 64 rows on the embedded model), and keeps it."""
    from tests.conftest import HAVE_LLAMA

    if not HAVE_LLAMA:
        pytest.skip("llama-cpp-python is not installed")
    from tempscope.engine.loader import load_model

    model = load_model(str(tiny_gguf), engine="llama.cpp")
    assert model._ctx is None

    async def main() -> None:
        batcher = Batcher(model, max_rows=8)
        batcher.start()
        for _ in range(500):
            if model._ctx is not None:
                break
            await asyncio.sleep(0.01)
        made = model._ctx
        assert made is not None and model._shape[0] > 8  # a stream per row, and the spare
        _, done = await drain(batcher.submit([spec([5, 6], 1, tokens=3)] * 2))
        await batcher.stop()
        assert done.results is not None and model._ctx is made  # not made again

    asyncio.run(main())
