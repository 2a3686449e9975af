"""What every gateway answer must satisfy, whatever the input (shared by the fuzz tests; holds no tests).

- no 5xx: the sims never answer 5xx to anything, so a 5xx is the gateway's own failure (or a relay of a
  replica failure the gateway caused, e.g. by forwarding a header it should have consumed);
- every error body is ``{"error": {"message": str, "type": str, "param": str | null, "code": <status>}}``
  (or an OpenAI code string where OpenAI defines one: ``invalid_api_key``, ``rate_limit_exceeded``);
- a stream is ``data: <json>`` frames ending with ``data: [DONE]``; an error frame has the same shape;
- the gateway process is alive and no breaker is open (no replica lost to a client's input).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.integration.test_gateway_support import GatewayProc


def error_shape_problem(status: int, body: bytes) -> str | None:
    """None when ``body`` is a well-formed OpenAI error for ``status``, else what is wrong."""
    try:
        data = json.loads(body)
    except ValueError:
        return f"error body is not JSON: {body[:200]!r}"
    return error_obj_problem(data, status)


def error_obj_problem(data: Any, status: int | None) -> str | None:
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return f"no 'error' object: {json.dumps(data)[:200]}"
    if set(err) != {"message", "type", "param", "code"}:
        return f"error keys {sorted(err)} != message/type/param/code"
    if not isinstance(err["message"], str) or not isinstance(err["type"], str):
        return "message/type not strings"
    if err["param"] is not None and not isinstance(err["param"], str):
        return "param neither string nor null"
    code = err["code"]
    if isinstance(code, str):  # OpenAI's own codes (invalid_api_key, rate_limit_exceeded, ...)
        return None if code else "empty code"
    if not isinstance(code, int) or (status is not None and code != status):
        return f"code {code!r} != HTTP status {status}"
    return None


def sse_problem(body: bytes, cut_short: bool = False) -> str | None:
    """None when ``body`` is a complete SSE stream of JSON frames ending with ``[DONE]``; ``cut_short`` (the
    client stopped reading, as schemathesis does after 20 events) judges only the complete frames read."""
    if cut_short:
        body = body[: body.rfind(b"\n\n") + 1]
    frames = [ln[6:] for ln in body.split(b"\n") if ln.startswith(b"data: ")]
    if not cut_short and (not frames or frames[-1] != b"[DONE]"):
        return f"stream does not end with data: [DONE]: {body[-200:]!r}"
    for f in frames[:-1] if frames[-1:] == [b"[DONE]"] else frames:
        try:
            obj = json.loads(f)
        except ValueError:
            return f"frame is not JSON: {f[:200]!r}"
        if isinstance(obj, dict) and "error" in obj and (p := error_obj_problem(obj, None)):
            return f"error frame: {p}"
    return None


def answer_problem(status: int, content_type: str, body: bytes, cut_short: bool = False) -> str | None:
    """The oracle for one answer to an inference route (``cut_short``: see ``sse_problem``)."""
    if status >= 500:
        return f"server error {status}: {body[:300]!r}"
    if status >= 400:
        return error_shape_problem(status, body)
    if content_type.startswith("text/event-stream"):
        return sse_problem(body, cut_short)
    return None


def open_breakers(g: GatewayProc) -> list[str]:
    """Endpoints whose circuit the gateway holds open (``/debug/endpoints``)."""
    return [e["id"] for e in g.get_json("/debug/endpoints")["endpoints"] if e["circuit_open"]]


def upstream_failures(g: GatewayProc) -> float:
    """Sum of ``lanterna_gateway_upstream_failures_total`` over endpoints and reasons: client input must never
    count against a replica (each count moves a breaker towards open)."""
    with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith("lanterna_gateway_upstream_failures_total{"))


def post(g: GatewayProc, path: str, body: dict[str, Any], timeout_s: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(g.url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def assert_healthy(g: GatewayProc, context: str) -> None:
    """The gateway is alive, every breaker is closed and a normal request is served."""
    assert g.proc.poll() is None, f"gateway exited ({g.proc.returncode}) after {context}:\n{g.log_tail()}"
    opened = open_breakers(g)
    assert not opened, f"breakers open after {context}: {opened}\n{g.log_tail()}"
    status, body = post(g, "/v1/completions", {"model": "tiny", "prompt": "still fine?", "max_tokens": 2})
    assert status == 200, f"normal request after {context}: {status} {body[:300]!r}"
