"""The temperature lab in headless Chromium: side by side, branching, the step view, the token
tree, colouring modes, shared links, keyboard-only use; at desktop and phone widths.

Every page also checks that nothing was logged as an error and that no request left the
server (no CDN). Screenshots land in ``test-artifacts/`` (git-ignored) as ``lab-*.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BROWSER_MARKS
from tests.server_helpers import LiveServer, live_server

pytestmark = BROWSER_MARKS
COLUMNS_DONE = ("n => { const c = document.querySelectorAll('.column');"
                " return c.length === n && [...c].every(x => x.dataset.state === 'done'); }")
OUTPUT_DONE = "document.getElementById('output').dataset.state === 'done'"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    with live_server(tiny_model_dir) as s:
        yield s


@dataclass
class Seen:
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # console errors a test provokes

    def posts(self, path: str) -> int:
        return sum(u.endswith(path) for u in self.urls)


@pytest.fixture
def open_page(browser: Any, server: LiveServer) -> Iterator[Any]:
    """``open_page(width, height, url=None) -> (page, seen)``; on teardown the page must have
    logged no error and sent no request outside the server."""
    opened: list[tuple[Any, Seen]] = []

    def go(width: int = 1280, height: int = 900, url: str | None = None) -> tuple[Any, Seen]:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        seen = Seen()
        page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen.errors.append(str(e)))
        page.on("request", lambda r: seen.urls.append(
            r.method + " " + r.url if r.method != "GET" else r.url))
        page.goto(url or server.url + "/")
        page.wait_for_selector("#chart .row")
        opened.append((context, seen))
        return page, seen

    yield go
    for context, seen in opened:
        context.close()
        assert [e for e in seen.errors if not any(x in e for x in seen.expected)] == []
        outside = [u for u in seen.urls
                   if not u.split(" ")[-1].startswith((server.url + "/", "data:"))]
        assert outside == []


def _shot(page: Any, path: Path, *, full: bool = True) -> None:
    """The whole page from the top; ``full=False``: the window as it is (a fixed panel)."""
    if full:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full)


def _ids(page: Any, selector: str) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all(
        selector, "els => els.map(e => e.dataset.tokenId)")]


def _side_by_side(page: Any, seed: int = 5, max_tokens: int = 12, n: int = 4) -> None:
    page.fill("#seed", str(seed))
    page.fill("#max-tokens", str(max_tokens))
    page.click("#side")
    page.wait_for_function(COLUMNS_DONE, arg=n, timeout=60_000)


def test_side_by_side_columns_stream_and_finish(open_page: Any, artifacts_dir: Path) -> None:
    page, seen = open_page()
    page.fill("#seed", "5")
    page.fill("#max-tokens", "120")
    page.click("#side")
    # Streamed at once: every column shows tokens while all four are still running.
    page.wait_for_function(
        "() => { const c = [...document.querySelectorAll('.column')]; return c.length === 4"
        " && c.every(x => x.querySelector('.t')) && c.every(x => x.dataset.state ==="
        " 'streaming'); }", polling="raf", timeout=60_000)
    page.wait_for_function(COLUMNS_DONE, arg=4, timeout=60_000)
    assert seen.posts("/v1/lab/continue") == 1  # one batched request for all columns
    temps = page.eval_on_selector_all(".column", "els => els.map(e => e.dataset.temperature)")
    assert temps == ["0.2", "0.7", "1", "1.5"]
    stats = {}
    for t in temps:
        col = page.locator(f".column[data-temperature='{t}']")
        n = col.locator(".t").count()
        assert col.locator(".strip .e").count() == n  # one entropy bar per token
        finish = col.locator("[data-stat=finish_reason] dd").inner_text()
        assert (finish == "length" and n == 120) or (finish == "eos" and 0 < n <= 120)
        stats[t] = [float(col.locator(f"[data-stat={k}] dd").inner_text().split()[0])
                    for k in ("mean_logprob", "mean_sampled_entropy")]
    assert stats["0.2"][1] < stats["1.5"][1]  # colder columns draw from sharper distributions
    assert stats["0.2"][0] > stats["1.5"][0]  # and choose likelier tokens
    assert "finish_reason:" in page.inner_text("#status")
    _shot(page, artifacts_dir / "lab-side-by-side-desktop.png")


def test_branch_continues_from_the_picked_token_and_goes_back(
        open_page: Any, artifacts_dir: Path) -> None:
    page, seen = open_page()
    _side_by_side(page)
    col = ".column[data-temperature='0.7']"
    column = _ids(page, f"{col} .t")
    page.click(f"{col} .t >> nth=2")
    page.wait_for_selector("#step-chart .row .alt")
    assert page.is_visible("#step")
    assert "Step 3 of T = 0.7" in page.inner_text("#step-title")
    chosen = page.get_attribute("#step-chart .row.chosen .alt", "data-token-id")
    assert chosen is not None and int(chosen) == column[2]
    # Redraw at another temperature: the browser's softmax over the step's logits; with no
    # sampler on, no request at all.
    raw = page.eval_on_selector_all("#step-chart .bar.raw", "els => els.map(e => e.dataset.p)")
    steps = seen.posts("/v1/lab/step")
    page.locator("#step-t").fill("900")
    hot = page.eval_on_selector_all("#step-chart .bar.raw", "els => els.map(e => e.dataset.p)")
    assert hot != raw and float(hot[0]) < float(raw[0])
    page.wait_for_timeout(400)
    assert seen.posts("/v1/lab/step") == steps
    _shot(page, artifacts_dir / "lab-step-desktop.png", full=False)
    alt = page.locator(f"#step-chart .alt:not([data-token-id='{column[2]}'])").first
    picked = int(alt.get_attribute("data-token-id"))
    alt.click()
    assert page.is_hidden("#step")
    page.wait_for_function(OUTPUT_DONE, timeout=60_000)
    branch = _ids(page, "#output .t")
    assert branch[:2] == column[:2] and branch[2] == picked and len(branch) == 3 + 12
    assert page.get_attribute("#output .t.fork", "data-index") == "2"
    # The tree of branches: the new one sits under the T = 0.7 column and is current.
    child = page.locator("#branches li ul li .go[aria-current=true]")
    assert child.count() == 1 and child.inner_text().startswith("T = 0.7 › 3:")
    assert page.locator("#where .crumb").count() == 2
    _shot(page, artifacts_dir / "lab-branch-desktop.png")
    # Back to the column's own text.
    page.locator("#where .crumb").first.click()
    assert _ids(page, "#output .t") == column
    assert page.locator("#branches > li > .go[aria-current=true]").inner_text() == "T = 0.7"
    # Compare the two: shared start, then they part.
    page.locator("#branches input[aria-label='compare T = 0.7']").check()
    page.locator("#branches li ul input[type=checkbox]").check()
    assert page.locator("#branch-compare .pane").count() == 2
    assert "2 tokens in common" in page.inner_text("#branch-compare")
    assert page.locator("#branch-compare .pane .t.same").count() == 4
    _shot(page, artifacts_dir / "lab-compare-desktop.png")


def test_step_with_samplers_redraws_from_cached_logits(open_page: Any) -> None:
    page, seen = open_page()
    page.fill("#top-k", "5")
    page.fill("#seed", "3")
    page.fill("#max-tokens", "6")
    page.click("#generate")
    page.wait_for_function(OUTPUT_DONE, timeout=60_000)
    page.click("#output .t >> nth=1")
    page.wait_for_selector("#step-chart[data-cached]")
    kept = page.eval_on_selector_all("#step-chart .bar.proc",
                                     "els => els.filter(e => +e.dataset.p > 0).length")
    assert 1 <= kept <= 5
    page.locator("#step-t").fill("950")
    page.wait_for_function("document.getElementById('step-chart').dataset.cached === 'true'"
                           " && !document.getElementById('step-chart').classList.contains('stale')")
    assert seen.posts("/v1/lab/step") == 2  # the step, then its redraw from cached logits
    probs = page.eval_on_selector_all("#step-chart .bar.proc", "els => els.map(e => +e.dataset.p)")
    assert sum(p > 0 for p in probs) <= 5 and max(probs) < 0.5  # T = 56: nearly flat top 5
    page.keyboard.press("Escape")
    assert page.is_hidden("#step")


def test_token_tree_expands_and_a_node_becomes_the_prompt(
        open_page: Any, artifacts_dir: Path) -> None:
    page, _seen = open_page()
    page.fill("#temp-value", "0.5")
    page.fill("#tree-depth", "3")
    page.fill("#tree-top", "2")
    page.fill("#tree-min", "0.01")
    page.click("#tree-expand")
    page.wait_for_selector("#tree button.node")
    nodes = page.eval_on_selector_all("#tree button.node", """els => els.map(e => ({
        id: e.dataset.id, parent: e.dataset.parent, depth: +e.dataset.depth,
        p: +e.dataset.pathProb, text: e.dataset.pathText}))""")
    by_id = {n["id"]: n for n in nodes}
    assert max(n["depth"] for n in nodes) == 3
    for n in nodes:
        if n["parent"]:
            assert n["p"] <= by_id[n["parent"]]["p"] + 1e-9
            assert n["text"].startswith(by_id[n["parent"]]["text"])
    _shot(page, artifacts_dir / "lab-tree-desktop.png")
    deep = next(n for n in nodes if n["depth"] == 2)
    before = page.input_value("#prompt")
    page.click(f"#tree button.node[data-id='{deep['id']}']")
    assert page.input_value("#prompt") == before + deep["text"]
    # The chart reads the new prompt: one token per byte with this tokenizer.
    tokens = len((before + deep["text"]).encode())
    page.wait_for_function(f"document.getElementById('status').textContent.startsWith("
                           f"'{tokens} prompt tokens')")


def test_each_colouring_mode_changes_the_page(open_page: Any, artifacts_dir: Path) -> None:
    page, _seen = open_page()
    page.fill("#seed", "3")
    page.fill("#max-tokens", "24")
    page.fill("#temp-value", "1.5")
    page.click("summary:has-text('Every sampler')")
    page.fill("#s-logprob_token_ids", "97, 98")  # two tokens to follow at every step
    page.click("#generate")
    page.wait_for_function(OUTPUT_DONE, timeout=60_000)
    looks = {}
    for mode in ("probability", "rank", "entropy"):
        page.select_option("#colour-mode", mode)
        backgrounds = page.eval_on_selector_all(
            "#output .t", "els => els.map(e => getComputedStyle(e).backgroundColor)")
        looks[mode] = (tuple(backgrounds), page.inner_text("#colour-legend"))
        _shot(page, artifacts_dir / f"lab-colour-{mode}.png")
    assert len({b for b, _ in looks.values()}) == 3
    assert len({legend for _, legend in looks.values()}) == 3
    assert "top 10" in looks["rank"][1] and "nats" in looks["entropy"][1]
    # Rank mode paints each token by its bucket.
    buckets = page.eval_on_selector_all("#output .t", "els => els.map(e => e.dataset.bucket)")
    page.select_option("#colour-mode", "rank")
    rank_bg = looks["rank"][0]
    for b in set(buckets):
        assert len({bg for bg, x in zip(rank_bg, buckets, strict=True) if x == b}) == 1
    # Raw instead of processed probabilities: another colouring.
    page.select_option("#colour-mode", "probability")
    page.select_option("#mode", "raw")
    raw = page.eval_on_selector_all("#output .t",
                                    "els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert tuple(raw) != looks["probability"][0]
    # Hover shows the top alternatives with raw and processed probability, then the tokens
    # named in logprob_token_ids, whatever their rank.
    page.locator("#output .t").first.hover()
    page.wait_for_selector("#tooltip:not([hidden])")
    assert page.locator("#tooltip .tip-row").count() == 5 + 2
    assert page.locator("#tooltip .tip-row").first.locator("span").count() == 3
    assert "logprob_token_ids" in page.inner_text("#tooltip")


def test_a_shared_link_reproduces_the_same_text(open_page: Any, server: LiveServer) -> None:
    page, _seen = open_page()
    page.fill("#prompt", "Once upon")
    page.fill("#lab-temps", "0.5, 1.2")
    page.fill("#top-k", "20")
    page.locator("#advanced summary").click()
    page.fill("#s-repetition_penalty", "1.3")
    page.check("#temperature-last")
    _side_by_side(page, seed=21, max_tokens=10, n=2)
    texts = page.eval_on_selector_all(".column .col-text", "els => els.map(e => e.textContent)")
    url = page.input_value("#share-url")
    assert url == page.url and "seed=21" in url and "repetition_penalty" in url
    again, seen2 = open_page(url=url)
    again.wait_for_function(COLUMNS_DONE, arg=2, timeout=60_000)
    assert again.eval_on_selector_all(".column .col-text",
                                      "els => els.map(e => e.textContent)") == texts
    assert again.input_value("#top-k") == "20"
    assert again.input_value("#s-repetition_penalty") == "1.3"
    assert again.is_checked("#temperature-last")
    assert again.input_value("#lab-temps") == "0.5, 1.2"
    assert seen2.posts("/v1/lab/continue") == 1


def test_every_sampler_has_a_control_presets_and_an_editable_order(
        open_page: Any, artifacts_dir: Path) -> None:
    page, seen = open_page()
    registry = page.evaluate("(async () => (await fetch('/v1/samplers')).json())()")
    assert page.locator("#advanced fieldset.sampler").count() == len(registry["samplers"])
    page.locator("#advanced summary").click()
    quick = {"top_k", "top_p", "min_p", "temperature"}
    for s in registry["samplers"]:
        for f in s["fields"]:
            if f["name"] not in quick:
                assert page.locator(f"#s-{f['name']}").count() == 1, f["name"]
    assert page.eval_on_selector_all("#order li span", "els => els.map(e => e.textContent)") \
        == registry["default_order"]
    # Presets set exactly their fields, the temperature included.
    page.select_option("#preset", "min-p 0.1 at T = 1.5")
    assert page.input_value("#temp-value") == "1.5" and page.input_value("#min-p") == "0.1"
    assert page.input_value("#top-k") == "" and not page.is_checked("#temperature-last")
    page.select_option("#preset", "llama.cpp defaults")
    assert page.input_value("#top-k") == "40" and page.input_value("#min-p") == "0.05"
    assert page.is_checked("#temperature-last") == bool(
        registry["presets"]["llama.cpp defaults"].get("temperature_last"))
    assert page.locator("#order li.on").count() >= 3  # the samplers that are on, in bold
    # Move top_k above temperature: the next request carries that order.
    while True:
        names = page.eval_on_selector_all("#order li span", "els => els.map(e => e.textContent)")
        if names.index("top_k") < names.index("temperature"):
            break
        page.click("#order button[aria-label='move top_k up']")
    page.fill("#seed", "2")
    page.fill("#max-tokens", "4")
    with page.expect_request("**/v1/lab/continue") as sent:
        page.click("#generate")
    body = sent.value.post_data_json
    assert body["sampler_order"].index("top_k") < body["sampler_order"].index("temperature")
    assert body["top_k"] == 40 and body["min_p"] == 0.05
    page.wait_for_function(OUTPUT_DONE, timeout=60_000)
    page.fill("#s-dry_multiplier", "0.8")  # a registry-only field reaches the chart's request
    page.wait_for_selector("#chart .bar.proc")
    # A value the server refuses: its message, naming the field, and the field marked.
    seen.expected.append("status of 400")  # the browser logs every 4xx answer
    page.fill("#s-dry_multiplier", "-1")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "dry_multiplier" in page.inner_text("#status")
    assert page.get_attribute("#s-dry_multiplier", "aria-invalid") == "true"
    _shot(page, artifacts_dir / "lab-samplers-desktop.png")


def _tab_to(page: Any, test: str, limit: int = 300) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const e = document.activeElement; return {test}; }})()"):
            return
    raise AssertionError(f"Tab never reached {test}")


def test_keyboard_only_on_a_phone(open_page: Any, artifacts_dir: Path) -> None:
    page, _seen = open_page(390, 844)
    page.fill("#seed", "9")
    page.fill("#max-tokens", "8")
    page.locator("#prompt").focus()
    _tab_to(page, "e.id === 'side'")
    page.keyboard.press("Enter")
    page.wait_for_function(COLUMNS_DONE, arg=4, timeout=60_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _tab_to(page, "e.classList.contains('t') && !!e.closest('.column')")
    token = page.evaluate("[document.activeElement.dataset.branch,"
                          " document.activeElement.dataset.index]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#step-chart .row .alt")
    assert page.is_visible("#step")
    assert page.evaluate("!!document.activeElement.closest('#step')")
    _shot(page, artifacts_dir / "lab-step-phone.png", full=False)
    page.keyboard.press("Escape")
    assert page.is_hidden("#step")
    assert page.evaluate("[document.activeElement.dataset.branch,"
                         " document.activeElement.dataset.index]") == token
    # Open it again and continue with the next alternative, keys only.
    page.keyboard.press("Enter")
    page.wait_for_selector("#step-chart .row .alt")
    page.keyboard.press("Tab")  # the next alternative (the one before, from the last row)
    if not page.evaluate("document.activeElement.classList.contains('alt')"):
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.classList.contains('alt')")
    page.keyboard.press("Enter")
    page.wait_for_function(OUTPUT_DONE, timeout=60_000)
    assert page.locator("#branches li ul li").count() == 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, artifacts_dir / "lab-phone.png")


def test_t_star_panel_computes_once_and_sets_the_temperature(open_page: Any) -> None:
    page, seen = open_page()
    assert seen.urls.count(page.url.rstrip("/") + "/v1/lab/calibration") == 0  # lazy
    page.locator("#tstar-box summary").click()
    page.wait_for_selector("#tstar-use:not([hidden])", timeout=120_000)
    text = page.inner_text("#tstar-out")
    assert text.startswith("T* = ") and "at T = 1" in text and "passages" in text
    page.locator("#tstar-use").click()
    shown = float(page.input_value("#temp-value"))
    assert shown == float(text.split()[2].rstrip(":"))  # the slider went to T*
    page.locator("#tstar-box summary").click()  # closing and opening again: no new request
    page.locator("#tstar-box summary").click()
    assert sum(u.endswith("/v1/lab/calibration") for u in seen.urls) == 1
