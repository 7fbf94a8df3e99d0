"""Every place that lists samplers lists exactly the registry: SamplingParams, the CLI flags, the
server's request schema, the remote field mapping, GET /v1/samplers, the docs table; and
BatchSampler builds every registered sampler without knowing any by name."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from tempscope.cli.options import add_sampler_options, params_from_args
from tempscope.engine.remote.client import CORE_FIELDS, EXTRA_FIELDS, NEUTRAL_FIELDS
from tempscope.engine.remote.engine import request_fields
from tempscope.engine.remote.wire import LLAMA_SERVER_OFF, ServerInfo, llama_server_fields
from tempscope.sampling import BatchSampler, SamplingParams
from tempscope.sampling.registry import (
    BY_NAME,
    DEFAULT_ORDER,
    KNOBS,
    PRESETS,
    SAMPLERS,
    catalogue,
    markdown_table,
)
from tempscope.sampling.vocab import ListVocab
from tempscope.server.schemas import SamplerFields

ROOT = Path(__file__).resolve().parents[1]
NOT_KNOBS = {"seed", "order", "temperature_last"}
SERVER_NOT_KNOBS = {"seed", "sampler_order", "temperature_last", "logprobs_mode"}

# A value that switches each sampler on (and is in range), by the sampler's switch knob.
ON: dict[str, object] = {
    "logit_bias": {1: 2.0}, "bad_words": ["ab"], "min_tokens": 2, "repetition_penalty": 1.3,
    "frequency_penalty": 0.5, "presence_penalty": 0.5, "dry_multiplier": 0.8,
    "temperature": 0.7, "smoothing_factor": 0.3, "top_n_sigma": 1.0, "top_k": 3, "top_p": 0.9,
    "typical_p": 0.9, "tfs_z": 0.9, "top_a": 0.2, "epsilon": 0.01, "eta": 0.01, "min_p": 0.05,
    "xtc_threshold": 0.1, "mirostat_tau": 3.0, "adaptive_target": 0.5, "min_keep": 2,
    "penalty_last_n": 2, "logprob_token_ids": [1, 2],
}


def test_names_are_unique_and_every_stage_has_an_implementation() -> None:
    assert len({s.name for s in SAMPLERS}) == len(SAMPLERS)
    assert len(KNOBS) == sum(len(s.knobs) for s in SAMPLERS)
    for spec in SAMPLERS:
        assert spec.doc and all(k.doc for k in spec.knobs), spec.name
        assert spec.in_order == bool(spec.impl or spec.build), spec.name
    assert set(ON) == {s.knobs[0].name for s in SAMPLERS}


def test_sampling_params_fields_are_the_registry() -> None:
    assert set(SamplingParams.model_fields) - NOT_KNOBS == set(KNOBS)
    for name, knob in KNOBS.items():
        assert SamplingParams.model_fields[name].description == knob.doc


def test_cli_flags_are_the_registry() -> None:
    parser = argparse.ArgumentParser()
    add_sampler_options(parser)
    dests = {a.dest for a in parser._actions} - {"help", "order", "temperature_last", "preset"}
    assert dests == set(KNOBS) - {"temperature"}  # temperature: each command's own -t


def test_server_request_fields_are_the_registry() -> None:
    assert set(SamplerFields.model_fields) - SERVER_NOT_KNOBS == set(KNOBS)


def test_remote_mapping_covers_the_registry() -> None:
    assert set(KNOBS) <= set(EXTRA_FIELDS) | CORE_FIELDS
    wire_off = {n: v for k in KNOBS.values() for n, v in k.wire_off.items()}
    assert dict(NEUTRAL_FIELDS) == wire_off


def test_catalogue_is_json_and_lists_every_knob() -> None:
    data = json.loads(json.dumps(catalogue()))
    assert [s["name"] for s in data["samplers"]] == [s.name for s in SAMPLERS]
    assert {f["name"] for s in data["samplers"] for f in s["fields"]} == set(KNOBS)
    assert data["default_order"] == list(DEFAULT_ORDER)
    for preset in PRESETS.values():
        SamplingParams(**preset)  # every preset is valid


def test_docs_table_is_the_registry() -> None:
    docs = (ROOT / "docs" / "samplers.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, (
        "docs/samplers.md's table is out of date: paste "
        "`python -c 'from tempscope.sampling.registry import markdown_table as t; print(t())'`")


@pytest.mark.parametrize("spec", [s for s in SAMPLERS if s.in_order], ids=lambda s: s.name)
def test_every_stage_builds_and_runs(spec: object) -> None:
    """Switch each sampler on through SamplingParams alone: BatchSampler builds it from the
    registry, runs it, and the chosen token is one the chain kept."""
    name = spec.name  # type: ignore[attr-defined]
    switch = BY_NAME[name].knobs[0].name
    params = SamplingParams(**{switch: ON[switch], "seed": 0})
    assert name in params.chain
    vocab = ListVocab(("a", "b", "ab", ":", "c", "d"))
    s = BatchSampler([params, SamplingParams(seed=1)], vocab_size=6, prompt_ids=[[0, 1, 0], [2]],
                     vocab=vocab)
    assert s.groups[0].stages, name
    x = torch.tensor([[1.0, 2.0, 0.5, -1.0, 0.0, 1.5]] * 2)
    for _ in range(3):
        processed = s.process(x)
        token = s.choose(processed)
        assert all(math.isfinite(processed[r, t].item()) for r, t in enumerate(token.tolist()))
        s.accept(token)


@pytest.mark.parametrize("switch", sorted(ON))
def test_each_switch_reaches_every_surface(switch: str) -> None:
    """The same value through the CLI parser, the server schema and the remote mapping."""
    knob = KNOBS[switch]
    value = ON[switch]
    # CLI
    if switch != "temperature":
        parser = argparse.ArgumentParser()
        add_sampler_options(parser)
        text = ([f"{k}={v}" for k, v in value.items()] if isinstance(value, dict)
                else [str(v) for v in value] if isinstance(value, list) else [str(value)])
        args = parser.parse_args([knob.flag, *text])
        assert getattr(params_from_args(args, 1.0), switch) == value
    # server
    wire = {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
    assert getattr(SamplerFields(**{switch: wire}), switch) == wire
    # remote: the user's setting goes out under its name
    if switch != "temperature":
        assert switch in request_fields(SamplingParams(**{switch: value}))


def test_sweep_configs_take_every_knob() -> None:
    """A `tempscope sweep --config` names any registry knob, new ones included."""
    from tempscope.cli.sweep_cmd import parse_configs

    configs = parse_configs(["dry:dry_multiplier=0.8,dry_sequence_breakers=a|b,min_keep=2",
                             "v1:mirostat=1,mirostat_tau=3,bad_words=[\"the cat\"]"],
                            SamplingParams())
    assert configs["dry"].chain == ("dry",) and configs["dry"].dry_sequence_breakers == ["a", "b"]
    assert configs["dry"].min_keep == 2
    assert configs["v1"].chain == ("bad_words", "mirostat") and configs["v1"].mirostat == 1
    with pytest.raises(ValueError, match="dry_base is set but dry_multiplier is not"):
        parse_configs(["x:dry_base=2"], SamplingParams())


@pytest.mark.parametrize(("last_n", "penalised"), [(None, [0, 1, 2]), (-1, [0, 1, 2]),
                                                   (0, []), (1, [2]), (2, [0, 2]),
                                                   (50, [0, 1, 2])])
def test_penalty_last_n_is_the_window_of_all_three_penalties(last_n: int | None,
                                                              penalised: list[int]) -> None:
    """History 1 0 2 (prompt 1 0, then 2 generated): the last N tokens are penalised, by each
    penalty alike; None and -1 mean the whole history, 0 none (llama.cpp's repeat_last_n)."""
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    for name, value in (("repetition_penalty", 2.0), ("frequency_penalty", 0.5),
                        ("presence_penalty", 0.5)):
        s = BatchSampler([SamplingParams(**{name: value, "penalty_last_n": last_n})],
                         vocab_size=4, prompt_ids=[[1, 0]])
        s.accept(torch.tensor([2]))
        out = s.process(x)[0]
        assert [t for t in range(4) if out[t] < 1.0] == penalised, (name, out)


def test_penalty_last_n_without_a_penalty_changes_nothing() -> None:
    s = BatchSampler([SamplingParams(penalty_last_n=1)], vocab_size=3, prompt_ids=[[1]])
    assert s.groups[0].stages == [] or all("Penalty" not in repr(st) for st in s.groups[0].stages)


def test_llama_server_names_and_off_values_come_from_the_registry() -> None:
    """Every llama.cpp switch has its "off" value; a request for llama-server carries each of
    them for the samplers left off (DRY, XTC and top-n-sigma included), the user's settings
    in llama.cpp's names with tempscope's defaults, and the chain in the user's order."""
    assert {k.llama_cpp for k in KNOBS.values() if k.llama_cpp_off is not None} == set(
        LLAMA_SERVER_OFF)
    assert {"dry_multiplier", "xtc_probability", "top_n_sigma", "top_k", "top_p", "min_p",
            "typical_p", "mirostat", "repeat_penalty"} <= set(LLAMA_SERVER_OFF)
    info = ServerInfo("llama-server", frozenset(
        {k.llama_cpp for k in KNOBS.values() if k.llama_cpp} | {"samplers"}), n_ctx=512)
    sent, ignored = llama_server_fields(SamplingParams(temperature=1.5), info)
    assert sent == {**LLAMA_SERVER_OFF, "samplers": ["temperature"]} and ignored == []
    p = SamplingParams(temperature=0.7, top_p=0.9, presence_penalty=0.5, xtc_threshold=0.2,
                       epsilon=0.01, order=["presence_penalty", "top_p", "temperature", "xtc",
                                            "epsilon"])
    sent, ignored = llama_server_fields(p, info)
    assert ignored == ["epsilon"]  # llama.cpp has no epsilon sampler: said, not sent
    assert sent["samplers"] == ["penalties", "top_p", "temperature", "xtc"]
    assert sent["presence_penalty"] == 0.5 and sent["top_p"] == 0.9
    assert sent["repeat_last_n"] == 512  # the whole history: llama.cpp's default is 64
    assert sent["xtc_probability"] == 1.0  # tempscope's default; llama.cpp's is 0 (off)
    assert sent["dry_multiplier"] == 0.0 and sent["top_n_sigma"] == -1.0
    sent, _ = llama_server_fields(SamplingParams(dry_multiplier=0.8), info)
    assert sent["dry_penalty_last_n"] == 512 and sent["dry_sequence_breakers"] == [
        "\n", ":", "\"", "*"]
    sent, _ = llama_server_fields(SamplingParams(frequency_penalty=0.2, penalty_last_n=0), info)
    assert sent["repeat_last_n"] == 0
