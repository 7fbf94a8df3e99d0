"""Start a real ``tempscope serve`` process on a free loopback port, for the server tests."""

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
