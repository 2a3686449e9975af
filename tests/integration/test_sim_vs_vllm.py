"""``lanterna sim`` answers like real vLLM: the same requests go to both and every observable must agree.

Checked: response shapes (recursive key sets + JSON types), streaming chunk sequences, error statuses and bodies,
metric names/types/labels (an explicit allowlist), KV-event structure (BlockStored per full block, chained
parents, BlockRemoved on eviction) and prefix-cache ``cached_tokens``. vLLM is the ground truth; texts differ
(random weights) so contents are compared only where vLLM is deterministic.

``LANTERNA_SIM_VS_SELF=1`` points the "sim" side at vLLM itself, which checks these tests' own logic.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lanterna.models.tokenizer import load_tokenizer
from tests.conftest import free_port
from tests.integration.vllm_server import (
    BLOCK_SIZE,
    HttpResult,
    KvEventSubscriber,
    ServerHandle,
    http,
    sse_events,
    start_sim,
    subscribe_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


# ---------------------------------------------------------------- fixtures


def vllm_num_gpu_blocks(handle: ServerHandle) -> int:
    m = re.search(r'vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', http(handle.base_url, "/metrics").body.decode())
    assert m, "vllm:cache_config_info has no num_gpu_blocks"
    return int(m.group(1))


@pytest.fixture(scope="module")
def sim(vllm_tiny: ServerHandle, tiny_model_dir: Path, lora1: Path, tmp_path_factory) -> Iterator[ServerHandle]:
    """The simulator with vLLM's block count, block size, context length, tokenizer, LoRA and KV events."""
    if os.environ.get("LANTERNA_SIM_VS_SELF") == "1":
        yield vllm_tiny
        return
    if importlib.util.find_spec("lanterna.cli.sim") is None:
        pytest.skip("lanterna sim is not available in this build")
    with start_sim(tiny_model_dir, port=free_port(), kv_events_port=free_port(), topic=vllm_tiny.topic,
                   num_gpu_blocks=vllm_num_gpu_blocks(vllm_tiny), lora_modules={"lora1": lora1},
                   log_dir=tmp_path_factory.mktemp("sim")) as handle:
        yield handle


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return load_tokenizer(tiny_model_dir)


def both(vllm: ServerHandle, sim: ServerHandle) -> list[tuple[str, ServerHandle]]:
    return [("vllm", vllm), ("sim", sim)]


def cold(name: str, h: ServerHandle) -> None:
    """In self-comparison mode the "sim" side is the same vLLM: clear its prefix cache so it starts cold too."""
    if name == "sim" and os.environ.get("LANTERNA_SIM_VS_SELF") == "1":
        assert http(h.base_url, "/reset_prefix_cache", b"").status == 200


# ---------------------------------------------------------------- shape helpers


def shape(x: Any) -> Any:
    """Recursive structure: dict -> {key: shape}, list -> sorted distinct element shapes, scalar -> JSON type."""
    if isinstance(x, dict):
        return {k: shape(v) for k, v in sorted(x.items())}
    if isinstance(x, list):
        distinct = {repr(shape(v)): shape(v) for v in x}
        return ["list", *(distinct[k] for k in sorted(distinct))]
    if x is None:
        return "null"
    return type(x).__name__  # bool, int, float, str


def collapse(seq: list[Any]) -> list[Any]:
    """Drop consecutive repeats: token chunks repeat one shape as often as tokens were generated."""
    out: list[Any] = []
    for s in seq:
        if not out or out[-1] != s:
            out.append(s)
    return out


def unique_prompt(n_words: int = 40) -> str:
    return f"{uuid.uuid4().hex} " + " ".join(f"word{i % 13}" for i in range(n_words))


# ---------------------------------------------------------------- responses


CHAT_MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
REQUESTS = {
    "completion": ("/v1/completions", {"model": "tiny", "prompt": "def main():", "max_tokens": 5}),
    "completion_n_params": ("/v1/completions", {"model": "tiny", "prompt": "x = 1", "max_tokens": 3,
                                                 "temperature": 0.7, "top_p": 0.9, "seed": 1}),
    "chat": ("/v1/chat/completions", {"model": "tiny", "messages": CHAT_MSGS, "max_tokens": 4}),
    "chat_max_completion_tokens": ("/v1/chat/completions", {"model": "tiny", "messages": CHAT_MSGS,
                                                            "max_completion_tokens": 2}),
    "lora_completion": ("/v1/completions", {"model": "lora1", "prompt": "hello", "max_tokens": 3}),
}


