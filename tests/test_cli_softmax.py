from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import run_cli

SEED = ["--words", "ceiling", "floor", "mat", "car", "grass",
        "--logits", "-49.82", "-46.40", "-45.25", "-47.30", "-48.32"]


def test_plain_logits() -> None:
    r = run_cli("softmax", "2", "4", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0.09003057 0.66524096 0.24472847"


def test_seed_table() -> None:
    r = run_cli("softmax", *SEED, "--temperature", "1", "100")
    assert r.returncode == 0, r.stderr
    assert "mat (Prob: 0.66571)" in r.stdout
    assert "mat (Prob: 0.20436)" in r.stdout
    for word in ["ceiling", "floor", "mat", "car", "grass"]:
        assert word in r.stdout
    assert "0.21079" in r.stdout  # floor at T = 1
    assert r.stdout.index("0.66571") < r.stdout.index("0.20436")


def test_json() -> None:
    r = run_cli("softmax", *SEED, "-t", "1", "100", "0", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [d["temperature"] for d in data] == [1, 100, 0]
    assert data[0]["words"][data[0]["argmax"]] == "mat"
    assert data[2]["probabilities"] == [0, 0, 1, 0, 0]
    assert math.isclose(sum(data[1]["probabilities"]), 1.0)
    assert data[1]["entropy"] > data[0]["entropy"] > data[2]["entropy"] == 0


def test_plot(tmp_path: Path) -> None:
    out = tmp_path / "dist.png"
    r = run_cli("softmax", *SEED, "-t", "0.5", "1", "100", "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no logits"),
        (["--words", "a", "b", "--logits", "1"], "2 words but 1 logits"),
        (["1", "2", "-t", "-1"], "temperature must be a number >= 0"),
        (["1", "x"], "logit must be a number, got 'x'"),
        (["1", "2", "-t", "hot"], "temperature must be a number, got 'hot'"),
        (["1", "inf"], "logits must be finite"),
        (["1", "2", "--plot", "out.txt"], "must end in .png"),
    ],
)
def test_bad_input_one_clear_line(args: list[str], message: str) -> None:
    r = run_cli("softmax", *args)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
