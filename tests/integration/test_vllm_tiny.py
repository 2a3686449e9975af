"""The tiny model really serves in vLLM: completions, chat template, tokenizer parity, KV events, LoRA."""

from __future__ import annotations

import uuid

import pytest

from lanterna.models.tokenizer import load_tokenizer
from tests.integration.vllm_server import BLOCK_SIZE, KvEventSubscriber, http, sse_events, subscribe_ready

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_completion(vllm_tiny) -> None:
    res = http(vllm_tiny.base_url, "/v1/completions", {"model": "tiny", "prompt": "def main():", "max_tokens": 5})
    assert res.status == 200, res.body
    body = res.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["usage"]["completion_tokens"] == 5 or body["choices"][0]["finish_reason"] == "stop"


def test_chat_uses_template(vllm_tiny, tok) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    res = http(vllm_tiny.base_url, "/v1/chat/completions", {"model": "tiny", "messages": msgs, "max_tokens": 3})
    assert res.status == 200, res.body
    body = res.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["prompt_tokens"] == len(tok.encode_chat(msgs))


def test_chat_stream_shape(vllm_tiny) -> None:
    chunks = sse_events(vllm_tiny.base_url, "/v1/chat/completions", {
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True,
        "stream_options": {"include_usage": True}})
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("text", ["Hello, world! héllo ✓", "import os\nprint(os.getcwd())", "a  b\t\tc 日本"],
                         ids=["mixed", "code", "whitespace"])
def test_tokenize_matches_ours(vllm_tiny, tok, text: str) -> None:
    res = http(vllm_tiny.base_url, "/tokenize", {"model": "tiny", "prompt": text})
    assert res.json()["tokens"] == tok.encode(text)


def test_tokenize_chat_matches_ours(vllm_tiny, tok) -> None:
    msgs = [{"role": "user", "content": "what is 2+2?"}]
    res = http(vllm_tiny.base_url, "/tokenize", {"model": "tiny", "messages": msgs})
    assert res.json()["tokens"] == tok.encode_chat(msgs)


def test_kv_events_arrive(vllm_tiny, tok) -> None:
    sub = KvEventSubscriber(vllm_tiny.zmq_endpoint, vllm_tiny.topic)
    try:
        subscribe_ready(vllm_tiny.base_url, sub)
        prompt = f"{uuid.uuid4().hex} " + "lorem ipsum " * 50
        n_prompt = len(tok.encode(prompt))
        http(vllm_tiny.base_url, "/v1/completions", {"model": "tiny", "prompt": prompt, "max_tokens": 1})
        stored = sub.events_until(lambda ev: sum(len(e.get("block_hashes", [])) for e in ev
                                                 if e["type"] == "BlockStored") >= n_prompt // BLOCK_SIZE)
        blocks = [e for e in stored if e["type"] == "BlockStored"]
        assert sum(len(e["block_hashes"]) for e in blocks) == n_prompt // BLOCK_SIZE
        assert blocks[0]["parent_block_hash"] is None
        assert blocks[0]["token_ids"][:BLOCK_SIZE] == tok.encode(prompt)[:BLOCK_SIZE]
    finally:
        sub.close()


def test_lora_listed_and_usable(vllm_tiny) -> None:
    models = {m["id"]: m for m in http(vllm_tiny.base_url, "/v1/models").json()["data"]}
    assert models["lora1"]["parent"] == "tiny"
    body = {"prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0}
    base = http(vllm_tiny.base_url, "/v1/completions", {"model": "tiny", **body}).json()
    lora = http(vllm_tiny.base_url, "/v1/completions", {"model": "lora1", **body}).json()
    assert lora["model"] == "lora1"
    assert lora["choices"][0]["text"] != base["choices"][0]["text"]  # the adapter changes the weights
