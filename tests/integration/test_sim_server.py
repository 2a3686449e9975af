"""``lanterna sim`` as a real subprocess: vLLM 0.32's HTTP shapes and errors, metrics, KV events, LoRA, P/D.

Golden bodies come from ``reference/vllm-0.32-cpu``; shapes are compared as key order + null-ness.
"""

from __future__ import annotations

import http.client as httpclient
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from lanterna.models.tokenizer import DEFAULT_DIR
from lanterna.protocol.kv_events import REPLAY_END_SEQ, decode_payload
from tests.conftest import REFERENCE, free_port
from tests.integration.vllm_server import (
    KvEventSubscriber,
    ServerHandle,
    http,
    sse_events,
    start_sim,
    subscribe_ready,
)

pytestmark = pytest.mark.integration
MML = 2048


def ref_body(name: str) -> Any:
    return json.loads((REFERENCE / name).read_text().split("\n\n", 1)[1])


def shape(v: Any) -> Any:
    if isinstance(v, dict):
        return [(k, shape(x)) for k, x in v.items() if k not in ("text", "content")]
    if isinstance(v, list):
        return [shape(x) for x in v[:1]]
    return None if v is None else type(v).__name__


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    kv_port, replay_port = free_port(), free_port()
    cfg = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{kv_port}",
           "topic": "kv@127.0.0.1@tiny", "replay_endpoint": f"tcp://*:{replay_port}", "buffer_steps": 1000}
    extra = ["--kv-events-config", json.dumps(cfg), "--enable-lora", "--max-loras", "1"]
    with start_sim(DEFAULT_DIR, port=free_port(), extra_args=extra, log_dir=tmp_path_factory.mktemp("sim")) as h:
        h.zmq_endpoint, h.topic = f"tcp://127.0.0.1:{kv_port}", "kv@127.0.0.1@tiny"
        h.lora_modules = {"replay": replay_port}  # type: ignore[dict-item]
        yield h


def metrics(h: ServerHandle) -> dict[str, Any]:
    res = http(h.base_url, "/metrics")
    assert res.status == 200
    return {f.name: f for f in text_string_to_metric_families(res.body.decode())}


def sample(fams: dict[str, Any], family: str, sample_name: str, **labels: str) -> float:
    for s in fams[family].samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError(sample_name)


def test_completion_matches_reference_shape(sim: ServerHandle) -> None:
    res = http(sim.base_url, "/v1/completions", {"model": "tiny", "prompt": "hello there", "max_tokens": 5})
    assert res.status == 200 and res.headers["content-type"].startswith("application/json")
    body = res.json()
    assert shape(body) == shape(ref_body("completion.txt"))
    assert body["id"].startswith("cmpl-") and len(body["id"]) == 21
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] == "length"


def test_chat_matches_reference_shape(sim: ServerHandle) -> None:
    res = http(sim.base_url, "/v1/chat/completions",
               {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    body = res.json()
    assert shape(body) == shape(ref_body("chat.txt"))
    assert body["id"].startswith("chatcmpl-") and body["usage"]["completion_tokens"] == 4


def test_chat_stream_frames(sim: ServerHandle) -> None:
    frames = sse_events(sim.base_url, "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True,
                         "stream_options": {"include_usage": True}})
    assert frames[-1] == "[DONE]"
    first, *content, usage = frames[:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * (len(content) - 1) + ["length"]  # type: ignore[index]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3  # type: ignore[index]
    assert set(usage["usage"]["prompt_tokens_details"]) == {"cached_tokens", "created_cache_tokens"}  # type: ignore[index]


def test_completion_stream_without_usage(sim: ServerHandle) -> None:
    frames = sse_events(sim.base_url, "/v1/completions", {"prompt": [5, 6, 7], "max_tokens": 4, "stream": True})
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert all(c["choices"] for c in chunks)  # type: ignore[index]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    assert [("system_fingerprint" in c) for c in chunks] == [False] * (len(chunks) - 1) + [True]  # type: ignore[operator]


def test_repeated_prefix_reports_cached_tokens(sim: ServerHandle) -> None:
    prompt = "cached prefix experiment " + " ".join(f"w{i}" for i in range(150))
    first = http(sim.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 2}).json()
    second = http(sim.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 2}).json()
    n = first["usage"]["prompt_tokens"]  # type: ignore[index]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # type: ignore[index]
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
    assert 0 < cached < n and cached % 32 == 0


