"""The server against the official ``openai`` client, a real process on a loopback port."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.server_helpers import LiveServer, live_server


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    with live_server(tiny_model_dir) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def test_health_and_models(server: LiveServer, client: openai.OpenAI) -> None:
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    ids = [m.id for m in client.models.list()]
    assert ids == [server.model]


def test_completion_shape_and_usage(server: LiveServer, client: openai.OpenAI) -> None:
    out = client.completions.create(model=server.model, prompt="Hello", max_tokens=7,
                                    temperature=0.8, seed=3)
    assert out.object == "text_completion"
    assert len(out.choices) == 1
    choice = out.choices[0]
    assert choice.finish_reason == "length"  # the tiny model never picks its EOS in 7 steps
    assert out.usage is not None
    assert out.usage.prompt_tokens == 5  # byte-level: one token per character
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == 12


def test_chat_completion(server: LiveServer, client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="default", messages=[{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Hi"}],
        max_tokens=5, temperature=0, n=2)
    assert out.object == "chat.completion"
    assert [c.index for c in out.choices] == [0, 1]
    assert all(c.message.role == "assistant" for c in out.choices)
    # Greedy: both choices are the same text.
    assert out.choices[0].message.content == out.choices[1].message.content
    assert out.usage.completion_tokens == 10


def test_seed_reproducible_and_n_rows_differ(server: LiveServer, client: openai.OpenAI) -> None:
    def run(seed: int) -> list[str]:
        out = client.completions.create(model=server.model, prompt="The cat", max_tokens=12,
                                        temperature=1.5, n=3, seed=seed)
        return [c.text for c in out.choices]

    first, again, other = run(11), run(11), run(12)
    assert first == again
    assert first != other
    assert len(set(first)) > 1  # the n samples of one request get different seeds


def test_seed_gives_the_same_text_alone_or_batched(server: LiveServer,
                                                   client: openai.OpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(seed: int) -> str:
        out = client.completions.create(model=server.model, prompt="abc", max_tokens=10,
                                        temperature=1.0, seed=seed)
        return out.choices[0].text

    alone = one(5)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(one, [5, 6, 7, 5, 8, 5, 9, 10]))
    assert together[0] == together[3] == together[5] == alone


def test_streaming_completion_matches_non_streaming(server: LiveServer,
                                                   client: openai.OpenAI) -> None:
    kwargs = dict(model=server.model, prompt="Stream me", max_tokens=9, temperature=0.9, seed=4)
    whole = client.completions.create(**kwargs).choices[0].text  # type: ignore[call-overload]
    pieces, reasons = [], []
    for chunk in client.completions.create(stream=True, **kwargs):  # type: ignore[call-overload]
        for c in chunk.choices:
            pieces.append(c.text)
            reasons.append(c.finish_reason)
    assert "".join(pieces) == whole
    assert reasons[-1] == "length"


def test_streaming_chat_with_usage_and_done(server: LiveServer, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
        temperature=0.7, seed=1, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    # The raw stream ends with the [DONE] sentinel.
    with httpx.stream("POST", server.base_url + "/chat/completions", json={
            "model": server.model, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 2, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_completion_logprobs(server: LiveServer, client: openai.OpenAI) -> None:
    out = client.completions.create(model=server.model, prompt="Hello", max_tokens=5,
                                    temperature=1.0, seed=2, logprobs=3)
    lp = out.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert lp.top_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens).encode("utf-8", "replace")  # token texts are strings
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert chosen <= 0
        assert 1 <= len(top) <= 3
        assert max(top.values()) >= chosen - 1e-6  # the best alternative is at least as likely


def test_logprobs_mode_raw_vs_processed(server: LiveServer) -> None:
    body = {"model": server.model, "prompt": "Hello", "max_tokens": 4, "temperature": 0.5,
            "top_k": 3, "seed": 9, "logprobs": 3}
    processed = httpx.post(server.base_url + "/completions", json=body).json()
    raw = httpx.post(server.base_url + "/completions",
                     json={**body, "logprobs_mode": "raw"}).json()
    assert processed["choices"][0]["text"] == raw["choices"][0]["text"]  # same tokens
    p = processed["choices"][0]["logprobs"]["token_logprobs"]
    r = raw["choices"][0]["logprobs"]["token_logprobs"]
    # At T = 0.5 with top-k 3 the processed distribution is much sharper than the raw one.
    assert all(pp > rr for pp, rr in zip(p, r, strict=True))
    # top-k 3: the three alternatives hold all the processed mass (the chat list keeps tokens
    # whose texts coincide, which the completions dict merges).
    chat = httpx.post(server.base_url + "/chat/completions", json={
        "model": server.model, "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4, "temperature": 0.5, "top_k": 3, "seed": 9, "logprobs": True,
        "top_logprobs": 3}).json()
    for entry in chat["choices"][0]["logprobs"]["content"]:
        total = sum(math.exp(a["logprob"]) for a in entry["top_logprobs"])
        assert math.isclose(total, 1.0, rel_tol=1e-4)


def test_chat_logprobs(server: LiveServer, client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        temperature=0, logprobs=True, top_logprobs=2)
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 4
    for entry in content:
        # Greedy: the chosen token is the top alternative, with probability 1 after the chain.
        assert entry.logprob == pytest.approx(0.0, abs=1e-6)
        assert entry.top_logprobs[0].token == entry.token


def test_stop_string_is_cut_and_reported(server: LiveServer, client: openai.OpenAI) -> None:
    greedy = client.completions.create(model=server.model, prompt="Hello", max_tokens=12,
                                       temperature=0).choices[0].text
    stop = greedy[3:5]
    out = client.completions.create(model=server.model, prompt="Hello", max_tokens=12,
                                    temperature=0, stop=[stop])
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == greedy[: greedy.index(stop)]


def test_vllm_extras_change_the_distribution(server: LiveServer) -> None:
    body = {"prompt": "Hello", "temperatures": [0, 1, 10], "top": 5}
    plain = httpx.post(server.base_url + "/distribution", json=body).json()
    assert plain["samplers_on"] is False
    one = plain["temperatures"][1]
    assert one["probs"] == pytest.approx(one["raw_probs"])
    assert plain["temperatures"][0]["raw"]["entropy"] == 0
    ents = [t["raw"]["entropy"] for t in plain["temperatures"]]
    assert ents == sorted(ents)  # entropy rises with T
    cut = httpx.post(server.base_url + "/distribution",
                     json={**body, "top_k": 2, "min_p": 0.01,
                           "sampler_order": ["top_k", "temperature", "min_p"]}).json()
    assert cut["samplers_on"] is True
    assert [t["processed"]["kept"] for t in cut["temperatures"]] == [1, 2, 2]
    assert cut["tokens"] == plain["tokens"]  # one token order for every temperature


def test_distribution_logits_reproduce_softmax(server: LiveServer) -> None:
    out = httpx.post(server.base_url + "/distribution", json={
        "prompt": "Hello", "temperatures": [0.7], "top": 3, "return_logits": True}).json()
    logits = out["logits"]
    assert len(logits) == out["vocab_size"] == 257
    m = max(logits)
    z = sum(math.exp((x - m) / 0.7) for x in logits)
    first = out["tokens"][0]
    assert out["temperatures"][0]["raw_probs"][0] == pytest.approx(
        math.exp((logits[first["token_id"]] - m) / 0.7) / z, rel=1e-3)


def test_token_id_prompts_and_echo(server: LiveServer, client: openai.OpenAI) -> None:
    ids = [72, 101, 108, 108, 111 - 32]  # byte tokens, any ids inside the vocabulary
    out = client.completions.create(model=server.model, prompt=ids, max_tokens=3,
                                    temperature=0)
    assert out.usage is not None and out.usage.prompt_tokens == 5
    echo = client.completions.create(model=server.model, prompt="Hey", max_tokens=3,
                                     temperature=0, echo=True)
    assert echo.choices[0].text.startswith("Hey")
    several = client.completions.create(model=server.model, prompt=["a", "b"], max_tokens=2,
                                        n=2, temperature=0)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]


def test_sampler_extras_through_the_openai_client(server: LiveServer,
                                                   client: openai.OpenAI) -> None:
    extras = {"top_k": 20, "min_p": 0.05, "typical_p": 0.95, "top_n_sigma": 2.0,
              "repetition_penalty": 1.2, "dynatemp_range": 0.5, "dynatemp_exponent": 1.0,
              "sampler_order": ["repetition_penalty", "top_k", "temperature", "min_p",
                                "typical_p", "top_n_sigma"],
              "logprobs_mode": "processed"}
    a = client.completions.create(model=server.model, prompt="Hello", max_tokens=8,
                                  temperature=1.0, seed=5, extra_body=extras)
    b = client.completions.create(model=server.model, prompt="Hello", max_tokens=8,
                                  temperature=1.0, seed=5, extra_body=extras)
    assert a.choices[0].text == b.choices[0].text
    greedy_k1 = client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
        temperature=5.0, extra_body={"top_k": 1})
    greedy = client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
        temperature=0)
    # top-k 1 leaves one token at any temperature: the greedy text.
    assert greedy_k1.choices[0].message.content == greedy.choices[0].message.content


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "couch"), [("torch", 0.453), ("llama.cpp", 0.530)])
def test_embedded_model_serves_chat_and_distribution(tmp_path: Path, engine: str,
                                                      couch: float) -> None:
    """`tempscope serve` with no -m: the embedded SmolLM2 behind the openai client, on each
    engine (couch: P(" couch") at T = 1 as measured on that engine: Q4_1 vs float32)."""
    if engine == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    marker = tmp_path / "embedded"
    marker.mkdir()
    with live_server(marker, "--engine", engine, model=None) as s:
        assert httpx.get(s.url + "/health").json()["engine"] == engine
        client = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=300)
        out = client.chat.completions.create(
            model=s.model, messages=[{"role": "user", "content": "Name the capital city of "
                                      "France."}], max_tokens=20, temperature=0)
        assert "Paris" in (out.choices[0].message.content or "")
        assert out.choices[0].finish_reason == "stop"  # <|im_end|> ended it
        dist = httpx.post(s.base_url + "/distribution", json={
            "prompt": "The cat slept on the", "temperatures": [1], "top": 3}, timeout=120).json()
        assert dist["vocab_size"] == 49152
        assert dist["tokens"][0]["text"] == " couch"  # NOTES.md: couch .453, mat .058
        assert dist["temperatures"][0]["raw_probs"][0] == pytest.approx(couch, abs=0.01)
