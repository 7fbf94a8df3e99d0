"""Temperature scaling on real text: which ``T`` gives a model's probabilities the likelihood
the text deserves, and how well its confidence matches its accuracy at ``T = 1`` and there.

For a text scored by a model, position ``i`` has logits ``z_i`` ``(V,)`` and the true next
token ``y_i``. With ``beta = 1 / T``:

- ``NLL(T) = mean_i [logsumexp(beta z_i) - beta z_i[y_i]]``, the mean next-token negative
  log-likelihood (nats) of ``softmax(z / T)``. It is convex in ``beta`` (a log-partition
  function minus a linear term): ``dNLL/dbeta = mean_i (E_p[z_i] - z_i[y_i])`` and
  ``d2NLL/dbeta2 = mean_i Var_p[z_i] >= 0`` under ``p = softmax(beta z_i)``. So there is one
  minimizer ``T*`` (Guo et al. 2017's temperature scaling, fitted on the text itself).
- ECE of the top-1 prediction: positions binned by their top probability into ``bins``
  equal-width bins on ``[0, 1]``; ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|``, where
  accuracy is how often the argmax is the true token (the argmax does not move with T > 0).
- Brier score, multi-class over the whole vocabulary: ``mean_i sum_j (p_ij - [j = y_i])^2``.
- The reliability diagram: each bin's mean confidence against its accuracy.

What is exact and what is not: logits are never kept. :func:`block_sums` reduces each block of
``(n, V)`` logits, while the engine holds it (:meth:`Backend.position_logits`), to additive
sums at a fixed list of temperatures: NLL, its first and second derivative in ``beta``, the
Brier score and the per-bin counts — all exact (float32 over the vocabulary, float64 across
positions). :func:`calibrate` does this in two passes over the texts. Pass 1 at the grid
:data:`GRID`: the NLL curve, exact at every grid point; the exact slopes there bracket T*
(convexity: the slope changes sign once) and :func:`find_t_star` searches the bracket by
bisection on the cubic Hermite interpolant of the slope (exact slopes and curvatures at both
ends). Pass 2 scores the texts again at that T: NLL, ECE, Brier and the reliability diagram
reported "at T*" are exact at the reported T, and the exact slope and curvature there give
how far the true minimizer can be (one Newton step: ``T*_error``).

Example (no download; ``model`` is any loaded Backend)::

    cal = calibrate(model, [model.encode("The cat sat on the mat.")], [1])
    cal.t_star, cal.at_one.nll, cal.at_t_star.nll, cal.at_one.ece
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from tempscope.engine.backend import Backend

__all__ = [
    "BINS",
    "GRID",
    "Calibration",
    "CalibrationSums",
    "ReliabilityBin",
    "TemperatureReport",
    "block_sums",
    "calibrate",
    "expected_calibration_error",
    "find_t_star",
    "reliability_bins",
    "score_text",
]

# 2 ** (k / 4) for k = -6 .. 6: 0.35 .. 2.83, each 19 % above the last; 1.0 is on it.
GRID: tuple[float, ...] = tuple(2.0 ** (k / 4) for k in range(-6, 7))
BINS = 15  # equal-width confidence bins, as in Guo et al. 2017
LOGITS_PER_BLOCK = 1 << 25  # rows x V of one block of logits from the engine (128 MB float32)
SUB_BLOCK = 1 << 22  # rows x V that block_sums works on at once (a few 16 MB buffers)


def check_temperatures(temperatures: Sequence[float]) -> tuple[float, ...]:
    """The temperatures as floats, each finite and > 0 (a metric of ``softmax(z / T)`` needs
    a distribution that gives every token a chance); else ``ValueError`` naming the value."""
    out = []
    for t in temperatures:
        value = float(t)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"calibration temperatures must be finite and > 0 (T = 0 gives "
                             f"an infinite NLL to every wrong argmax), got {t!r}")
        out.append(value)
    if not out:
        raise ValueError("no temperatures: give at least one, e.g. [1.0]")
    return tuple(out)


@dataclass
class CalibrationSums:
    """Additive sums over scored positions at ``G`` temperatures (``+`` merges two).

    Attributes:
        temperatures: ``(G,)`` the temperatures, in the order of every array's first axis.
        bins: equal-width confidence bins ``B``.
        positions: scored positions ``N``.
        correct: positions whose argmax is the true token.
        nll, slope, curvature, brier: ``(G,)`` sums of ``-log p_T(y)``, ``dNLL/dbeta``,
            ``d2NLL/dbeta2`` and the multi-class Brier term.
        bin_count, bin_confidence, bin_correct: ``(G, B)`` positions per top-1 confidence bin,
            the sum of their confidences, how many of them were right.
    """

    temperatures: tuple[float, ...]
    bins: int
    positions: int = 0
    correct: int = 0
    nll: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slope: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curvature: np.ndarray = field(default_factory=lambda: np.zeros(0))
    brier: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bin_count: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    bin_confidence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    bin_correct: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @classmethod
    def empty(cls, temperatures: Sequence[float], bins: int = BINS) -> CalibrationSums:
        """Zero sums at these temperatures."""
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a whole number >= 1, got {bins!r}")
        g = len(check_temperatures(temperatures))
        return cls(tuple(float(t) for t in temperatures), bins, 0, 0,
                   *(np.zeros(g) for _ in range(4)), *(np.zeros((g, bins)) for _ in range(3)))

    def __add__(self, other: CalibrationSums) -> CalibrationSums:
        if other.temperatures != self.temperatures or other.bins != self.bins:
            raise ValueError("cannot add calibration sums at other temperatures or bins: "
                             f"{other.temperatures}/{other.bins} vs {self.temperatures}/"
                             f"{self.bins}")
        return CalibrationSums(
            self.temperatures, self.bins, self.positions + other.positions,
            self.correct + other.correct, self.nll + other.nll, self.slope + other.slope,
            self.curvature + other.curvature, self.brier + other.brier,
            self.bin_count + other.bin_count, self.bin_confidence + other.bin_confidence,
            self.bin_correct + other.bin_correct)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (the run store keeps one per text and pass)."""
        return {"temperatures": list(self.temperatures), "bins": self.bins,
                "positions": self.positions, "correct": self.correct,
                **{k: getattr(self, k).tolist() for k in _ARRAYS}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationSums:
        """The inverse of :meth:`to_dict`."""
        return cls(tuple(float(t) for t in data["temperatures"]), int(data["bins"]),
                   int(data["positions"]), int(data["correct"]),
                   *(np.asarray(data[k], dtype=np.float64) for k in _ARRAYS))


_ARRAYS = ("nll", "slope", "curvature", "brier", "bin_count", "bin_confidence", "bin_correct")


def block_sums(logits: torch.Tensor, targets: torch.Tensor, temperatures: Sequence[float], *,
               bins: int = BINS) -> CalibrationSums:
    """Reduce one block of positions to :class:`CalibrationSums` (exact, see the module doc).

    Args:
        logits: ``(n, V)`` the logits of ``n`` positions (finite).
        targets: ``(n,)`` int64, the true next token of each.
        temperatures: ``(G,)`` temperatures, each finite and > 0.
        bins: equal-width confidence bins.

    >>> import torch
    >>> s = block_sums(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]), [1.0])
    >>> round(float(s.nll[0]), 4), round(float(s.brier[0]), 4), s.correct
    (0.4076, 0.1801, 1)
    """
    import torch

    temps = check_temperatures(temperatures)
    out = CalibrationSums.empty(temps, bins)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"block_sums needs logits (n, V) and targets (n,), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits must be finite to score a text (no masked tokens)")
    rows = max(1, SUB_BLOCK // max(1, logits.shape[1]))
    for a in range(0, logits.shape[0], rows):  # bounded temporaries: a few (rows, V) buffers
        _add_rows(out, logits[a:a + rows].float(), targets[a:a + rows], temps, bins)
    return out


def _add_rows(out: CalibrationSums, z: torch.Tensor, targets: torch.Tensor,
              temps: tuple[float, ...], bins: int) -> None:
    """Add ``z`` ``(n, V)``'s positions to ``out`` in place (see :func:`block_sums`)."""
    import torch

    y = targets.to(device=z.device, dtype=torch.long)[:, None]  # (n, 1)
    d = z - z.max(dim=-1, keepdim=True).values  # (n, V) <= 0, max exactly 0
    d_y = d.gather(1, y)[:, 0].double()  # (n,)
    hit = (z.argmax(dim=-1) == y[:, 0])  # (n,) the argmax at every T > 0
    out.positions += int(z.shape[0])
    out.correct += int(hit.sum())
    powers = torch.stack([torch.ones_like(d), d, d * d], dim=1)  # (n, 3, V): d^0, d^1, d^2
    e = torch.empty_like(d)  # (n, V)
    square = torch.empty_like(d)  # (n, V)
    hit64 = hit.double().cpu().numpy()
    for g, t in enumerate(temps):
        torch.mul(d, 1.0 / t, out=e).exp_()  # unnormalized p in (0, 1], the argmax's is 1
        # One batched product for the three sums over the vocabulary (the fastest of the
        # ways tried on 2 cores): sum e, sum e d, sum e d^2.
        sums = torch.bmm(powers, e[:, :, None])[:, :, 0].double()  # (n, 3)
        norm = sums[:, 0]  # (n,) >= 1
        m1, m2 = sums[:, 1] / norm, sums[:, 2] / norm  # E_p[d], E_p[d^2]
        p2 = torch.mul(e, e, out=square).sum(-1).double() / norm ** 2  # (n,) sum_j p_j^2
        p_y = torch.exp(d_y / t) / norm  # (n,)
        conf = (1.0 / norm).cpu().numpy()  # (n,) the top probability
        out.nll[g] += float((norm.log() - d_y / t).sum())
        out.slope[g] += float((m1 - d_y).sum())
        out.curvature[g] += float((m2 - m1 * m1).clamp(min=0).sum())
        out.brier[g] += float((p2 - 2 * p_y + 1).sum())
        index = np.minimum((conf * bins).astype(np.int64), bins - 1)  # (n,) bin of each
        out.bin_count[g] += np.bincount(index, minlength=bins)
        out.bin_confidence[g] += np.bincount(index, conf, minlength=bins)
        out.bin_correct[g] += np.bincount(index, hit64, minlength=bins)


def block_rows(vocab_size: int) -> int:
    """Rows of logits per block so that one block stays near :data:`LOGITS_PER_BLOCK`
    entries (512 rows at V = 49,152; 128 at V = 262,144)."""
    return max(16, min(512, LOGITS_PER_BLOCK // max(1, vocab_size)))


def score_text(model: Backend, ids: Sequence[int], start: int, temperatures: Sequence[float],
               *, bins: int = BINS) -> tuple[CalibrationSums, list[float]]:
    """One forward pass over ``ids``: the sums of the tokens ``ids[start:]`` at
    ``temperatures``, and each token's NLL at ``T = 1`` in nats (``(L - start,)``).

    Example: ``sums, nll = score_text(model, model.encode("The cat sat."), 1, [0.5, 1, 2])``;
    ``sums.nll[1] / sums.positions == sum(nll) / len(nll)`` (T = 1).
    """
    import torch

    temps = check_temperatures(temperatures)

    def reduce(logits: torch.Tensor, targets: torch.Tensor) -> tuple[CalibrationSums,
                                                                      list[float]]:
        picked = logits.gather(1, targets[:, None].to(logits.device))[:, 0]  # (n,)
        nll = (torch.logsumexp(logits.float(), dim=-1) - picked).tolist()  # (n,) at T = 1
        return block_sums(logits, targets, temps, bins=bins), nll

    blocks = model.position_logits(ids, start, reduce, chunk=block_rows(model.vocab_size))
    total = CalibrationSums.empty(temps, bins)
    per_token: list[float] = []
    for sums, nll in blocks:
        total = total + sums
        per_token += nll
    return total, per_token


# ------------------------------------------------------------------------- from the sums


@dataclass(frozen=True)
class ReliabilityBin:
    """One bar of a reliability diagram."""

    low: float  # the bin's confidence interval [low, high)
    high: float
    count: int  # positions whose top probability fell in it
    confidence: float  # their mean top probability (NaN when empty)
    accuracy: float  # how often their argmax was the true token (NaN when empty)


def reliability_bins(count: Sequence[float], confidence: Sequence[float],
                     correct: Sequence[float]) -> list[ReliabilityBin]:
    """The diagram's points from per-bin sums (``(B,)`` each: positions, summed confidence,
    right answers); bins are equal-width on [0, 1].

    >>> [(b.count, b.confidence, b.accuracy) for b in reliability_bins([0, 2], [0, 1.6], [0, 1])]
    [(0, nan, nan), (2, 0.8, 0.5)]
    """
    width = 1.0 / len(count)
    out = []
    for b, (n, c, k) in enumerate(zip(count, confidence, correct, strict=True)):
        out.append(ReliabilityBin(b * width, (b + 1) * width, int(n),
                                  c / n if n else math.nan, k / n if n else math.nan))
    return out


def expected_calibration_error(count: Sequence[float], confidence: Sequence[float],
                               correct: Sequence[float]) -> float:
    """``sum_b (n_b / N) |accuracy_b - confidence_b|`` over non-empty bins.

    >>> round(expected_calibration_error([0, 2, 2], [0, 0.6, 1.8], [0, 1, 2]), 4)
    0.15
    """
    total = float(sum(count))
    if not total:
        return math.nan
    return sum(abs(k - c) for c, k in zip(confidence, correct, strict=True)) / total


@dataclass(frozen=True)
class TemperatureReport:
    """Every metric at one temperature, means over the scored positions."""

    temperature: float
    nll: float  # nats per token
    slope: float  # dNLL/dbeta (0 at the minimizer)
    curvature: float  # d2NLL/dbeta2
    ece: float
    brier: float
    accuracy: float  # top-1 accuracy (the same at every T > 0)
    confidence: float  # mean top-1 probability
    bins: list[ReliabilityBin]


def report_at(sums: CalibrationSums, index: int) -> TemperatureReport:
    """The metrics at ``sums.temperatures[index]``."""
    n = max(1, sums.positions)
    count, conf, right = sums.bin_count[index], sums.bin_confidence[index], sums.bin_correct[index]
    return TemperatureReport(
        temperature=sums.temperatures[index], nll=float(sums.nll[index]) / n,
        slope=float(sums.slope[index]) / n, curvature=float(sums.curvature[index]) / n,
        ece=expected_calibration_error(count, conf, right), brier=float(sums.brier[index]) / n,
        accuracy=sums.correct / n, confidence=float(conf.sum()) / n,
        bins=reliability_bins(count.tolist(), conf.tolist(), right.tolist()))


@dataclass(frozen=True)
class TStarSearch:
    """Where the minimizer of NLL(T) lies, from the sums at a grid."""

    temperature: float  # the estimate (a grid edge when at_edge)
    bracket: tuple[float, float]  # (low T, high T) holding the minimizer exactly
    at_edge: str | None  # "below" / "above" the grid: the minimizer is outside it


def find_t_star(sums: CalibrationSums, *, iterations: int = 60) -> TStarSearch:
    """Search T* = argmin NLL(T) from the exact slopes and curvatures at the grid.

    NLL is convex in ``beta = 1/T``, so the slope changes sign once along the grid: that
    bracket holds T* exactly. Inside it, bisection on the cubic Hermite interpolant of the
    slope (its exact values and derivatives at both ends) places T*.

    >>> s = CalibrationSums.empty([0.5, 1.0, 2.0])
    >>> s.positions, s.slope[:], s.curvature[:] = 1, np.array([1.0, 0.0, -1.0]), np.ones(3)
    >>> round(find_t_star(s).temperature, 6)
    1.0
    """
    if sums.positions == 0:
        raise ValueError("no scored positions: score at least one text before searching T*")
    order = sorted(range(len(sums.temperatures)), key=lambda i: -sums.temperatures[i])
    beta = [1.0 / sums.temperatures[i] for i in order]  # ascending
    g = [float(sums.slope[i]) / sums.positions for i in order]
    h = [float(sums.curvature[i]) / sums.positions for i in order]
    hi_t, lo_t = 1.0 / beta[0], 1.0 / beta[-1]
    first = next((k for k, v in enumerate(g) if v >= 0), None)
    if first is None:  # still falling at the largest beta: T* below the grid
        return TStarSearch(lo_t, (0.0, lo_t), "below")
    if first == 0:
        if g[0] == 0:
            return TStarSearch(hi_t, (hi_t, hi_t), None)
        return TStarSearch(hi_t, (hi_t, math.inf), "above")
    a, b = beta[first - 1], beta[first]
    ga, gb, ha, hb = g[first - 1], g[first], h[first - 1], h[first]
    width = b - a

    def slope(x: float) -> float:  # cubic Hermite interpolant of dNLL/dbeta on [a, b]
        s = (x - a) / width
        h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
        h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
        return h00 * ga + h10 * width * ha + h01 * gb + h11 * width * hb

    lo, hi = a, b  # slope(lo) < 0 <= slope(hi)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return TStarSearch(1.0 / (0.5 * (lo + hi)), (1.0 / b, 1.0 / a), None)


@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate`."""

    texts: int
    positions: int
    bins: int
    curve: list[tuple[float, float]]  # (T, mean NLL) at every grid point and at T*, by T
    t_star: float
    t_star_error: float  # |T* - the Newton step's minimizer| from the exact slope at T*
    bracket: tuple[float, float]
    at_edge: str | None  # "below" / "above": T* is outside the grid (reported at its edge)
    at_one: TemperatureReport
    at_t_star: TemperatureReport


def calibrate(model: Backend, texts: Sequence[Sequence[int]], starts: Sequence[int], *,
              temperatures: Sequence[float] = GRID, bins: int = BINS,
              progress: Callable[[str, int, int], None] | None = None) -> Calibration:
    """Score ``texts`` (token ids; ``texts[k][starts[k]:]`` are the scored tokens) and find
    the temperature that fits them best; two forward passes per text (see the module doc).

    Args:
        model: any loaded Backend.
        texts: ``(K, ~L)`` token ids.
        starts: ``(K,)`` the first scored token of each, ``>= 1``.
        temperatures: the grid of pass 1 (1.0 is added when missing).
        bins: equal-width confidence bins of ECE and the diagrams.
        progress: called as ``progress(pass name, texts done, texts)``.
    """
    if len(texts) != len(starts) or not texts:
        raise ValueError(f"calibrate needs one start per text and at least one text, got "
                         f"{len(texts)} texts and {len(starts)} starts")
    grid = tuple(sorted(set(check_temperatures(temperatures)) | {1.0}))
    sums = [CalibrationSums.empty(grid, bins)]
    for k, (ids, start) in enumerate(zip(texts, starts, strict=True)):
        sums.append(score_text(model, ids, start, grid, bins=bins)[0])
        if progress is not None:
            progress("grid", k + 1, len(texts))
    total = sum(sums[1:], sums[0])
    found = find_t_star(total)
    star = CalibrationSums.empty([found.temperature], bins)
    for k, (ids, start) in enumerate(zip(texts, starts, strict=True)):
        star = star + score_text(model, ids, start, [found.temperature], bins=bins)[0]
        if progress is not None:
            progress("T*", k + 1, len(texts))
    return summarize(total, star, found, texts=len(texts))


def summarize(grid: CalibrationSums, star: CalibrationSums, found: TStarSearch, *,
              texts: int) -> Calibration:
    """A :class:`Calibration` from pass 1's sums at the grid and pass 2's at T*."""
    at_star = report_at(star, 0)
    one = report_at(grid, grid.temperatures.index(1.0))
    curve = sorted({**{t: float(grid.nll[i]) / max(1, grid.positions)
                       for i, t in enumerate(grid.temperatures)},
                    at_star.temperature: at_star.nll}.items())
    beta = 1.0 / at_star.temperature
    newton = beta - at_star.slope / at_star.curvature if at_star.curvature > 0 else beta
    error = abs(1.0 / newton - at_star.temperature) if newton > 0 else math.inf
    return Calibration(texts=texts, positions=grid.positions, bins=grid.bins, curve=curve,
                       t_star=at_star.temperature, t_star_error=error, bracket=found.bracket,
                       at_edge=found.at_edge, at_one=one, at_t_star=at_star)
