from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import tempscope as ts
from tempscope import distribution

SEED_WORDS = ["ceiling", "floor", "mat", "car", "grass"]
SEED_LOGITS = [-49.82, -46.40, -45.25, -47.30, -48.32]


def test_seed_numbers() -> None:
    np.testing.assert_allclose(
        ts.softmax([2, 4, 3]), [0.09003057, 0.66524096, 0.24472847], atol=5e-9
    )
    p1 = ts.softmax(SEED_LOGITS, 1)
    p100 = ts.softmax(SEED_LOGITS, 100)
    assert SEED_WORDS[int(np.argmax(p1))] == "mat"
    assert round(float(p1.max()), 5) == 0.66571
    assert round(float(p100.max()), 5) == 0.20436


@pytest.mark.parametrize(
    ("logits", "t", "expected"),
    [
        ([1.0, 3.0, 3.0, 2.0], 0, [0, 1, 0, 0]),  # greedy: first maximum on ties
        ([1.0, 2.0], math.inf, [0.5, 0.5]),
        ([1.0, -math.inf, 2.0], math.inf, [0.5, 0.0, 0.5]),
        ([0.0, math.log(3.0)], 1, [0.25, 0.75]),
        ([0.0, math.log(3.0)], 2, [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]),
        ([5.0, -math.inf], 1, [1.0, 0.0]),
        ([1e300, -1e300], 1e-6, [1.0, 0.0]),  # huge logits, tiny T: no overflow
    ],
)
def test_table(logits: list[float], t: float, expected: list[float]) -> None:
    np.testing.assert_allclose(ts.softmax(logits, t), expected, atol=1e-12)


@pytest.mark.parametrize("t", [1e-6, 1e-3, 0.5, 1, 7, 1e6, 1e30])
def test_extreme_temperatures_finite(t: float) -> None:
    p = ts.softmax([-49.82, -46.40, -45.25, -47.30, -48.32], t)
    assert np.all(np.isfinite(p))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_tiny_t_is_argmax_and_huge_t_is_uniform() -> None:
    assert ts.softmax(SEED_LOGITS, 1e-6).tolist() == [0, 0, 1, 0, 0]
    np.testing.assert_allclose(ts.softmax(SEED_LOGITS, 1e6), 0.2, atol=1e-5)


@pytest.mark.parametrize("bad", [-1, -1e-9, math.nan, "hot", None, True, [1.0]])
def test_bad_temperature(bad: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        ts.softmax([1.0, 2.0], bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[1.0, math.nan], [1.0, math.inf], [], ["a", "b"]])
def test_bad_logits(bad: list[object]) -> None:
    with pytest.raises(ValueError, match="logits"):
        ts.softmax(bad)


def test_all_masked_row_rejected() -> None:
    with pytest.raises(ValueError, match="-inf"):
        ts.softmax([[0.0, 1.0], [-math.inf, -math.inf]])


def test_nan_error_names_value_and_index() -> None:
    with pytest.raises(ValueError, match=r"nan at index 2"):
        ts.softmax([1.0, 2.0, math.nan])


def test_numpy_torch_list_parity() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7)) * 5
    for t in [0, 0.3, 1, 10, math.inf]:
        a = ts.softmax(x, t)
        b = ts.softmax(torch.tensor(x), t)
        c = ts.softmax(x.tolist(), t)
        d = ts.softmax(torch.tensor(x, dtype=torch.float32), t)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        assert d.dtype == torch.float32
        np.testing.assert_allclose(a, b.numpy(), atol=1e-12)
        np.testing.assert_allclose(a, c, atol=0)
        np.testing.assert_allclose(a, d.numpy(), atol=1e-6)


def test_half_precision_computed_in_float32() -> None:
    p = ts.softmax(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16), 1e-3)
    assert p.dtype == torch.float32
    assert p.tolist() == [0.0, 0.0, 1.0]


def test_batched_rows_independent() -> None:
    x = np.array([[2.0, 4.0, 3.0], [0.0, 0.0, 0.0]])
    p = ts.softmax(x)
    np.testing.assert_allclose(p[0], ts.softmax(x[0]))
    np.testing.assert_allclose(p[1], [1 / 3] * 3)


def test_log_softmax_matches_log_of_softmax() -> None:
    x = [0.5, -2.0, 3.0, -math.inf]
    lp = ts.log_softmax(x, 0.7)
    np.testing.assert_allclose(np.exp(lp), ts.softmax(x, 0.7), atol=1e-15)
    assert lp[3] == -math.inf


