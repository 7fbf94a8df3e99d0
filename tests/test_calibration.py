"""Temperature scaling and calibration metrics: hand-checked numbers, a float64 brute-force
reference for T*, and the engines' per-position logits (``Backend.position_logits``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tempscope.engine.backend import Backend
from tempscope.study.calibration import (
    GRID,
    CalibrationSums,
    block_sums,
    calibrate,
    expected_calibration_error,
    find_t_star,
    reliability_bins,
    score_text,
)
from tests.tiny_gguf import write_tiny_gguf


def _softmax(z: Sequence[float], t: float) -> list[float]:
    e = [math.exp(x / t) for x in z]
    return [x / sum(e) for x in e]


# ----------------------------------------------------------------------- hand-checked sums


def test_one_position_by_hand() -> None:
    # logits (2, 1, 0), true token 0. At T = 1: p = (0.6652, 0.2447, 0.0900);
    # NLL = -ln 0.6652 = 0.4076; Brier = 0.3348^2 + 0.2447^2 + 0.0900^2 = 0.1801.
    # At T = 2: p = (0.5065, 0.3072, 0.1863); NLL 0.6802; Brier 0.2435 + 0.0944 + 0.0347.
    s = block_sums(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]), [1.0, 2.0], bins=10)
    assert s.positions == 1 and s.correct == 1
    assert s.nll.tolist() == pytest.approx([0.4076, 0.6802], abs=1e-4)
    assert s.brier.tolist() == pytest.approx([0.1801, 0.3726], abs=1e-4)
    # dNLL/dbeta = E_p[z] - z_y: at T = 1, 0.66524 * 2 + 0.24473 * 1 - 2 = -0.4248.
    assert s.slope[0] == pytest.approx(-0.4248, abs=1e-4)
    # d2NLL/dbeta2 = Var_p[z] = E[z^2] - E[z]^2 = (4 * .66524 + .24473) - 1.57521^2 = 0.4244.
    assert s.curvature[0] == pytest.approx(0.4244, abs=1e-4)
    # top probability 0.6652 -> bin 6 of 10 at T = 1; 0.5065 -> bin 5 at T = 2.
    assert s.bin_count[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert s.bin_count[1].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert s.bin_confidence[0][6] == pytest.approx(0.6652, abs=1e-4)
    assert s.bin_correct[0][6] == 1


def test_a_wrong_argmax_counts_as_wrong() -> None:
    s = block_sums(torch.tensor([[0.0, 3.0]]), torch.tensor([0]), [1.0], bins=2)
    p = _softmax([0.0, 3.0], 1.0)  # (0.0474, 0.9526)
    assert s.correct == 0 and s.nll[0] == pytest.approx(-math.log(p[0]), abs=1e-6)
    assert s.brier[0] == pytest.approx((1 - p[0]) ** 2 + p[1] ** 2, abs=1e-6)
    assert s.bin_count[0].tolist() == [0, 1] and s.bin_correct[0].tolist() == [0, 0]


def test_ece_and_reliability_by_hand() -> None:
    # 4 positions in 2 of 4 bins: bin 1 holds confidences 0.3, 0.4 (1 right), bin 3 holds
    # 0.9, 0.8 (2 right). ECE = (2/4)|0.5 - 0.35| + (2/4)|1.0 - 0.85| = 0.075 + 0.075.
    count, conf, right = [0, 2, 0, 2], [0, 0.7, 0, 1.7], [0, 1, 0, 2]
    assert expected_calibration_error(count, conf, right) == pytest.approx(0.15)
    bins = reliability_bins(count, conf, right)
    assert [(b.low, b.high) for b in bins] == [(0, .25), (.25, .5), (.5, .75), (.75, 1)]
    assert bins[1].confidence == pytest.approx(0.35) and bins[1].accuracy == 0.5
    assert bins[3].accuracy == 1.0 and math.isnan(bins[0].accuracy)
    assert math.isnan(expected_calibration_error([0, 0], [0, 0], [0, 0]))


def test_confidence_one_falls_in_the_top_bin() -> None:
    s = block_sums(torch.tensor([[0.0, -200.0]]), torch.tensor([0]), [1.0], bins=5)
    assert s.bin_count[0].tolist() == [0, 0, 0, 0, 1]


def test_blocks_add_up_and_survive_json() -> None:
    torch.manual_seed(0)
    z, y = torch.randn(12, 50) * 3, torch.randint(0, 50, (12,))
    whole = block_sums(z, y, GRID)
    parts = block_sums(z[:5], y[:5], GRID) + block_sums(z[5:], y[5:], GRID)
    assert parts.positions == 12 and parts.correct == whole.correct
    np.testing.assert_allclose(parts.nll, whole.nll, rtol=1e-9)
    np.testing.assert_allclose(parts.bin_count, whole.bin_count)
    back = CalibrationSums.from_dict(whole.to_dict())
    np.testing.assert_array_equal(back.brier, whole.brier)
    with pytest.raises(ValueError, match="other temperatures"):
        _ = whole + block_sums(z, y, [1.0])


@pytest.mark.parametrize(("temps", "message"), [
    ([0.0], "finite and > 0"), ([math.inf], "finite and > 0"), ([], "no temperatures")])
def test_bad_temperatures_are_refused(temps: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        block_sums(torch.zeros(1, 3), torch.tensor([0]), temps)


def test_non_finite_logits_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        block_sums(torch.tensor([[0.0, -math.inf]]), torch.tensor([0]), [1.0])


# ------------------------------------------------------------------------------------ T*


class FakeBackend:
    """A 'model' whose logits at each position are given: to check calibrate() against a
    float64 brute force without a network. ``position_logits`` follows the protocol."""

    vocab_size = 40

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits  # (L, V): row i predicts token i + 1
        self.blocks: list[int] = []

    def position_logits(self, ids: Sequence[int], start: int,
                        reduce: Callable[[torch.Tensor, torch.Tensor], Any], *,
                        chunk: int = 256) -> list[Any]:
        out = []
        for a in range(start - 1, len(ids) - 1, chunk):
            b = min(a + chunk, len(ids) - 1)
            self.blocks.append(b - a)
            out.append(reduce(self.logits[a:b], torch.tensor(list(ids[a + 1:b + 1]))))
        return out


def _brute_t_star(z: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """argmin over a fine T grid of the float64 mean NLL (and that NLL)."""
    best = (math.inf, math.nan)
    for t in np.exp(np.linspace(math.log(0.3), math.log(3.0), 20001)):
        nll = float(-torch.log_softmax(z.double() / t, -1).gather(1, y[:, None]).mean())
        if nll < best[0]:
            best = (nll, float(t))
    return best[1], best[0]


@pytest.mark.parametrize(("scale", "expect"), [(2.0, "above"), (0.5, "below")])
def test_t_star_matches_a_float64_brute_force(scale: float, expect: str) -> None:
    # Tokens drawn from softmax(z) itself make T = 1 the right answer; scaled logits
    # (over-confident scale > 1, under-confident < 1) move T* to about `scale`.
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(400, 40, generator=gen) * 2
    ids = torch.multinomial(torch.softmax(base, -1), 1, generator=gen)[:, 0]  # (400,)
    z = base * scale
    fake = FakeBackend(z)
    cal = calibrate(fake, [[0, *ids.tolist()]], [1])  # type: ignore[arg-type]
    want_t, want_nll = _brute_t_star(z, ids)
    assert cal.at_edge is None and cal.positions == 400
    assert cal.t_star == pytest.approx(want_t, rel=2e-4)
    assert cal.at_t_star.nll == pytest.approx(want_nll, abs=1e-6)
    assert cal.t_star_error < 1e-3
    assert cal.bracket[0] <= cal.t_star <= cal.bracket[1]
    assert (cal.t_star > 1) == (expect == "above")  # over-confident logits want T > 1
    assert cal.at_t_star.nll <= cal.at_one.nll
    # At T*, flattening or sharpening the logits can only help calibration of this kind:
    # the mean confidence moves toward the accuracy.
    gap_one = abs(cal.at_one.confidence - cal.at_one.accuracy)
    gap_star = abs(cal.at_t_star.confidence - cal.at_t_star.accuracy)
    assert gap_star < gap_one


def test_t_star_outside_the_grid_is_said_so() -> None:
    z = torch.tensor([[9.0, 0.0]] * 10)  # always right and very sure: T* -> 0
    cal = calibrate(FakeBackend(z), [[0] * 11], [1])  # type: ignore[arg-type]
    assert cal.at_edge == "below" and cal.t_star == min(GRID)


def test_find_t_star_needs_positions() -> None:
    with pytest.raises(ValueError, match="no scored positions"):
        find_t_star(CalibrationSums.empty(GRID))


def test_score_text_blocks_stay_bounded() -> None:
    z = torch.randn(30, 40)
    fake = FakeBackend(z)
    fake.vocab_size = 1 << 24  # a block of 2**25 logits holds 2 rows -> clamped to 16
    sums, nll = score_text(fake, list(range(31)), 1, [1.0])  # type: ignore[arg-type]
    assert fake.blocks == [16, 14] and sums.positions == 30 and len(nll) == 30
    ref = -torch.log_softmax(z.double(), -1).gather(1, torch.arange(1, 31)[:, None])[:, 0]
    assert nll == pytest.approx(ref.tolist(), abs=1e-5)


# ------------------------------------------------------------------------- both engines


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Backend]:
    from tempscope.engine import llamacpp
    from tempscope.engine.loader import load_model

    gguf = write_tiny_gguf(tmp_path_factory.mktemp("calib-gguf") / "tiny.gguf", merge=True)
    out = {"torch": load_model(str(gguf), engine="torch")}
    if llamacpp.available():
        out["llama.cpp"] = load_model(str(gguf), engine="llama.cpp")
    return out


@pytest.mark.parametrize("engine", ["torch", "llama.cpp"])
def test_position_logits_are_the_forward_pass(engines: dict[str, Backend], engine: str) -> None:
    if engine not in engines:
        pytest.skip("llama-cpp-python is not installed")
    model = engines[engine]
    ids = model.encode("The cat slept on the mat, and the dog slept by the door.")
    seen: list[tuple[int, list[int]]] = []

    def reduce(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
        assert logits.dtype == torch.float32 and logits.shape == (len(targets), model.vocab_size)
        seen.append((len(targets), targets.tolist()))
        return (-torch.log_softmax(logits.double(), -1).gather(1, targets[:, None])[:, 0]
                ).tolist()

    blocks = model.position_logits(ids, 4, reduce, chunk=7)
    assert [n for n, _ in seen] == [7] * (len(ids[4:]) // 7) + (
        [len(ids[4:]) % 7] if len(ids[4:]) % 7 else [])
    assert [t for _, ts in seen for t in ts] == ids[4:]
    got = [x for b in blocks for x in b]
    want = model.sequence_logprobs([ids], [4])[0]
    assert got == pytest.approx([-x for x in want], abs=1e-4)
    with pytest.raises(ValueError, match="start must be from 1"):
        model.position_logits(ids, 0, reduce)
    with pytest.raises(ValueError, match="chunk must be"):
        model.position_logits(ids, 1, reduce, chunk=0)


def test_engines_agree_on_t_star(engines: dict[str, Backend]) -> None:
    if "llama.cpp" not in engines:
        pytest.skip("llama-cpp-python is not installed")
    text = "The cat slept on the mat, and the dog slept by the door of the old house."
    results = {name: calibrate(m, [m.encode(text)], [3]) for name, m in engines.items()}
    a, b = results["torch"], results["llama.cpp"]
    assert a.positions == b.positions
    assert a.at_one.nll == pytest.approx(b.at_one.nll, abs=1e-3)  # same float32 weights
    assert a.t_star == pytest.approx(b.t_star, rel=1e-2)


def test_tiny_model_folder(tiny_model_dir: Path) -> None:
    from tempscope.engine.loader import load_model

    model = load_model(str(tiny_model_dir))
    ids = model.encode("Once upon a time there was a cat.")
    cal = calibrate(model, [ids, ids[:12]], [1, 2])
    assert cal.positions == len(ids) - 1 + 10 and cal.texts == 2
    assert cal.at_edge is not None or min(v for _, v in cal.curve) == pytest.approx(
        cal.at_t_star.nll, abs=1e-9)
