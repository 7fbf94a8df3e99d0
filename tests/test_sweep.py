"""Sweeps on the tiny model: records, resume after an interruption or a kill, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tempscope.errors import TempscopeError
from tempscope.study.grid import (
    SweepProgress,
    builtin_prompts,
    read_manifest,
    read_prompts,
    read_records,
    sweep,
)
from tests.conftest import kill_once_written, rows_per_step, run_cli

PROMPTS = ["The cat sat", "Hello", "Once upon a time"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    from tempscope.engine.loader import load_model

    return load_model(str(tiny_model_dir))


def _by_key(path: Path) -> dict[tuple[int, str, float, int], dict[str, Any]]:
    """Records of a run keyed by (prompt, config, temperature, sample); fails on duplicates."""
    out: dict[tuple[int, str, float, int], dict[str, Any]] = {}
    for line in (path / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        key = (r["prompt_index"], r["config"], r["temperature"], r["sample_index"])
        assert key not in out, f"duplicate record {key}"
        out[key] = r
    return out


# ----------------------------------------------------------------------------------- prompts


def test_builtin_prompts() -> None:
    prompts = builtin_prompts()
    assert len(prompts) == 36
    assert prompts[0] == "The cat slept on the"
    assert all(p.strip() and not p.startswith("#") for p in prompts)


def test_read_prompts(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\nfirst prompt\n\n  second one\n")
    assert read_prompts(txt) == ["first prompt", "  second one"]
    jl = tmp_path / "p.jsonl"
    jl.write_text('"plain string"\n{"prompt": "from an object", "kind": "x"}\n')
    assert read_prompts(jl) == ["plain string", "from an object"]
    jl.write_text('{"text": 1}\n')
    with pytest.raises(TempscopeError, match=r"p.jsonl:1: expected a string"):
        read_prompts(jl)
    with pytest.raises(TempscopeError, match="cannot read the prompts file"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(TempscopeError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")


# ------------------------------------------------------------------------------------- API


def test_sweep_writes_one_record_per_sample(tiny: Any, tmp_path: Path) -> None:
    from tempscope.sampling import SamplingParams

    seen: list[SweepProgress] = []
    configs = {"plain": SamplingParams(), "top_k": SamplingParams(top_k=5)}
    frame = sweep(tiny, PROMPTS[:2], [0, 1.0], configs=configs, n=3, max_new_tokens=6,
                  seed=1, out=tmp_path, progress=seen.append)
    # 2 prompts x 2 configs x 2 temperatures x 3 samples
    assert len(frame) == 24
    records = _by_key(tmp_path)
    assert len(records) == 24
    r = records[(0, "top_k", 1.0, 2)]
    assert r["params"]["top_k"] == 5 and r["params"]["temperature"] == 1.0
    assert r["n_tokens"] == len(r["token_ids"]) == len(r["steps"]["raw_logprob"]) == 6
    assert set(r["steps"]) == {"token", "raw_logprob", "logprob", "entropy", "raw_entropy",
                               "rank"}
    assert len(r["first_top"]) == 10 and r["finish_reason"] == "length"
    # greedy cells: n identical samples, entropy 0
    greedy = [records[(0, "plain", 0.0, k)] for k in range(3)]
    assert len({g["text"] for g in greedy}) == 1
    assert greedy[0]["steps"]["entropy"] == [0.0] * 6
    # sample k of every cell shares its seed (paired comparison across temperatures)
    assert records[(1, "top_k", 1.0, 2)]["seed"] == records[(0, "plain", 1.0, 2)]["seed"]
    manifest = read_manifest(tmp_path)
    assert manifest["n"] == 3 and manifest["temperatures"] == [0.0, 1.0]
    assert manifest["configs"]["top_k"]["top_k"] == 5
    assert "top_p" not in manifest["configs"]["top_k"]  # samplers that are off are left out
    assert seen[-1].cells_done == seen[-1].cells_total == 8
    assert seen[-1].tokens > 0 and seen[-1].tokens_per_s > 0

    # Same settings again: nothing generated, nothing appended, the same frame back.
    before = (tmp_path / "samples.jsonl").read_bytes()
    again: list[SweepProgress] = []
    frame2 = sweep(tiny, PROMPTS[:2], [0, 1.0], configs=configs, n=3, max_new_tokens=6,
                   seed=1, out=tmp_path, progress=again.append)
    assert (tmp_path / "samples.jsonl").read_bytes() == before
    assert again[-1].tokens == 0
    assert frame2["text"].tolist() == frame["text"].tolist()

    # Other settings in the same directory: refused, naming what differs.
    with pytest.raises(TempscopeError, match=r"other settings \(n: was 3, now 4"):
        sweep(tiny, PROMPTS[:2], [0, 1.0], configs=configs, n=4, max_new_tokens=6, seed=1,
              out=tmp_path)


def test_sweep_validates_its_grid(tiny: Any) -> None:
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sweep(tiny, ["ok", " "], [1.0])
    with pytest.raises(ValueError, match="temperatures repeat"):
        sweep(tiny, ["ok"], [1.0, 1.0])
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        sweep(tiny, ["ok"], [-1.0])
    with pytest.raises(ValueError, match="n must be a whole number >= 1, got 0"):
        sweep(tiny, ["ok"], [1.0], n=0)
    one = sweep(tiny, "A single prompt", [0.5], n=2, max_new_tokens=3)  # a str is one prompt
    assert one["prompt"].tolist() == ["A single prompt"] * 2


def test_resume_after_interrupt_matches_a_clean_run(tiny: Any, tmp_path: Path) -> None:
    args: dict[str, Any] = {"n": 3, "max_new_tokens": 8, "seed": 5, "batch_rows": 1}
    clean = tmp_path / "clean"
    sweep(tiny, PROMPTS, [0, 0.8, 1.6], out=clean, **args)

    cut = tmp_path / "cut"

    def stop_after_some(p: SweepProgress) -> None:
        if p.cells_done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(tiny, PROMPTS, [0, 0.8, 1.6], out=cut, progress=stop_after_some, **args)
    partial = _by_key(cut)
    assert 0 < len(partial) < 27
    # A kill in the middle of a write: a cut-off line and a cell with a missing sample.
    lines = (cut / "samples.jsonl").read_text().splitlines(keepends=True)
    (cut / "samples.jsonl").write_text("".join(lines[:-2]) + lines[-1][:40])
    records, damaged = read_records(cut)
    assert damaged and len(records) == len(lines) - 3  # the whole last cell is dropped

    sweep(tiny, PROMPTS, [0, 0.8, 1.6], out=cut, **args)
    resumed, reference = _by_key(cut), _by_key(clean)
    assert resumed.keys() == reference.keys()
    for key, r in reference.items():
        assert resumed[key]["token_ids"] == r["token_ids"], key
        assert resumed[key]["text"] == r["text"], key


def test_a_sweep_keeps_its_batch_full_and_its_samples(tiny: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """batch_rows = 4 on a grid of 27 rows that end at different steps (end of text made
    likelier): never more than 4 rows decode, each freed slot is taken at once (the
    steps are far fewer than 4-row batches each waiting for their longest row), and every
    sample is the one a single 64-row batch gives."""
    from tempscope.sampling import SamplingParams

    eos = tiny.eos_token_ids[0]  # made likelier, so rows end at different steps
    args: dict[str, Any] = {"n": 3, "max_new_tokens": 12, "seed": 9,
                            "configs": {"early": SamplingParams(logit_bias={eos: 4.0})}}
    wide = tmp_path / "wide"
    sweep(tiny, PROMPTS, [0.5, 1.0, 2.0], out=wide, batch_rows=64, **args)
    live = rows_per_step(monkeypatch)
    narrow = tmp_path / "narrow"
    sweep(tiny, PROMPTS, [0.5, 1.0, 2.0], out=narrow, batch_rows=4, **args)
    a, b = _by_key(wide), _by_key(narrow)
    assert a.keys() == b.keys() and len(a) == 27
    assert all(a[k]["token_ids"] == b[k]["token_ids"] for k in a)
    assert max(live) == 4
    lengths = sorted(len(r["token_ids"]) for r in a.values())
    assert lengths[0] < lengths[-1]  # rows really end at different steps
    fixed = sum(max(lengths[i:i + 4]) + 1 for i in range(0, 27, 4))  # batches waiting
    assert len(live) < fixed


# ------------------------------------------------------------------------------------- CLI


def test_cli_sweep_then_report(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run_cli("sweep", "-m", str(tiny_model_dir), "-p", "The cat sat", "-p", "Hello",
                "--temperatures", "0", "1", "2", "--n", "2", "--max-new-tokens", "6",
                "--config", "plain:", "--config", "k3:top_k=3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "24 samples in" in r.stdout
    assert len(_by_key(out)) == 2 * 3 * 2 * 2
    assert read_manifest(out)["configs"]["k3"]["top_k"] == 3

    r = run_cli("report", str(out))
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert "report written to" in r.stdout
    for name in ("coherence", "entropy", "frontier", "first_step"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    assert html.count("data:image/png;base64,") == 4
    assert "Coherence under the model itself" in html and "k3" in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch


def test_cli_errors_are_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    r = run_cli("sweep", "-m", str(tiny_model_dir), "-p", "x", "--config", "bad",
                "--out", str(tmp_path / "a"))
    assert r.returncode == 2
    assert "write NAME:key=value" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("sweep", "-m", str(tiny_model_dir), "-p", "x", "--config", "a:temperature=2",
                "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "temperature comes from --temperatures" in r.stderr
    r = run_cli("report", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a sweep directory" in r.stderr


@pytest.mark.slow
def test_cli_resume_after_kill(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Kill a running sweep with SIGKILL, rerun it: nothing lost, nothing twice."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Prompt number {i}:" for i in range(10)) + "\n")
    common = ["sweep", "-m", str(tiny_model_dir), "--prompts", str(prompts), "--temperatures",
              "0", "0.7", "1.5", "--n", "2", "--max-new-tokens", "24", "--batch-rows", "1"]
    killed = tmp_path / "killed"
    partial = kill_once_written([*common, "--out", str(killed)], killed / "samples.jsonl")
    assert 0 < partial < 10 * 3 * 2

    r = run_cli(*common, "--out", str(killed))
    assert r.returncode == 0, r.stderr
    clean = tmp_path / "clean"
    r = run_cli(*common, "--out", str(clean))
    assert r.returncode == 0, r.stderr
    resumed, reference = _by_key(killed), _by_key(clean)
    assert resumed.keys() == reference.keys() and len(reference) == 10 * 3 * 2
    for key, rec in reference.items():
        assert resumed[key]["token_ids"] == rec["token_ids"], key
