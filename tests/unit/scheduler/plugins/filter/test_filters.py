"""Table-driven tests, one per filter plugin."""

from __future__ import annotations

import pytest

from tests.unit.scheduler.helpers import ep, plugin, req

ROLES = [ep("p", role="prefill"), ep("d", role="decode"), ep("b", role="both"), ep("u")]


@pytest.mark.parametrize(
    ("type_name", "want"), [("prefill-filter", ["p"]), ("decode-filter", ["d", "b", "u"])], ids=["prefill", "decode"]
)
def test_role_filters(type_name, want):
    assert [e.id for e in plugin(type_name).filter(req("x"), ROLES)] == want


CANDS = [ep("a", labels={"zone": "x", "gpu": "h100"}), ep("b", labels={"zone": "y"}), ep("c")]


@pytest.mark.parametrize(
    ("params", "want"),
    [({}, ["a", "b", "c"]), ({"matchLabels": {"zone": "x"}}, ["a"]),
     ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x", "y"]}]}, ["a", "b"]),
     ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["x"]}]}, ["b", "c"]),
     ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, ["a"]),
     ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, ["b", "c"])],
    ids=["empty-selects-all", "match-labels", "in", "not-in", "exists", "does-not-exist"],
)
def test_label_selector_filter(params, want):
    assert [e.id for e in plugin("label-selector-filter", params).filter(req("x"), CANDS)] == want


@pytest.mark.parametrize(
    ("allows", "want"), [(False, ["a"]), (True, ["a", "c"])], ids=["strict", "allows-no-label"]
)
def test_by_label_filter(allows, want):
    p = plugin("by-label", {"label": "zone", "validValues": ["x"], "allowsNoLabel": allows})
    assert [e.id for e in p.filter(req("x"), CANDS)] == want


LBL = "llm-d.ai/context-length-range"


@pytest.mark.parametrize(
    ("tokens", "max_tokens", "enable", "want"),
    [(100, None, True, ["short", "any", "none"]), (3000, None, True, ["long", "any", "none"]),
     (1900, 200, True, ["long", "any", "none"]), (3000, None, False, ["short", "long", "any", "none"])],
    ids=["short-prompt", "long-prompt", "max-tokens-counted", "filtering-off"],
)
def test_context_length_aware_filter(tokens, max_tokens, enable, want):
    cands = [ep("short", labels={LBL: "0-2048"}), ep("long", labels={LBL: "2049-32768"}),
             ep("any", labels={LBL: "0-1000,1001-65536"}), ep("none")]
    p = plugin("context-length-aware", {"enableFiltering": enable})
    assert [e.id for e in p.filter(req("x" * 4 * tokens, max_tokens=max_tokens), cands)] == want
