"""Every CLI error a user can cause: one line on stderr, exit status 2, no traceback, and
checked before the model loads where it can be.

Each case runs the real ``tempscope`` command. Cases that must fail before loading pass
``-m {missing}``, a model that does not exist: had the command loaded first, the error would be
about the model, not about the option under test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.conftest import run_cli

MANIFEST = {"format": "tempscope-sweep/1", "model": "m", "prompts": ["hi"],
            "temperatures": [1.0], "configs": {"default": {}}, "n": 1, "max_new_tokens": 2,
            "seed": 0, "chat": False, "judge": None}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of bad inputs: a file where a folder is expected, binary and empty prompt
    files, run folders with a junk, binary or incomplete manifest or a binary samples file."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "afile").write_text("a regular file\n")
    (root / "folder.png").mkdir()
    (root / "prompts.bin").write_bytes(b"\x00\xff\xfe\x80 binary")
    (root / "nul.txt").write_bytes(b"The cat\x00sat\n")
    (root / "empty.txt").write_text("# only a comment\n\n")
    for name, manifest in (("junk", b"{junk"), ("binary", b"\xff\xfe\x00"),
                           ("damaged", json.dumps({**MANIFEST, "n": None}).encode()),
                           ("run", json.dumps(MANIFEST).encode()),
                           ("badsamples", json.dumps(MANIFEST).encode())):
        (root / name).mkdir()
        (root / name / "manifest.json").write_bytes(manifest)
    (root / "badsamples" / "samples.jsonl").write_bytes(b"\xff\xfe\n")
    return root


# (arguments, exit status, text the one stderr line holds); {files}: the fixture's folder,
# {model}: the tiny model, {missing}: a model that does not exist.
CASES: list[tuple[list[str], int, str]] = [
    # Output paths, checked before any model loads.
    (["softmax", "1", "2", "--plot", "{files}/afile/x.png"], 2,
     "'{files}/afile' is a file, not a folder"),
    (["softmax", "1", "2", "--plot", "{files}/folder.png"], 2, "is a folder"),
    (["softmax", "1", "2", "--plot", ""], 2, "--plot is empty"),
    (["softmax", "1", "2", "--plot", "{files}/p.txt"], 2, "must end in .png"),
    (["next", "hi", "-m", "{missing}", "--plot", "{files}/afile/x.png"], 2,
     "--plot '{files}/afile/x.png' cannot be created"),
    (["next", "hi", "-m", "{missing}", "--plot", "{files}/folder.png"], 2, "is a folder"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--out", "{files}/afile/run"], 2,
     "'{files}/afile' is a file, not a folder"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--out", "{files}/afile"], 2,
     "--out '{files}/afile' is a file, not a folder"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--out", ""], 2, "--out is empty"),
    (["report", "{files}/run", "--out", "{files}/afile/r.html"], 2,
     "'{files}/afile' is a file, not a folder"),
    (["report", "{files}/run", "--out", "{files}/folder.png"], 2, "is a folder"),
    # Negative numbers in any float notation are numbers, not options.
    (["softmax", "1", "-1e5"], 0, ""),
    (["softmax", "-1e-3", "-2.5E+2", "-.5"], 0, ""),
    (["softmax", "1", "-inf", "-t", "0.5"], 0, ""),
    (["softmax", "--words", "a", "b", "--logits", "1", "-1e5", "-t", "1", "100"], 0, ""),
    (["softmax", "1", "2", "-t", "-1e-3"], 2, "temperature must be a number >= 0"),
    (["softmax", "1", "-nan"], 2, "logit must be a number, got '-nan'"),
    (["softmax", "1", "inf"], 2, "logits must be finite"),
    # Extreme logits: the overflow is handled, so no numpy warning reaches stderr.
    (["softmax", "1e38", "-1e38", "-t", "1e-300"], 0, ""),
    (["softmax", "1e308", "-1e308", "--json"], 0, ""),
    (["softmax", "1e39", "1", "--top-k", "1"], 2, "beyond float32's range"),
    # Limits on what one command may ask for.
    (["generate", "hi", "-m", "{missing}", "--n", "1000000"], 2,
     "--n must be a whole number from 1 to 4,096, got 1,000,000"),
    (["generate", "hi", "-m", "{missing}", "-t", "0.5", "1", "2", "--n", "2000"], 2,
     "6,000 samples decoding together; at most 4,096 can"),
    (["generate", "hi", "-m", "{missing}", "--max-new-tokens", "0"], 2, "--max-new-tokens must"),
    (["generate", "hi", "-m", "{missing}", "--max-new-tokens", "99999999"], 2,
     "from 1 to 1,048,576"),
    (["generate", "hi", "-m", "{missing}", "--top", "101"], 2, "--top must be"),
    (["generate", "hi", "-m", "{missing}", "--seed", "99999999999999999999"], 2,
     "--seed must be a whole number from 0 to 2**63 - 1"),
    (["generate", "hi", "-m", "{model}", "--max-new-tokens", "1000"], 2,
     "reads at most 256 tokens and the prompt takes 2, so use --max-new-tokens 254"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--n", "5000", "--out", "{files}/s"], 2,
     "--n must be a whole number from 1 to 4,096"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--batch-rows", "100000", "--out", "{files}/s"],
     2, "--batch-rows must be"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--n", "1000", "-t", "0", "1", "2", "3", "4",
      "5", "--out", "{files}/s"], 2, "5,001 samples decoding together"),
    (["tour", "-m", "{missing}", "--top", "1000"], 2, "--top must be"),
    (["tour", "-m", "{model}", "--max-new-tokens", "100000"], 2, "does not fit"),
    # Prompt files and run folders: the file is named and the fix said.
    (["sweep", "--prompts", "{files}/prompts.bin", "-m", "{missing}", "--out", "{files}/s"], 2,
     "the prompts file '{files}/prompts.bin' is not UTF-8 text"),
    (["sweep", "--prompts", "{files}/nul.txt", "-m", "{missing}", "--out", "{files}/s"], 2,
     "holds NUL bytes"),
    (["sweep", "--prompts", "{files}/none.txt", "-m", "{missing}", "--out", "{files}/s"], 2,
     "cannot read the prompts file"),
    (["sweep", "--prompts", "{files}/empty.txt", "-m", "{missing}", "--out", "{files}/s"], 2,
     "no prompts in"),
    (["sweep", "-p", "   ", "-m", "{missing}", "--out", "{files}/s"], 2, "prompt 0 is empty"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--out", "{files}/junk"], 2,
     "{files}/junk/manifest.json is not valid JSON"),
    (["report", "{files}/junk"], 2, "{files}/junk/manifest.json is not valid JSON"),
    (["report", "{files}/binary"], 2, "manifest.json is not valid JSON (not UTF-8 text)"),
    (["report", "{files}/damaged"], 2, "is damaged: 'n' is null, not a whole number"),
    (["report", "{files}/badsamples"], 2, "{files}/badsamples/samples.jsonl is not UTF-8"),
    (["report", "{files}/nothing"], 2, "is not a sweep directory"),
    (["report", "{files}/run", "--threshold", "0"], 2, "--threshold must be"),
    (["report", "{files}/run", "--threshold", "nan"], 2, "--threshold must be a number"),
    # Sampler configs: one line naming the key, the value and the valid range.
    (["sweep", "-p", "hi", "-m", "{missing}", "--config", "a:top_p=5", "--out", "{files}/s"],
     2, "--config 'a:top_p=5': top_p must be in (0, 1]"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--config", "a:top_k=abc", "--out", "{files}/s"],
     2, "top_k: Input should be a valid integer"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--config", "a:logit_bias={x", "--out",
      "{files}/s"], 2, "is not JSON"),
    (["sweep", "-p", "hi", "-m", "{missing}", "--config", "a:foo=1", "--out", "{files}/s"], 2,
     "unknown sampler setting 'foo'"),
    (["sweep", "-p", "hi", "-m", "{missing}", "-t", "1", "1", "--out", "{files}/s"], 2,
     "temperatures repeat"),
    # argparse's own errors are one line too, named by the command.
    (["softmax", "1", "2", "--bogus"], 2,
     "tempscope softmax: error: unrecognized arguments: --bogus"),
    (["generate", "hi", "--n", "x"], 2, "invalid int value: 'x'"),
    (["next", "hi", "--engine", "foo"], 2, "invalid choice: 'foo'"),
    (["no-such-command"], 2, "invalid choice"),
    # Other bad input.
    (["next", "", "-m", "{missing}"], 2, "the prompt is empty"),
    (["next", "hi", "-m", "{missing}", "-t", "nan"], 2, "temperature must be a number"),
    (["next", "hi", "-m", "{missing}", "--top-p", "1.5"], 2, "top_p must be in (0, 1]"),
    (["next", "hi", "-m", "{model}", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["info", "-m", "{missing}"], 2, "not found"),
    # The calibration study: settings and text files checked before any model loads.
    (["study", "calibration", "--prompts", "0", "--out", "{files}/c"], 2,
     "--prompts must be a whole number from 1"),
    (["study", "calibration", "--text", "{files}/prompts.bin", "--out", "{files}/c"], 2,
     "--text '{files}/prompts.bin' is not UTF-8 text"),
    (["study", "calibration", "-m", "{missing}", "--prompts", "2", "--out", "{files}/c"], 2,
     "not found"),
]


@pytest.mark.parametrize(("args", "status", "message"), CASES,
                         ids=[" ".join(a)[:60] for a, _, _ in CASES])
def test_one_line_and_exit_status(args: list[str], status: int, message: str, files: Path,
                                  tiny_model_dir: Path) -> None:
    where = {"files": str(files), "model": str(tiny_model_dir),
             "missing": str(files / "no-such-model")}
    r = run_cli(*[_fill(a, where) for a in args], timeout=120)
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr
    if status == 0:
        assert r.stderr == ""
        return
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert _fill(message, where) in lines[0]
    assert "pydantic" not in lines[0] and "https://" not in lines[0]


def _fill(text: str, where: dict[str, str]) -> str:
    for key, value in where.items():
        text = text.replace("{" + key + "}", value)
    return text


def test_negative_numbers_keep_their_values() -> None:
    r = run_cli("softmax", "0", "-1e5", "-inf", "-t", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1.00000000", "0.00000000", "0.00000000"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root may write anywhere; needs POSIX permissions")
def test_a_folder_without_write_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        r = run_cli("softmax", "1", "2", "--plot", str(locked / "sub" / "x.png"))
    finally:
        locked.chmod(0o700)
    assert r.returncode == 2
    assert "no permission to write in" in r.stderr and len(r.stderr.splitlines()) == 1


def test_no_write_permission_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The same check as above, where root (who may write anywhere) runs the tests.
    from tempscope.cli import main

    monkeypatch.setattr("tempscope.cli.common.os.access", lambda *args: False)
    assert main(["softmax", "1", "2", "--plot", str(tmp_path / "sub" / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"no permission to write in {str(tmp_path)!r}" in err and len(err.splitlines()) == 1


def _fake_model(*, vocab: int, max_rows: int | None = None) -> Any:
    """What the estimate reads of a model: its facts, row limit and device."""
    from tempscope.engine.backend import ModelFacts

    facts = ModelFacts(name="fake", source="local", architecture="x", parameters=1,
                       vocab_size=vocab, embedding_dim=768, heads=12, layers=12,
                       context_length=1024)
    return SimpleNamespace(facts=facts, max_rows=max_rows, device=torch.device("cpu"))


def test_memory_estimate_says_how_many_fit() -> None:
    from tempscope.cli.limits import GIB, check_memory

    model = _fake_model(vocab=50_000)
    # 1000 rows x 50k logits x 4 bytes x 12 buffers = 2.4 GB before the KV cache: no fit in 1.
    with pytest.raises(ValueError, match=r"--n 1,000 needs about .* GiB of memory, about 1\.0 "
                       r"GiB is free on this machine: use --n \d+ or less"):
        check_memory(model, session_rows=1000, tokens_per_row=64, host_bytes=0,
                     option="--n", value=1000, free=GIB)
    check_memory(model, session_rows=4, tokens_per_row=64, host_bytes=0,
                 option="--n", value=4, free=GIB)


def test_an_engine_row_limit_bounds_the_estimate() -> None:
    from tempscope.cli.limits import GIB, check_memory

    # llama.cpp decodes 64 rows at a time: 4096 rows cost no more tensor memory than 64.
    chunked = _fake_model(vocab=50_000, max_rows=64)
    check_memory(chunked, session_rows=4096, tokens_per_row=64, host_bytes=0,
                 option="--n", value=4096, free=GIB)
