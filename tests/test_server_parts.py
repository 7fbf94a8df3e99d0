"""The server's parts without a server process: the batcher on a stand-in engine, error
messages, and the app in-process on the tiny model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tempscope.generation import RowResult, RowSpec, StepEvent
from tempscope.sampling import SamplingParams
from tempscope.server.batcher import Batcher, Done, Job
from tempscope.server.errors import describe_validation


class FakeEngine:
    """Stands in for generate_rows: row r emits token r at every step, for max_new_tokens
    steps; records each call's rows."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.delay = delay
        self.fail_on = fail_on  # a prompt token that makes the call raise

    def __call__(self, model: Any, rows: Sequence[RowSpec], *,
                 on_step: Callable[[StepEvent], None] | None = None,
                 is_cancelled: Callable[[int], bool] | None = None,
                 top_alternatives: int = 5) -> list[RowResult]:
        self.calls.append([r.prompt_ids[0] for r in rows])
        if self.fail_on is not None and any(r.prompt_ids[0] == self.fail_on for r in rows):
            raise ValueError("bad row")
        done: dict[int, str] = {}
        tokens: dict[int, list[int]] = {i: [] for i in range(len(rows))}
        for step in range(1, max(r.max_new_tokens for r in rows) + 1):
            for i, r in enumerate(rows):
                if i in done:
                    continue
                if is_cancelled is not None and is_cancelled(i):
                    done[i] = "cancelled"
                    continue
                tokens[i].append(r.prompt_ids[0])
                finished = "length" if step >= r.max_new_tokens else None
                if finished:
                    done[i] = finished
                if on_step is not None:
                    on_step(StepEvent(row=i, step=step, token_id=r.prompt_ids[0], text="x",
                                      raw_logprob=-1.0, logprob=-0.5, entropy=1.0,
                                      raw_entropy=2.0, top=[], finished=finished,  # type: ignore[arg-type]
                                      delta="x"))
            time.sleep(self.delay)
        return [RowResult(token_ids=tokens[i], text="x" * len(tokens[i]),
                          finish_reason=done.get(i, "length"), steps=[], row=i)  # type: ignore[arg-type]
                for i in range(len(rows))]


def _rows(token: int, n: int = 1, steps: int = 3) -> list[RowSpec]:
    return [RowSpec(prompt_ids=[token], params=SamplingParams(), max_new_tokens=steps)
            for _ in range(n)]


async def _drain(job: Job) -> tuple[list[tuple[int, StepEvent]], Done]:
    events = []
    while True:
        item = await job.queue.get()
        if isinstance(item, Done):
            return events, item
        events.append(item)


def test_jobs_arriving_together_share_one_engine_call() -> None:
    engine = FakeEngine()

    async def main() -> None:
        batcher = Batcher(None, window_s=0.02, generate_rows=engine)  # type: ignore[arg-type]
        jobs = [batcher.submit(_rows(10, 2)), batcher.submit(_rows(20, 1)),
                batcher.submit(_rows(30, 3))]
        outs = await asyncio.gather(*(_drain(j) for j in jobs))
        await batcher.stop()
        assert engine.calls == [[10, 10, 20, 30, 30, 30]]
        for (events, done), token, n in zip(outs, (10, 20, 30), (2, 1, 3), strict=True):
            # Each job sees only its own rows, renumbered from 0, and its own results.
            assert sorted({row for row, _ in events}) == list(range(n))
            assert all(ev.token_id == token for _, ev in events)
            assert len(events) == 3 * n
            assert done.error is None and done.results is not None
            assert [r.token_ids for r in done.results] == [[token] * 3] * n

    asyncio.run(main())


def test_max_rows_splits_batches_and_later_jobs_wait() -> None:
    engine = FakeEngine(delay=0.01)

    async def main() -> None:
        batcher = Batcher(None, window_s=0.01, max_rows=3,  # type: ignore[arg-type]
                          generate_rows=engine)
        jobs = [batcher.submit(_rows(t, 2)) for t in (1, 2, 3)]
        await asyncio.gather(*(_drain(j) for j in jobs))
        await batcher.stop()
        assert engine.calls == [[1, 1], [2, 2], [3, 3]]  # a job is never split

    asyncio.run(main())


def test_cancelled_job_stops_but_others_finish() -> None:
    engine = FakeEngine(delay=0.01)

    async def main() -> None:
        batcher = Batcher(None, window_s=0.01, generate_rows=engine)  # type: ignore[arg-type]
        keep = batcher.submit(_rows(1, 1, steps=30))
        drop = batcher.submit(_rows(2, 1, steps=30))
        first = await drop.queue.get()
        assert not isinstance(first, Done)
        drop.cancel()
        events, done = await _drain(drop)
        assert done.results is not None and done.results[0].finish_reason == "cancelled"
        assert len(events) < 29
        _, kept = await _drain(keep)
        assert kept.results is not None and len(kept.results[0].token_ids) == 30
        assert batcher.stats()["rows_cancelled"] == 1
        await batcher.stop()

    asyncio.run(main())


