"""The samplers that need more than logits — min_tokens, bad_words, logprob_token_ids, DRY —
through the generation loop, the CLI and the server, on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest

from tempscope.engine.loader import LoadedModel, load_model
from tempscope.engine.loop import RowSpec, generate_rows
from tempscope.sampling import SamplingParams
from tests.conftest import run_cli
from tests.server_helpers import live_server

EOS = 256


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir))


def tid(model: LoadedModel, text: str) -> int:
    """The one token id of a one-character text."""
    (token,) = model.encode(text)
    return token


def row(model: LoadedModel, **fields: object) -> RowSpec:
    stop = fields.pop("stop", [])
    max_new = fields.pop("max_new_tokens", 8)
    return RowSpec(prompt_ids=model.encode("ab"), params=SamplingParams(temperature=0, **fields),
                   max_new_tokens=max_new, stop=stop)  # type: ignore[arg-type]


def test_min_tokens_holds_back_eos(tiny: LoadedModel) -> None:
    push_eos = {EOS: 100.0}
    (plain,) = generate_rows(tiny, [row(tiny, logit_bias=push_eos)])
    assert plain.finish_reason == "eos" and len(plain.token_ids) == 1
    (held,) = generate_rows(tiny, [row(tiny, logit_bias=push_eos, min_tokens=5)])
    assert held.finish_reason == "eos"
    assert len(held.token_ids) == 6 and EOS not in held.token_ids[:5]


def test_min_tokens_holds_back_stop_strings(tiny: LoadedModel) -> None:
    push_x = {tid(tiny, "x"): 100.0}
    (plain,) = generate_rows(tiny, [row(tiny, logit_bias=push_x, stop=["x"])])
    assert plain.finish_reason == "stop" and len(plain.token_ids) == 1
    (held,) = generate_rows(tiny, [row(tiny, logit_bias=push_x, stop=["x"], min_tokens=3)])
    assert held.finish_reason == "stop" and len(held.token_ids) == 3
    assert held.text == "xx"  # the stop string that ended it is cut; earlier ones stay


def test_bad_words_never_appear(tiny: LoadedModel) -> None:
    (greedy,) = generate_rows(tiny, [row(tiny, max_new_tokens=12)])
    word = greedy.text[:2]
    assert len(word) == 2
    (banned,) = generate_rows(tiny, [row(tiny, max_new_tokens=12, bad_words=[word])])
    assert word not in banned.text
    assert banned.text[0] == word[0]  # only the last token of the word is banned


def test_logprob_token_ids_whatever_their_rank(tiny: LoadedModel) -> None:
    q = tid(tiny, "q")
    named = [EOS, q, tid(tiny, "a")]
    (r,) = generate_rows(tiny, [row(tiny, logprob_token_ids=named, bad_words=["q"],
                                    max_new_tokens=3)], top_alternatives=1)
    for step in r.steps:
        assert [a.token_id for a in step.named] == named
        by_id = {a.token_id: a for a in step.named}
        assert by_id[q].prob == 0.0 and by_id[q].raw_prob > 0  # banned
        assert sum(a.raw_prob for a in step.named) <= 1 + 1e-6
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate_rows(tiny, [row(tiny, logprob_token_ids=[10**6])])


def test_dry_breaks_a_greedy_loop(tiny: LoadedModel) -> None:
    """The tiny model's greedy output repeats itself; DRY with a strong multiplier breaks the
    repeat of what came before."""
    (greedy,) = generate_rows(tiny, [row(tiny, max_new_tokens=16)])
    (dry,) = generate_rows(tiny, [row(tiny, max_new_tokens=16, dry_multiplier=50.0,
                                      dry_allowed_length=1)])
    assert greedy.token_ids != dry.token_ids


def test_cli_generate_json_reports_named_logprobs(tiny_model_dir: Path) -> None:
    out = run_cli("generate", "ab", "-m", str(tiny_model_dir), "-t", "0", "--max-new-tokens",
                  "3", "--json", "--logprob-token-ids", "97", "98", "--bad-words", "q",
                  "--min-tokens", "2", "--engine", "torch")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    steps = data["samples"][0]["steps"] if "samples" in data else data[0]["steps"]
    assert [n["token_id"] for n in steps[0]["named"]] == [97, 98]


@pytest.mark.slow
def test_server_new_fields(tiny_model_dir: Path, tiny: LoadedModel) -> None:
    q = tid(tiny, "q")
    with live_server(tiny_model_dir) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v1/completions", json={
            "model": "default", "prompt": "ab", "max_tokens": 3, "temperature": 0,
            "logprob_token_ids": [97, q], "bad_words": ["q"], "min_tokens": 2,
            "dry_multiplier": 0.8, "top_a": 0.1, "tfs_z": 0.95, "min_keep": 2})
        assert r.status_code == 200, r.text
        named = r.json()["choices"][0]["logprobs"]["named_logprobs"]
        assert len(named) == 3 and set(named[0]) == {"97", str(q)}
        assert named[0][str(q)] == -9999.0  # banned: probability 0
        chat = c.post("/v1/chat/completions", json={
            "model": "default", "messages": [{"role": "user", "content": "ab"}],
            "max_tokens": 2, "logprob_token_ids": [97]}).json()
        token = chat["choices"][0]["logprobs"]["content"][0]
        assert token["named_logprobs"][0]["token_id"] == 97
        assert math.isfinite(token["named_logprobs"][0]["logprob"])
        bad = c.post("/v1/completions", json={"model": "default", "prompt": "ab",
                                              "logprob_token_ids": [10**6]})
        assert bad.status_code == 400 and "outside the vocabulary" in bad.text
        bad = c.post("/v1/completions", json={"model": "default", "prompt": "ab",
                                              "dry_base": 2.0})
        assert bad.status_code == 400 and "dry_multiplier" in bad.text
        catalogue = c.get("/v1/samplers").json()
        assert "dry" in [s["name"] for s in catalogue["samplers"]]
        dist = c.post("/v1/distribution", json={"prompt": "abab", "temperatures": [1],
                                                "dry_multiplier": 5.0, "dry_allowed_length": 1,
                                                "bad_words": ["a"]})
        assert dist.status_code == 200, dist.text
