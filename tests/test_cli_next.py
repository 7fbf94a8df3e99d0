"""`tempscope next`, `models` and `info`: in-process on the tiny model, and through the real
command (subprocess) for errors and the embedded model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tempscope.cli import main
from tests.conftest import run_cli

PROMPT = "The cat slept on the"


def test_next_prints_seed_line_table_and_summary(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["next", PROMPT, "-m", str(tiny_model_dir), "-t", "0", "1", "100",
                   "--top", "3", "--seed", "5"])
    assert status == 0
    out = capsys.readouterr().out
    assert out.count("LLM Temperature: ") == 3
    assert "LLM Temperature: 0 → The cat slept on the" in out
    assert "LLM Temperature: 100 → The cat slept on the" in out
    assert "T = 0 (greedy)" in out
    assert out.count("effective vocabulary") == 3 and "of 257 tokens" in out
    assert "seed 5" in out


def test_next_json_agrees_with_the_library(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["next", PROMPT, "-m", str(tiny_model_dir), "-t", "0.5", "2", "--top", "4",
                 "--seed", "9", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    from tempscope.engine.loader import load_model
    from tempscope.engine.nexttoken import next_token

    lib = next_token(load_model(tiny_model_dir), PROMPT, [0.5, 2], top=4, seed=9).to_dict()
    assert d == json.loads(json.dumps(lib))


def test_next_plot(tiny_model_dir: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "next.png"
    assert main(["next", PROMPT, "-m", str(tiny_model_dir), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {png}" in capsys.readouterr().out


def test_info_on_a_folder(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiny_model_dir), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["parameters"], facts["vocab_size"], facts["layers"]) == (41_888, 257, 2)
    assert facts["eos_token_ids"] == [256] and facts["device"] in ("cpu", "cuda", "mps")
    assert main(["info", "-m", str(tiny_model_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "41,888" in out and "embedding width" in out


def test_models_lists_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEMPSCOPE_CACHE", str(tmp_path))
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "SmolLM2-135M-Instruct" and rows[0]["cached"] is False
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "SmolLM2" in out and "not converted yet" in out and str(tmp_path) in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["next", ""], "the prompt is empty"),
        (["next", "hi", "-t", "-1"], "temperature must be a number >= 0"),
        (["next", "hi", "-t", "nan"], "temperature must be a number"),
        (["next", "hi", "-t", "warm"], "temperature must be a number, got 'warm'"),
        (["next", "hi", "--top", "0"], "--top must be a whole number >= 1"),
        (["next", "hi", "--seed", "x"], "--seed must be a whole number"),
        (["next", "hi", "--plot", "out.jpg"], "--plot must name a .png file"),
        (["next", "hi", "-m", "./no/such/model"], "'./no/such/model' not found"),
        (["next", "hi", "-m", "no-such-user/no-such-model"],
         "'no-such-user/no-such-model' is not in the local Hugging Face cache"),
        (["next", "hi", "--device", "tpu"], "unknown device 'tpu'"),
        (["next", "hi", "--dtype", "int4"], "unknown dtype 'int4'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    # HF_HUB_OFFLINE keeps the unknown-hub-name case off the network entirely.
    result = run_cli(*args, env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tempscope next: error: ")
    assert message in lines[0]


def test_chat_on_a_model_without_template(tiny_model_dir: Path) -> None:
    result = run_cli("next", "hi", "-m", str(tiny_model_dir), "--chat", timeout=120)
    assert result.returncode == 2 and "no chat template" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_embedded_model_end_to_end_and_cached(tmp_path: Path) -> None:
    """The torch engine dequantizes the GGUF once into the cache, then reads the cache."""
    env = {"TEMPSCOPE_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    args = ["next", PROMPT, "-t", "0.1", "0.5", "1", "5", "10", "100", "--seed", "0",
            "--engine", "torch"]
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "converting SmolLM2-135M-Instruct" in first.stderr  # the one-time conversion
    assert "LLM Temperature: 0.1 → The cat slept on the couch" in first.stdout
    for t in ("0.5", "1", "5", "10", "100"):
        assert f"LLM Temperature: {t} → The cat slept on the" in first.stdout
    (entry,) = (tmp_path / "models").iterdir()
    assert {"model.safetensors", "config.json", "tokenizer.json", "tempscope-cache.json"} <= set(
        os.listdir(entry)
    )

    second = run_cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "converting" not in second.stderr  # read from the cache, no GGUF conversion
    assert second.stdout == first.stdout  # same seed, same model: same output

    models = run_cli("models", "--json", env=env)
    row = json.loads(models.stdout)[0]
    assert row["cached"] is True and row["parameters"] == 134_515_008


@pytest.mark.slow
def test_embedded_model_on_llama_cpp_needs_no_cache(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    env = {"TEMPSCOPE_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    args = ["next", PROMPT, "-t", "0.1", "1", "--seed", "0", "--engine", "llama.cpp"]
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "LLM Temperature: 0.1 → The cat slept on the couch" in first.stdout
    assert not (tmp_path / "models").exists()  # the GGUF runs as it is: nothing converted
    assert run_cli(*args, env=env).stdout == first.stdout  # same seed: same output
    info = run_cli("info", "--json", "--engine", "llama.cpp", env=env)
    facts = json.loads(info.stdout)
    assert facts["engine"] == "llama.cpp" and facts["dtype"] == "Q4_1"
    assert facts["parameters"] == 134_515_008 and facts["vocab_size"] == 49_152


@pytest.mark.slow
def test_embedded_chat_json() -> None:
    result = run_cli("next", "What do cats like?", "--chat", "-t", "0", "--json")
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["chat"] is True and d["vocab_size"] == 49_152 and len(d["prompt_ids"]) > 10
