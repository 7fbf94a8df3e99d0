"""Hardening: text no tokenizer can encode, values float32 cannot hold, caps that agree with
defaults, auth before parsing, a spec that lists every status, cost limits, slow clients."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tempscope.engine.backend import Backend
from tempscope.engine.loader import load_model
from tempscope.engine.loop import RowSpec, generate_rows
from tempscope.sampling import SamplingParams
from tempscope.server import ServerLimits, create_app
from tests.server_helpers import live_server

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Backend:
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def client(tiny: Backend) -> Iterator[TestClient]:
    with TestClient(create_app(tiny)) as c:
        yield c


def post(client: TestClient, path: str, body: Any, **headers: str) -> httpx.Response:
    # json.dumps escapes a lone surrogate as \ud800: valid JSON that no tokenizer encodes.
    return client.post(path, content=json.dumps(body), headers={**JSON, **headers})


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", {"model": "default", "prompt": "a\ud800b"}, "prompt"),
    ("/v1/completions", {"model": "default", "prompt": ["ok", "x\udfffy"]}, "prompt"),
    ("/v1/chat/completions", {"model": "default", "messages": [
        {"role": "user", "content": "a\ud800b"}]}, "messages"),
    ("/v1/distribution", {"prompt": "a\ud800b", "temperatures": [1]}, "prompt"),
])
def test_lone_surrogates_are_a_400_naming_the_field(client: TestClient, path: str,
                                                    body: dict[str, Any], param: str) -> None:
    r = post(client, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and "lone surrogate" in err["message"]


@pytest.mark.parametrize(("field", "value"), [
    ("top_p", 1e-300), ("typical_p", 1e-300), ("repetition_penalty", 1e-300),
    ("repetition_penalty", 1e308), ("dynatemp_range", 1e308), ("edt_theta", 1e308),
])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/distribution", "stream"])
def test_values_float32_cannot_hold_are_refused_before_any_work(
        client: TestClient, path: str, field: str, value: float) -> None:
    if path == "/v1/distribution":
        body: dict[str, Any] = {"prompt": "Hi", "temperatures": [1], field: value}
    else:
        body = {"model": "default", "prompt": "Hi", "max_tokens": 2, field: value,
                "stream": path == "stream"}
    r = post(client, "/v1/completions" if path == "stream" else path, body)
    assert r.status_code == 400, r.text  # a stream is refused before it starts
    err = r.json()["error"]
    assert err["param"] == field and repr(value) in err["message"]
    assert "float32" in err["message"]


def test_the_smallest_temperature_gives_numbers_not_nulls(client: TestClient) -> None:
    r = post(client, "/v1/distribution", {"prompt": "Hi", "temperatures": [5e-324, 1e-40],
                                          "top": 3})
    assert r.status_code == 200, r.text
    for row in r.json()["temperatures"]:
        assert None not in row["probs"] and abs(sum(row["raw_probs"]) - 1) < 1e-6


def test_defaults_respect_a_lower_max_tokens_cap(tiny: Backend) -> None:
    with TestClient(create_app(tiny, limits=ServerLimits(max_tokens=8))) as c:
        r = post(c, "/v1/completions", {"model": "default", "prompt": "Hi"})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 8
        r = post(c, "/v1/chat/completions", {"model": "default", "messages": [
            {"role": "user", "content": "Hi"}]})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 8
        r = post(c, "/v1/completions", {"model": "default", "prompt": "Hi", "max_tokens": 9})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_auth_comes_before_the_body_is_parsed(tiny: Backend) -> None:
    with TestClient(create_app(tiny, api_key="k")) as c:
        for body in (b"{not json", b"", b"[1]"):
            r = c.post("/v1/completions", content=body, headers=JSON)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "invalid_api_key"
        r = c.post("/v1/completions", content=b"{not json",
                   headers={**JSON, "Authorization": "Bearer k"})
        assert r.status_code == 400
        assert c.get("/health").status_code == 200  # no key needed outside /v1


def test_openapi_lists_every_status_with_the_error_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/distribution"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "404", "408", "413", "429", "500", "503"} <= set(responses)
        assert "422" not in responses  # validation errors are 400s in the OpenAI shape
        schema = responses["400"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorResponse")
    assert "401" in spec["paths"]["/v1/models"]["get"]["responses"]


def test_health_shows_the_limits(client: TestClient) -> None:
    limits = client.get("/health").json()["limits"]
    assert limits["max_request_prompt_tokens"] == ServerLimits().max_request_prompt_tokens
    assert limits["body_timeout_s"] == ServerLimits().body_timeout_s


def test_one_request_cannot_send_unbounded_prompt_tokens(tiny: Backend) -> None:
    limits = ServerLimits(max_prompt_tokens=100, max_request_prompt_tokens=150)
    with TestClient(create_app(tiny, limits=limits)) as c:
        ok = post(c, "/v1/completions", {"model": "default", "prompt": ["a" * 90] * 3,
                                         "max_tokens": 1})
        assert ok.status_code == 200, ok.text  # the same prompt thrice is prefilled once
        r = post(c, "/v1/completions", {"model": "default",
                                        "prompt": ["a" * 90, "b" * 90], "max_tokens": 1})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"


def test_a_stalled_body_gets_a_408(tiny_model_dir: Path, tmp_path: Path) -> None:
    with live_server(tiny_model_dir, "--body-timeout", "1", model=str(tiny_model_dir)) as s:
        port = int(s.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo")
            start = time.monotonic()
            answer = ""
            while "request_timeout" not in answer:  # headers and body may come apart
                chunk = sock.recv(4096).decode()
                if not chunk:
                    break
                answer += chunk
            waited = time.monotonic() - start
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "request_timeout" in answer
        assert waited < 10  # the socket timeout: the server answered, the client did not give up
        assert httpx.get(s.url + "/health").status_code == 200


def test_trickled_headers_get_the_connection_closed(tiny_model_dir: Path) -> None:
    with live_server(tiny_model_dir, "--header-timeout", "1", model=str(tiny_model_dir)) as s:
        port = int(s.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # never finished
            assert sock.recv(4096) == b""  # closed by the server, not by the 10 s timeout
        # a whole request on a fresh connection is unaffected
        assert httpx.get(s.url + "/health").status_code == 200


def test_cli_rejects_bad_limits(tiny_model_dir: Path) -> None:
    from tests.conftest import run_cli

    r = run_cli("serve", "-m", str(tiny_model_dir), "--max-request-prompt-tokens", "0")
    assert r.returncode == 2 and "--max-request-prompt-tokens must be >= 1" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_cancelled_long_prefill_stops_between_chunks() -> None:
    """llama.cpp prefills in chunks of 512 tokens and asks between them whether anyone still
    wants the rows: a caller that went away stops the prefill after the first chunk."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    model = load_model(engine="llama.cpp")
    ids = model.encode("The cat slept on the mat. " * 500)[:3000]  # 6 chunks
    asked: list[int] = []

    def gone(row: int) -> bool:
        asked.append(row)
        return True  # the client has disconnected

    rows = [RowSpec(prompt_ids=ids, params=SamplingParams(temperature=0), max_new_tokens=4)]
    (result,) = generate_rows(model, rows, is_cancelled=gone)
    assert result.finish_reason == "cancelled" and result.token_ids == []
    assert len(asked) == 1  # asked once, after the first chunk, then stopped
    # The engine is free at once: the next request runs normally.
    (after,) = generate_rows(model, [RowSpec(prompt_ids=ids[:8], params=SamplingParams(
        temperature=0), max_new_tokens=2)])
    assert after.finish_reason == "length" and len(after.token_ids) == 2
