"""The server's parts without a server process: error messages and the app in-process on the
tiny model (the scheduler has tests/test_scheduler.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tempscope.server.errors import describe_validation


@pytest.mark.parametrize(("errors", "message", "param"), [
    ([{"loc": ("body", "n"), "msg": "Input should be greater than or equal to 1", "input": 0,
       "type": "greater_than_equal"}], "n: Input should be greater than or equal to 1 (got 0)",
     "n"),
    ([{"loc": ("body", "temprature"), "msg": "Extra inputs are not permitted", "input": 1,
       "type": "extra_forbidden"}], "unknown field 'temprature'", "temprature"),
    ([{"loc": ("body", 5), "msg": "JSON decode error", "input": {}, "type": "json_invalid",
       "ctx": {"error": "Expecting value"}}], "not valid JSON (Expecting value)", None),
    ([{"loc": ("body",), "msg": "Field required", "input": None, "type": "missing"}],
     "the request body is missing", None),
])
def test_validation_messages(errors: list[dict[str, Any]], message: str, param: str | None
                             ) -> None:
    text, first = describe_validation(errors)
    assert message in text
    assert first == param


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    from tempscope.engine.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu")


def _call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def test_in_process_app_with_key_and_limits(tiny: Any) -> None:
    from tempscope.server import ServerLimits, create_app

    app = create_app(tiny, api_key="k", limits=ServerLimits(max_tokens=4, max_n=2),
                     name="tiny")
    assert _call(app, "GET", "/v1/models").status_code == 401
    ok = _call(app, "GET", "/v1/models", headers={"Authorization": "Bearer k"})
    assert ok.json()["data"][0]["id"] == "tiny"
    r = _call(app, "POST", "/v1/completions", headers={"Authorization": "Bearer k"},
              json={"model": "tiny", "prompt": "a", "max_tokens": 5})
    assert r.status_code == 400 and "at most 4" in r.json()["error"]["message"]
    r = _call(app, "POST", "/v1/completions", headers={"Authorization": "Bearer k"},
              json={"model": "tiny", "prompt": "a", "n": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    # The tiny model has no chat template: chat falls back to a plain transcript.
    r = _call(app, "POST", "/v1/chat/completions", headers={"Authorization": "Bearer k"},
              json={"model": "default", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len("user: hi\nassistant:")
    info = _call(app, "GET", "/v1/info", headers={"Authorization": "Bearer k"}).json()
    assert info["limits"]["max_tokens"] == 4 and info["auth"] is True
    page = _call(app, "GET", "/")
    assert page.status_code == 200 and "temp-slider" in page.text
    assert _call(app, "GET", "/static/app.js").status_code == 200


def test_serve_cli_checks_before_loading() -> None:
    from tests.conftest import run_cli

    out = run_cli("serve", "--help")
    assert out.returncode == 0 and "--api-key" in out.stdout and "127.0.0.1" in out.stdout
    bad = run_cli("serve", "--port", "70000")
    assert bad.returncode == 2
    assert "--port must be in 1..65535, got 70000" in bad.stderr
    assert "Traceback" not in bad.stderr