def test_openai_client(sim: ServerHandle) -> None:
    import openai

    client = openai.OpenAI(base_url=sim.base_url + "/v1", api_key="x", max_retries=0)
    out = client.completions.create(model="tiny", prompt="openai says", max_tokens=3)
    assert out.usage is not None and out.usage.completion_tokens == 3
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=3, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert [m.id for m in client.models.list()][0] == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=1)


LONG = list(range(1, MML + 2))  # 2049 token ids


@pytest.mark.parametrize(("path", "body", "golden"), [
    ("/v1/completions", b'{"model":"tiny","prompt":"ab",}', "err_malformed_json.txt"),
    ("/v1/chat/completions", b'{"model":"tiny","messages": ,}', "err_chat_malformed_json.txt"),
    ("/v1/chat/completions", {"model": "tiny"}, "err_chat_missing_messages.txt"),
    ("/v1/completions", {"model": "nope", "prompt": "x"}, "err_missing_model.txt"),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": -1}, "err_negative_max_tokens.txt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
     "err_chat_negative_max_tokens.txt"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 5000}, "err_prompt_plus_max_tokens.txt"),
    ("/v1/completions", {"prompt": LONG, "max_tokens": 1}, "err_prompt_too_long.txt"),
    ("/v1/completions", {"prompt": LONG, "max_tokens": 1, "stream": True}, "err_stream_too_long.txt"),
], ids=["malformed", "chat-malformed", "missing-messages", "unknown-model", "neg-max-tokens", "chat-neg",
        "max-tokens-over-len", "prompt-too-long", "stream-too-long"])
def test_bad_input_matches_vllm(sim: ServerHandle, path: str, body: Any, golden: str) -> None:
    res = http(sim.base_url, path, body)
    ref = ref_body(golden)
    assert res.status == ref["error"]["code"]
    assert res.json() == ref


def test_routing_errors_and_oversize(sim: ServerHandle) -> None:
    res = http(sim.base_url, "/v1/completions", method="GET")
    assert (res.status, res.json(), res.headers["allow"]) == (405, {"detail": "Method Not Allowed"}, "POST")
    res = http(sim.base_url, "/v1/nothing")
    assert (res.status, res.json()) == (404, {"detail": "Not Found"})
    res = http(sim.base_url, "/v1/completions", b'{"prompt": "' + b"a" * (17 << 20) + b'"}')
    assert res.status == 413 and res.json()["error"]["code"] == 413  # type: ignore[index]
    res = http(sim.base_url, "/v1/completions", {"prompt": "x", "n": 2})
    assert res.status == 400 and res.json()["error"]["param"] == "n"  # type: ignore[index]
    res = http(sim.base_url, "/v1/completions", {"prompt": [10**9]})
    assert res.status == 400
    assert http(sim.base_url, "/health").status == 200
    ok = http(sim.base_url, "/v1/completions", {"prompt": "still serving", "max_tokens": 1})
    assert ok.status == 200


