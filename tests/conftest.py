from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_gguf import write_tiny_gguf
from tests.tiny_model import save_tiny

ROOT = Path(__file__).resolve().parent.parent
# The cache the user runs with (the `models` fixture points TEMPSCOPE_CACHE at a temporary
# one for the session); None = the default, ~/.cache/tempscope.
USER_CACHE = os.environ.get("TEMPSCOPE_CACHE")
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
#: Marks of every module that drives the page in Chromium.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                       reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny GPT-2 model and its byte-level tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf", merge=True)


@pytest.fixture(scope="session")
def models(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny GGUF on every engine installed: ``{"torch": ..., "llama.cpp": ...}``."""
    from tempscope.engine.loader import load_model

    os.environ.setdefault("TEMPSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
    out = {"torch": load_model(str(tiny_gguf), engine="torch")}
    if HAVE_LLAMA:
        out["llama.cpp"] = load_model(str(tiny_gguf), engine="llama.cpp")
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (never a downloaded browser)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep screenshots and reports for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``tempscope`` command as a subprocess."""
    exe = Path(sys.executable).with_name("tempscope")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env=full_env,
        input=input,
    )


def kill_once_written(args: list[str], path: Path, *, wait: float = 0.0) -> int:
    """Start ``tempscope *args``, SIGKILL it once ``path`` has data (``wait`` seconds later);
    returns the lines ``path`` holds then. Fails the test if the command ends first."""
    import signal
    import time

    exe = Path(sys.executable).with_name("tempscope")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.stat().st_size > 0:
            break
        time.sleep(0.01)
    time.sleep(wait)
    assert proc.poll() is None, "the command finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return path.read_text().count("\n")


def rows_per_step(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on (in this test), the rows live or joining at each Decoder step, appended."""
    from tempscope.engine.loop import Decoder

    seen: list[int] = []
    real = Decoder.step

    def step(self: Decoder) -> list[Any]:
        seen.append(self.reserved())
        return real(self)

    monkeypatch.setattr(Decoder, "step", step)
    return seen
