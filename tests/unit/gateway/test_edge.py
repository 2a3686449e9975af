"""Body checks (UTF-8, surrogates, nesting), header policy and hint filtering; read_body over a real socket."""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from lanterna.config.model import EdgeLimitsConfig
from lanterna.errors import InvalidRequest
from lanterna.gateway.edge import BodyLimits, check_json_body, json_depth, read_body
from lanterna.gateway.header_policy import filter_hint, load_upstream_api_key, upstream_headers
from lanterna.gateway.middleware import error_middleware
from lanterna.gateway.server import serve_edge
from tests.conftest import free_port

OK_BODIES = [
    b'{"model": "m", "prompt": "hello"}',
    '{"prompt": "h\u00e9llo \u2603 \U0001f600"}'.encode(),
    b'{"prompt": "\\ud83d\\ude00 pair"}',
    b'{"prompt": "\\\\ud800 is an escaped backslash"}',
    b'{"prompt": "' + b"[" * 10_000 + b'"}',  # brackets inside a string are not nesting
    orjson.dumps({"messages": [{"role": "user", "content": "x"}] * 2000}),  # many shallow brackets
    b"[" * 64 + b"]" * 64,
]


@pytest.mark.parametrize("body", OK_BODIES, ids=["plain", "utf8", "surrogate-pair", "escaped-backslash",
                                                 "brackets-in-string", "many-shallow", "depth-64"])
def test_good_bodies_pass(body: bytes) -> None:
    check_json_body(body, 64)


BAD_BODIES = [
    (b'{"prompt": "\xed\xa0\x80"}', "UTF-8"),  # CESU/WTF-8 lone surrogate
    (b'{"prompt": "\xff"}', "UTF-8"),
    (b'{"prompt": "\xc3"}', "UTF-8"),  # truncated sequence
    (b'{"prompt": "\\ud800"}', "surrogate"),
    (b'{"prompt": "\\uDC00x"}', "surrogate"),
    (b'{"prompt": "\\ud800\\u0041"}', "surrogate"),  # high followed by a non-low escape
    (b"[" * 65 + b"]" * 65, "nesting"),
    (b'{"a":' * 100 + b"1" + b"}" * 100, "nesting"),
    (b"[" * 100_000 + b"]" * 100_000, "nesting"),
    (b"[" * 100_000, "nesting"),  # unbalanced: still rejected, never parsed
]


@pytest.mark.parametrize("body,match", BAD_BODIES, ids=["surrogate-bytes", "ff", "truncated", "esc-high",
                                                        "esc-low", "esc-high-then-ascii", "depth-65",
                                                        "objects-100", "depth-100k", "open-100k"])
def test_bad_bodies_are_400(body: bytes, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match) as e:
        check_json_body(body, 64)
    assert e.value.status == 400


def test_deep_nesting_is_rejected_fast_and_iteratively() -> None:
    body = b"[" * 1_000_000 + b"]" * 1_000_000  # would blow any recursive parser
    t0 = time.perf_counter()
    with pytest.raises(InvalidRequest):
        check_json_body(body, 64)
    assert time.perf_counter() - t0 < 1.0  # generous bound on a shared CI core; measured ~3 ms
    assert json_depth(b'{"a": [1, {"b": "]]]]"}]}', 100) == 3


def test_upstream_headers_strip_internal_and_credentials() -> None:
    incoming = {"Authorization": "Bearer client", "x-api-key": "client", "x-prefiller-host-port": "10.0.0.9:80",
                "x-gateway-destination-endpoint": "10.0.0.1:80", "x-gateway-destination-endpoint-served": "x",
                "x-llm-d-internal-thing": "1", "x-llm-d-inference-objective": "premium",
                "x-gateway-model-name-rewrite": "big", "content-encoding": "gzip", "Host": "gw", "Content-Length": "9",
                "x-session-token": "s", "traceparent": "00-abc", "x-request-id": "client-id"}
    out = upstream_headers(incoming, "rid-1")
    assert out == {"x-llm-d-inference-objective": "premium", "x-session-token": "s",
                   "x-request-id": "rid-1", "content-type": "application/json"}
    out = upstream_headers(incoming, "rid-1", upstream_api_key="backend", allow_model_rewrite=True,
                           extra={"x-prefiller-host-port": "10.0.0.2:80"})
    assert out["authorization"] == "Bearer backend"
    assert out["x-gateway-model-name-rewrite"] == "big"
    assert out["x-prefiller-host-port"] == "10.0.0.2:80"  # the gateway's own value, not the client's