def test_prompt_plus_max_tokens_over_context_is_cut(sim: ServerHandle) -> None:
    prompt = list(range(1, MML - 4))
    body = http(sim.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 100}).json()
    assert body["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    assert body["usage"]["total_tokens"] == MML  # type: ignore[index]
    nomodel = http(sim.base_url, "/v1/completions", {"prompt": "no model", "max_tokens": 2}).json()
    assert nomodel["model"] == "tiny"  # type: ignore[index]


def test_tokenize_detokenize(sim: ServerHandle) -> None:
    tok = http(sim.base_url, "/tokenize", {"model": "tiny", "prompt": "hello world"}).json()
    assert list(tok) == list(ref_body("tokenize.txt")) and tok["max_model_len"] == MML  # type: ignore[index]
    assert tok["count"] == len(tok["tokens"])  # type: ignore[index]
    text = http(sim.base_url, "/detokenize", {"model": "tiny", "tokens": tok["tokens"]}).json()  # type: ignore[index]
    assert "hello world" in text["prompt"]  # type: ignore[index]


def test_metrics_names_and_types(sim: ServerHandle) -> None:
    http(sim.base_url, "/v1/completions", {"prompt": "metrics please", "max_tokens": 3})
    fams = metrics(sim)
    types = dict(line.split() for line in (REFERENCE / "metric_types.txt").read_text().splitlines() if line)
    ours = {n: f.type for n, f in fams.items() if n.startswith("vllm:")}
    assert len(ours) >= 20
    for name, kind in ours.items():
        ref_name = name + "_total" if kind == "counter" else name
        assert types.get(ref_name) == kind, name
    lab = {"model_name": "tiny", "engine": "0"}
    assert sample(fams, "vllm:generation_tokens", "vllm:generation_tokens_total", **lab) >= 3
    assert sample(fams, "vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_count", **lab) >= 1
    info = next(s for s in fams["vllm:cache_config_info"].samples)
    assert info.labels["block_size"] == "32" and info.labels["enable_prefix_caching"] == "True"
    assert int(info.labels["num_gpu_blocks"]) > 0
    assert "lanterna_sim_step_lag_seconds" in fams


def test_kv_events_stored_chained_and_replayed(sim: ServerHandle) -> None:
    assert sim.zmq_endpoint is not None
    sub = KvEventSubscriber(sim.zmq_endpoint, "kv@")
    try:
        subscribe_ready(sim.base_url, sub)
        prompt = list(range(100, 100 + 32 * 3 + 5))  # 3 full blocks + a partial one
        http(sim.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 1})
        events = sub.events_until(lambda evs: any(e["type"] == "BlockStored" for e in evs))
    finally:
        sub.close()
    stored = [e for e in events if e["type"] == "BlockStored"]
    tokens = [t for e in stored for t in e["token_ids"]]  # type: ignore[union-attr]
    assert tokens == prompt[:96] and stored[0]["parent_block_hash"] is None
    hashes = [h for e in stored for h in e["block_hashes"]]  # type: ignore[union-attr]
    assert len(hashes) == 3 and all(e["block_size"] == 32 for e in stored)
    for prev, nxt in zip(stored, stored[1:], strict=False):
        assert nxt["parent_block_hash"] == prev["block_hashes"][-1]  # type: ignore[index]
    # replay from 0 over a DEALER: every buffered message, seq from 0, then the end marker
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{sim.lora_modules['replay']}")
    try:
        dealer.send_multipart([b"", (0).to_bytes(8, "big")])
        seqs = []
        while True:
            assert dealer.poll(10000), "replay timed out"
            frames = dealer.recv_multipart()
            assert frames[0] == b"" and frames[1] == b"kv@127.0.0.1@tiny"
            seq = int.from_bytes(frames[2], "big")
            if seq == REPLAY_END_SEQ:
                assert frames[3] == b""
                break
            decode_payload(frames[3])
            seqs.append(seq)
    finally:
        dealer.close(0)
    assert seqs[0] == 0 and seqs == list(range(len(seqs))) and len(seqs) >= 2


def test_lora_load_unload_and_models(sim: ServerHandle) -> None:
    res = http(sim.base_url, "/v1/load_lora_adapter", {"lora_name": "ad1", "lora_path": "/adapters/ad1"})
    assert res.status == 200 and "added successfully" in res.body.decode()
    again = http(sim.base_url, "/v1/load_lora_adapter", {"lora_name": "ad1", "lora_path": "/adapters/ad1"})
    assert again.status == 400 and "already been loaded" in again.json()["error"]["message"]  # type: ignore[index]
    models = http(sim.base_url, "/v1/models").json()["data"]  # type: ignore[index]
    assert [(m["id"], m["parent"]) for m in models] == [("tiny", None), ("ad1", "tiny")]
    assert shape(models[1]) == shape(ref_body("models.txt")["data"][1])
    out = http(sim.base_url, "/v1/completions", {"model": "ad1", "prompt": "lora", "max_tokens": 2}).json()
    assert out["model"] == "ad1"  # type: ignore[index]
    assert "lanterna" not in json.dumps(metrics(sim)["vllm:lora_requests_info"].samples[0].labels)
    res = http(sim.base_url, "/v1/unload_lora_adapter", {"lora_name": "ad1"})
    assert res.status == 200 and "removed successfully" in res.body.decode()
    assert http(sim.base_url, "/v1/unload_lora_adapter", {"lora_name": "ad1"}).status == 404
    assert http(sim.base_url, "/v1/completions", {"model": "ad1", "prompt": "x"}).status == 404


def test_pd_kv_transfer_params_round_trip(sim: ServerHandle) -> None:
    prompt = "disaggregated " * 40
    kv = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
          "remote_block_ids": None, "remote_host": None, "remote_port": None}
    pre = http(sim.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 1, "kv_transfer_params": kv}).json()
    params = pre["kv_transfer_params"]  # type: ignore[index]
    assert params["do_remote_prefill"] is True and params["remote_block_ids"]
    assert {"remote_engine_id", "remote_host", "remote_port", "tp_size"} <= set(params)
    dec = http(sim.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 4, "kv_transfer_params": params})
    body = dec.json()
    assert dec.status == 200 and body["usage"]["completion_tokens"] == 4  # type: ignore[index]
    assert body["kv_transfer_params"] is None  # type: ignore[index]