def test_a_failing_job_does_not_fail_its_batch_mates() -> None:
    engine = FakeEngine(fail_on=666)

    async def main() -> None:
        batcher = Batcher(None, window_s=0.02, generate_rows=engine)  # type: ignore[arg-type]
        good = batcher.submit(_rows(1))
        bad = batcher.submit(_rows(666))
        (_, good_done), (_, bad_done) = await asyncio.gather(_drain(good), _drain(bad))
        await batcher.stop()
        assert good_done.error is None
        assert isinstance(bad_done.error, ValueError)
        assert engine.calls == [[1, 666], [1], [666]]  # together, then each alone

    asyncio.run(main())


def test_queue_cap() -> None:
    from tempscope.server.batcher import BatcherBusy

    async def main() -> None:
        batcher = Batcher(None, window_s=1, max_queued_rows=4,  # type: ignore[arg-type]
                          generate_rows=FakeEngine())
        batcher.submit(_rows(1, 3))
        with pytest.raises(BatcherBusy):
            batcher.submit(_rows(1, 2))
        await batcher.stop()

    asyncio.run(main())


def test_engine_runs_off_the_event_loop_thread() -> None:
    seen: list[str] = []

    def engine(model: Any, rows: Sequence[RowSpec], **kw: Any) -> list[RowResult]:
        seen.append(threading.current_thread().name)
        return FakeEngine()(model, rows, **kw)

    async def main() -> None:
        batcher = Batcher(None, generate_rows=engine)  # type: ignore[arg-type]
        await _drain(batcher.submit(_rows(1)))
        await batcher.stop()

    asyncio.run(main())
    assert seen and seen[0].startswith("tempscope-gen")


@pytest.mark.parametrize(("errors", "message", "param"), [
    ([{"loc": ("body", "n"), "msg": "Input should be greater than or equal to 1", "input": 0,
       "type": "greater_than_equal"}], "n: Input should be greater than or equal to 1 (got 0)",
     "n"),
    ([{"loc": ("body", "temprature"), "msg": "Extra inputs are not permitted", "input": 1,
       "type": "extra_forbidden"}], "unknown field 'temprature'", "temprature"),
    ([{"loc": ("body", 5), "msg": "JSON decode error", "input": {}, "type": "json_invalid",
       "ctx": {"error": "Expecting value"}}], "not valid JSON (Expecting value)", None),
    ([{"loc": ("body",), "msg": "Field required", "input": None, "type": "missing"}],
     "the request body is missing", None),
])
def test_validation_messages(errors: list[dict[str, Any]], message: str, param: str | None
                             ) -> None:
    text, first = describe_validation(errors)
    assert message in text
    assert first == param


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    from tempscope.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


def _call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def test_in_process_app_with_key_and_limits(tiny: Any) -> None:
    from tempscope.server import ServerLimits, create_app

    app = create_app(tiny, api_key="k", limits=ServerLimits(max_tokens=4, max_n=2),
                     name="tiny")
    assert _call(app, "GET", "/v1/models").status_code == 401
    ok = _call(app, "GET", "/v1/models", headers={"Authorization": "Bearer k"})
    assert ok.json()["data"][0]["id"] == "tiny"
    r = _call(app, "POST", "/v1/completions", headers={"Authorization": "Bearer k"},
              json={"model": "tiny", "prompt": "a", "max_tokens": 5})
    assert r.status_code == 400 and "at most 4" in r.json()["error"]["message"]
    r = _call(app, "POST", "/v1/completions", headers={"Authorization": "Bearer k"},
              json={"model": "tiny", "prompt": "a", "n": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    # The tiny model has no chat template: chat falls back to a plain transcript.
    r = _call(app, "POST", "/v1/chat/completions", headers={"Authorization": "Bearer k"},
              json={"model": "default", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len("user: hi\nassistant:")
    info = _call(app, "GET", "/v1/info", headers={"Authorization": "Bearer k"}).json()
    assert info["limits"]["max_tokens"] == 4 and info["auth"] is True
    page = _call(app, "GET", "/")
    assert page.status_code == 200 and "temp-slider" in page.text
    assert _call(app, "GET", "/static/app.js").status_code == 200


def test_batcher_survives_a_new_event_loop() -> None:
    batcher = Batcher(None, generate_rows=FakeEngine())  # type: ignore[arg-type]

    async def once() -> None:
        _, done = await _drain(batcher.submit(_rows(1)))
        assert done.error is None

    asyncio.run(once())
    asyncio.run(once())  # the first loop is gone; the worker restarts on this one


def test_serve_cli_checks_before_loading() -> None:
    from tests.conftest import run_cli

    out = run_cli("serve", "--help")
    assert out.returncode == 0 and "--api-key" in out.stdout and "127.0.0.1" in out.stdout
    bad = run_cli("serve", "--port", "70000")
    assert bad.returncode == 2
    assert "--port must be in 1..65535, got 70000" in bad.stderr
    assert "Traceback" not in bad.stderr
