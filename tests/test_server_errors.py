"""Every invalid request gets a 4xx in the OpenAI error shape, naming the field at fault, and
the server stays healthy after each; a stream is refused before it starts (a JSON error, not a
200 whose events carry one).

One server, started with ``--api-key``, so the key checks run against the real CLI flag.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from tempscope.engine.loader import load_model
from tempscope.engine.loop import Decoder
from tempscope.server import create_app
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

def dist(**changes: Any) -> dict[str, Any]:
    return {"prompt": "Hi", "temperatures": [1], **changes}


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


TEXT = {"Content-Type": "text/plain"}
NESTED = 100_000  # deeper than any JSON parser recurses

# (id, method, path, body: dict | bytes | None, headers, status, param). A dict body goes
# through json.dumps, which writes a lone surrogate as the valid JSON escape "\ud800".
CASES: list[tuple[str, str, str, Any, dict[str, str] | None, int, str | None]] = [
    # --- the body as a whole
    ("invalid-json", "POST", C, b"{not json", None, 400, None),
    ("body-is-array", "POST", C, b"[1, 2]", None, 400, None),
    ("empty-body", "POST", C, b"", None, 400, None),
    ("form-encoded-body", "POST", C, b"prompt=hi", {"Content-Type":
                                                   "application/x-www-form-urlencoded"}, 400,
     None),
    ("json-sent-as-text-plain", "POST", C, json.dumps(comp()).encode(), TEXT, 400, None),
    ("json-sent-without-content-type", "POST", CH, json.dumps(chat()).encode(),
     {"Content-Type": ""}, 400, None),
    ("body-not-utf8", "POST", C, b'{"model": "default", "prompt": "\xff\xfe"}', None, 400,
     None),
    ("body-is-null", "POST", D, b"null", None, 400, None),
    ("body-is-a-string", "POST", CH, b'"hello"', None, 400, None),
    ("body-is-an-overflowing-number", "POST", C, b"1e999", None, 400, None),
    ("arrays-nested-too-deep", "POST", C,
     b'{"model": "default", "prompt": ' + b"[" * NESTED + b"]" * NESTED + b"}", None, 400,
     None),
    ("objects-nested-too-deep", "POST", CH,
     b'{"model": "default", "metadata": ' + b'{"a": ' * NESTED + b"1" + b"}" * NESTED + b"}",
     None, 400, None),
    ("integer-literal-of-5000-digits", "POST", C,
     b'{"model": "default", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", None, 400,
     None),
    ("duplicate-key-last-wins", "POST", C, b'{"model": "default", "prompt": "x", "prompt": 5}',
     None, 400, "prompt"),
    ("body-too-large", "POST", C, comp(prompt="z" * 2_000_000), None, 413, None),
    ("chat-body-too-large", "POST", CH, chat(messages=user("z" * 2_000_000)), None, 413, None),
    ("distribution-body-too-large", "POST", D, dist(prompt="z" * 2_000_000), None, 413, None),
    # --- unknown and missing fields
    ("unknown-field-typo", "POST", C, comp(temprature=1.0), None, 400, "temprature"),
    ("chat-unknown-field", "POST", CH, chat(top_q=0.5), None, 400, "top_q"),
    ("distribution-unknown-field", "POST", D, dist(temps=[1]), None, 400, "temps"),
    ("stream-options-unknown-key", "POST", C,
     comp(stream=True, stream_options={"include_usage": True, "chunk_size": 5}), None, 400,
     "stream_options.chunk_size"),
    ("missing-model", "POST", C, comp(model=DROP), None, 400, "model"),
    ("missing-prompt", "POST", C, comp(prompt=DROP), None, 400, "prompt"),
    ("chat-missing-messages", "POST", CH, chat(messages=DROP), None, 400, "messages"),
    ("distribution-missing-prompt", "POST", D, {"temperatures": [1]}, None, 400, "prompt"),
    ("unknown-model", "POST", C, comp(model="gpt-17"), None, 404, "model"),
    ("chat-unknown-model", "POST", CH, chat(model="gpt-17"), None, 404, "model"),
    ("distribution-unknown-model", "POST", D, dist(model="gpt-17"), None, 404, "model"),
    # --- wrong types
    ("model-not-a-string", "POST", C, comp(model=5), None, 400, "model"),
    ("model-null", "POST", CH, chat(model=None), None, 400, "model"),
    ("prompt-a-number", "POST", C, comp(prompt=5), None, 400, "prompt"),
    ("prompt-an-object", "POST", C, comp(prompt={"text": "Hi"}), None, 400, "prompt"),
    ("prompt-mixes-text-and-ids", "POST", C, comp(prompt=[1, "a"]), None, 400, "prompt"),
    ("prompt-nested-three-deep", "POST", C, comp(prompt=[[[1]]]), None, 400, "prompt"),
    ("prompt-float-token-ids", "POST", C, comp(prompt=[1.5]), None, 400, "prompt"),
    ("prompt-bool-token-ids", "POST", C, comp(prompt=[True]), None, 400, "prompt"),
    ("string-temperature", "POST", C, comp(temperature="hot"), None, 400, "temperature"),
    ("bool-temperature", "POST", C, comp(temperature=True), None, 400, "temperature"),
    ("top-k-float", "POST", C, comp(top_k=2.5), None, 400, "top_k"),
    ("max-tokens-float", "POST", C, comp(max_tokens=2.0), None, 400, "max_tokens"),
    ("max-tokens-string", "POST", C, comp(max_tokens="2"), None, 400, "max_tokens"),
    ("n-bool", "POST", C, comp(n=True), None, 400, "n"),
    ("seed-float", "POST", C, comp(seed=1.5), None, 400, "seed"),
    ("stream-not-bool", "POST", C, comp(stream="yes"), None, 400, "stream"),
    ("stream-an-int", "POST", CH, chat(stream=1), None, 400, "stream"),
    ("echo-not-bool", "POST", C, comp(echo="yes"), None, 400, "echo"),
    ("stop-a-number", "POST", C, comp(stop=5), None, 400, "stop"),
    ("stop-list-of-numbers", "POST", C, comp(stop=[5]), None, 400, "stop.0"),
    ("logit-bias-a-list", "POST", C, comp(logit_bias=[1]), None, 400, "logit_bias"),
    ("logit-bias-value-a-string", "POST", C, comp(logit_bias={"1": "x"}), None, 400,
     "logit_bias.1"),
    ("sampler-order-a-string", "POST", C, comp(sampler_order="top_k"), None, 400,
     "sampler_order"),
    ("temperature-last-not-bool", "POST", C, comp(temperature_last="yes"), None, 400,
     "temperature_last"),
    ("bad-logprobs-mode", "POST", C, comp(logprobs_mode="cooked"), None, 400, "logprobs_mode"),
    ("stream-options-not-an-object", "POST", C, comp(stream=True, stream_options=[1]), None,
     400, "stream_options"),
    ("stream-options-flag-not-bool", "POST", CH,
     chat(stream=True, stream_options={"include_usage": "yes"}), None, 400,
     "stream_options.include_usage"),
    ("chat-logprobs-an-int", "POST", CH, chat(logprobs=5), None, 400, "logprobs"),
    ("distribution-return-logits-not-bool", "POST", D, dist(return_logits="yes"), None, 400,
     "return_logits"),
    ("distribution-chat-not-bool", "POST", D, dist(chat="yes"), None, 400, "chat"),
    ("distribution-prompt-token-ids", "POST", D, dist(prompt=[1, 2]), None, 400, "prompt"),
    ("distribution-temperatures-strings", "POST", D, dist(temperatures=["1"]), None, 400,
     "temperatures.0"),
    # --- out of range, extreme and non-finite numbers
    ("negative-temperature", "POST", C, comp(temperature=-0.5), None, 400, "temperature"),
    ("nan-temperature", "POST", C, b'{"model": "default", "prompt": "x", "temperature": NaN}',
     None, 400, "temperature"),
    ("infinity-temperature", "POST", C,
     b'{"model": "default", "prompt": "x", "temperature": Infinity}', None, 400,
     "temperature"),
    ("minus-infinity-temperature", "POST", CH,
     b'{"model": "default", "messages": [{"role": "user"}], "temperature": -Infinity}', None, 400,
     "temperature"),
    ("temperature-literal-overflows-to-inf", "POST", C,
     b'{"model": "default", "prompt": "x", "temperature": 1e999}', None, 400, "temperature"),
    ("nan-typical-p", "POST", D, b'{"prompt": "x", "typical_p": NaN}', None, 400, "typical_p"),
    ("top-p-above-one", "POST", C, comp(top_p=1.5), None, 400, "top_p"),
    ("top-p-1e-300", "POST", C, comp(top_p=1e-300), None, 400, "top_p"),
    ("top-p-5e-324", "POST", CH, chat(top_p=5e-324), None, 400, "top_p"),
    ("top-p-minus-zero", "POST", C, comp(top_p=-0.0), None, 400, "top_p"),
    ("top-k-negative", "POST", C, comp(top_k=-5), None, 400, "top_k"),
    ("min-p-above-one", "POST", C, comp(min_p=2), None, 400, "min_p"),
    ("repetition-penalty-zero", "POST", C, comp(repetition_penalty=0), None, 400,
     "repetition_penalty"),
    ("repetition-penalty-1e308", "POST", CH, chat(repetition_penalty=1e308), None, 400,
     "repetition_penalty"),
    ("frequency-penalty-1e308", "POST", C, comp(frequency_penalty=1e308), None, 400,
     "frequency_penalty"),
    ("presence-penalty-minus-1e308", "POST", CH, chat(presence_penalty=-1e308), None, 400,
     "presence_penalty"),
    ("mirostat-tau-1e308", "POST", D, dist(mirostat_tau=1e308), None, 400, "mirostat_tau"),
    ("edt-n-without-theta", "POST", C, comp(edt_n=0.5), None, 400, "edt_n"),
    ("nan-logit-bias", "POST", C, b'{"model": "default", "prompt": "x", "logit_bias": '
     b'{"1": NaN}}', None, 400, "logit_bias.1"),
    ("logit-bias-too-big", "POST", C, comp(logit_bias={"5": 500}), None, 400, "logit_bias"),
    ("logit-bias-1e308", "POST", CH, chat(logit_bias={"5": 1e308}), None, 400, "logit_bias"),
    ("negative-seed", "POST", C, comp(seed=-1), None, 400, "seed"),
    ("seed-2-to-the-63", "POST", C, comp(seed=2**63), None, 400, "seed"),
    ("n-zero", "POST", C, comp(n=0), None, 400, "n"),
    ("n-negative", "POST", CH, chat(n=-1), None, 400, "n"),
    ("n-over-cap", "POST", C, comp(n=1000), None, 400, "n"),
    ("n-2-to-the-63", "POST", C, comp(n=2**63), None, 400, "n"),
    ("chat-n-over-cap", "POST", CH, chat(n=17), None, 400, "n"),
    ("best-of-not-n", "POST", C, comp(best_of=3), None, 400, "best_of"),
    ("best-of-2-to-the-63", "POST", C, comp(best_of=2**63), None, 400, "best_of"),
    ("max-tokens-zero", "POST", C, comp(max_tokens=0), None, 400, "max_tokens"),
    ("max-tokens-over-cap", "POST", C, comp(max_tokens=10**6), None, 400, "max_tokens"),
    ("max-tokens-2-to-the-63", "POST", C, comp(max_tokens=2**63), None, 400, "max_tokens"),
    ("chat-max-tokens-over-cap", "POST", CH, chat(max_tokens=10**6), None, 400, "max_tokens"),
    ("chat-max-completion-tokens-zero", "POST", CH,
     chat(max_tokens=DROP, max_completion_tokens=0), None, 400, "max_completion_tokens"),
    ("logprobs-over-cap", "POST", C, comp(logprobs=50), None, 400, "logprobs"),
    ("logprobs-negative", "POST", C, comp(logprobs=-1), None, 400, "logprobs"),
    ("logprobs-2-to-the-63", "POST", C, comp(logprobs=2**63), None, 400, "logprobs"),
    ("chat-top-logprobs-over-cap", "POST", CH, chat(logprobs=True, top_logprobs=21), None,
     400, "top_logprobs"),
    ("chat-top-logprobs-2-to-the-63", "POST", CH, chat(logprobs=True, top_logprobs=2**63),
     None, 400, "top_logprobs"),
    ("chat-top-logprobs-without-logprobs", "POST", CH, chat(top_logprobs=2), None, 400,
     "top_logprobs"),
    ("distribution-no-temperatures", "POST", D, dist(temperatures=[]), None, 400,
     "temperatures"),
    ("distribution-negative-temperature", "POST", D, dist(temperatures=[-1]), None, 400,
     "temperatures"),
    ("distribution-nan-temperature", "POST", D, b'{"prompt": "x", "temperatures": [1, NaN]}',
     None, 400, "temperatures.1"),
    ("distribution-infinite-temperature", "POST", D,
     b'{"prompt": "x", "temperatures": [Infinity]}', None, 400, "temperatures.0"),
    ("distribution-top-zero", "POST", D, dist(top=0), None, 400, "top"),
    ("distribution-top-over-cap", "POST", D, dist(top=5000), None, 400, "top"),
    ("distribution-top-2-to-the-63", "POST", D, dist(top=2**63), None, 400, "top"),
    ("distribution-top-p-1e-300", "POST", D, dist(top_p=1e-300), None, 400, "top_p"),
    ("distribution-temperature-field", "POST", D, dist(temperature=1), None, 400,
     "temperature"),
    # --- lone surrogates: valid JSON, no valid text
    ("prompt-lone-surrogate", "POST", C, comp(prompt="a\ud800b"), None, 400, "prompt"),
    ("prompt-list-lone-surrogate", "POST", C, comp(prompt=["ok", "x\udfffy"]), None, 400,
     "prompt"),
    ("stream-prompt-lone-surrogate", "POST", C, comp(prompt="\udc00", stream=True), None, 400,
     "prompt"),
    ("chat-content-lone-surrogate", "POST", CH, chat(messages=user("a\ud800")), None, 400,
     "messages"),
    ("chat-content-part-lone-surrogate", "POST", CH,
     chat(messages=user([{"type": "text", "text": "hi \udbff"}])), None, 400, "messages"),
    ("stop-lone-surrogate", "POST", C, comp(stop="\ud800"), None, 400, "stop"),
    ("stop-list-lone-surrogate", "POST", C, comp(stop=["a", "\udfff"]), None, 400, "stop"),
    ("chat-stop-lone-surrogate", "POST", CH, chat(stop="end\ud800", stream=True), None, 400,
     "stop"),
    ("logit-bias-key-lone-surrogate", "POST", C, comp(logit_bias={"\ud800": 1}), None, 400,
     "logit_bias"),
    ("model-lone-surrogate", "POST", C, comp(model="\ud800"), None, 404, "model"),
    ("chat-model-lone-surrogate", "POST", CH, chat(model="gpt\udfff"), None, 404, "model"),
    ("sampler-order-lone-surrogate", "POST", C, comp(sampler_order=["\ud800"]), None, 400,
     "sampler_order"),
    ("distribution-prompt-lone-surrogate", "POST", D, dist(prompt="a\ud800b"), None, 400,
     "prompt"),
    ("distribution-chat-prompt-lone-surrogate", "POST", D, dist(prompt="a\ud800", chat=True),
     None, 400, "prompt"),
    ("distribution-model-lone-surrogate", "POST", D, dist(model="\ud800"), None, 404, "model"),
    # --- prompts as token ids, lengths and counts
    ("token-id-outside-vocab", "POST", C, comp(prompt=[1, 2, 99999]), None, 400, "prompt"),
    ("token-id-negative", "POST", C, comp(prompt=[-1]), None, 400, "prompt"),
    ("token-id-2-to-the-63", "POST", C, comp(prompt=[2**63]), None, 400, "prompt"),
    ("token-id-lists-one-bad", "POST", C, comp(prompt=[[1], [99999]]), None, 400, "prompt"),
    ("empty-prompt-list", "POST", C, comp(prompt=[]), None, 400, "prompt"),
    ("too-many-prompts", "POST", C, comp(prompt=["a"] * 17), None, 400, "prompt"),
    ("a-hundred-thousand-prompts", "POST", C, comp(prompt=["a"] * 100_000), None, 400,
     "prompt"),
    ("token-ids-over-the-prompt-cap", "POST", C, comp(prompt=[65] * 5000), None, 400,
     "prompt"),
    ("prompt-of-special-token-strings-over-char-cap", "POST", C,
     comp(prompt="<|endoftext|>" * 60_000), None, 400, "prompt"),
    ("prompts-over-the-request-char-cap", "POST", C, comp(prompt=["a" * 100_000] * 3), None,
     400, "prompt"),
    ("chat-content-over-char-cap", "POST", CH, chat(messages=user("<|endoftext|>" * 60_000)),
     None, 400, "messages"),
    ("distribution-prompt-over-char-cap", "POST", D, dist(prompt="<|endoftext|>" * 60_000),
     None, 400, "prompt"),
    ("prompt-plus-max-tokens-over-context", "POST", C, comp(prompt="x" * 200, max_tokens=100),
     None, 400, "max_tokens"),
    ("prompt-over-context", "POST", C, comp(prompt="y" * 400, max_tokens=1), None, 400,
     "prompt"),
    ("chat-prompt-over-context", "POST", CH, chat(messages=user("y" * 400), max_tokens=DROP),
     None, 400, "messages"),
    ("chat-twenty-five-thousand-messages", "POST", CH,
     chat(messages=[{"role": "user", "content": ""}] * 25_000), None, 400, "messages"),
    ("distribution-prompt-over-context", "POST", D, dist(prompt="y" * 400), None, 400,
     "prompt"),
    ("distribution-too-many-temperatures", "POST", D, dist(temperatures=[1.0] * 50), None, 400,
     "temperatures"),
    ("distribution-100k-temperatures", "POST", D, dist(temperatures=[1.0] * 100_000), None,
     400, "temperatures"),
    ("too-many-stops", "POST", C, comp(stop=["a", "b", "c", "d", "e"]), None, 400, "stop"),
    ("ten-thousand-stops", "POST", CH, chat(stop=["x"] * 10_000), None, 400, "stop"),
    ("stop-string-too-long", "POST", C, comp(stop="x" * 500), None, 400, "stop"),
    ("sampler-order-too-long", "POST", C, comp(sampler_order=["top_k"] * 40), None, 400,
     "sampler_order"),
    ("sampler-order-twice", "POST", C, comp(sampler_order=["top_k", "top_k"]), None, 400,
     "sampler_order"),
    ("unknown-sampler-in-order", "POST", C, comp(sampler_order=["top_k", "magic"]), None, 400,
     "sampler_order"),
    ("logit-bias-bad-key", "POST", C, comp(logit_bias={"cat": 1}), None, 400, "logit_bias"),
    ("logit-bias-outside-vocab", "POST", C, comp(logit_bias={"100000": 1}), None, 400,
     "logit_bias"),
    ("logit-bias-key-5000-digits", "POST", C, comp(logit_bias={"9" * 5000: 1}), None, 400,
     "logit_bias"),
    ("logit-bias-key-padded", "POST", C, comp(logit_bias={" 1 ": 1}), None, 400, "logit_bias"),
    ("logit-bias-key-underscored", "POST", C, comp(logit_bias={"1_0": 1}), None, 400,
     "logit_bias"),
    ("logit-bias-key-arabic-digit", "POST", C, comp(logit_bias={"\u0661": 1}), None, 400,
     "logit_bias"),
    # --- nested junk in chat messages
    ("chat-empty-messages", "POST", CH, chat(messages=[]), None, 400, "messages"),
    ("chat-messages-an-object", "POST", CH, chat(messages={"role": "user"}), None, 400,
     "messages"),
    ("chat-message-a-string", "POST", CH, chat(messages=["hi"]), None, 400, "messages.0"),
    ("chat-message-null", "POST", CH, chat(messages=[None]), None, 400, "messages.0"),
    ("chat-bad-role", "POST", CH, chat(messages=[{"role": "robot", "content": "x"}]), None,
     400, "messages.0.role"),
    ("chat-missing-role", "POST", CH, chat(messages=[{"content": "x"}]), None, 400,
     "messages.0.role"),
    ("chat-content-a-number", "POST", CH, chat(messages=user(5)), None, 400,
     "messages.0.content"),
    ("chat-image-part", "POST", CH, chat(messages=user([
        {"type": "image_url", "image_url": {"url": "http://x"}}])), None, 400,
     "messages.0.content.0"),
    ("chat-part-without-type", "POST", CH, chat(messages=user([{"text": "x"}])), None, 400,
     "messages.0.content.0.type"),
    ("chat-part-text-a-number", "POST", CH, chat(messages=user([{"type": "text", "text": 5}])),
     None, 400, "messages.0.content.0.text"),
    ("chat-metadata-value-a-number", "POST", CH, chat(metadata={"a": 1}), None, 400,
     "metadata.a"),
    ("chat-tools", "POST", CH, chat(tools=[{"type": "function", "function": {"name": "f"}}]),
     None, 400, "tools"),
    ("chat-functions", "POST", CH, chat(functions=[{"name": "f"}]), None, 400, "functions"),
    ("chat-tool-choice-an-object", "POST", CH, chat(tool_choice={"type": "function"}), None,
     400, "tool_choice"),
    ("chat-json-mode", "POST", CH, chat(response_format={"type": "json_object"}), None, 400,
     "response_format"),
    ("chat-response-format-a-list", "POST", CH, chat(response_format=[1]), None, 400,
     "response_format"),
    ("chat-max-tokens-disagree", "POST", CH, chat(max_tokens=2, max_completion_tokens=3), None,
     400, None),
    # --- unsupported options
    ("echo-with-logprobs", "POST", C, comp(echo=True, logprobs=1), None, 400, None),
    ("suffix", "POST", C, comp(suffix="end"), None, 400, "suffix"),
    # --- streams are refused before they start
    ("stream-max-tokens-over-cap", "POST", C, comp(stream=True, max_tokens=5000), None, 400,
     "max_tokens"),
    ("stream-logprobs-over-cap", "POST", C, comp(stream=True, logprobs=21), None, 400,
     "logprobs"),
    ("stream-best-of-not-n", "POST", C, comp(stream=True, best_of=2), None, 400, "best_of"),
    ("stream-top-p-1e-300", "POST", C, comp(stream=True, top_p=1e-300), None, 400, "top_p"),
    ("stream-prompt-over-context", "POST", C, comp(stream=True, prompt="x" * 300), None, 400,
     "prompt"),
    ("chat-stream-n-over-cap", "POST", CH, chat(stream=True, n=17), None, 400, "n"),
    ("chat-stream-unknown-model", "POST", CH, chat(stream=True, model="nope"), None, 404,
     "model"),
    # --- routes, methods and keys
    ("wrong-method", "GET", C, None, None, 405, None),
    ("put-on-chat", "PUT", CH, chat(), None, 405, None),
    ("post-on-models", "POST", "/v1/models", b"{}", None, 405, None),
    ("get-on-distribution", "GET", D, None, None, 405, None),
    ("unknown-route", "POST", "/v1/engines/davinci/completions", comp(), None, 404, None),
    ("missing-api-key", "POST", C, comp(), {"Authorization": ""}, 401, None),
    ("wrong-api-key", "POST", C, comp(), {"Authorization": "Bearer nope"}, 401, None),
    ("wrong-auth-scheme", "GET", "/v1/models", None, {"Authorization": f"Basic {KEY}"}, 401,
     None),
    ("bearer-without-a-key", "POST", CH, chat(), {"Authorization": "Bearer"}, 401, None),
    ("key-with-a-suffix", "POST", D, dist(), {"Authorization": f"Bearer {KEY}x"}, 401, None),
    ("no-key-and-bad-json", "POST", D, b"{not json", {"Authorization": ""}, 401, None),
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
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"


def test_the_battery_is_large_and_names_each_case_once() -> None:
    names = [c[0] for c in CASES]
    assert len(names) >= 100 and len(set(names)) == len(names)
    assert {c[2] for c in CASES} >= {C, CH, D}


def test_chunked_body_over_the_limit(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "default", "prompt": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"}'

    r = httpx.post(server.base_url + "/completions", content=chunks(),
                   headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    assert_openai_error(r, 413)


@pytest.mark.parametrize(("error", "status"), [(ValueError("no token can be drawn"), 400),
                                                (RuntimeError("the engine broke"), 500)])
def test_a_stream_whose_engine_fails_at_once_is_refused_not_started(
        tiny_model_dir: Path, error: Exception, status: int) -> None:
    """The response waits for the first token: a job that fails before it gets its own
    status, not a 200 whose first event is an error."""
    app = create_app(load_model(str(tiny_model_dir)))

    class Broken(Decoder):
        def step(self) -> list[Any]:
            raise error

    app.state.tempscope.batcher._make_decoder = Broken
    with TestClient(app) as c:
        for path, body in ((C, comp(stream=True)), (CH, chat(stream=True))):
            r = c.post(path, json=body)
            assert r.headers["content-type"] == "application/json", r.text
            assert_openai_error(r, status)
            assert str(error) in r.json()["error"]["message"]


@pytest.mark.slow
def test_text_that_tokenizes_slowly_is_refused_before_it_is_tokenized() -> None:
    """llama.cpp tokenizes special-token strings in quadratic time (90,000 "<|im_end|>" took
    21 s, 25,000 empty chat messages 12 s, all of it on the event loop): the character and
    message caps refuse such requests at once."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    with TestClient(create_app(load_model(engine="llama.cpp"))) as c:
        for path, body, param in [
            (C, comp(prompt="<|im_end|>" * 90_000), "prompt"),
            (C, comp(prompt=["<|im_end|>" * 13_000] * 3), "prompt"),
            (CH, chat(messages=user("<|im_end|>" * 90_000)), "messages"),
            (CH, chat(messages=[{"role": "user", "content": ""}] * 25_000), "messages"),
            (D, dist(prompt="<|im_end|>" * 90_000, chat=True), "prompt"),
        ]:
            start = time.monotonic()
            r = c.post(path, json=body)
            assert assert_openai_error(r, 400)["param"] == param
            assert time.monotonic() - start < 3, (path, time.monotonic() - start)


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
