"""Remote response parsing and request building, on hand-written server answers (no server)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from tempscope.engine.remote.client import NEUTRAL_FIELDS, RemoteClient
from tempscope.engine.remote.engine import RemoteRow, _sample, request_fields, wire_fields
from tempscope.engine.remote.wire import LLAMA_SERVER_OFF, ServerInfo, parse_logprobs, server_info
from tempscope.sampling import SamplingParams


def test_request_fields_use_vllm_names_and_skip_what_is_off() -> None:
    p = SamplingParams(temperature=0.7, top_k=40, min_p=0.05, seed=3,
                       logit_bias={50256: -100.0})
    assert request_fields(p) == {"top_k": 40, "min_p": 0.05, "logit_bias": {"50256": -100.0}}
    ordered = SamplingParams(top_k=40, order=["top_k", "temperature"])
    assert request_fields(ordered) == {"top_k": 40, "sampler_order": ["top_k", "temperature"]}
    assert request_fields(SamplingParams(temperature=0)) == {}


class _Probed(RemoteClient):
    """A client whose feature probes are answered by ``refuse`` (fields -> message or None)."""

    def __init__(self, refuse: Callable[[Mapping[str, Any]], str | None]) -> None:
        super().__init__("http://127.0.0.1:9/v1", model="m")
        self._server = ServerInfo()  # a plain OpenAI-compatible server (no /props)
        self.refuse = refuse
        self.probes: list[dict[str, Any]] = []

    def _refusal(self, fields: Mapping[str, Any]) -> str | None:
        self.probes.append(dict(fields))
        return self.refuse(fields)


def _old_vllm(fields: Mapping[str, Any]) -> str | None:
    """vLLM's names only, and top_k -1 (not 0) for off."""
    if fields.get("top_k") == 0:
        return "top_k must be -1 (disable), or at least 1, got 0."
    unknown = {"repeat_penalty", "tfs_z", "mirostat_mode", "xtc_threshold"} & set(fields)
    return f"unknown field {sorted(unknown)[0]}" if unknown else None


def _llama_cpp(fields: Mapping[str, Any]) -> str | None:
    """llama.cpp's names: no repetition_penalty, no typical_p."""
    unknown = {"repetition_penalty", "typical_p"} & set(fields)
    return f"unknown field {sorted(unknown)[0]}" if unknown else None


def test_settings_left_off_go_switched_off_in_the_servers_spelling() -> None:
    c = _Probed(_old_vllm)
    neutral = c.neutral_fields()
    assert neutral == {"top_k": -1, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0,
                       "repetition_penalty": 1.0, "frequency_penalty": 0.0,
                       "presence_penalty": 0.0}
    assert set(c.neutral_refused) == {"repeat_penalty", "tfs_z", "mirostat_mode"}
    probes = len(c.probes)
    assert c.neutral_fields() == neutral and len(c.probes) == probes  # probed once
    sent, ignored = wire_fields(c, SamplingParams(temperature=0.7, top_k=40,
                                                  xtc_threshold=0.1))
    assert sent == {**neutral, "top_k": 40} and ignored == ["xtc_threshold"]


def test_llama_cpp_names_carry_the_users_value() -> None:
    c = _Probed(_llama_cpp)
    sent, ignored = wire_fields(c, SamplingParams(repetition_penalty=1.3, mirostat_tau=5.0))
    assert sent == {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "tfs_z": 1.0,
                    "repeat_penalty": 1.3, "frequency_penalty": 0.0, "presence_penalty": 0.0,
                    "mirostat_mode": 2, "mirostat_tau": 5.0}
    assert ignored == []  # refused as repetition_penalty, applied as repeat_penalty
    assert set(c.neutral_refused) == {"repetition_penalty", "typical_p"}
    with_all = _Probed(lambda fields: None)
    assert with_all.neutral_fields() == dict(NEUTRAL_FIELDS) and len(with_all.probes) == 1


def _answer(**choice: object) -> dict[str, object]:
    base = {"text": " mat.", "finish_reason": "stop", "logprobs": {
        "tokens": [" mat", "."], "token_logprobs": [math.log(0.5), math.log(0.25)],
        "top_logprobs": [{" mat": math.log(0.5), " rug": math.log(0.3)},
                         {".": math.log(0.25), "!": math.log(0.5)}]}}
    return {"choices": [{**base, **choice}], "usage": {"completion_tokens": 3}}


def test_raw_logprobs_fill_raw_fields_only() -> None:
    row = RemoteRow("The cat sat on the", SamplingParams(temperature=1.0), 7)
    s = _sample(_answer(), row, 0, raw=True, ignored=["xtc_threshold"], stops=False)
    assert s.text == " mat." and s.token_ids == [] and s.seed == 7
    assert s.n_tokens == 3  # usage counts the end-of-sequence token the logprobs leave out
    assert math.isclose(s.mean_logprob, (math.log(0.5) + math.log(0.25)) / 2)
    assert math.isnan(s.steps[0].logprob) and math.isnan(s.steps[0].entropy)
    first = s.steps[0].top
    assert [(a.token_id, a.text, round(a.raw_prob, 6)) for a in first] == [
        (-1, " mat", 0.5), (-3, " rug", 0.3)]  # -1 marks the chosen token
    assert s.finish_reason == "eos" and s.steps[-1].finished == "eos"
    assert s.ignored == ["xtc_threshold"] and s.logprobs_raw


