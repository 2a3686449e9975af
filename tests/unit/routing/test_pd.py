"""The P/D pieces both placements share: prefill-leg fields, KV params, the sidecar's allow-list."""

from __future__ import annotations

import pytest

from lanterna.errors import InvalidRequest
from lanterna.routing.pd import (
    PrefillerAllowList,
    PrefillerNotAllowed,
    already_prefilled,
    kv_params_of,
    prefill_fields,
)


def test_prefill_fields_match_protocols_section_4() -> None:
    f = prefill_fields(chat=True)
    assert f["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                                       "remote_block_ids": None, "remote_host": None, "remote_port": None}
    assert f["stream"] is False and f["stream_options"] is None and f["max_tokens"] == 1
    assert f["max_completion_tokens"] == 1
    assert "max_completion_tokens" not in prefill_fields(chat=False)


@pytest.mark.parametrize(("body", "want"), [
    (b'{"kv_transfer_params": {"remote_block_ids": [1, 2], "x": null}}', {"remote_block_ids": [1, 2], "x": None}),
    (b'{"kv_transfer_params": null}', None),
    (b'{"kv_transfer_params": [1]}', None),
    (b'[1]', None),
    (b'not json', None),
], ids=["verbatim", "null", "not-object", "not-dict-body", "garbage"])
def test_kv_params_of(body: bytes, want: object) -> None:
    assert kv_params_of(body) == want


def test_already_prefilled() -> None:
    assert already_prefilled({"kv_transfer_params": {"do_remote_prefill": True}})
    assert not already_prefilled({"kv_transfer_params": {"do_remote_decode": True}})
    assert not already_prefilled({"prompt": "x"}) and not already_prefilled([1])


ALLOW = PrefillerAllowList.of(["10.0.0.7:8000", "Prefill-0.ns.svc:8000", "[::1]:9000"])


@pytest.mark.parametrize(("header", "want"), [
    ("10.0.0.7:8000", "10.0.0.7:8000"),
    (" prefill-0.NS.svc:8000 ", "prefill-0.ns.svc:8000"),
    ("[::1]:9000", "::1:9000"),
], ids=["ip", "case-and-space", "ipv6"])
def test_allowed_targets(header: str, want: str) -> None:
    assert ALLOW.check(header) == want


@pytest.mark.parametrize(("header", "err"), [
    ("10.0.0.7:8001", PrefillerNotAllowed),
    ("169.254.169.254:80", PrefillerNotAllowed),
    ("10.0.0.7", InvalidRequest),
    ("10.0.0.7:99999", InvalidRequest),
    ("user@10.0.0.7:8000", InvalidRequest),
    ("10.0.0.7/admin:8000", InvalidRequest),
    ("10.0.0.7:8000,10.0.0.8:8000", InvalidRequest),
], ids=["other-port", "metadata-service", "no-port", "bad-port", "userinfo", "path", "two-targets"])
def test_refused_targets(header: str, err: type[Exception]) -> None:
    with pytest.raises(err) as exc:
        ALLOW.check(header)
    assert exc.value.status in (400, 403)  # type: ignore[attr-defined]


def test_empty_allow_list_refuses_everything() -> None:
    with pytest.raises(PrefillerNotAllowed):
        PrefillerAllowList.of([]).check("127.0.0.1:8000")
