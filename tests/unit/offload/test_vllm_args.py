"""vLLM offload flags: the exact bytes of PROTOCOLS.md section 8, the env, and each output format."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
import yaml

from lanterna.offload.vllm_args import FsTier, OffloadArgsError, OffloadSpec, gib_to_bytes, vllm_offload_args

CPU_JSON = ('{"kv_connector":"OffloadingConnector","kv_role":"kv_both",'
            '"kv_connector_extra_config":{"cpu_bytes_to_use":107374182400}}')
FS_JSON = ('{"kv_connector":"OffloadingConnector","kv_role":"kv_both","kv_connector_extra_config":'
           '{"spec_name":"TieringOffloadingSpec","cpu_bytes_to_use":107374182400,"block_size":256,'
           '"secondary_tiers":[{"type":"fs","root_dir":"/mnt/kv","n_read_threads":16,"n_write_threads":16}]}}')


@pytest.mark.parametrize(("spec", "expected"), [
    (OffloadSpec(gib_to_bytes(100)), CPU_JSON),
    (OffloadSpec(gib_to_bytes(100), FsTier("/mnt/kv")), FS_JSON),
], ids=["cpu", "cpu+fs"])
def test_golden_kv_transfer_config(spec: OffloadSpec, expected: str) -> None:
    out = vllm_offload_args(spec)
    assert out.flags == ("--kv-transfer-config", expected)
    assert out.env == {"PYTHONHASHSEED": "0"}


def test_block_size_threads_events_and_seed() -> None:
    out = vllm_offload_args(OffloadSpec(1 << 30, FsTier("/kv", 4, 8, True), 64, hash_seed="42"))
    extra = json.loads(out.kv_transfer_config_json)["kv_connector_extra_config"]
    assert extra["block_size"] == 64
    assert extra["secondary_tiers"] == [{"type": "fs", "root_dir": "/kv", "n_read_threads": 4,
                                         "n_write_threads": 8, "enable_kv_events": True}]
    assert out.env["PYTHONHASHSEED"] == "42"
    cpu = json.loads(vllm_offload_args(OffloadSpec(1 << 30, block_size=64)).kv_transfer_config_json)
    assert cpu["kv_connector_extra_config"] == {"cpu_bytes_to_use": 1 << 30, "block_size": 64}


def test_gib_matches_vllm_kv_offloading_size() -> None:
    assert gib_to_bytes(1.5) == int(1.5 * (1 << 30))


@pytest.mark.parametrize("spec", [
    OffloadSpec(0), OffloadSpec(1 << 30, block_size=0), OffloadSpec(1 << 30, FsTier("")),
    OffloadSpec(1 << 30, FsTier("/kv", 0, 1)),
], ids=["no-cpu", "block-size-0", "empty-root", "no-threads"])
def test_rejects(spec: OffloadSpec) -> None:
    with pytest.raises(OffloadArgsError):
        vllm_offload_args(spec)


def test_shell_output_round_trips_through_bash() -> None:
    out = vllm_offload_args(OffloadSpec(1 << 30, FsTier("/mnt/my kv")))
    script = out.shell() + 'printf "%s\\n" "$PYTHONHASHSEED" "${VLLM_OFFLOAD_ARGS[@]}"'
    lines = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == ["0", *out.flags]
    assert shlex.split(out.shell().splitlines()[-1].partition("=(")[2].rstrip(")")) == list(out.flags)


def test_helm_and_json_outputs() -> None:
    out = vllm_offload_args(OffloadSpec(1 << 30))
    assert yaml.safe_load(out.helm()) == {"args": list(out.flags),
                                          "env": [{"name": "PYTHONHASHSEED", "value": "0"}]}
    doc = json.loads(out.json())
    assert doc["flags"] == list(out.flags) and doc["env"] == out.env
    assert doc["kv_transfer_config"]["kv_connector"] == "OffloadingConnector"