def test_processed_logprobs_leave_mean_logprob_nan() -> None:
    row = RemoteRow("x", SamplingParams(), None)
    s = _sample(_answer(), row, 0, raw=False, ignored=[], stops=False)
    assert math.isnan(s.mean_logprob) and math.isclose(s.steps[1].prob, 0.25)


def test_finish_reasons() -> None:
    row = RemoteRow("x", SamplingParams(), None)
    vllm_stop = _sample(_answer(stop_reason="\n"), row, 0, raw=True, ignored=[], stops=True)
    assert (vllm_stop.finish_reason, vllm_stop.stop_text) == ("stop", "\n")
    vllm_eos = _sample(_answer(stop_reason=None), row, 0, raw=True, ignored=[], stops=True)
    assert vllm_eos.finish_reason == "eos"
    plain = _sample(_answer(), row, 0, raw=True, ignored=[], stops=True)
    assert plain.finish_reason == "stop"  # ambiguous without stop_reason: stop strings sent
    length = _sample(_answer(finish_reason="length"), row, 0, raw=True, ignored=[], stops=True)
    assert length.finish_reason == "length"


def _llama_server_answer(processed: bool = False) -> dict[str, object]:
    """llama-server's ``/v1/completions`` shape: ``logprobs.content``, ids included."""
    key, top_key = ("prob", "top_probs") if processed else ("logprob", "top_logprobs")

    def value(p: float) -> float:
        return p if processed else math.log(p)

    content = [
        {"id": 11, "token": " couch", key: value(0.6), top_key: [
            {"id": 11, "token": " couch", key: value(0.6)},
            {"id": 12, "token": " mat", key: value(0.3)}]},
        {"id": 13, "token": ".", key: value(0.9), top_key: [
            {"id": 13, "token": ".", key: value(0.9)}]},
    ]
    return {"choices": [{"text": " couch.", "finish_reason": "length", "index": 0,
                         "logprobs": {"content": content}}],
            "usage": {"completion_tokens": 2}}


def test_llama_server_logprobs_shape_is_read_with_ids() -> None:
    """The issue's failure: llama-server answers in the chat-style ``content`` shape."""
    row = RemoteRow("The cat slept on the", SamplingParams(temperature=1.0), 1)
    s = _sample(_llama_server_answer(), row, 0, raw=True, ignored=[], stops=False)
    assert [st.text for st in s.steps] == [" couch", "."]
    assert [st.token_id for st in s.steps] == [11, 13]
    assert [(a.token_id, a.text) for a in s.steps[0].top] == [(11, " couch"), (12, " mat")]
    assert math.isclose(s.steps[0].top[1].raw_prob, 0.3)
    assert math.isclose(s.mean_logprob, (math.log(0.6) + math.log(0.9)) / 2)
    assert s.finish_reason == "length" and s.n_tokens == 2


def test_post_sampling_probs_are_processed_not_raw() -> None:
    row = RemoteRow("x", SamplingParams(), None)
    s = _sample(_llama_server_answer(processed=True), row, 0, raw=True, ignored=[],
                stops=False)
    assert not s.logprobs_raw and math.isnan(s.mean_logprob)
    assert math.isclose(s.steps[0].prob, 0.6) and math.isclose(s.steps[0].top[1].prob, 0.3)
    zero = parse_logprobs({"content": [{"id": 1, "token": "a", "prob": 0.0, "top_probs": []}]})
    assert zero[0].logprob == -math.inf and zero[0].processed
    lowest = parse_logprobs({"content": [{"id": 1, "token": "a", "logprob": -3.4028235e38}]})
    assert lowest[0].logprob == -math.inf  # llama-server's stand-in for log(0)


def test_llama_server_is_known_by_its_props() -> None:
    props = {"default_generation_settings": {"n_ctx": 1024, "params": {
        k: v for k, v in LLAMA_SERVER_OFF.items()} | {"samplers": [], "repeat_last_n": 64}},
        "build_info": "b1-abc"}
    info = server_info(props)
    assert info.is_llama_server and info.n_ctx == 1024 and "repeat_last_n" in info.accepts
    assert not server_info({"detail": "Not Found"}).is_llama_server
    assert not server_info(None).is_llama_server
    c = _Probed(lambda fields: "never probed")
    c._server = info
    assert c.neutral_fields() == dict(LLAMA_SERVER_OFF) and c.probes == []
    assert c.logprobs_fields() == ({"post_sampling_probs": False}, True)
    sent, ignored = wire_fields(c, SamplingParams(top_k=5, bad_words=["x"]))
    assert sent["top_k"] == 5 and sent["samplers"] == ["temperature", "top_k"]
    assert ignored == ["bad_words"] and c.probes == []  # read from /props, never probed
