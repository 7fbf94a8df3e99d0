"""The playground in headless Chromium: load, move the slider, generate, hover a token.

Screenshots land in ``test-artifacts/`` (desktop and phone widths) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BROWSER_MARKS
from tests.server_helpers import LiveServer, live_server

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    with live_server(tiny_model_dir) as s:
        yield s


def _probs(page: Any) -> list[float]:
    return [float(x) for x in page.eval_on_selector_all(
        "#chart .row .bar.raw", "els => els.map(e => e.dataset.p)")]


def _open(browser: Any, server: LiveServer, width: int, height: int) -> tuple[Any, Any, list[str],
                                                                              list[str]]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    calls: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#chart .row")
    return context, page, errors, calls


def test_playground_desktop(browser: Any, server: LiveServer, artifacts_dir: Path) -> None:
    context, page, errors, calls = _open(browser, server, 1280, 900)
    try:
        assert page.inner_text("#model-name") == server.model
        before = _probs(page)
        entropy_before = page.inner_text("#stat-entropy")
        assert len(before) == 12 and before == sorted(before, reverse=True)

        # Slide to a high temperature: the bars flatten, with no request to the server.
        n_calls = len(calls)
        page.locator("#temp-slider").fill("900")
        hot = _probs(page)
        assert hot != before and hot[0] < before[0]
        assert page.inner_text("#stat-entropy") != entropy_before
        assert float(page.input_value("#temp-value")) == pytest.approx(50, rel=0.03)
        # Keyboard: the slider answers arrow keys, and each step redraws.
        page.focus("#temp-slider")
        page.keyboard.press("Home")
        assert page.inner_text("#temp-out").startswith("0 (greedy)")
        assert _probs(page)[0] == 1.0
        page.keyboard.press("ArrowRight")
        assert float(page.input_value("#temp-value")) == pytest.approx(0.1)
        page.wait_for_timeout(400)  # the debounce would have fired by now
        assert len(calls) == n_calls, calls[n_calls:]

        # Side by side: one column per compared temperature, same token order.
        heads = page.eval_on_selector_all("#compare-table thead th", "els => els.length")
        assert heads == 4  # token + 0.1, 1, 10
        page.locator("#temp-value").fill("1")
        page.screenshot(path=str(artifacts_dir / "playground-desktop.png"), full_page=True)

        # Samplers on: the processed distribution arrives from the server, beside the raw one.
        page.locator("#top-k").fill("3")
        page.wait_for_selector("#chart .row .bar.proc")
        kept = page.eval_on_selector_all(
            "#chart .row .bar.proc", "els => els.filter(e => +e.dataset.p > 0).length")
        assert kept == 3
        assert "3 tokens kept" in page.inner_text("#stat-proc")
        page.screenshot(path=str(artifacts_dir / "playground-samplers.png"), full_page=True)

        # Generate: streamed tokens coloured by probability; hovering shows alternatives.
        page.locator("#seed").fill("7")
        page.locator("#max-tokens").fill("16")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes("
                               "'finish_reason')", timeout=60_000)
        tokens = page.locator("#output .t")
        assert tokens.count() >= 1
        assert tokens.first.get_attribute("data-p") is not None
        tokens.first.hover()
        page.wait_for_selector("#tooltip:not([hidden])")
        rows = page.eval_on_selector_all("#tooltip .tip-row", "els => els.length")
        assert 1 <= rows <= 5
        page.screenshot(path=str(artifacts_dir / "playground-generate.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_playground_phone(browser: Any, server: LiveServer, artifacts_dir: Path) -> None:
    context, page, errors, _ = _open(browser, server, 390, 844)
    try:
        # One column, nothing wider than the screen.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        page.locator("#temp-slider").fill("700")
        page.locator("#max-tokens").fill("10")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes("
                               "'finish_reason')", timeout=60_000)
        page.locator("#output .t").first.focus()  # keyboard focus shows the tooltip too
        page.wait_for_selector("#tooltip:not([hidden])")
        page.screenshot(path=str(artifacts_dir / "playground-phone.png"), full_page=True)
        assert errors == []
    finally:
        context.close()
