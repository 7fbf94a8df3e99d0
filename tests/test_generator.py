"""The one generator interface: a local model through it gives what the engine gives, and what
a server cannot do is said by the same methods (the server itself: tests/test_remote.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tempscope.engine.generator import LocalGenerator, RemoteGenerator, Row, as_generator
from tempscope.engine.loop import Sample, StepEvent, generate
from tempscope.engine.remote.client import RemoteClient
from tempscope.sampling import SamplingParams


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    from tempscope.engine.loader import load_model

    return load_model(str(tiny_model_dir))


def offline_server() -> RemoteGenerator:
    """A server nothing is sent to: what these tests ask needs no request."""
    return RemoteGenerator(RemoteClient("http://127.0.0.1:9/v1", model="m"))


def test_as_generator_picks_the_engine_once(tiny: Any, tiny_model_dir: Path) -> None:
    local = as_generator(tiny)
    assert isinstance(local, LocalGenerator) and as_generator(local) is local
    assert local.name == local.label == tiny.name and local.engine == tiny.engine
    assert local.reproducible is tiny.reproducible and local.tokenizer is tiny
    assert isinstance(as_generator(str(tiny_model_dir)), LocalGenerator)
    remote = as_generator(RemoteClient("http://127.0.0.1:9/v1", model="m"),
                          tokenizer=tiny)
    assert isinstance(remote, RemoteGenerator) and as_generator(remote) is remote
    assert (remote.name, remote.label, remote.engine) == ("m", "m at http://127.0.0.1:9/v1",
                                                          "remote")
    assert remote.reproducible is None and remote.eos_token_ids == []
    assert remote.tokenizer is tiny  # the stand-in that measures text in tokens


def test_local_rows_are_the_engines_samples(tiny: Any) -> None:
    gen = LocalGenerator(tiny)
    params = [SamplingParams(temperature=0), SamplingParams(temperature=1.2, top_k=20)]
    rows = [Row("The cat sat", params[0], 7, 5), Row("Hello", params[1], 7, 4),
            Row("The cat sat", params[1], 8, 6, stop=("\n",))]
    steps: list[StepEvent] = []
    done: list[tuple[int, Sample]] = []
    out = gen.run(rows, top_alternatives=3, on_step=steps.append,
                  on_result=lambda i, s: done.append((i, s)))
    done.sort(key=lambda pair: pair[0])  # each row reported the step it ended
    assert [i for i, _ in done] == [0, 1, 2] and [s for _, s in done] == out
    assert len(steps) == sum(len(s.steps) for s in out)
    for i, (row, s) in enumerate(zip(rows, out, strict=True)):
        (alone,) = generate(tiny, row.prompt, row.params, max_new_tokens=row.max_new_tokens,
                            seed=row.seed, stop=list(row.stop), top_alternatives=3)
        assert (s.row, s.prompt, s.params, s.seed) == (i, row.prompt, row.params, row.seed)
        assert s.token_ids == alone.token_ids and s.text == alone.text
        assert s.n_tokens <= row.max_new_tokens and len(s.steps[0].top) == 3


def test_local_answers_every_question(tiny: Any) -> None:
    gen = LocalGenerator(tiny)
    check = gen.check_settings({"a": SamplingParams(top_k=5), "b": SamplingParams(top_a=0.2)})
    assert check.ignored == [] and check.logprobs_raw and check.manifest == {}
    (score,) = gen.score_texts(["The cat"], [" sat on the mat"])
    assert score.n_tokens > 0 and math.isfinite(score.logprob)
    seen: list[Any] = []
    gen.check_local(seen.append)
    assert seen == [tiny]
    (s,) = gen.generate("The cat", SamplingParams(temperature=0), max_new_tokens=3)
    assert gen.describe(s) == {} and gen.stats() is None
    view = gen.next_token("The cat", [0.5, 2], top=4, seed=0)
    labels, rows = view.across_temperatures()
    assert len(labels) == 4 and [t for t, _ in rows] == [0.5, 2.0]
    assert rows[0][1][0] > rows[1][1][0]  # the favourite's share falls as T rises


def test_what_a_server_cannot_do_is_said_before_any_request() -> None:
    gen = offline_server()
    with pytest.raises(ValueError, match="chat template cannot be applied with a remote"):
        gen.check_prompts(["x"], chat=True)
    with pytest.raises(ValueError, match="chat template"):
        gen.run([Row("x", SamplingParams())], chat=True)
    with pytest.raises(ValueError, match="chat template"):
        gen.next_token("x", [1.0], chat=True)
    gen.check_prompts(["x"])
    assert gen.score_texts(["a"], ["b"]) is None
    called: list[Any] = []
    gen.check_local(called.append)
    assert called == []  # the server checks its own context and memory
    assert gen.describe(Sample(token_ids=[], text="", finish_reason="eos", steps=[])) == {}
    assert gen.stats() is None
    gen.close()


def test_both_kinds_of_view_print_through_one_function(tiny: Any,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tempscope.cli.next_cmd import print_view
    from tempscope.engine.nexttoken import ViewTable
    from tempscope.engine.remote.engine import RemoteNextToken, RemoteTemperatureView

    local = LocalGenerator(tiny).next_token("The cat", [0.5, 2], top=3, seed=0)
    logprobs = [-0.5, -1.5, -2.5]
    probs = [math.exp(v) for v in logprobs]
    remote = RemoteNextToken("m", "http://127.0.0.1:9/v1", "The cat", 0, True, 3,
                             1 - sum(probs), [RemoteTemperatureView(
                                 1.0, [" mat", " bed", "\n"], logprobs, probs, True,
                                 0.9, 1)], [], "top-3 approximation")
    for view in (local, remote):
        parts = view.text_parts()
        tables = [p for p in parts if isinstance(p, ViewTable)]
        assert len(tables) == len(view.results)
        assert all(len(t.rows) == 3 and all(len(r) == len(t.header) for r in t.rows)
                   for t in tables)
        print_view(view)
        out = capsys.readouterr().out
        assert all(t.title in out for t in tables)
        assert out.count("LLM Temperature:") == len(view.results)
    assert tables[0].highlight == 1 and "␣bed" in out and "\\n" in out  # the remote one
