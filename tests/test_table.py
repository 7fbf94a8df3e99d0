from __future__ import annotations

import pytest

import tempscope as ts


def test_token_distribution_numbers() -> None:
    d = ts.TokenDistribution.from_logits(
        [-49.82, -46.40, -45.25, -47.30, -48.32],
        words=["ceiling", "floor", "mat", "car", "grass"], temperature=1,
    )
    assert (d.top_word, round(d.top_probability, 5)) == ("mat", 0.66571)
    assert d.to_dict()["argmax"] == 2
    frame = d.to_frame()
    assert list(frame.columns) == ["word", "logit", "probability"]
    assert frame["probability"].sum() == pytest.approx(1.0)


def test_notebook_view_is_a_colour_graded_table() -> None:
    d = ts.TokenDistribution.from_logits([2, 4, 3], words=["a", "b", "c"], temperature=1)
    html = d._repr_html_()
    assert "<table" in html and "background-color" in html
    assert "0.66524" in html and "most likely: b" in html


def test_temperature_table_flattens() -> None:
    rows = ts.temperature_table([2, 4, 3], [0, 1, 100])
    assert [round(r.top_probability, 5) for r in rows] == [1.0, 0.66524, 0.33667]
    assert rows[0].entropy == 0 < rows[1].entropy < rows[2].entropy


def test_word_count_mismatch() -> None:
    with pytest.raises(ValueError, match="2 words but 3 logits"):
        ts.TokenDistribution.from_logits([1, 2, 3], words=["a", "b"])