def test_entropy_and_friends() -> None:
    assert float(ts.entropy([0.5, 0.5])) == pytest.approx(math.log(2))
    assert float(ts.entropy([0.5, 0.5], bits=True)) == pytest.approx(1.0)
    assert float(ts.entropy([1.0, 0.0])) == 0.0
    assert float(ts.perplexity([0.25] * 4)) == pytest.approx(4.0)
    assert float(ts.effective_vocab([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert float(ts.top_probability([0.2, 0.7, 0.1])) == pytest.approx(0.7)
    h = ts.entropy(np.array([[0.5, 0.5], [1.0, 0.0]]))
    np.testing.assert_allclose(h, [math.log(2), 0.0])


@pytest.mark.parametrize(
    ("probs", "p", "mask"),
    [
        ([0.1, 0.6, 0.3], 0.8, [False, True, True]),
        ([0.1, 0.6, 0.3], 0.6, [False, True, False]),  # reaching p exactly stops there
        ([0.1, 0.6, 0.3], 0.61, [False, True, True]),
        ([0.1, 0.6, 0.3], 1e-9, [False, True, False]),  # at least one token
        ([0.5, 0.5, 0.0], 1.0, [True, True, False]),  # zero-mass tokens never join
        ([0.4, 0.2, 0.4], 0.5, [True, False, True]),  # ties: lower index first
    ],
)
def test_top_p_mask(probs: list[float], p: float, mask: list[bool]) -> None:
    assert ts.top_p_mask(probs, p).tolist() == mask
    assert int(ts.top_p_size(probs, p)) == sum(mask)


def test_top_p_torch() -> None:
    m = ts.top_p_mask(torch.tensor([[0.1, 0.6, 0.3]]), 0.8)
    assert m.tolist() == [[False, True, True]]


@pytest.mark.parametrize("p", [0, -0.1, 1.5, math.nan])
def test_top_p_bad(p: float) -> None:
    with pytest.raises(ValueError, match="p must be in"):
        ts.top_p_mask([0.5, 0.5], p)


logit_rows = arrays(
    np.float64, st.integers(2, 12), elements=st.floats(-50, 50, allow_nan=False)
)
temps = st.floats(1e-4, 1e4)


@settings(max_examples=200, deadline=None)
@given(logit_rows, temps)
def test_sums_to_one(x: np.ndarray, t: float) -> None:
    p = ts.softmax(x, t)
    assert np.all(p >= 0) and np.all(np.isfinite(p))
    assert p.sum() == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(logit_rows, temps, st.floats(-1e3, 1e3))
def test_shift_invariance(x: np.ndarray, t: float, c: float) -> None:
    np.testing.assert_allclose(ts.softmax(x, t), ts.softmax(x + c, t), atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(logit_rows, temps, temps)
def test_entropy_rises_with_temperature(x: np.ndarray, t1: float, t2: float) -> None:
    lo, hi = sorted((t1, t2))
    h_lo, h_hi = float(ts.entropy(ts.softmax(x, lo))), float(ts.entropy(ts.softmax(x, hi)))
    assert h_lo <= h_hi + 1e-9


@settings(max_examples=200, deadline=None)
@given(logit_rows)
def test_small_t_approaches_argmax(x: np.ndarray) -> None:
    top = np.sort(x)[-2:]
    if top[1] - top[0] < 1e-3:  # near-ties need an even smaller T; covered by T = 0 tests
        return
    p = ts.softmax(x, 1e-5)
    assert p[int(np.argmax(x))] == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------- per-row selections (fast path)

def _reference_top(a: np.ndarray, k: int) -> np.ndarray:
    """Largest first, ties by the lower index, -inf last by index: a stable sort."""
    return np.stack([np.lexsort((np.arange(a.shape[1]), -row))[:k] for row in a])


@pytest.mark.parametrize("kind", ["random", "ties", "mostly_masked", "one_finite"])
def test_top_ids_rank_of_and_row_argmax_match_a_stable_sort(kind: str) -> None:
    """The grouped top-k is exact on every shape it takes: few groups (a whole-row sort),
    many (only the groups that can hold the top k), rows with fewer than k finite entries."""
    rng = np.random.default_rng(["random", "ties", "mostly_masked", "one_finite"].index(kind))
    for _ in range(60):
        v = int(rng.integers(1, 3000))
        b = int(rng.integers(1, 4))
        k = int(rng.integers(0, min(v, 12) + 1))
        a = rng.normal(size=(b, v)).astype(np.float32)
        if kind == "ties":
            a = np.round(a, 1)
        elif kind == "mostly_masked":
            a[rng.random(a.shape) < 0.99] = -np.inf
            a[:, 0] = 1.0
        elif kind == "one_finite":
            a[:] = -np.inf
            a[:, rng.integers(0, v)] = 0.0
        x = torch.from_numpy(a)
        np.testing.assert_array_equal(distribution.top_ids(x, k).numpy(), _reference_top(a, k))
        np.testing.assert_array_equal(distribution.top_ids(a, k), _reference_top(a, k))
        ids = rng.integers(0, v, size=b)
        want = (a > a[np.arange(b), ids][:, None]).sum(-1) + 1
        np.testing.assert_array_equal(distribution.rank_of(x, torch.from_numpy(ids)).numpy(), want)
        np.testing.assert_array_equal(distribution.row_argmax(x).numpy(), a.argmax(-1))


def test_top_ids_refuses_a_k_outside_the_row() -> None:
    with pytest.raises(ValueError, match="k must be in"):
        distribution.top_ids(np.zeros((1, 4), np.float32), 5)
