"""Schema-driven fuzzing (schemathesis over ``docs/openapi.yaml``) of a real gateway in front of real sims.

Each operation gets valid requests (positive mode: must be served or get a vLLM 4xx) and schema-violating
requests (negative mode: must get a 4xx), all through the oracle in ``tests.fuzz.oracle``: no 5xx, OpenAI
error bodies, responses that match the document, well-formed streams, and afterwards a live gateway with
every breaker closed and no upstream failure counted against a replica.

Reproducible and bounded for CI: hypothesis is derandomized (the examples depend only on the schema and
the code), has no example database and does not shrink (a shrink re-sends requests); the examples per
operation are sized for ~60 s on two busy cores. ``LANTERNA_FUZZ_EXAMPLES`` scales them for a longer run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from tests.conftest import REPO
from tests.fuzz.oracle import answer_problem, assert_healthy, open_breakers, upstream_failures
from tests.integration.test_gateway_support import GatewayProc

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

SCALE = float(os.environ.get("LANTERNA_FUZZ_EXAMPLES", "1"))
SERVED = "tiny"


def _schema() -> Any:
    """The published document narrowed to what this deployment serves, so most generated requests reach a
    replica instead of stopping at a 400/404: ``model`` is the served name or one unknown name, and the
    simulator's limits (``n`` = 1, one prompt per request) are applied."""
    doc = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    schemas = doc["components"]["schemas"]
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        schemas[name]["allOf"][1]["properties"]["model"] = {"type": "string", "enum": [SERVED, "no-such-model"]}
    schemas["SamplingParams"]["properties"]["n"] = {"type": "integer", "enum": [1]}
    prompt = schemas["CompletionRequest"]["allOf"][1]["properties"]["prompt"]
    prompt["oneOf"] = [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "integer",
                                                                                      "minimum": 0, "maximum": 999}}]
    return schemathesis.openapi.from_dict(doc)


SCHEMA = _schema()
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]

# (path, method, mode, examples)
OPERATIONS = [
    ("/v1/completions", "POST", GenerationMode.POSITIVE, 150),
    ("/v1/completions", "POST", GenerationMode.NEGATIVE, 100),
    ("/v1/chat/completions", "POST", GenerationMode.POSITIVE, 150),
    ("/v1/chat/completions", "POST", GenerationMode.NEGATIVE, 100),
    ("/v1/models", "GET", GenerationMode.POSITIVE, 5),
    ("/health", "GET", GenerationMode.POSITIVE, 3),
    ("/ready", "GET", GenerationMode.POSITIVE, 3),
    ("/metrics", "GET", GenerationMode.POSITIVE, 3),
]


@pytest.mark.parametrize(("path", "method", "mode", "examples"),
                         [pytest.param(*op, id=f"{op[1]} {op[0]} {op[2].value}") for op in OPERATIONS])
def test_operation_survives_schema_fuzzing(fuzz_gateway: GatewayProc, path: str, method: str,
                                           mode: GenerationMode, examples: int, tmp_path: Path) -> None:
    g = fuzz_gateway
    op = SCHEMA[path][method]
    session = requests.Session()
    failures_before = upstream_failures(g)

    @settings(max_examples=max(1, int(examples * SCALE)), derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        try:
            resp = case.call(base_url=g.url, session=session, timeout=60)
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError, ValueError):
            return  # the client library refuses to send it (header bytes it cannot encode): nothing reached us
        ctype = (resp.headers.get("content-type") or [""])[0]
        problem = answer_problem(resp.status_code, ctype, resp.content, resp.stream_cut_short)
        assert problem is None, f"{case.method} {case.path} body={case.body!r:.500}: {problem}\n{g.log_tail()}"
        assert g.proc.poll() is None, f"gateway died:\n{g.log_tail()}"
        if mode is GenerationMode.POSITIVE or resp.status_code < 400:
            case.validate_response(resp, checks=CHECKS)

    run()
    assert not open_breakers(g), f"breakers opened by {method} {path} fuzzing:\n{g.log_tail()}"
    assert upstream_failures(g) == failures_before, "client input was counted as replica failures"
    assert_healthy(g, f"{method} {path} {mode.value} fuzzing")
