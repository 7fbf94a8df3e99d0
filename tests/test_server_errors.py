"""Every invalid request gets a 4xx in the OpenAI error shape; the server stays healthy.

One server, started with ``--api-key``, so the key checks run against the real CLI flag.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.server_helpers import LiveServer, live_server

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
OK_COMPLETION = {"model": "default", "prompt": "Hi", "max_tokens": 2}
OK_CHAT = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    with live_server(tiny_model_dir, "--api-key", KEY) as s:
        yield s


def comp(**changes: Any) -> dict[str, Any]:
    body = {**OK_COMPLETION, **changes}
    return {k: v for k, v in body.items() if v is not DROP}


def chat(**changes: Any) -> dict[str, Any]:
    body = {**OK_CHAT, **changes}
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()
C, CH, D = "/v1/completions", "/v1/chat/completions", "/v1/distribution"

# (id, method, path, body: dict | bytes | None, headers, status, param)
CASES: list[tuple[str, str, str, Any, dict[str, str] | None, int, str | None]] = [
    ("invalid-json", "POST", C, b"{not json", None, 400, None),
    ("body-is-array", "POST", C, b"[1, 2]", None, 400, None),
    ("empty-body", "POST", C, b"", None, 400, None),
    ("form-encoded-body", "POST", C, b"prompt=hi", {"Content-Type":
                                                   "application/x-www-form-urlencoded"}, 400,
     None),
    ("unknown-field-typo", "POST", C, comp(temprature=1.0), None, 400, "temprature"),
    ("missing-model", "POST", C, comp(model=DROP), None, 400, "model"),
    ("missing-prompt", "POST", C, comp(prompt=DROP), None, 400, "prompt"),
    ("unknown-model", "POST", C, comp(model="gpt-17"), None, 404, "model"),
    ("negative-temperature", "POST", C, comp(temperature=-0.5), None, 400, "temperature"),
    ("nan-temperature", "POST", C, b'{"model": "default", "prompt": "x", "temperature": NaN}',
     None, 400, "temperature"),
    ("string-temperature", "POST", C, comp(temperature="hot"), None, 400, "temperature"),
    ("top-p-above-one", "POST", C, comp(top_p=1.5), None, 400, "top_p"),
    ("top-k-negative", "POST", C, comp(top_k=-5), None, 400, "top_k"),
    ("top-k-float", "POST", C, comp(top_k=2.5), None, 400, "top_k"),
    ("min-p-above-one", "POST", C, comp(min_p=2), None, 400, "min_p"),
    ("repetition-penalty-zero", "POST", C, comp(repetition_penalty=0), None, 400,
     "repetition_penalty"),
    ("unknown-sampler-in-order", "POST", C, comp(sampler_order=["top_k", "magic"]), None, 400,
     "sampler_order"),
    ("n-zero", "POST", C, comp(n=0), None, 400, "n"),
    ("n-over-cap", "POST", C, comp(n=1000), None, 400, "n"),
    ("max-tokens-zero", "POST", C, comp(max_tokens=0), None, 400, "max_tokens"),
    ("max-tokens-over-cap", "POST", C, comp(max_tokens=10**6), None, 400, "max_tokens"),
    ("prompt-plus-max-tokens-over-context", "POST", C, comp(prompt="x" * 200, max_tokens=100),
     None, 400, "max_tokens"),
    ("prompt-over-context", "POST", C, comp(prompt="y" * 400, max_tokens=1), None, 400, None),
    ("token-id-outside-vocab", "POST", C, comp(prompt=[1, 2, 99999]), None, 400, "prompt"),
    ("empty-prompt-list", "POST", C, comp(prompt=[]), None, 400, "prompt"),
    ("too-many-stops", "POST", C, comp(stop=["a", "b", "c", "d", "e"]), None, 400, "stop"),
    ("logprobs-over-cap", "POST", C, comp(logprobs=50), None, 400, "logprobs"),
    ("logit-bias-bad-key", "POST", C, comp(logit_bias={"cat": 1}), None, 400, "logit_bias"),
    ("logit-bias-outside-vocab", "POST", C, comp(logit_bias={"100000": 1}), None, 400,
     "logit_bias"),
    ("logit-bias-too-big", "POST", C, comp(logit_bias={"5": 500}), None, 400, "logit_bias"),
    ("stream-not-bool", "POST", C, comp(stream="yes"), None, 400, "stream"),
    ("negative-seed", "POST", C, comp(seed=-1), None, 400, "seed"),
    ("best-of-not-n", "POST", C, comp(best_of=3), None, 400, None),
    ("echo-with-logprobs", "POST", C, comp(echo=True, logprobs=1), None, 400, None),
    ("suffix", "POST", C, comp(suffix="end"), None, 400, None),
    ("bad-logprobs-mode", "POST", C, comp(logprobs_mode="cooked"), None, 400, "logprobs_mode"),
    ("chat-empty-messages", "POST", CH, chat(messages=[]), None, 400, "messages"),
    ("chat-bad-role", "POST", CH, chat(messages=[{"role": "robot", "content": "x"}]), None,
     400, None),
    ("chat-image-part", "POST", CH, chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]), None, 400, None),
    ("chat-top-logprobs-without-logprobs", "POST", CH, chat(top_logprobs=2), None, 400, None),
    ("chat-tools", "POST", CH, chat(tools=[{"type": "function", "function": {"name": "f"}}]),
     None, 400, "tools"),
    ("chat-json-mode", "POST", CH, chat(response_format={"type": "json_object"}), None, 400,
     "response_format"),
    ("chat-max-tokens-disagree", "POST", CH, chat(max_tokens=2, max_completion_tokens=3), None,
     400, None),
    ("distribution-no-temperatures", "POST", D, {"prompt": "x", "temperatures": []}, None, 400,
     "temperatures"),
    ("distribution-too-many-temperatures", "POST", D,
     {"prompt": "x", "temperatures": [1.0] * 50}, None, 400, "temperatures"),
    ("distribution-negative-temperature", "POST", D, {"prompt": "x", "temperatures": [-1]},
     None, 400, "temperatures"),
    ("distribution-top-zero", "POST", D, {"prompt": "x", "top": 0}, None, 400, "top"),
    ("distribution-top-over-cap", "POST", D, {"prompt": "x", "top": 5000}, None, 400, "top"),
    ("distribution-temperature-field", "POST", D, {"prompt": "x", "temperature": 1}, None,
     400, None),
    ("body-too-large", "POST", C, comp(prompt="z" * 2_000_000), None, 413, None),
    ("wrong-method", "GET", C, None, None, 405, None),
    ("unknown-route", "POST", "/v1/engines/davinci/completions", comp(), None, 404, None),
    ("missing-api-key", "POST", C, comp(), {"Authorization": ""}, 401, None),
    ("wrong-api-key", "POST", C, comp(), {"Authorization": "Bearer nope"}, 401, None),
    ("wrong-auth-scheme", "GET", "/v1/models", None, {"Authorization": f"Basic {KEY}"}, 401,
     None),
]


def _send(server: LiveServer, method: str, path: str, body: Any,
          headers: dict[str, str] | None) -> httpx.Response:
    h = {**AUTH, "Content-Type": "application/json", **(headers or {})}
    h = {k: v for k, v in h.items() if v}
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return httpx.request(method, server.url + path, content=content, headers=h, timeout=60)


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    assert isinstance(err["type"], str)
    return dict(err)


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "param"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_request(server: LiveServer, method: str, path: str, body: Any,
                         headers: dict[str, str] | None, status: int, param: str | None
                         ) -> None:
    err = assert_openai_error(_send(server, method, path, body, headers), status)
    if param is not None:
        assert err["param"] == param, err


def test_at_least_twenty_kinds() -> None:
    assert len(CASES) >= 20


def test_chunked_body_over_the_limit(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "default", "prompt": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"}'

    r = httpx.post(server.base_url + "/completions", content=chunks(),
                   headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    assert_openai_error(r, 413)


def test_openai_client_raises_typed_errors(server: LiveServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="default", prompt="x", temperature=-1)
    assert "temperature" in bad.value.message
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong",
                      max_retries=0).models.list()


def test_playground_and_health_need_no_key(server: LiveServer) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "tempscope" in page.text


def test_still_healthy_and_serving_after_all_that(server: LiveServer) -> None:
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    r = httpx.post(server.base_url + "/completions", json=OK_COMPLETION, headers=AUTH)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    log = server.log.read_text()
    assert "Traceback" not in log and " 500 " not in log
