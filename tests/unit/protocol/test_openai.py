"""protocol.openai: vLLM 0.32's exact error bodies (golden strings from reference/) and response shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.conftest import REFERENCE

from lanterna.errors import LanternaError
from lanterna.protocol import openai as oai


def ref_body(name: str) -> Any:
    text = (REFERENCE / name).read_text()
    return json.loads(text.split("\n\n", 1)[1])


def ref_frames(name: str) -> list[Any]:
    body = (REFERENCE / name).read_text().split("\n\n", 1)[1]
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:])
            for line in body.splitlines() if line.startswith("data: ")]


def body_of(exc: LanternaError) -> dict[str, Any]:
    return json.loads(json.dumps(exc.body()))


def shape(v: Any) -> Any:
    """Key order and null-ness, recursively: what a strict client would notice."""
    if isinstance(v, dict):
        return [(k, shape(x)) for k, x in v.items()]
    if isinstance(v, list):
        return [shape(x) for x in v[:1]]
    return None if v is None else type(v).__name__


@pytest.mark.parametrize(("fname", "cls", "body"), [
    ("err_malformed_json.txt", oai.CompletionRequest, b'{"model":"tiny","prompt":"ab",}'),
    ("err_chat_malformed_json.txt", oai.ChatCompletionRequest, b'{"model":"tiny","messages": ,}'),
    ("err_chat_missing_messages.txt", oai.ChatCompletionRequest, b'{"model": "tiny"}'),
], ids=["malformed-json", "chat-malformed-json", "chat-missing-messages"])
def test_validation_errors_match_vllm(fname: str, cls: type, body: bytes) -> None:
    with pytest.raises(LanternaError) as info:
        oai.decode_request(body, cls)
    assert info.value.status == 400
    assert body_of(info.value) == ref_body(fname)


@pytest.mark.parametrize(("fname", "call"), [
    ("err_negative_max_tokens.txt", lambda: oai.check_max_tokens(-1, 2048)),
    ("err_chat_negative_max_tokens.txt", lambda: oai.check_max_tokens(-1, 2048)),
    ("err_prompt_plus_max_tokens.txt", lambda: oai.check_max_tokens(5000, 2048)),
    ("err_prompt_too_long.txt", lambda: oai.check_prompt_len(2049, 2048)),
    ("err_missing_model.txt", lambda: oai.resolve_model("nope", ["tiny"], [])),
], ids=["negative-max-tokens", "chat-negative-max-tokens", "max-tokens-over-len", "prompt-too-long", "unknown-model"])
def test_parameter_errors_match_vllm(fname: str, call: Any) -> None:
    with pytest.raises(LanternaError) as info:
        call()
    ref = ref_body(fname)
    assert info.value.status == ref["error"]["code"]
    assert body_of(info.value) == ref


def test_valid_requests_pass_checks() -> None:
    oai.check_max_tokens(None, 2048)
    oai.check_max_tokens(2048, 2048)
    oai.check_prompt_len(2047, 2048)
    assert oai.resolve_model(None, ["tiny", "alias"], []) == ("tiny", None)
    assert oai.resolve_model("alias", ["tiny", "alias"], []) == ("alias", None)
    assert oai.resolve_model("lora1", ["tiny"], ["lora1"]) == ("lora1", "lora1")


def test_unknown_model_lists_base_names_only() -> None:
    """Checked against real vLLM 0.32 with adapter ``lora1`` loaded: adapters are not listed."""
    with pytest.raises(LanternaError, match=r"Valid aliases: tiny, alias\.$"):
        oai.resolve_model("nope", ["tiny", "alias"], ["lora1"])


def test_text_prompt_length_is_reported_truncated() -> None:
    """vLLM tokenizes text with truncation at max_model_len + 1: a 3000-token text reports 2049."""
    with pytest.raises(LanternaError, match=r"at least 2049 input tokens.*value=2049\)$"):
        oai.check_prompt_len(3000, 2048, from_text=True)
    with pytest.raises(LanternaError, match=r"value=3000\)$"):
        oai.check_prompt_len(3000, 2048)


@pytest.mark.parametrize(("prompt", "expected"), [
    ("hi", "hi"), ([1, 2, 3], [1, 2, 3]), (["hi"], "hi"), ([[4, 5]], [4, 5]),
], ids=["text", "ids", "one-text", "one-ids"])
def test_completion_prompt_forms(prompt: Any, expected: Any) -> None:
    req = oai.decode_request(json.dumps({"prompt": prompt}).encode(), oai.CompletionRequest)
    assert oai.completion_prompt(req) == expected


@pytest.mark.parametrize("prompt", [None, ["a", "b"], [1, -2], [], [1, "x"]],
                         ids=["missing", "batch", "negative-id", "empty", "mixed"])
def test_completion_prompt_rejects(prompt: Any) -> None:
    req = oai.decode_request(json.dumps({"prompt": prompt}).encode(), oai.CompletionRequest)
    with pytest.raises(LanternaError) as info:
        oai.completion_prompt(req)
    assert info.value.status == 400


def test_type_errors_are_validation_failures() -> None:
    with pytest.raises(LanternaError) as info:
        oai.decode_request(b'{"prompt": "x", "max_tokens": "many"}', oai.CompletionRequest)
    assert info.value.status == 400 and info.value.param == "body.max_tokens"
    with pytest.raises(LanternaError) as info:
        oai.decode_request(b"[1, 2]", oai.CompletionRequest)
    assert info.value.param == "body"


def test_request_fields_decode() -> None:
    body = {"model": "tiny", "prompt": "x", "stream": True, "stream_options": {"include_usage": True},
            "kv_transfer_params": {"do_remote_decode": True, "remote_engine_id": None, "unknown": 1}, "extra": 2}
    req = oai.decode_request(json.dumps(body).encode(), oai.CompletionRequest)
    assert req.include_usage and req.kv_transfer_params is not None and req.kv_transfer_params.do_remote_decode
    chat = oai.decode_request(b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},'
                              b' {"type": "text", "text": "b"}]}]}', oai.ChatCompletionRequest)
    assert oai.chat_messages(chat) == [{"role": "user", "content": "ab"}]


def test_ids_look_like_vllm() -> None:
    rid = oai.new_id("chatcmpl-")
    assert rid.startswith("chatcmpl-") and len(rid) == len("chatcmpl-") + 16
    int(rid[len("chatcmpl-"):], 16)


def test_completion_body_shape_matches_reference() -> None:
    ref = ref_body("completion.txt")
    use = oai.usage(8, 5, 0, chat=False, stream=False)
    ours = json.loads(oai.completion_body("cmpl-0123456789abcdef", 1, "tiny", " free", "length", use))
    assert shape(ours) == shape(ref)
    assert ours["usage"] == ref["usage"]


def test_chat_body_shape_matches_reference() -> None:
    ref = ref_body("chat.txt")
    use = oai.usage(5, 4, 0, chat=True, stream=False)
    ours = json.loads(oai.chat_body("chatcmpl-0123456789abcdef", 1, "tiny", "x", "length", use))
    assert shape(ours) == shape(ref)
    assert ours["usage"] == ref["usage"]


def _frames(*chunks: bytes) -> list[Any]:
    out = []
    for c in chunks:
        assert c.startswith(b"data: ") and c.endswith(b"\n\n")
        payload = c[6:-2].decode()
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_completion_stream_shape_matches_reference() -> None:
    ref = ref_frames("completion_stream.txt")
    rid, use = "cmpl-0123456789abcdef", oai.usage(8, 3, 0, chat=False, stream=True)
    ours = _frames(oai.completion_chunk(rid, 1, "tiny", " a", None), oai.completion_chunk(rid, 1, "tiny", " b", None),
                   oai.completion_chunk(rid, 1, "tiny", " c", "length"),
                   oai.usage_chunk(rid, 1, "tiny", use, chat=False), oai.DONE_FRAME)
    assert [shape(f) for f in ours] == [shape(f) for f in ref]
    assert ours[3]["usage"] == ref[3]["usage"]


def test_chat_stream_shape_matches_reference() -> None:
    ref = ref_frames("chat_stream.txt")
    rid, use = "chatcmpl-0123456789abcdef", oai.usage(5, 3, 0, chat=True, stream=True)
    ours = _frames(oai.chat_role_chunk(rid, 1, "tiny"), oai.chat_chunk(rid, 1, "tiny", "a", None),
                   oai.chat_chunk(rid, 1, "tiny", "b", None), oai.chat_chunk(rid, 1, "tiny", "c", "length"),
                   oai.usage_chunk(rid, 1, "tiny", use, chat=True), oai.DONE_FRAME)
    assert [shape(f) for f in ours] == [shape(f) for f in ref]
    assert ours[4]["usage"] == ref[4]["usage"]


def test_model_card_shape_matches_reference() -> None:
    ref = ref_body("models.txt")["data"]
    assert shape(oai.model_card("tiny", 1, "/m", None, 2048)) == shape(ref[0])
    assert shape(oai.model_card("lora1", 1, "/l", "tiny", None)) == shape(ref[1])


def test_error_frame() -> None:
    frame = oai.error_frame({"error": {"message": "x", "type": "InternalServerError", "param": None, "code": 500}})
    assert frame.startswith(b"data: {") and frame.endswith(b"}\n\n")


def test_terminal_chunk_without_usage_carries_fingerprint() -> None:
    """vLLM stamps ``system_fingerprint`` on the finishing chunk only when no usage chunk follows."""
    last = _frames(oai.completion_chunk("cmpl-0", 1, "tiny", "x", "length", None, True))[0]
    assert list(last)[-1] == "system_fingerprint" and last["system_fingerprint"] == oai.SYSTEM_FINGERPRINT
    chat_last = _frames(oai.chat_chunk("chatcmpl-0", 1, "tiny", "x", "length", None, True))[0]
    assert list(chat_last)[-1] == "system_fingerprint"
    assert "system_fingerprint" not in _frames(oai.completion_chunk("cmpl-0", 1, "tiny", "x", None))[0]


def test_continuous_usage_sits_before_fingerprint() -> None:
    frame = _frames(oai.completion_chunk("cmpl-0", 1, "tiny", "x", "length", oai.running_usage(3, 2), True))[0]
    assert list(frame)[-2:] == ["usage", "system_fingerprint"]
    assert frame["usage"] == {"prompt_tokens": 3, "total_tokens": 5, "completion_tokens": 2}
    role = _frames(oai.chat_role_chunk("chatcmpl-0", 1, "tiny", oai.running_usage(3, 0)))[0]
    assert list(role)[-3:] == ["usage", "prompt_token_ids", "prompt_text"]