@pytest.mark.parametrize("case", list(REQUESTS), ids=list(REQUESTS))
def test_response_shape(vllm_tiny, sim, case: str) -> None:
    path, body = REQUESTS[case]
    got = {name: http(h.base_url, path, body) for name, h in both(vllm_tiny, sim)}
    assert got["vllm"].status == got["sim"].status == 200, (got["vllm"].body, got["sim"].body)
    v, s = got["vllm"].json(), got["sim"].json()
    assert shape(s) == shape(v)
    assert s["model"] == v["model"] and s["object"] == v["object"]
    assert s["usage"]["prompt_tokens"] == v["usage"]["prompt_tokens"]


@pytest.mark.parametrize("include_usage", [False, True], ids=["no_usage", "include_usage"])
@pytest.mark.parametrize("case", ["completion", "chat"], ids=["completion", "chat"])
def test_stream_shape(vllm_tiny, sim, case: str, include_usage: bool) -> None:
    path, body = REQUESTS[case]
    body = {**body, "stream": True, **({"stream_options": {"include_usage": True}} if include_usage else {})}
    seqs = {name: sse_events(h.base_url, path, body) for name, h in both(vllm_tiny, sim)}
    for name, seq in seqs.items():
        assert seq[-1] == "[DONE]", name
    assert collapse([shape(c) for c in seqs["sim"]]) == collapse([shape(c) for c in seqs["vllm"]])
    if include_usage:
        assert seqs["sim"][-2]["usage"]["prompt_tokens"] == seqs["vllm"][-2]["usage"]["prompt_tokens"]


def test_models_list_shape(vllm_tiny, sim) -> None:
    v, s = (http(h.base_url, "/v1/models").json() for _, h in both(vllm_tiny, sim))
    assert shape(s) == shape(v)
    assert {(m["id"], m["parent"]) for m in s["data"]} == {(m["id"], m["parent"]) for m in v["data"]}


def test_tokenize_equal(vllm_tiny, sim) -> None:
    body = {"model": "tiny", "prompt": "Hello, world! héllo ✓"}
    v, s = (http(h.base_url, "/tokenize", body).json() for _, h in both(vllm_tiny, sim))
    assert s == v


def test_context_overflow_truncates_like_vllm(vllm_tiny, sim, tok) -> None:
    """prompt + max_tokens beyond the context is not an error: output is cut with finish_reason=length."""
    prompt = " ".join(["alpha"] * 2100)
    ids = tok.encode(prompt)
    prompt = tok.decode(ids[1:2001])
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 100, "ignore_eos": True}
    v, s = (cold(n, h) or http(h.base_url, "/v1/completions", body).json() for n, h in both(vllm_tiny, sim))
    assert s["usage"] == v["usage"] and v["usage"]["total_tokens"] == 2048
    assert s["choices"][0]["finish_reason"] == v["choices"][0]["finish_reason"] == "length"


# ---------------------------------------------------------------- errors


def _long_prompt(n_words: int) -> str:
    return " ".join(["alpha"] * n_words)


# (method, path, body, how to compare): "exact" = status + whole body; "fields" = status, type, param, code + shape
ERRORS: dict[str, tuple[str, str, object, str]] = {
    "malformed_json": ("POST", "/v1/completions", b'{"model": "tiny", "prompt": "x",, }', "fields"),
    "chat_malformed_json": ("POST", "/v1/chat/completions", b'{"model": "tiny", "messages": [}', "fields"),
    "chat_missing_messages": ("POST", "/v1/chat/completions", {"model": "tiny"}, "exact"),
    "unknown_model": ("POST", "/v1/completions", {"model": "nope", "prompt": "hi", "max_tokens": 2}, "exact"),
    "chat_unknown_model": ("POST", "/v1/chat/completions", {"model": "nope", "messages": CHAT_MSGS}, "exact"),
    "negative_max_tokens": ("POST", "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": -1}, "exact"),
    "chat_negative_max_tokens": ("POST", "/v1/chat/completions",
                                 {"model": "tiny", "messages": CHAT_MSGS, "max_tokens": -1}, "exact"),
    "huge_max_tokens": ("POST", "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 5000}, "exact"),
    "prompt_too_long": ("POST", "/v1/completions", {"model": "tiny", "prompt": _long_prompt(3000), "max_tokens": 1},
                        "exact"),
    "stream_prompt_too_long": ("POST", "/v1/completions",
                               {"model": "tiny", "prompt": _long_prompt(3000), "max_tokens": 1, "stream": True},
                               "exact"),
    "chat_prompt_too_long": ("POST", "/v1/chat/completions",
                             {"model": "tiny", "messages": [{"role": "user", "content": _long_prompt(3000)}]}, "exact"),
    "wrong_method": ("GET", "/v1/completions", None, "exact"),
    "unknown_path": ("POST", "/v1/nope", {"model": "tiny"}, "exact"),
}


