"""Invalid benchmark configs fail with a clear message before any load is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanterna.bench.config import load_config, parse_config
from lanterna.errors import ConfigError

OK = {"load": {"type": "poisson", "stages": [{"rate": 1, "duration_s": 1}]},
      "target": {"url": "http://127.0.0.1:1", "model": "m"}}


def _with(**patch: object) -> dict[str, object]:
    d: dict[str, object] = {**OK}
    d.update(patch)
    return d


@pytest.mark.parametrize(("data", "needle"), [
    (_with(bogus=1), "bogus: Extra inputs are not permitted"),
    (_with(load={"type": "poisson", "stages": [{"rate": -1, "duration_s": 1}]}), "load.stages.0.rate"),
    (_with(load={"type": "poisson", "stages": [{"duration_s": 1}]}), "exactly one of 'rate' or 'concurrency'"),
    (_with(load={"type": "poisson", "stages": [{"rate": 1}]}), "needs 'duration_s' or 'num_requests'"),
    (_with(load={"type": "concurrency", "stages": [{"rate": 1, "duration_s": 1}]}), "needs 'concurrency'"),
    (_with(load={"type": "poisson"}), "needs 'stages' or 'sweep'"),
    (_with(cluster={"replicas": 2}), "exactly one of 'target'"),
    (_with(target={"url": "127.0.0.1:8000", "model": "m"}), "target.url"),
    (_with(workload={"type": "shared-prefix", "num_groups": 0}), "workload.shared-prefix.num_groups"),
    (_with(workload={"type": "nope"}), "workload"),
    (_with(workload={"type": "trace", "path": "/does/not/exist.jsonl"}), "trace file not found"),
], ids=["extra-key", "negative-rate", "no-rate", "no-end", "concurrency-shape", "no-stages", "two-targets",
        "bad-url", "zero-groups", "unknown-workload", "missing-trace"])
def test_invalid_configs_name_the_problem(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match="invalid benchmark config") as exc:
        parse_config(data, "x.yaml")
    assert needle in str(exc.value)


def test_valid_config_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "b.yaml"
    p.write_text("name: t\nload: {type: poisson, stages: [{rate: 2, duration_s: 3}]}\n"
                 "cluster: {replicas: 2}\n")
    cfg = load_config(p, {"cluster.policy": "precise", "seed": 7})
    assert cfg.cluster is not None and cfg.cluster.policy == "precise" and cfg.seed == 7


def test_unreadable_and_non_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