def test_upstream_api_key_file_wins_over_env(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "key"
    f.write_text(" from-file\n")
    assert load_upstream_api_key("K", str(f), {"K": "from-env"}) == "from-file"
    assert load_upstream_api_key("K", None, {"K": " from-env "}) == "from-env"
    assert load_upstream_api_key(None, None, {}) is None


@pytest.mark.parametrize(
    ("hint", "want"),
    [(None, None), ("10.0.0.1:80", "10.0.0.1:80"), ("evil:1", None), ("evil:1, 10.0.0.2:80", "10.0.0.2:80"),
     ("10.0.0.1:80,10.0.0.2:80", "10.0.0.1:80,10.0.0.2:80")],
    ids=["none", "known", "unknown", "mixed", "list"],
)
def test_filter_hint(hint: str | None, want: str | None) -> None:
    assert filter_hint(hint, ["10.0.0.1:80", "10.0.0.2:80"]) == want


# --- read_body over a real loopback server ----------------------------------------------------------------

LIMITS = BodyLimits(max_body_bytes=64 * 1024, body_timeout_s=0.5, max_json_depth=64)


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        body = await read_body(request, LIMITS)
        return web.json_response({"len": len(body), "head": body[:40].decode()})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/echo", handler)
    port = free_port()
    runner = await serve_edge(app, "127.0.0.1", port, EdgeLimitsConfig(header_timeout_s=1.0))
    try:
        yield f"http://127.0.0.1:{port}/echo"
    finally:
        await runner.cleanup()


PAYLOAD = b'{"model": "m", "prompt": "' + b"hello " * 100 + b'"}'


@pytest.mark.parametrize(
    ("encoding", "data", "status"),
    [
        (None, PAYLOAD, 200),
        ("gzip", gzip.compress(PAYLOAD), 200),
        ("deflate", zlib.compress(PAYLOAD), 200),
        ("gzip", b"\x1f\x8b\x08\x00garbage-not-gzip", 400),
        ("gzip", gzip.compress(PAYLOAD)[:12] + b"\xff" * 40, 400),  # valid gzip header, corrupt deflate data
        ("gzip", gzip.compress(b"[" + b" " * 50_000_000 + b"]"), 413),  # 50 MB bomb in ~50 KB
        ("br", b"whatever", 415),
        ("gzip, gzip", gzip.compress(gzip.compress(PAYLOAD)), 415),
        (None, b'{"prompt": "\xed\xa0\x80"}', 400),
        (None, b"[" * 100_000 + b"]" * 100_000, 413),  # over 64 KB: size first
        (None, b"[" * 30_000 + b"]" * 30_000, 400),
    ],
    ids=["identity", "gzip", "deflate", "bad-gzip", "corrupt-deflate", "gzip-bomb", "br-unavailable",
         "stacked", "invalid-utf8", "too-large", "deep"],
)
async def test_read_body(echo: str, encoding: str | None, data: bytes, status: int) -> None:
    headers = {"content-encoding": encoding} if encoding else {}
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.post(echo, data=data, headers=headers) as r:
        got = await r.json()
        assert r.status == status, got
        if status == 200:
            assert got["len"] == len(PAYLOAD)  # decompressed exactly once
        else:
            assert set(got["error"]) == {"message", "type", "param", "code"}