def test_client_disconnect_aborts(sim: ServerHandle) -> None:
    before = metrics(sim)
    lab = {"model_name": "tiny", "engine": "0", "finished_reason": "abort"}
    aborted0 = sample(before, "vllm:request_success", "vllm:request_success_total", **lab)
    conn = httpclient.HTTPConnection("127.0.0.1", sim.port, timeout=30)
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "leave early", "max_tokens": 1500,
                                                         "stream": True}), {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read(6) == b"data: "
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    deadline = time.monotonic() + 20
    while True:
        fams = metrics(sim)
        if (sample(fams, "vllm:request_success", "vllm:request_success_total", **lab) == aborted0 + 1
                and sample(fams, "vllm:num_requests_running", "vllm:num_requests_running") == 0):
            break
        assert time.monotonic() < deadline, "the abandoned stream was not aborted"
        http(sim.base_url, "/health")


@pytest.mark.parametrize("kind", ["http_500", "http_429", "connection_drop", "connection_drop_mid", "dead"])
def test_failure_injection(tmp_path: Any, kind: str) -> None:
    extra = ["--failure-rate", "1", "--failure-types", kind]
    body = {"prompt": "x", "max_tokens": 50, "stream": kind == "connection_drop_mid"}
    with start_sim(DEFAULT_DIR, port=free_port(), extra_args=extra, log_dir=tmp_path) as h:
        if kind.startswith("connection_drop"):
            with pytest.raises((ConnectionError, httpclient.HTTPException, OSError)):
                res = http(h.base_url, "/v1/completions", body)
                assert res.body.count(b"data: ") < 50  # mid-stream drop: truncated, never [DONE]
                assert b"[DONE]" not in res.body
                raise ConnectionError("truncated stream")
        else:
            res = http(h.base_url, "/v1/completions", body)
            expected = {"http_500": 500, "http_429": 429, "dead": 503}[kind]
            assert res.status == expected and set(res.json()["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
        assert http(h.base_url, "/health").status == (503 if kind == "dead" else 200)


def test_eviction_emits_block_removed(tmp_path: Any) -> None:
    kv_port = free_port()
    with start_sim(DEFAULT_DIR, port=free_port(), kv_events_port=kv_port, num_gpu_blocks=8, log_dir=tmp_path) as h:
        sub = KvEventSubscriber(f"tcp://127.0.0.1:{kv_port}", "kv@")
        try:
            subscribe_ready(h.base_url, sub)
            for i in range(4):
                prompt = list(range(1000 * (i + 1), 1000 * (i + 1) + 32 * 3))
                assert http(h.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 1}).status == 200
            events = sub.events_until(lambda evs: any(e["type"] == "BlockRemoved" for e in evs))
        finally:
            sub.close()
    removed = [e for e in events if e["type"] == "BlockRemoved"]
    assert removed and all(len(e["block_hashes"]) >= 1 for e in removed)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [
    ["--port", "abc"], ["--timing", "warp"], ["--profile", "nope"], ["--kv-events-config", "{bad"],
    ["--failure-types", "meteor"], ["--max-model-len", "0"], ["--lora-modules", "noequals"],
    ["--kv-offloading-size", "-1"],
    ["--kv-transfer-config", '{"kv_connector":"OffloadingConnector","kv_connector_extra_config":{}}'],
], ids=["port", "timing", "profile", "kv-json", "failure", "max-model-len", "lora", "offload-size", "offload-cfg"])
def test_bad_flags_exit_with_one_line(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "lanterna.cli.main", "sim", "--model", "m", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lanterna sim: error:"), proc.stderr


def test_array_encoding_decodes_to_the_same_events(tmp_path: Any) -> None:
    kv_port = free_port()
    extra = ["--kv-event-encoding", "array", "--time-scale", "0"]
    with start_sim(DEFAULT_DIR, port=free_port(), kv_events_port=kv_port, extra_args=extra, log_dir=tmp_path) as h:
        sub = KvEventSubscriber(f"tcp://127.0.0.1:{kv_port}", "kv@")
        try:
            subscribe_ready(h.base_url, sub)
            prompt = list(range(7000, 7000 + 64))
            http(h.base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 1})
            assert sub.sock.poll(10000)
            frames = sub.sock.recv_multipart()
        finally:
            sub.close()
    raw = msgpack.unpackb(frames[2], raw=False)
    assert isinstance(raw[1][0], list) and raw[1][0][0] == "BlockStored"  # positional [tag, ...]
    batch = decode_payload(frames[2])
    assert [t for e in batch.events for t in e.token_ids] == prompt  # type: ignore[union-attr]


def test_cpu_tier_offloads_evicted_blocks_and_reloads_them(tmp_path: Any) -> None:
    """8 GPU blocks + a 64-block CPU tier (vLLM's OffloadingConnector spelling, 4 MiB per 32-token block).

    Evicted blocks reappear as ``BlockStored`` medium CPU (no tokens, no parent); repeating the prefix loads
    them back: ``cached_tokens`` counts them (vLLM counts connector hits in ``num_cached_tokens``), while
    ``vllm:prefix_cache_hits`` stays GPU-only, and the reloaded blocks are re-announced on the GPU."""
    kv_port = free_port()
    cfg = {"kv_connector": "OffloadingConnector", "kv_role": "kv_both",
           "kv_connector_extra_config": {"cpu_bytes_to_use": 64 * 32 * 131072}}
    extra = ["--kv-transfer-config", json.dumps(cfg)]
    lab = {"model_name": "tiny", "engine": "0"}
    prompt_a = list(range(2000, 2000 + 32 * 3 + 5))  # 3 full blocks + a partial one
    with start_sim(DEFAULT_DIR, port=free_port(), kv_events_port=kv_port, num_gpu_blocks=8, extra_args=extra,
                   log_dir=tmp_path) as h:
        info = next(s for s in metrics(h)["vllm:cache_config_info"].samples)
        assert (info.labels["num_cpu_blocks"], info.labels["num_gpu_blocks"]) == ("64", "8")
        sub = KvEventSubscriber(f"tcp://127.0.0.1:{kv_port}", "kv@")
        try:
            subscribe_ready(h.base_url, sub)
            first = http(h.base_url, "/v1/completions", {"prompt": prompt_a, "max_tokens": 1}).json()
            assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # type: ignore[index]
            gpu = sub.events_until(lambda evs: any(e["type"] == "BlockStored" for e in evs))
            a_hashes = [x for e in gpu if e["type"] == "BlockStored" for x in e["block_hashes"]]  # type: ignore[union-attr]
            assert len(a_hashes) == 3
            for i in range(3):  # unrelated prompts push A out of the 8-block GPU pool
                other = list(range(3000 + 200 * i, 3000 + 200 * i + 32 * 3 + 5))
                assert http(h.base_url, "/v1/completions", {"prompt": other, "max_tokens": 1}).status == 200

            def offloaded(evs: list[dict[str, Any]]) -> set[int]:
                return {x for e in evs if e["type"] == "BlockStored" and e.get("medium") == "CPU"
                        for x in e["block_hashes"]}  # type: ignore[union-attr]

            evicted = sub.events_until(lambda evs: set(a_hashes) <= offloaded(evs))
            assert set(a_hashes) <= offloaded(evicted)
            cpu_events = [e for e in evicted if e.get("medium") == "CPU" and e["type"] == "BlockStored"]
            assert all(not e.get("token_ids") and e.get("parent_block_hash") is None for e in cpu_events)
            assert any(e["type"] == "BlockRemoved" and e.get("medium", "GPU") == "GPU" for e in evicted)
            hits0 = sample(metrics(h), "vllm:prefix_cache_hits", "vllm:prefix_cache_hits_total", **lab)
            again = http(h.base_url, "/v1/completions", {"prompt": prompt_a, "max_tokens": 1}).json()
            assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 96  # type: ignore[index]
            reload = sub.events_until(lambda evs: any(e["type"] == "BlockStored" and e.get("medium", "GPU") == "GPU"
                                                      and a_hashes[0] in e["block_hashes"] for e in evs))  # type: ignore[operator]
            assert any(e["type"] == "BlockStored" and a_hashes[0] in e["block_hashes"] for e in reload)  # type: ignore[operator]
            assert sample(metrics(h), "vllm:prefix_cache_hits", "vllm:prefix_cache_hits_total", **lab) == hits0
        finally:
            sub.close()


def test_server_start_moves_to_fresh_ports_when_its_port_is_taken(tmp_path: Any) -> None:
    """A port picked free can be taken before the server binds it (the CI flake: vLLM's KV-event socket): the
    harness starts the server again on fresh ports instead of failing every test that needs it."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with start_sim(DEFAULT_DIR, port=port, extra_args=["--timing", "constant"], log_dir=tmp_path) as sim:
            assert sim.port != port
            assert http(sim.base_url, "/health").status == 200
        assert any("address already in use" in p.read_text(errors="replace").lower() for p in tmp_path.glob("*.log"))
