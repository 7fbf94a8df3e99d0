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
