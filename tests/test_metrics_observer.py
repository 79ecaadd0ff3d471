"""metrics.observer: the hot path's histogram observation changes exactly what prometheus-client's own
observe() changes, for in-memory histograms and for the multiprocess files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from service.observability.metrics import LATENCY_BUCKETS, observer

# Below the first bound, exactly on bounds, between them, past the last finite one, zero, negative.
AMOUNTS = [0.0, 0.0001, 0.0005, 0.00050001, 0.001, 0.0015, 0.02, 0.05, 0.7, 2.5, 9.99, 10.0, 10.5, 1e6, -0.25]


def _exposition(observe_with_observer: bool) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", ("model",), buckets=LATENCY_BUCKETS, registry=registry)
    child = histogram.labels("m")
    observe = observer(child) if observe_with_observer else child.observe
    for amount in AMOUNTS:
        observe(amount)
    return _without_created(generate_latest(registry))


def _without_created(text: bytes) -> bytes:
    """The exposition less its h_seconds_created line: the time the series was made, which differs."""
    return b"\n".join(line for line in text.split(b"\n") if not line.startswith(b"h_seconds_created"))


def test_observer_counts_every_amount_in_the_bucket_and_sum_prometheus_client_does() -> None:
    expected = _exposition(observe_with_observer=False)
    assert _exposition(observe_with_observer=True) == expected
    assert b'h_seconds_bucket{le="0.0005",model="m"} 4.0' in expected  # 0, 0.0001, 0.0005 and -0.25
    assert b'h_seconds_count{model="m"} 15.0' in expected


def test_observer_writes_the_multiprocess_files_as_observe_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = []
    for use_observer in (False, True):
        folder = tmp_path / str(use_observer)
        folder.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # re-picked for the env
        try:
            histogram = Histogram("h_seconds", "h", ("model",), buckets=LATENCY_BUCKETS, registry=None)
            child = histogram.labels("m")
            observe = observer(child) if use_observer else child.observe
            for amount in AMOUNTS:
                observe(amount)
        finally:
            monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(folder))  # type: ignore[no-untyped-call]
        texts.append(generate_latest(registry))
    assert texts[0] == texts[1]
    assert b'h_seconds_count{model="m"} 15.0' in texts[0]


def test_observer_refuses_a_histogram_laid_out_otherwise() -> None:
    child = Histogram("g_seconds", "g", buckets=(1.0, 2.0), registry=CollectorRegistry())
    child._upper_bounds = [1.0, 2.0]  # no +Inf bucket: not the layout observer() was written against
    with pytest.raises(RuntimeError, match="not laid out"):
        observer(child)
    assert math.isinf(Histogram("k_seconds", "k", registry=CollectorRegistry())._upper_bounds[-1])
