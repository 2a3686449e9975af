"""``LeanHistogram`` renders exactly what ``prometheus_client.Histogram`` renders for the same observations."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

import lanterna.obs.metrics  # noqa: F401  # disables *_created series, as the gateway does
from lanterna.obs.histogram import LeanHistogram

BUCKETS = (0.0001, 0.5, 1, 8, 16)
VALUES = (0.0, 0.00005, 0.0001, 0.5, 0.7, 3, 8, 8.0000001, 16.0, 100, 1e9)


def test_exposition_matches_prometheus_client_labelled_and_not() -> None:
    ref, lean = CollectorRegistry(), CollectorRegistry()
    h_ref = Histogram("x_tokens", "doc", ("model_name", "target"), buckets=BUCKETS, registry=ref)
    h_lean = LeanHistogram("x_tokens", "doc", ("model_name", "target"), buckets=BUCKETS, registry=lean)
    u_ref = Histogram("y_seconds", "doc", buckets=BUCKETS, registry=ref)
    u_lean = LeanHistogram("y_seconds", "doc", buckets=BUCKETS, registry=lean)
    h_ref.labels("m", "t2")  # a child with no observations renders as zeros in both
    h_lean.labels("m", "t2")
    for v in VALUES:
        h_ref.labels("m", "t").observe(v)
        h_lean.labels("m", "t").observe(v)
        u_ref.observe(v)
        u_lean.observe(v)
    assert generate_latest(lean) == generate_latest(ref)
    child = h_lean.labels("m", "t")
    assert child is h_lean.labels("m", "t")  # cached
    assert child.count == len(VALUES) and child.counts[-1] == 2  # 100 and 1e9 only in +Inf
    assert math.isclose(child.sum, sum(VALUES))


def test_wrong_label_count_and_unlabelled_observe_on_a_labelled_family_raise() -> None:
    h = LeanHistogram("z", "doc", ("a",), buckets=(1.0,))
    with pytest.raises(ValueError):
        h.labels("a", "b")
    with pytest.raises(ValueError):
        h.observe(1.0)


def test_duplicate_name_in_a_registry_is_refused_like_prometheus_client() -> None:
    r = CollectorRegistry()
    LeanHistogram("dup_seconds", "doc", buckets=(1.0,), registry=r)
    with pytest.raises(ValueError):
        Histogram("dup_seconds", "doc", registry=r)
