"""The sweep report: the computed story, and the page in a real headless browser."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tempscope.report.sweep import coherence_break, steepest_fall, story, write_report

CHROMIUM = "/usr/bin/chromium"


def _summary(values: dict[float, float]) -> pd.DataFrame:
    """A summary table with one config whose mean log-prob at each temperature is given."""
    rows = []
    for t, v in values.items():
        for metric in ("mean_logprob", "entropy", "effective_vocab", "raw_entropy",
                       "distinct_2", "self_bleu", "repetition"):
            rows.append({"config": "c", "temperature": t, "metric": metric,
                         "estimate": v if metric == "mean_logprob" else 0.5,
                         "low": v, "high": v, "prompts": 3})
    return pd.DataFrame(rows)


def test_coherence_break_by_hand() -> None:
    # baseline -1.0 at T = 0; threshold 1 -> broken below -2.0: T = 1 (-1.9) is not,
    # T = 1.5 (-3.0) is.
    summary = _summary({0.0: -1.0, 0.5: -1.2, 1.0: -1.9, 1.5: -3.0, 2.0: -6.0})
    b = coherence_break(summary, "c", threshold=1.0)
    assert b is not None
    assert (b.baseline, b.coherent_up_to, b.break_temperature, b.value_at_break) == (
        -1.0, 1.0, 1.5, -3.0)
    # threshold 5 -> broken below -6.0: never (-6.0 is not below it)
    never = coherence_break(summary, "c", threshold=5.0)
    assert never is not None and never.break_temperature is None
    assert never.coherent_up_to == 2.0
    assert coherence_break(summary, "c", metric="judge_logprob") is None
    assert steepest_fall(_summary({0.0: -1.0, 1.0: -0.5}), "c") is None  # never falls
    with pytest.raises(ValueError, match="threshold must be > 0"):
        coherence_break(summary, "c", threshold=0)


def test_story_states_the_numbers() -> None:
    lines = story(_summary({0.0: -1.0, 1.0: -1.9, 1.5: -3.0, 2.0: -6.0}), threshold=1.0)
    first = lines[0]
    assert "-1.00 nats/token at T = 0" in first
    assert "Coherent up to T = 1; it breaks at T = 1.5" in first
    # drop 2 nats -> each token e^2 = 7.4x less likely
    assert f"{math.exp(2.0):.1f}x less likely" in first
    assert "reaches -6.00 at T = 2" in first
    # falls per unit T: 0.9, 2.2, 6.0 -> steepest between 1.5 and 2
    assert "steepest fall under the model itself is between T = 1.5 and T = 2: from -3.00 " \
        "to -6.00" in lines[1]


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tempscope.engine.loader import load_model
    from tempscope.study.grid import sweep

    out = tmp_path_factory.mktemp("sweep")
    model = load_model(str(tiny_model_dir))
    sweep(model, ["The cat sat", "Hello <b>world</b> & co"], [0, 0.5, 1.0, 2.0], n=3,
          max_new_tokens=8, out=out, judge=model)
    return out


def test_report_files(run_dir: Path, tmp_path: Path) -> None:
    path = write_report(run_dir, out=tmp_path / "r.html", threshold=0.5)
    html = path.read_text()
    assert (tmp_path / "figures" / "frontier.png").exists()
    assert "Coherence under the judge" in html  # the judge's curve and story line
    assert "Hello &lt;b&gt;world&lt;/b&gt; &amp; co" in html  # prompts are escaped
    assert "<b>world</b>" not in html


@pytest.mark.browser
def test_report_in_headless_chromium(run_dir: Path, artifacts_dir: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    sync_api: Any = pytest.importorskip("playwright.sync_api")
    path = write_report(run_dir)
    shutil.copy(path, artifacts_dir / "sweep-report.html")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth])"
        )
        page.screenshot(path=str(artifacts_dir / "sweep-report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) == 4 and all(done and width > 100 for done, width in images)
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
