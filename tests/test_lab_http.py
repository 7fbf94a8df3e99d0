"""The lab routes over real HTTP (a ``tempscope serve`` process on the tiny model), plus a
schemathesis contract run over their part of the spec."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.server_helpers import LiveServer, live_server


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    with live_server(tiny_model_dir) as s:
        yield s


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def _continue(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/lab/continue", json={"prompt": "The cat", **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _events(http: httpx.Client, **body: Any) -> list[Any]:
    with http.stream("POST", "/v1/lab/continue",
                     json={"prompt": "The cat", "stream": True, **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln.removeprefix("data: ") for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_continue_one_column_per_temperature(http: httpx.Client) -> None:
    temps = [0.0, 0.7, 1.0, 1.5]
    out = _continue(http, temperatures=temps, seed=7, max_tokens=6, top_alternatives=4)
    assert out["object"] == "lab.continuation" and out["seed"] == 7
    assert out["prompt_tokens"] == 7  # byte-level: one token per character
    cols = out["columns"]
    assert [c["temperature"] for c in cols] == temps
    for c in cols:
        assert c["finish_reason"] == "length" and len(c["tokens"]) == 6
        assert c["token_ids"] == [t["token_id"] for t in c["tokens"]]
        lps = [math.log(t["raw_prob"]) for t in c["tokens"]]
        assert c["mean_logprob"] == pytest.approx(sum(lps) / 6, rel=1e-4)
        for t in c["tokens"]:
            assert len(t["top"]) == 4 and 0 < t["raw_prob"] <= 1 and 0 <= t["prob"] <= 1
            assert t["entropy"] >= 0 and t["raw_entropy"] > 0
            # Ranks are counted over the whole vocabulary by the engine.
            assert 1 <= t["rank"] <= 257
            edges = [(10, "top10"), (100, "top100"), (1000, "top1000")]
            assert t["bucket"] == next(b for e, b in edges if t["rank"] <= e)
    # T = 0 is greedy: every token ranks first; hotter columns draw less likely tokens.
    assert all(t["rank"] == 1 and t["prob"] == 1 for t in cols[0]["tokens"])
    assert cols[0]["mean_logprob"] > cols[3]["mean_logprob"]
    assert cols[0]["mean_sampled_entropy"] == 0 < cols[3]["mean_sampled_entropy"]


def test_continue_is_seeded_and_batched_rows_match_alone(http: httpx.Client) -> None:
    four = _continue(http, temperatures=[0.2, 0.7, 1.0, 1.5], seed=3, max_tokens=8)
    again = _continue(http, temperatures=[0.2, 0.7, 1.0, 1.5], seed=3, max_tokens=8)
    alone = _continue(http, temperatures=[1.0], seed=3, max_tokens=8)
    assert [c["token_ids"] for c in four["columns"]] == [c["token_ids"] for c in
                                                         again["columns"]]
    assert alone["columns"][0]["token_ids"] == four["columns"][2]["token_ids"]
    other = _continue(http, temperatures=[1.0], seed=4, max_tokens=8)
    assert other["columns"][0]["token_ids"] != alone["columns"][0]["token_ids"]
    unseeded = _continue(http, temperatures=[1.0], max_tokens=2)
    assert isinstance(unseeded["seed"], int)  # chosen by the server and reported


def test_stream_sends_start_tokens_done_and_matches_the_json_answer(
        http: httpx.Client) -> None:
    body = {"temperatures": [0.5, 1.5], "seed": 9, "max_tokens": 5, "top_k": 20}
    events = _events(http, **body)
    whole = _continue(http, **body)
    assert events[0]["type"] == "start" and events[0]["temperatures"] == [0.5, 1.5]
    assert events[-1]["type"] == "done"
    tokens = [e for e in events[1:-1] if e["type"] == "token"]
    assert len(tokens) == len(events) - 2 == 10
    for i, col in enumerate(whole["columns"]):
        mine = [e for e in tokens if e["column"] == i]
        assert [e["step"] for e in mine] == [1, 2, 3, 4, 5]
        assert [e["token"]["token_id"] for e in mine] == col["token_ids"]
        assert "".join(e["delta"] for e in mine) == col["text"]
        done = events[-1]["columns"][i]
        assert done["tokens"] is None and done["text"] == col["text"]
        assert done["mean_logprob"] == pytest.approx(col["mean_logprob"])
    # Both columns were streamed at once: column 1's first token before column 0's last.
    order = [e["column"] for e in tokens]
    assert order.index(1) < len(order) - 1 - order[::-1].index(0)


def test_a_branch_continues_from_the_picked_token(http: httpx.Client) -> None:
    root = _continue(http, temperatures=[0.7], seed=5, max_tokens=6)["columns"][0]
    step = http.post("/v1/lab/step", json={"prompt": "The cat", "tokens": root["token_ids"][:2],
                                           "temperatures": [0.7], "top": 5}).json()
    alt = next(t["token_id"] for t in step["tokens"] if t["token_id"] != root["token_ids"][2])
    path = [*root["token_ids"][:2], alt]
    branch = _continue(http, temperatures=[0.7], seed=5, max_tokens=4, tokens=path)
    assert branch["prompt_tokens"] == 7 + 3
    # Its first token was drawn from the distribution after prompt + path, the picked token
    # last: the alternatives it lists are that step's top tokens, with the same odds.
    after = http.post("/v1/lab/step", json={"prompt": "The cat", "tokens": path,
                                            "temperatures": [0.7], "top": 5}).json()
    want = after["temperatures"][0]["top"]
    first = branch["columns"][0]["tokens"][0]["top"][:5]
    assert [t["token_id"] for t in first] == [t["token_id"] for t in want]
    assert [t["prob"] for t in first] == pytest.approx([t["prob"] for t in want], abs=1e-5)
    unpicked = http.post("/v1/lab/step", json={"prompt": "The cat", "tokens": root["token_ids"][:3],
                                               "temperatures": [0.7], "top": 5}).json()
    assert [t["token_id"] for t in unpicked["temperatures"][0]["top"]] != [
        t["token_id"] for t in want]  # a different step: the pick mattered
    typed = _continue(http, temperatures=[0.7], seed=5, max_tokens=3,
                      tokens=root["token_ids"][:2], append_text="dog")
    assert [p["text"] for p in typed["appended"]] == ["d", "o", "g"]
    assert typed["prompt_tokens"] == 7 + 2 + 3


def test_step_redraws_from_cached_logits(http: httpx.Client) -> None:
    body = {"prompt": "The dog", "tokens": [65, 66], "top": 8}
    first = http.post("/v1/lab/step", json={**body, "temperatures": [1.0],
                                            "return_logits": True}).json()
    assert first["object"] == "lab.step" and first["cached"] is False
    assert first["prompt_tokens"] == 9 and first["vocab_size"] == len(first["logits"])
    logits = np.array(first["logits"], dtype=np.float64)
    ids = [t["token_id"] for t in first["tokens"]]
    assert ids == list(np.argsort(-logits, kind="stable")[:8])
    again = http.post("/v1/lab/step", json={**body, "temperatures": [0.3, 3.0],
                                            "top_k": 3}).json()
    assert again["cached"] is True  # another temperature and sampler: no model call
    assert again["samplers_on"] is True
    for row, t in zip(again["temperatures"], [0.3, 3.0], strict=True):
        z = np.exp((logits - logits.max()) / t)
        assert row["raw_probs"] == pytest.approx(list((z / z.sum())[ids]), abs=1e-4)
        assert row["processed"]["kept"] == 3 and sum(p > 0 for p in row["probs"]) == 3
        assert row["raw"]["entropy"] > row["processed"]["entropy"]


def test_tree_expands_with_a_cut_off(http: httpx.Client) -> None:
    r = http.post("/v1/lab/tree", json={"prompt": "The cat", "temperature": 0.5, "depth": 3,
                                        "top": 2, "min_prob": 0.02})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "lab.tree" and out["temperature"] == 0.5
    nodes = {n["id"]: n for n in out["nodes"]}
    assert max(n["depth"] for n in nodes.values()) == 3
    for n in nodes.values():
        assert n["prob"] >= 0.02
        parent = nodes.get(n["parent"]) if n["parent"] is not None else None
        want = (parent["path_prob"] if parent else 1.0) * n["prob"]
        assert n["path_prob"] == pytest.approx(want)
        assert n["path"] == [*(parent["path"] if parent else []), n["token_id"]]
    wide = http.post("/v1/lab/tree", json={"prompt": "The cat", "depth": 2, "top": 3,
                                           "min_prob": 0}).json()
    assert len(wide["nodes"]) == 3 + 9 and not wide["truncated"]
    capped = http.post("/v1/lab/tree", json={"prompt": "The cat", "depth": 3, "top": 3,
                                             "min_prob": 0, "max_nodes": 7}).json()
    assert len(capped["nodes"]) == 7 and capped["truncated"]


@pytest.mark.parametrize(("path", "body", "status", "param", "words"), [
    ("continue", {"temperatures": [-1]}, 400, "temperatures",
     "temperatures must be a number >= 0 (0 = greedy, inf = uniform), got -1"),
    ("continue", {"temperatures": [1.0] * 17}, 400, "temperatures", "at most 16"),
    ("continue", {"temperatures": []}, 400, "temperatures", "at least 1 item"),
    ("continue", {"temperature": 0.5}, 400, "temperature", "use temperatures"),
    ("continue", {"tokens": [99999]}, 400, "tokens", "outside the vocabulary"),
    ("continue", {"tokens": [-3]}, 400, "tokens", "outside the vocabulary"),
    ("continue", {"tokens": [65] * 300}, 400, "tokens", "context"),
    ("continue", {"top_p": 2}, 400, "top_p", "(0, 1]"),
    ("continue", {"max_tokens": 0}, 400, "max_tokens", "greater than or equal to 1"),
    ("continue", {"max_tokens": 5000}, 400, "max_tokens", "at most 1024"),
    ("continue", {"top_alternatives": 50}, 400, "top_alternatives", "at most 20"),
    ("continue", {"append_text": "\ud800"}, 400, "append_text", "lone surrogate"),
    ("continue", {"stream": True, "seed": -1}, 400, "seed", "greater than or equal to 0"),
    ("continue", {"temprature": 1}, 400, "temprature", "unknown field"),
    ("continue", {"model": "gpt-9"}, 404, "model", "does not exist here"),
    ("step", {"top": 1000}, 400, "top", "at most 200"),
    ("step", {"top": 0}, 400, "top", "greater than or equal to 1"),
    ("step", {"min_p": "0.1"}, 400, "min_p", "valid number"),
    ("tree", {"depth": 7}, 400, "depth", "less than or equal to 6"),
    ("tree", {"min_prob": 1.5}, 400, "min_prob", "less than or equal to 1"),
    ("tree", {"top": 0}, 400, "top", "greater than or equal to 1"),
    ("tree", {"temperature": -0.5}, 400, "temperature", "temperature must be a number >= 0"),
    ("tree", {"max_nodes": 10_000}, 400, "max_nodes", "less than or equal to 256"),
])
def test_bad_input_gets_a_clear_error(http: httpx.Client, path: str, body: dict[str, Any],
                                      status: int, param: str, words: str) -> None:
    r = http.post(f"/v1/lab/{path}", content=json.dumps({"prompt": "The cat", **body}),
                  headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")  # never a stream
    err = r.json()["error"]
    assert err["param"] == param
    assert words in err["message"], err["message"]


def test_the_default_length_fits_a_server_with_a_lower_cap(tiny_model_dir: Path) -> None:
    with live_server(tiny_model_dir, "--max-tokens", "8") as small:
        r = httpx.post(small.url + "/v1/lab/continue", json={"prompt": "Hi"}, timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["columns"][0]["token_ids"]) == 8
        r = httpx.post(small.url + "/v1/lab/continue", json={"prompt": "Hi", "max_tokens": 9},
                       timeout=60)
        assert r.status_code == 400 and "at most 8" in r.json()["error"]["message"]


def test_missing_prompt_is_a_400(http: httpx.Client) -> None:
    r = http.post("/v1/lab/step", json={"temperatures": [1]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_the_routes_are_in_the_documented_api(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    for route, request, response in [("continue", "ContinueRequest", "ContinueResponse"),
                                     ("step", "StepRequest", "StepResponse"),
                                     ("tree", "TreeRequest", "TreeResponse")]:
        op = spec["paths"][f"/v1/lab/{route}"]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
            request)
        ok = op["responses"]["200"]["content"]
        assert ok["application/json"]["schema"]["$ref"].endswith(response)
        assert "400" in op["responses"] and "422" not in op["responses"]
    stream = spec["paths"]["/v1/lab/continue"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in stream
    # Every $ref in the spec resolves (the stream events point at shared components).
    refs = set()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if "$ref" in x:
                refs.add(x["$ref"].rsplit("/", 1)[-1])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(spec)
    assert refs <= set(spec["components"]["schemas"])
    # The sampler fields come from the server's own SamplerFields (the registry's knobs).
    fields = spec["components"]["schemas"]["ContinueRequest"]["properties"]
    assert {"top_k", "min_p", "sampler_order", "temperature_last", "seed"} <= set(fields)


# ---- contract: schemathesis over the lab's part of the spec (in process, as
# tests/test_server_contract.py does for the other routes) ----------------------------------

LAB_OPERATIONS = ["/v1/lab/continue", "/v1/lab/step", "/v1/lab/tree"]


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir: Path) -> Any:
    schemathesis = pytest.importorskip("schemathesis")
    from tempscope.engine.loader import load_model
    from tempscope.server import create_app

    app = create_app(load_model(str(tiny_model_dir)), api_key="lab-key",
                     limits=_small_limits())
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _small_limits() -> Any:
    from tempscope.server.limits import ServerLimits

    # Generated bodies may ask for the most of everything: keep one example quick.
    return ServerLimits(max_tokens=16, max_temperatures=4, max_rows=4)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", LAB_OPERATIONS)
@pytest.mark.parametrize("valid", [True, False], ids=["valid", "invalid"])
def test_lab_operations_keep_their_contract(api_schema: Any, path: str, valid: bool) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, negative_data_rejection]
    mode = GenerationMode.POSITIVE if valid else GenerationMode.NEGATIVE
    strategy = api_schema[path]["POST"].as_strategy(mode)
    if valid:  # name the served model, so valid bodies reach the engine
        strategy = strategy.map(_served)

    @settings(max_examples=25, deadline=10_000, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": "Bearer lab-key"}, checks=checks)

    run()


def _served(case: Any) -> Any:
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "default"
    return case
