"""Pure auth pieces: key hashing and lookup, priority ceilings, fairness ids, token buckets, key loading."""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import pytest

from lanterna.auth import KeyRing, Principal, RateLimiter, TokenBucket, effective_fairness, effective_priority
from lanterna.auth.keys import generate_key, hash_key, normalise_hash
from lanterna.auth.principal import anonymous
from lanterna.auth.source import build_keyring, load_keyring, parse_keys_document, sources_signature
from lanterna.clock import VirtualClock
from lanterna.config.model import ApiKeySpec, AuthConfig
from lanterna.errors import ConfigError, KeyRateLimited, Unauthorized
from lanterna.gateway.auth import EdgeAuth, presented_key, retry_after

KEY = "lk-test-key"
H = hash_key(KEY)


def test_hash_is_sha256_hex_and_normalises() -> None:
    assert hash_key("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 vector
    assert normalise_hash(H[7:].upper()) == H
    with pytest.raises(ValueError, match="sha256"):
        normalise_hash("plaintext-key")
    assert generate_key() != generate_key() and generate_key().startswith("lk-")


def test_keyring_finds_only_the_exact_key() -> None:
    p = Principal(tenant="acme", key_hash=H)
    ring = KeyRing({H: p})
    assert ring.lookup(KEY) is p
    assert ring.lookup(KEY + "x") is None
    assert ring.lookup("") is None
    assert ring.lookup(H) is None  # the stored hash is not itself a key


OBJECTIVES = {"premium": 100, "batch": -1}


@pytest.mark.parametrize(
    ("objective", "ceiling", "want"),
    [
        (None, 0, 0), ("999999", 0, 0), ("999999", 50, 50), ("7", 50, 7), ("premium", 0, 0),
        ("premium", 1000, 100), ("batch", 0, -1), ("-5", 0, -5), ("nonsense", 10, 0),
    ],
    ids=["none", "bare-int-capped", "bare-int-ceiling", "bare-int-under", "named-capped", "named",
         "sheddable-named", "sheddable-int", "unknown-name"],
)
def test_effective_priority_is_capped_by_the_principal(objective: str | None, ceiling: int, want: int) -> None:
    assert effective_priority(objective, OBJECTIVES, Principal(tenant="t", max_priority=ceiling)) == want


@pytest.mark.parametrize(
    ("header", "want"),
    [(None, "acme"), ("", "acme"), ("team-a", "acme/team-a"), ("acme/team-a", "acme/team-a"),
     ("other-tenant", "acme/other-tenant"), ("acme", "acme"), ("acme/", "acme"), ("x" * 200, "acme/" + "x" * 64)],
    ids=["none", "empty", "sub", "already-prefixed", "cannot-escape", "own-tenant", "empty-sub", "long"],
)
def test_effective_fairness_stays_within_the_tenant(header: str | None, want: str) -> None:
    assert effective_fairness(header, Principal(tenant="acme", key_hash=H)) == want


def test_anonymous_callers_share_one_tenant() -> None:
    assert effective_fairness("victim-tenant", anonymous(0)) == "anonymous/victim-tenant"


def test_token_bucket_refills_at_rate_with_injected_clock() -> None:
    clock = VirtualClock()
    b = TokenBucket(rate=2.0, capacity=3.0, updated=clock.now())
    for _ in range(3):
        assert b.wait_s(1, clock.now()) == 0
        b.take(1)
    assert b.wait_s(1, clock.now()) == pytest.approx(0.5)
    clock.advance(0.5)
    assert b.wait_s(1, clock.now()) == 0
    clock.advance(100)
    assert b.wait_s(3, clock.now()) == 0 and b.wait_s(4, clock.now()) == math.inf  # never above capacity


def test_rate_limiter_requests_then_tokens() -> None:
    p = Principal(tenant="t", key_hash=H, requests_per_s=1, burst=2, tokens_per_min=600, token_burst=100)
    lim = RateLimiter()
    assert [lim.take_request(p, 0.0).allowed for _ in range(3)] == [True, True, False]
    assert lim.take_request(p, 0.0).retry_after_s == pytest.approx(1.0)
    assert lim.take_tokens(p, 80, 0.0).allowed
    v = lim.take_tokens(p, 30, 0.0)
    assert (v.allowed, v.reason, v.retry_after_s) == (False, "tokens", pytest.approx(1.0))  # 10 tokens/s
    assert lim.take_tokens(p, 101, 5.0).reason == "too-large"
    assert lim.take_tokens(p, 30, 5.0).allowed  # a refused charge spent nothing


def test_rate_limiter_share_divides_per_process() -> None:
    p = Principal(tenant="t", key_hash=H, requests_per_s=10, burst=10)
    lim = RateLimiter(per_process_share=2)
    assert sum(lim.take_request(p, 0.0).allowed for _ in range(20)) == 5


def test_anonymous_and_unlimited_are_not_limited() -> None:
    lim = RateLimiter()
    assert all(lim.take_request(anonymous(0), 0.0).allowed for _ in range(1000))
    assert lim.take_tokens(Principal(tenant="t", key_hash=H), 10**9, 0.0).allowed


def test_keys_load_from_file_env_and_secret_dir(tmp_path: Path) -> None:
    f = tmp_path / "keys.yaml"
    f.write_text(f"keys:\n- hash: {hash_key('file-key')}\n  tenant: filer\n  max_priority: 5\n")
    secret = tmp_path / "secret"
    (secret / "..2024_data").mkdir(parents=True)
    (secret / "alice").write_text(f'{{"hash": "{hash_key("alice-key")}", "tenant": "alice", "models": ["m"]}}')
    (secret / "..data").write_text("ignored")
    env = {"LANTERNA_API_KEYS": f"- hash: {hash_key('env-key')}\n  tenant: envy\n  requests_per_s: 3\n"}
    cfg = AuthConfig(enabled=True, keys_file=str(f), secret_dir=str(secret),
                     keys=[ApiKeySpec(hash=hash_key("inline-key"), tenant="inline")])
    ring = load_keyring(cfg, env)
    got = {k: ring.lookup(k) for k in ("file-key", "alice-key", "env-key", "inline-key")}
    assert {k: p.tenant for k, p in got.items() if p} == {"file-key": "filer", "alice-key": "alice",
                                                          "env-key": "envy", "inline-key": "inline"}
    assert got["alice-key"].models == frozenset({"m"})  # type: ignore[union-attr]
    assert got["env-key"].requests_per_s == 3  # type: ignore[union-attr]
    assert [Path(p).name for p, *_ in sources_signature(cfg)] == ["keys.yaml", "alice"]


@pytest.mark.parametrize(
    ("text", "match"),
    [("- tenant: x\n", "hash"), ("- hash: nothex\n  tenant: x\n", "sha256"), ("just a string", "expected a list"),
     ("{bad yaml", "not YAML")],
    ids=["missing-hash", "bad-hash", "wrong-shape", "not-yaml"],
)
def test_bad_key_documents_are_config_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_keys_document(text, "keys.yaml")


def test_duplicate_hash_is_rejected() -> None:
    spec = ApiKeySpec(hash=H, tenant="a")
    with pytest.raises(ConfigError, match="twice"):
        build_keyring([spec, ApiKeySpec(hash=H, tenant="b")])


@pytest.mark.parametrize(
    ("headers", "want"),
    [({"authorization": "Bearer k1"}, "k1"), ({"authorization": "bearer  k1 "}, "k1"), ({"x-api-key": "k2"}, "k2"),
     ({"authorization": "Basic abc", "x-api-key": "k2"}, None), ({}, None), ({"authorization": "Bearer "}, None)],
    ids=["bearer", "case-space", "x-api-key", "basic-is-not-a-key", "none", "empty-bearer"],
)
def test_presented_key(headers: dict[str, str], want: str | None) -> None:
    assert presented_key(headers) == want


def test_edge_auth_open_mode_and_keyed_mode() -> None:
    open_auth = EdgeAuth.from_config(AuthConfig(anonymous_max_priority=2), environ={})
    assert open_auth.authenticate({}) == anonymous(2)
    clock = VirtualClock()
    cfg = AuthConfig(enabled=True, keys=[ApiKeySpec(hash=H, tenant="acme", requests_per_s=1, burst=1)])
    auth = EdgeAuth.from_config(cfg, clock=clock, environ={})
    with pytest.raises(Unauthorized) as missing:
        auth.authenticate({})
    assert missing.value.headers["www-authenticate"] == "Bearer"
    assert missing.value.body()["error"]["code"] == "invalid_api_key"
    with pytest.raises(Unauthorized):
        auth.authenticate({"authorization": "Bearer wrong"})
    p = auth.authenticate({"x-api-key": KEY})
    auth.charge_request(p)
    with pytest.raises(KeyRateLimited) as limited:
        auth.charge_request(p)
    assert limited.value.status == 429 and limited.value.headers["retry-after"] == "1"
    clock.advance(1.0)
    auth.charge_request(p)


def test_enabled_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no keys"):
        EdgeAuth.from_config(AuthConfig(enabled=True), environ={})


def test_retry_after_rounds_up() -> None:
    assert [retry_after(x) for x in (0.01, 1.0, 1.2, math.inf)] == ["1", "1", "2", "60"]


def test_cli_hash_key_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from lanterna.cli import auth as cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    assert cli.run(p.parse_args(["hash-key", "--tenant", "acme", "--rps", "5"])) == 0
    specs = parse_keys_document(capsys.readouterr().out, "stdout")
    assert (specs[0].hash, specs[0].tenant, specs[0].requests_per_s) == (H, "acme", 5.0)