def _call(h: ServerHandle, method: str, path: str, body: object) -> HttpResult:
    return http(h.base_url, path, body, method=method)


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_error_matches(vllm_tiny, sim, case: str) -> None:
    method, path, body, how = ERRORS[case]
    v, s = (_call(h, method, path, body) for _, h in both(vllm_tiny, sim))
    assert v.status >= 400, f"vLLM accepted {case}: {v.body!r}"
    assert s.status == v.status, (s.status, s.body)
    vb, sb = v.json(), s.json()
    if how == "exact":
        assert sb == vb
    else:
        assert shape(sb) == shape(vb)
        assert {k: sb["error"][k] for k in ("type", "param", "code")} == {k: vb["error"][k] for k in ("type", "param", "code")}
    if v.status == 405:
        assert s.headers.get("allow") == v.headers.get("allow")


# ---------------------------------------------------------------- metrics

# Families every vLLM-compatible server must expose; exotic vLLM metrics (mm cache, flops, ...) are not required.
REQUIRED_METRICS = (
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:cache_config_info", "vllm:lora_requests_info",
    "vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:prompt_tokens", "vllm:generation_tokens",
    "vllm:num_preemptions", "vllm:request_success",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:request_time_per_output_token_seconds", "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds", "vllm:request_inference_time_seconds", "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds", "vllm:request_prompt_tokens", "vllm:request_generation_tokens",
    "vllm:iteration_tokens_total", "vllm:request_params_max_tokens",
)
CACHE_CONFIG_LABELS = {"block_size", "num_gpu_blocks", "num_cpu_blocks", "enable_prefix_caching", "engine"}


