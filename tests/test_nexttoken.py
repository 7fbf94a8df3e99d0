"""tempscope.engine.nexttoken: one forward pass, every temperature, hand-checked draws and
tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tempscope.engine.loader import LoadedModel, load_model
from tempscope.engine.nexttoken import (
    _at_temperature,
    last_logits,
    next_token,
    token_display,
    visible,
)

PROMPT = "The cat slept on the"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")


def test_six_temperatures_cost_exactly_one_forward_call(tiny: LoadedModel) -> None:
    calls: list[int] = []
    head_lengths: list[int] = []
    hooks = [
        tiny.model.register_forward_hook(lambda *_: calls.append(1)),
        # The LM head sees only the last position (logits_to_keep=1).
        tiny.model.lm_head.register_forward_hook(
            lambda _m, inputs, _o: head_lengths.append(inputs[0].shape[1])
        ),
    ]
    try:
        r = next_token(tiny, PROMPT, [0, 0.1, 0.5, 1, 5, 10, 100, math.inf], seed=0)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [1]
    assert head_lengths == [1]
    assert len(r.results) == 8


def test_last_logits_match_a_full_forward(tiny: LoadedModel) -> None:
    ids = tiny.encode(PROMPT)
    got = last_logits(tiny, ids)
    assert got.shape == (257,) and got.dtype == torch.float32 and got.device.type == "cpu"
    with torch.inference_mode():
        full = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(got, full.float(), rtol=1e-5, atol=1e-5)


def test_distributions_match_an_independent_softmax(tiny: LoadedModel) -> None:
    r = next_token(tiny, PROMPT, [0.5, 1, 7], seed=0)
    logits = torch.from_numpy(r.logits).double()
    for res in r.results:
        expected = torch.softmax(logits / res.temperature, dim=-1).numpy()
        np.testing.assert_allclose(res.probabilities, expected, rtol=1e-9, atol=1e-12)
        assert res.probabilities.sum() == pytest.approx(1.0, abs=1e-12)
        assert res.entropy == pytest.approx(float(-(expected * np.log(expected)).sum()))
        assert res.effective_vocab == pytest.approx(math.exp(res.entropy))
        assert res.top_probability == pytest.approx(expected.max())


def test_tables_are_ranked_and_consistent(tiny: LoadedModel) -> None:
    r = next_token(tiny, PROMPT, [1], top=5, seed=0)
    (res,) = r.results
    assert [row.rank for row in res.top] == [1, 2, 3, 4, 5]
    probs = [row.probability for row in res.top]
    assert probs == sorted(probs, reverse=True)
    assert probs[0] == res.top_probability
    order = np.argsort(-r.logits, kind="stable")[:5]
    assert [row.token_id for row in res.top] == order.tolist()
    for row in res.top:
        assert row.text == tiny.token_text(row.token_id)
        assert row.logit == pytest.approx(float(r.logits[row.token_id]))
    assert len(next_token(tiny, PROMPT, [1], top=10_000).results[0].top) == 257  # clamped


def test_greedy_and_flattening(tiny: LoadedModel) -> None:
    r = next_token(tiny, PROMPT, [0, 0.1, 1, 10, 100, math.inf], seed=3)
    greedy = r.results[0]
    best = int(np.argmax(r.logits))
    assert greedy.sampled.token_id == best and greedy.sampled.rank == 1
    assert greedy.top_probability == 1.0 and greedy.entropy == 0.0
    entropies = [res.entropy for res in r.results]
    assert entropies == sorted(entropies)  # entropy rises with T
    assert r.results[-1].entropy == pytest.approx(math.log(257))  # T = inf: uniform
    assert r.results[-1].effective_vocab == pytest.approx(257)


def test_seeded_draws_reproduce(tiny: LoadedModel) -> None:
    temps = [0.5, 1, 5, 100]
    a = next_token(tiny, PROMPT, temps, seed=1234)
    b = next_token(tiny, PROMPT, temps, seed=1234)
    assert [x.sampled for x in a.results] == [x.sampled for x in b.results]
    assert a.seed == 1234
    drawn = {next_token(tiny, PROMPT, [100], seed=s).results[0].sampled.token_id
             for s in range(8)}
    assert len(drawn) > 1  # different seeds do draw different tokens at high T
    assert next_token(tiny, PROMPT, [1]).seed >= 0  # a random seed is chosen and reported


class _Named:
    """Just enough of a model for _at_temperature: token texts."""

    def token_text(self, token_id: int) -> str:
        return "abcd"[token_id]


@pytest.mark.parametrize(
    ("u", "expected"),
    # logits ln[1, 3, 0+, 4] / 8 -> probabilities [.125, .375, 0, .5]; the inverse CDF
    # picks the first token whose cumulative probability exceeds u.
    [(0.0, 0), (0.124, 0), (0.126, 1), (0.499, 1), (0.501, 3), (0.999999, 3)],
)
def test_inverse_cdf_draw_hand_checked(u: float, expected: int) -> None:
    logits = np.log(np.array([1.0, 3.0, 1e-300, 4.0]))
    logits[2] = -math.inf  # a masked token is never drawn
    named: Any = _Named()
    res = _at_temperature(named, logits, 1.0, 4, u)
    np.testing.assert_allclose(res.probabilities, [0.125, 0.375, 0.0, 0.5])
    assert res.sampled.token_id == expected
    assert [row.text for row in res.top] == ["d", "b", "a", "c"]
    assert res.entropy == pytest.approx(-(0.125 * math.log(0.125) + 0.375 * math.log(0.375)
                                          + 0.5 * math.log(0.5)))


@pytest.mark.parametrize(
    ("text", "shown"),
    [(" mat", "␣mat"), ("mat", "mat"), ("  ", "␣␣"), ("\n", "\\n"), ("\t x", "\\t␣x"),
     ("", "''"), ("\x00", "\\x00"), ("é", "é")],
)
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"temperatures": [-1]}, "temperature must be a number >= 0"),
        ({"temperatures": [float("nan")]}, "temperature must be a number >= 0"),
        ({"temperatures": []}, "at least one temperature"),
        ({"top": 0}, "top must be a whole number >= 1"),
        ({"chat": True}, "no chat template"),
    ],
)
def test_bad_input_is_a_clear_error(tiny: LoadedModel, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"prompt": PROMPT, "temperatures": [1.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        next_token(tiny, args.pop("prompt"), args.pop("temperatures"), **args)


def test_prompt_longer_than_context_is_refused(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError, match="reads at most 256"):
        next_token(tiny, "x" * 300, [1])


def test_to_dict_is_json(tiny: LoadedModel) -> None:
    r = next_token(tiny, PROMPT, [0, 1, math.inf], top=3, seed=7)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["seed"] == 7 and d["vocab_size"] == 257 and d["prompt"] == PROMPT
    assert [x["temperature"] for x in d["results"]] == [0.0, 1.0, "inf"]
    assert len(d["results"][1]["top"]) == 3
    assert set(d["results"][1]["sampled"]) == {
        "rank", "token_id", "text", "display", "logit", "probability"
    }
    full = r.to_dict(full=True)
    assert len(full["results"][0]["probabilities"]) == 257


@pytest.mark.slow
def test_embedded_model_matches_the_field_notes() -> None:
    m = load_model(engine="torch")  # the numbers are the dequantized float32 model's
    r = next_token(m, PROMPT, [1], top=3, seed=0)
    assert len(r.prompt_ids) == 5
    (res,) = r.results
    # NOTES.md: couch .453, mat .058, bed .054; entropy 3.37 nats.
    assert [row.text for row in res.top] == [" couch", " mat", " bed"]
    assert [round(row.probability, 3) for row in res.top] == pytest.approx(
        [0.453, 0.058, 0.054], abs=0.002
    )
    assert res.entropy == pytest.approx(3.37, abs=0.01)
    chat = next_token(m, PROMPT, [0], chat=True)
    assert len(chat.prompt_ids) > 5


def test_partial_utf8_tokens_show_their_bytes(tiny: LoadedModel) -> None:
    # The tiny tokenizer has one token per byte; "â" stands for byte 0xE2 in GPT-2's table,
    # the first byte of "→" (e2 86 92), which decodes alone to U+FFFD.
    lead = int(tiny.tokenizer.convert_tokens_to_ids("â"))  # type: ignore[arg-type]
    assert tiny.token_text(lead) == "\ufffd"
    assert token_display(tiny, lead, tiny.token_text(lead)) == "\\xe2"
    space = tiny.encode(" ")[0]
    assert token_display(tiny, space, " ") == "␣"
    assert [token_display(tiny, i, tiny.token_text(i)) for i in tiny.encode("→")] == [
        "\\xe2", "\\x86", "\\x92"
    ]
