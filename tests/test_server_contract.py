"""Contract: schemathesis sends bodies built from the server's own OpenAPI spec, valid and
invalid ones, to every operation; no answer is a 5xx, and every status, content type and body
is one the spec documents.

Schemathesis' pytest loader (``@schema.parametrize()``) does not run under pytest 9, so each
operation gets a plain Hypothesis test over ``operation.as_strategy(mode)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tempscope.engine.loader import load_model
from tempscope.server import create_app

pytestmark = pytest.mark.timeout(90)  # a hang fails the run instead of stalling it

KEY = "contract-key"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
OPERATIONS = [
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/distribution"),
    ("GET", "/v1/models"),
    ("GET", "/v1/info"),
    ("GET", "/v1/samplers"),
    ("GET", "/health"),
    ("GET", "/v1/lab/calibration"),
]
# Every operation with bodies the spec allows; those that take a body with ones it forbids too.
RUNS = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"]
# Per operation and mode: the same 30 examples every run (derandomized), at most 5 s each;
# the whole file takes about half a minute on a laptop CPU.
EXAMPLES = settings(max_examples=30, deadline=5000, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir: Path) -> Iterator[Any]:
    app = create_app(load_model(str(tiny_model_dir)), api_key=KEY)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_list_covers_every_operation_in_the_spec(api_schema: Any) -> None:
    from tests.test_lab_http import LAB_OPERATIONS  # run there, with limits that keep it quick

    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS) | {("POST", path) for path in LAB_OPERATIONS}


@pytest.mark.parametrize(("method", "path", "mode"), RUNS,
                         ids=[f"{m} {p} {'valid' if g.is_positive else 'invalid'}"
                              for m, p, g in RUNS])
def test_every_operation_keeps_its_contract(api_schema: Any, method: str, path: str,
                                            mode: GenerationMode) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(mode)
    if mode == GenerationMode.POSITIVE:
        # A random model name is a 404 before any other field is read: name the served one
        # so valid bodies reach the engine (and its streams).
        strategy = strategy.map(_served_model)

    @EXAMPLES
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

    run()


def _served_model(case: Any) -> Any:
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "default"
    return case


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/distribution", "/v1/models"])
def test_a_request_without_the_key_gets_the_documented_401(api_schema: Any, path: str) -> None:
    method = "GET" if path == "/v1/models" else "POST"
    operation = api_schema[path][method]

    @settings(EXAMPLES, max_examples=5)
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS[:4])
        assert response.status_code == 401

    run()
