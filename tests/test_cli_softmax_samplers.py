"""``tempscope softmax`` with sampler options: raw and processed side by side."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from tempscope.cli.options import add_sampler_options, params_from_args, samplers_used
from tests.conftest import run_cli

SEED = ["--words", "ceiling", "floor", "mat", "car", "grass",
        "--logits", "-49.82", "-46.40", "-45.25", "-47.30", "-48.32"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sampler_options(parser)
    return parser.parse_args(argv)


def test_params_from_args() -> None:
    args = parse("--top-k", "40", "--top-p", "0.9", "--logit-bias", "2=-100", "7=1.5",
                 "--order", "top_p", "top_k", "logit_bias", "temperature", "--temperature-last")
    assert samplers_used(args)
    p = params_from_args(args, 0.7)
    assert (p.top_k, p.top_p, p.temperature) == (40, 0.9, 0.7)
    assert p.logit_bias == {2: -100.0, 7: 1.5}
    assert p.chain == ("top_p", "top_k", "logit_bias", "temperature")
    plain = parse()
    assert not samplers_used(plain)
    assert params_from_args(plain, 1.0).chain == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--top-k", "x"], "--top-k must be an integer >= 1, got 'x'"),
        (["--top-p", "lots"], "--top-p must be a number, got 'lots'"),
        (["--logit-bias", "3"], "--logit-bias takes TOKEN_ID=BIAS pairs"),
        (["--min-p", "2"], "min_p must be in [0, 1]"),
    ],
)
def test_params_from_args_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        params_from_args(parse(*argv), 1.0)
    assert message in str(info.value)


def test_table_side_by_side() -> None:
    r = run_cli("softmax", *SEED, "-t", "0.7", "--top-p", "0.9", "--min-p", "0.1")
    assert r.returncode == 0, r.stderr
    assert "temperature -> top_p -> min_p" in r.stdout
    assert "raw (T=1)" in r.stdout and "processed" in r.stdout
    assert "0.66571" in r.stdout  # raw mat
    assert "2 of 5 tokens survive" in r.stdout


def test_json_and_numbers() -> None:
    r = run_cli("softmax", "2", "4", "3", "1", "-t", "1", "0", "--top-k", "2", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data[0]["chain"] == ["top_k"] and data[0]["kept"] == 2
    assert data[0]["processed"] == pytest.approx([0, 1 / (1 + math.exp(-1)),
                                                  1 / (1 + math.exp(1)), 0], abs=1e-6)
    assert data[1]["processed"] == [0, 1, 0, 0] and data[1]["kept"] == 1
    assert data[0]["raw"] == pytest.approx(data[0]["probabilities"])
    r = run_cli("softmax", "2", "4", "3", "1", "--top-k", "2")
    assert r.stdout.strip() == "T=1\ttop_k\tkept 2/4\t0.00000000 0.73105860 0.26894143 0.00000000"


def test_bad_sampler_value_one_line() -> None:
    r = run_cli("softmax", "2", "4", "3", "--top-p", "1.5")
    assert r.returncode == 2
    assert "top_p must be in (0, 1]" in r.stderr and "got 1.5" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_history_needs_a_sampler_that_reads_it() -> None:
    r = run_cli("softmax", "1", "2", "--words", "a", "b", "--history", "a")
    assert r.returncode == 2 and "--history is read only by samplers" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("softmax", "1", "2", "--words", "a", "b", "--history", "c",
                "--repetition-penalty", "1.3")
    assert r.returncode == 2 and "'c' is not one of the words" in r.stderr
    r = run_cli("softmax", "1", "2", "--words", "a", "b", "--history", "b",
                "--repetition-penalty", "2", "--json")
    assert r.returncode == 0, r.stderr
