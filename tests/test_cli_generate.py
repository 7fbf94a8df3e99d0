"""``tempscope generate`` and ``tempscope tour`` through the real command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_trace_prints_every_step_and_why_it_ended(tiny_model_dir: Path) -> None:
    out = run_cli("generate", "The cat", "-m", str(tiny_model_dir), "-t", "0.5",
                  "--max-new-tokens", "5", "--trace", "--seed", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "T=0.5, seed 3, sample 1: The cat______"
    steps = [line for line in lines if re.match(r"\d+: ", line)]
    assert [s.split(":")[0] for s in steps] == ["1", "2", "3", "4", "5"]
    for step in steps:
        assert re.fullmatch(r"\d+: The cat.* ______   <- '.*' p=\S+ \(T=1: \S+\)   \[.*\]", step)
    assert "stopped: limit (5 tokens)" in lines
    assert "Traceback" not in out.stderr
    # the same seed prints the same trace
    again = run_cli("generate", "The cat", "-m", str(tiny_model_dir), "-t", "0.5",
                    "--max-new-tokens", "5", "--trace", "--seed", "3")
    assert again.stdout == out.stdout


def test_trace_ends_with_eos_and_a_stop_string(tiny_model_dir: Path) -> None:
    eos = run_cli("generate", "ab", "-m", str(tiny_model_dir), "-t", "0", "--trace",
                  "--logit-bias", "256=100", "--max-new-tokens", "5")
    assert eos.returncode == 0, eos.stderr
    assert "1: ab ______   <- <EOS> p=1.000" in eos.stdout
    assert "stopped: <EOS>" in eos.stdout
    # greedy on the tiny model repeats the last byte: "bbbb...", so "bb" spans two tokens
    stop = run_cli("generate", "ab", "-m", str(tiny_model_dir), "-t", "0", "--trace",
                   "--stop", "bb", "--max-new-tokens", "5")
    assert stop.returncode == 0, stop.stderr
    assert "stopped: stop string 'bb'" in stop.stdout
    assert "\nresult: ab\n" in stop.stdout


def test_several_temperatures_side_by_side_with_numbers(tiny_model_dir: Path) -> None:
    out = run_cli("generate", "The cat", "-m", str(tiny_model_dir), "-t", "0", "5",
                  "--n", "2", "--max-new-tokens", "4", "--seed", "0")
    assert out.returncode == 0, out.stderr
    assert re.search(r"T=0 \(greedy\): mean log-prob -\d+\.\d+ nats/token", out.stdout)
    assert re.search(r"T=5: mean log-prob -\d+\.\d+ nats/token .* over 2 sample", out.stdout)
    assert out.stdout.count("limit (4 tokens)") == 4


def test_json_output(tiny_model_dir: Path) -> None:
    out = run_cli("generate", "The cat", "-m", str(tiny_model_dir), "-t", "0", "1",
                  "--max-new-tokens", "3", "--seed", "9", "--json", "--top-k", "5")
    assert out.returncode == 0, out.stderr
    samples = json.loads(out.stdout)
    assert [s["params"]["temperature"] for s in samples] == [0, 1]
    assert [s["params"]["top_k"] for s in samples] == [5, 5]
    assert [s["seed"] for s in samples] == [9, 9]
    for s in samples:
        assert s["finish_reason"] == "length" and len(s["token_ids"]) == 3
        assert len(s["steps"]) == 3 and len(s["steps"][0]["top"]) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["-t", "-1"], "temperature must be a number >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be"),
    (["--seed", "x"], "--seed must be a whole number"),
    (["--top-p", "2"], "top_p"),
])
def test_bad_options_give_one_line(tiny_model_dir: Path, args: list[str], message: str) -> None:
    out = run_cli("generate", "The cat", "-m", str(tiny_model_dir), *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_generate_on_the_embedded_model_at_low_and_high_temperature() -> None:
    out = run_cli("generate", "The cat slept on the", "-t", "0.5", "--max-new-tokens", "20",
                  "--trace", "--seed", "0", "--stop-at-newline")
    assert out.returncode == 0, out.stderr
    assert "1: The cat slept on the couch ______   <- ' couch'" in out.stdout
    assert re.search(r"stopped: (<EOS>|newline|limit \(20 tokens\))", out.stdout)


@pytest.mark.slow
def test_tour_replays_the_seed_article() -> None:
    out = run_cli("tour", timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "mat (Prob: 0.66571)" in text and "mat (Prob: 0.20436)" in text
    for t in ("0.1", "0.5", "1", "5", "10", "100"):
        assert f"LLM Temperature: {t} → The cat slept on the" in text
    assert "LLM Temperature: 0.1 → The cat slept on the couch" in text
    assert "T=0.5, seed 0, sample 1: The cat slept on the______" in text
    assert "T=10, seed 0, sample 1: The cat slept on the______" in text
    low = float(re.search(r"T=0.5: mean log-prob (-?\d+\.\d+)", text).group(1))  # type: ignore[union-attr]
    high = float(re.search(r"T=10: mean log-prob (-?\d+\.\d+)", text).group(1))  # type: ignore[union-attr]
    assert low > high + 5  # coherent vs falling apart, as a number
    took = float(re.search(r"tour took (\d+\.\d+) s", text).group(1))  # type: ignore[union-attr]
    assert took < 60
