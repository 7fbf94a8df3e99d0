"""The degeneration study's metrics and findings, on hand-checked numbers (no model)."""

from __future__ import annotations

import math

import pytest

from tempscope.report.degeneration import findings, kendall_tau, rank_agreement
from tempscope.study.degeneration import DECODERS, HUMAN, HUMAN_PAPER, SetMetrics, set_metrics
from tempscope.study.metrics import (
    cross_entropy,
    ends_in_loop,
    loop_rate,
    text_perplexity,
    zipf_coefficient,
)


def counts(*freqs: int) -> list[list[int]]:
    """One text whose unit ``r`` occurs ``freqs[r - 1]`` times."""
    return [[unit for unit, f in enumerate(freqs) for _ in range(f)]]


@pytest.mark.parametrize(("freqs", "expected"), [
    ((12, 6, 4, 3), 1.0),  # f = 12 / r: Zipf's law exactly
    ((36, 9, 4), 2.0),  # f = 36 / r^2
    # log f = (ln 4, ln 2, 0) at log r = (0, ln 2, ln 3): least-squares slope
    # sum((x - 0.5973)(y - 0.6931)) / sum((x - 0.5973)^2) = -0.7615 / 0.6173 = -1.2336
    ((4, 2, 1), 1.2336),
])
def test_zipf_coefficient_hand_checked(freqs: tuple[int, ...], expected: float) -> None:
    assert zipf_coefficient(counts(*freqs)) == pytest.approx(expected, abs=1e-4)


def test_zipf_pools_texts_and_fits_only_the_top_units() -> None:
    # the same counts split over two texts; a long flat tail left out by top=2
    split = [[0] * 20 + [1] * 10, [0] * 16 + [1] * 8 + [2] * 9 + list(range(3, 40))]
    assert zipf_coefficient(split, top=2) == pytest.approx(1.0)  # 36 and 18: f = 36 / r
    assert zipf_coefficient(split) != pytest.approx(1.0, abs=0.1)
    assert math.isnan(zipf_coefficient([[7, 7, 7]]))  # one distinct unit: no slope
    with pytest.raises(ValueError, match="top must be >= 2"):
        zipf_coefficient(split, top=1)


@pytest.mark.parametrize(("text", "loops"), [
    ("a b c d x y x y x y", True),  # "x y" three times at the end
    ("a b c a b c a b c", True),  # a 3-unit phrase
    ("x y x y", False),  # only twice
    ("x y x y x y z", False),  # the loop is not at the end
    ("b z z z", False),  # a 1-unit phrase is too short...
    ("z z z z z z", True),  # ...but "z z" three times is a loop
    ("", False),
])
def test_ends_in_loop(text: str, loops: bool) -> None:
    assert ends_in_loop(text.split()) is loops


def test_loop_rate_is_a_share_of_texts() -> None:
    assert loop_rate([[1, 2, 1, 2, 1, 2], [1, 2, 3, 4], [5, 6, 5, 6, 5, 6], [9]]) == 0.5
    assert loop_rate([[1, 1, 1, 1]], repeats=2) == 1.0  # "1 1" twice
    assert math.isnan(loop_rate([]))
    with pytest.raises(ValueError, match="min_phrase"):
        ends_in_loop([1, 2], min_phrase=0)


def test_cross_entropy_and_perplexity() -> None:
    lps = [math.log(0.5), math.log(0.25)]  # surprises of 1 and 2 bits
    assert cross_entropy(lps, bits=True) == pytest.approx(1.5)
    assert cross_entropy(lps) == pytest.approx(1.5 * math.log(2))
    assert text_perplexity(lps) == pytest.approx(2 ** 1.5)
    assert text_perplexity([0.0, 0.0]) == 1.0  # a model sure of every token
    assert math.isnan(cross_entropy([]))


def test_kendall_tau_b() -> None:
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 agree, 1 not
    # ties: pairs (1,2) tied in y, (1,3) and (2,3) concordant -> 2 / sqrt(2 * 3)
    assert kendall_tau([1, 2, 3], [0, 0, 1]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1, 2], [5, 5]))
    assert math.isnan(kendall_tau([1, math.nan], [1, 2]))


def test_set_metrics_on_two_texts() -> None:
    m = set_metrics("x", "x", ["a b a b a b", "c d e f"], [[1, 2, 1, 2, 1, 2], [3, 4, 5, 6]],
                    [(6 * math.log(0.5), 6), (4 * math.log(0.25), 4)], budget=6)
    assert m.texts == 2 and m.tokens == 10
    assert m.cross_entropy_bits == pytest.approx((6 * 1 + 4 * 2) / 10)  # pooled over tokens
    assert m.perplexity == pytest.approx(2 ** 1.4)
    assert m.repetition_pct == 50.0
    assert m.early_stops == 1  # the second text has 4 of 6 tokens
    # per text: (bits, share of repeated 4-grams): "1 2 1 2 1 2" has 3 4-grams, 2 distinct
    assert m.per_text == [(pytest.approx(1.0), pytest.approx(1 / 3)), (pytest.approx(2.0), 0.0)]
    unscored = set_metrics("y", "y", ["a"], [[1]], [(math.nan, 0)], budget=1)
    assert math.isnan(unscored.perplexity) and math.isnan(unscored.cross_entropy_bits)


def paper_rows(**changes: dict[str, float]) -> list[SetMetrics]:
    """Rows that carry exactly the paper's numbers (None -> a value that fits its order)."""
    filler = {"top_k_40": {"zipf": 0.96}, "top_k_40_t0.7": {"self_bleu4": 0.44, "zipf": 0.97}}
    rows = []
    for name, paper in [(HUMAN, HUMAN_PAPER)] + [(d.name, d.paper) for d in DECODERS]:
        values = {"perplexity": 5.0, "self_bleu4": 0.3, "zipf": 0.9, "repetition_pct": 0.0}
        if paper is not None:
            values.update({k: v for k, v in vars(paper).items() if v is not None})
        values.update(filler.get(name, {}))
        values.update(changes.get(name, {}))
        ce = math.log2(values["perplexity"])
        rows.append(SetMetrics(name, name, 10, 100, values["perplexity"], ce,
                               values["self_bleu4"], values["zipf"], values["repetition_pct"],
                               0, [(ce, max(0.0, 0.5 - ce / 10))], paper, []))
    return rows


def verdicts(rows: list[SetMetrics]) -> list[str]:
    return [f.verdict for f in findings(rows)]


def test_the_papers_own_numbers_reproduce_every_finding() -> None:
    rows = paper_rows(mirostat_3={"perplexity": 2 ** 3.2})
    assert verdicts(rows) == ["reproduces"] * 10
    assert rank_agreement(rows)["perplexity"] == 1.0


def test_findings_that_fail_and_that_cannot_be_measured() -> None:
    rows = paper_rows(greedy={"repetition_pct": 0.0}, pure={"perplexity": 10.0},
                      mirostat_3={"perplexity": 2 ** 4.0})
    got = verdicts(rows)
    assert got[0] == "does not reproduce"  # greedy no longer the most repetitive
    assert got[3] == "does not reproduce"  # pure sampling now below human perplexity
    assert got[9] == "does not reproduce"  # mirostat 1 bit off its target
    assert got[6] == "reproduces"  # Zipf untouched
    unscored = paper_rows(human={"perplexity": math.nan})
    assert [verdicts(unscored)[i] for i in (2, 3, 4)] == ["not measured"] * 3
