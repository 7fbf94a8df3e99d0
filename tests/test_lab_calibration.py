"""GET /v1/lab/calibration: the served model's T* on the default text, computed on the first
request and cached; and the playground's panel that shows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tempscope.study.calibration_study import LAB_PROMPTS, LAB_TOKENS, default_text_calibration


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    from tempscope.engine.loader import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def client(model: Any) -> Iterator[TestClient]:
    from tempscope.server import create_app

    with TestClient(create_app(model, api_key="k")) as c:
        c.headers["Authorization"] = "Bearer k"
        yield c


def test_route_gives_t_star_and_caches_it(client: TestClient, model: Any) -> None:
    first = client.get("/v1/lab/calibration")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["cached"] is False and body["texts"] == LAB_PROMPTS
    assert body["positions"] == LAB_PROMPTS * LAB_TOKENS and body["bins"] == 15
    assert "Britannica" in body["text"]
    assert body["nll_t_star"] <= body["nll_t1"] + 1e-12
    assert body["direction"].endswith("at T = 1")
    want = default_text_calibration(model)  # the library gives the same numbers
    assert body["t_star"] == pytest.approx(want.t_star, rel=1e-9)
    assert body["nll_t1"] == pytest.approx(want.at_one.nll, rel=1e-9)
    second = client.get("/v1/lab/calibration")
    assert second.json() == {**body, "cached": True}


def test_route_needs_the_key(client: TestClient) -> None:
    r = client.get("/v1/lab/calibration", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_route_is_in_the_spec(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    get = spec["paths"]["/v1/lab/calibration"]["get"]
    assert "CalibrationResponse" in str(get["responses"]["200"])


def test_page_has_the_panel(client: TestClient) -> None:
    page = client.get("/").text
    assert 'id="tstar-box"' in page and 'id="tstar-use"' in page
    script = client.get("/static/lab.js").text
    assert "/v1/lab/calibration" in script and "export function initCalibration" in script
