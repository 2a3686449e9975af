"""Every Grafana and alert query names only metrics the project exports: the gateway's registry (GAIE and
Lanterna names), the flow-control and KV-index collectors, and the vLLM metrics ``lanterna sim`` exports under
vLLM's names (the ones real vLLM serves, PROTOCOLS.md section 2)."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from lanterna.k8s.manifests import PRESETS, render
from tests.conftest import REPO

DASHBOARD = REPO / "deploy" / "dashboards" / "lanterna.json"
_PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "clamp_min", "clamp_max", "max", "min", "avg",
    "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "topk", "bottomk", "abs", "time", "vector", "offset",
}


def _exported() -> set[str]:
    """Sample names as scraped (counters with ``_total``, histograms' ``_bucket``/``_sum``/``_count``)."""
    from lanterna.flowcontrol.stats import FlowStats
    from lanterna.gateway.flow_metrics import FlowCollector
    from lanterna.kvindex.apply import EventApplier
    from lanterna.kvindex.index import KVIndex
    from lanterna.kvindex.metrics import KVIndexCollector
    from lanterna.obs.metrics import GatewayMetrics
    from lanterna.sim.metrics import CacheConfig, SimMetrics

    regs = [GatewayMetrics("pool").registry, SimMetrics("m", CacheConfig(16, 100, None, True, None, 0.9, None)).registry]
    extra = CollectorRegistry()
    extra.register(FlowCollector(lambda: FlowStats(0, 0), lambda: False, "pool"))
    extra.register(KVIndexCollector(EventApplier(KVIndex())))
    regs.append(extra)
    names: set[str] = set()
    for reg in regs:
        for line in generate_latest(reg).decode().splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                names |= {f"{name}_total", f"{name}_created"} if kind == "counter" else set()
                names |= {f"{name}_{s}" for s in ("bucket", "sum", "count", "created")} if kind == "histogram" else set()
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that are metric names (not functions, keywords, labels, strings)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping label lists
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    found = set()
    for m in re.finditer(r"(?<![0-9.])[A-Za-z_:][A-Za-z0-9_:]*", expr):  # not the e of 1e-9
        word = m.group(0)
        rest = expr[m.end():].lstrip()
        if word in _PROMQL_WORDS or rest.startswith("("):
            continue
        found.add(word)
    return found


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def test_dashboard_is_built_from_its_script() -> None:
    import runpy

    build = runpy.run_path(str(REPO / "deploy" / "dashboards" / "build.py"))["build"]
    assert json.loads(DASHBOARD.read_text()) == build()


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, x) (rate(a_b:c_bucket{k="v"}[5m]))) / d') == {
        "a_b:c_bucket", "d"}


@pytest.mark.parametrize(("source", "exprs"), [
    ("dashboard", _dashboard_exprs()),
    ("alerts", [r["expr"] for r in render(PRESETS["default"])[-1]["spec"]["groups"][0]["rules"]]),
], ids=["dashboard", "alerts"])
def test_every_query_names_an_exported_metric(source: str, exprs: list[str]) -> None:
    exported = _exported()
    assert len(exprs) >= 6
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        missing = names - exported
        assert not missing, f"{source}: {expr} names {missing}, which nothing exports"


def test_dashboard_covers_the_asked_signals() -> None:
    titles = " ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for word in ("requests", "first token", "output token", "queue", "kv-cache", "prefix-cache", "p/d",
                 "scheduler", "shed", "per endpoint"):
        assert word in titles, word