def metric_families(h: ServerHandle) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names without ``le``) as a Prometheus client sees them."""
    text = http(h.base_url, "/metrics").body.decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        labels = frozenset(k for smp in fam.samples for k in smp.labels if k not in ("le", "quantile"))
        out[fam.name] = (fam.type, labels)
    return out


def test_metrics_names_types_labels(vllm_tiny, sim) -> None:
    for _, h in both(vllm_tiny, sim):  # make every histogram/counter have samples
        http(h.base_url, "/v1/completions", {"model": "tiny", "prompt": "metrics", "max_tokens": 3})
    v, s = metric_families(vllm_tiny), metric_families(sim)
    missing = [m for m in REQUIRED_METRICS if m not in s]
    assert not missing, f"sim lacks {missing}"
    assert all(m in v for m in REQUIRED_METRICS), [m for m in REQUIRED_METRICS if m not in v]
    wrong = {m: (s[m], v[m]) for m in REQUIRED_METRICS if m != "vllm:cache_config_info" and s[m] != v[m]}
    assert not wrong, f"type/labels differ (sim, vllm): {wrong}"
    assert s["vllm:cache_config_info"][0] == "gauge"
    assert CACHE_CONFIG_LABELS <= s["vllm:cache_config_info"][1] and CACHE_CONFIG_LABELS <= v["vllm:cache_config_info"][1]


def test_cache_config_values_equal(vllm_tiny, sim) -> None:
    def info(h: ServerHandle) -> dict[str, str]:
        text = http(h.base_url, "/metrics").body.decode()
        fam = next(f for f in text_string_to_metric_families(text) if f.name == "vllm:cache_config_info")
        return {k: fam.samples[0].labels[k] for k in ("block_size", "num_gpu_blocks", "enable_prefix_caching")}

    assert info(sim) == info(vllm_tiny)


# ---------------------------------------------------------------- prefix cache + KV events


def test_cached_tokens_equal(vllm_tiny, sim) -> None:
    prompt = unique_prompt(120)
    usages = {}
    for name, h in both(vllm_tiny, sim):
        cold(name, h)
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 2}
        first = http(h.base_url, "/v1/completions", body).json()["usage"]
        second = http(h.base_url, "/v1/completions", body).json()["usage"]
        assert first["prompt_tokens_details"]["cached_tokens"] == 0, name
        usages[name] = second
    n = usages["vllm"]["prompt_tokens"]
    assert usages["vllm"]["prompt_tokens_details"]["cached_tokens"] == (n - 1) // BLOCK_SIZE * BLOCK_SIZE > 0
    assert usages["sim"] == usages["vllm"]


def _stored(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "BlockStored"]


@pytest.fixture(scope="module")
def subs(vllm_tiny, sim) -> Iterator[dict[str, KvEventSubscriber]]:
    out = {}
    try:
        for name, h in both(vllm_tiny, sim):
            out[name] = KvEventSubscriber(h.zmq_endpoint, h.topic)
            subscribe_ready(h.base_url, out[name])
        yield out
    finally:
        for s in out.values():
            s.close()


def _drain(sub: KvEventSubscriber) -> None:
    while sub.recv(0.3) is not None:
        pass


def test_kv_events_block_stored(vllm_tiny, sim, subs, tok) -> None:
    prompt = unique_prompt(90)
    n_prompt = len(tok.encode(prompt))
    # just enough output to fill the prompt's partial block (and so announce one output block)
    max_tokens = BLOCK_SIZE - n_prompt % BLOCK_SIZE + 1
    n_blocks = (n_prompt + max_tokens - 1) // BLOCK_SIZE  # computed tokens: the last sampled one has no KV yet
    assert n_blocks == n_prompt // BLOCK_SIZE + 1
    seen = {}
    for name, h in both(vllm_tiny, sim):
        cold(name, h)
        _drain(subs[name])
        res = http(h.base_url, "/v1/completions", {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens,
                                                   "ignore_eos": True})
        assert res.status == 200, (name, res.body)
        events = subs[name].events_until(lambda ev: sum(len(e["block_hashes"]) for e in _stored(ev)) >= n_blocks)
        stored = _stored(events)
        assert sum(len(e["block_hashes"]) for e in stored) == n_blocks, (name, [len(e["block_hashes"]) for e in stored])
        assert stored[0]["parent_block_hash"] is None, name
        for prev, cur in zip(stored, stored[1:], strict=False):
            assert cur["parent_block_hash"] == prev["block_hashes"][-1], f"{name}: parent chain broken"
        tokens = [t for e in stored for t in e["token_ids"]]
        assert len(tokens) == n_blocks * BLOCK_SIZE and tokens[:n_prompt] == tok.encode(prompt), name
        assert all(e["block_size"] == BLOCK_SIZE and e["medium"] == "GPU" for e in stored), name
        seen[name] = stored
    assert [shape(e) for e in seen["sim"]] == [shape(e) for e in seen["vllm"]]
    assert [len(e["block_hashes"]) for e in seen["sim"]] == [len(e["block_hashes"]) for e in seen["vllm"]]


def test_kv_events_block_removed_on_eviction(vllm_tiny, sim, subs, tok) -> None:
    num_blocks = vllm_num_gpu_blocks(vllm_tiny)
    per_prompt = 1500  # tokens; enough prompts to need more blocks than the cache holds
    n_prompts = num_blocks * BLOCK_SIZE // per_prompt + 2
    base = tok.encode(" ".join(["beta"] * (per_prompt + 10)), add_special_tokens=False)[: per_prompt - 40]
    prompts = [unique_prompt(8) + tok.decode(base) for _ in range(n_prompts)]
    # at least this many of our own blocks cannot fit, so at least this many BlockRemoved must come
    min_removed = n_prompts * (per_prompt // BLOCK_SIZE) - num_blocks
    removed = {}
    for name, h in both(vllm_tiny, sim):
        _drain(subs[name])
        for p in prompts:
            res = http(h.base_url, "/v1/completions", {"model": "tiny", "prompt": p, "max_tokens": 1})
            assert res.status == 200, (name, res.body)
        events = subs[name].events_until(
            lambda ev: sum(e["type"] == "BlockRemoved" for e in ev) >= min_removed, timeout_s=20.0)
        gone = [e for e in events if e["type"] == "BlockRemoved"]
        assert len(gone) >= min_removed, (name, len(gone), min_removed)
        assert gone, f"{name}: no BlockRemoved after overfilling {num_blocks} blocks"
        assert all(len(e["block_hashes"]) == 1 and e.get("medium", "GPU") == "GPU" for e in gone), name
        removed[name] = gone
    assert {repr(shape(e)) for e in removed["sim"]} == {repr(shape(e)) for e in removed["vllm"]}


def test_kv_events_lora_blocks(vllm_tiny, sim, subs, tok) -> None:
    """Blocks computed under a LoRA are announced with its name (the index keys blocks per adapter)."""
    prompt = unique_prompt(60)
    n_blocks = len(tok.encode(prompt)) // BLOCK_SIZE  # max_tokens=1: prompt blocks only
    seen = {}
    for name, h in both(vllm_tiny, sim):
        cold(name, h)
        _drain(subs[name])
        res = http(h.base_url, "/v1/completions", {"model": "lora1", "prompt": prompt, "max_tokens": 1})
        assert res.status == 200, (name, res.body)
        stored = _stored(subs[name].events_until(
            lambda ev: sum(len(e["block_hashes"]) for e in _stored(ev)) >= n_blocks))
        assert sum(len(e["block_hashes"]) for e in stored) == n_blocks, name
        assert all(e["lora_name"] == "lora1" and isinstance(e["lora_id"], int) for e in stored), (name, stored[0])
        seen[name] = stored
    assert [shape(e) for e in seen["sim"]] == [shape(e) for e in seen["vllm"]]
