"""Accuracy, budget, merging, overflow, windows, sampling and saving of the metrics registry."""

from __future__ import annotations

import gc
import math
import tracemalloc
import urllib.request

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from oomguard.errors import ConfigError
from oomguard.metrics import OVERFLOW, QuantileSketch, Registry
from oomguard.metrics.exporter import Exporter, RunNumbers
from tests.helpers.metrics import by_node, scrape

QS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-6, max_value=1e9, allow_nan=False), min_size=1, max_size=400),
    st.sampled_from([0.01, 0.02, 0.05]),
)
def test_every_quantile_is_within_the_relative_accuracy(
    values: list[float], accuracy: float
) -> None:
    sketch = QuantileSketch(accuracy)
    for value in values[: len(values) // 2]:
        sketch.add(value)
    sketch.add_many(np.array(values[len(values) // 2 :]))
    for q in QS:
        estimate = sketch.quantile(q)
        truth = exact(values, q)
        assert estimate is not None
        assert abs(estimate - truth) <= accuracy * truth * (1 + 1e-9), (q, estimate, truth)
    assert sketch.count == len(values)
    assert sketch.min == min(values) and sketch.max == max(values)
    assert math.isclose(sketch.sum, sum(values), rel_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), min_size=2, max_size=300)
)
def test_merge_equals_a_single_pass(values: list[float]) -> None:
    whole, left, right = (
        Registry("1MiB", windows=0),
        Registry("1MiB", windows=0),
        Registry("1MiB", windows=0),
    )
    whole.record_many("x", values)
    half = len(values) // 2
    left.record_many("x", values[:half])
    right.record_many("x", values[half:])
    left.merge(right)
    for q in QS:
        assert left.quantile("x", q) == whole.quantile("x", q)
    assert left.count("x") == whole.count("x") == len(values)
    assert left.min("x") == whole.min("x") and left.max("x") == whole.max("x")
    assert math.isclose(left.sum("x"), whole.sum("x"), rel_tol=1e-9)


def test_budget_is_never_exceeded_and_the_accounting_is_honest() -> None:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    registry = Registry("2MiB", windows=6)
    rng = np.random.default_rng(7)
    for label in range(400):
        registry.record_many(f"route-{label}", rng.lognormal(0, 3, 200))
        for value in rng.pareto(1.5, 20) + 1e-4:
            registry.record(f"route-{label}", float(value))
        assert registry.memory_bytes() <= registry.budget
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    traced = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert registry.memory_bytes() <= 2 * 1024**2
    # the registry's accounting covers what Python and numpy really allocated for it
    assert traced <= registry.memory_bytes() * 1.1 + 64 * 1024, (traced, registry.memory_bytes())
    assert registry.overflow_labels > 0


def test_a_full_budget_drops_sketch_values_but_never_raises_or_loses_totals() -> None:
    registry = Registry("512KiB", windows=60)
    now = 0.0
    registry.clock = lambda: now
    rng = np.random.default_rng(9)
    for minute in range(120):
        now = minute * 60.0
        for label in range(10):
            registry.record_many(f"route-{label}", rng.lognormal(0, 3, 100))
            registry.record(f"route-{label}", 1.0)
        assert registry.memory_bytes() <= registry.budget
    assert sum(registry.count(name) for name in registry.labels()) == 120 * 10 * 101
    assert registry.quantile("route-0", 0.5) is not None


def test_overflow_keeps_totals_exact() -> None:
    registry = Registry("256KiB", windows=2)
    total, expected_sum = 0, 0.0
    for label in range(500):
        values = [float(label + 1), 2.0 * (label + 1)]
        registry.record_many(f"user-{label}", values)
        total += 2
        expected_sum += sum(values)
    assert registry.max_labels < 500
    assert sum(registry.count(name) for name in registry.labels()) == total
    assert math.isclose(sum(registry.sum(name) for name in registry.labels()), expected_sum)
    assert registry.overflow_total == registry.count(OVERFLOW) > 0


def test_keep_active_keeps_the_labels_in_use() -> None:
    registry = Registry("256KiB", windows=2, keep="active")
    for label in range(300):
        registry.record(f"old-{label}", 1.0)
    for _ in range(3):
        for label in range(5):
            registry.record(f"hot-{label}", 2.0)
    kept = set(registry.labels())
    assert {f"hot-{label}" for label in range(5)} <= kept
    assert "old-0" not in kept
    assert sum(registry.count(name) for name in kept) == 300 + 15


def test_windows_rotate_and_24_hours_cost_what_1_hour_costs() -> None:
    now = [0.0]
    registry = Registry("4MiB", windows=60, window_seconds=60, clock=lambda: now[0])
    registry.record_many("latency", [1000.0] * 100)  # minute 0: slow
    now[0] = 5 * 60.0
    registry.record_many("latency", [1.0] * 100)  # minute 5: fast
    recent = registry.quantile("latency", 0.99, window=60)
    assert recent is not None and recent < 1.1
    assert registry.quantile("latency", 0.99, window=600) > 900  # both in the last 10 minutes
    assert registry.quantile("latency", 0.99) > 900  # cumulative keeps everything
    hour = registry.memory_bytes()
    for minute in range(6, 24 * 60, 7):
        now[0] = minute * 60.0
        registry.record_many("latency", [float(minute)] * 10)
    assert registry.memory_bytes() <= hour + 60 * 64 * 8 * 2  # bounded by the ring, not by time
    now[0] = 24 * 3600.0 + 61 * 60
    registry.record("latency", 5.0)
    assert registry.quantile("latency", 0.5, window=60) == pytest.approx(5.0, rel=0.01)


def test_percentiles_off_and_sampling() -> None:
    off = Registry("1MiB", percentiles="off")
    off.record_many("x", [1.0, 2.0, 3.0])
    assert off.count("x") == 3 and off.max("x") == 3.0
    with pytest.raises(ConfigError, match="percentiles are off"):
        off.quantile("x", 0.5)
    sampled = Registry("1MiB", windows=0, sample_every=10)
    values = np.random.default_rng(3).lognormal(0, 1, 100_000)
    sampled.record_many("x", values)
    for value in values[:1000]:
        sampled.record("y", float(value))
    assert sampled.count("x") == 100_000 and sampled.count("y") == 1000
    assert math.isclose(sampled.sum("x"), float(values.sum()))
    estimate = sampled.quantile("x", 0.5)
    assert (
        estimate is not None
        and abs(estimate - float(np.median(values))) / float(np.median(values)) < 0.05
    )


def test_serialisation_round_trip() -> None:
    registry = Registry("1MiB", windows=0)
    registry.record_many("a", [1.0, 10.0, 100.0])
    registry.record("b", 0.0)
    copy = Registry.from_dict(registry.to_dict(), windows=0)
    for q in QS:
        assert copy.quantile("a", q) == registry.quantile("a", q)
    assert copy.count("b") == 1 and copy.min("b") == 0.0


def test_exporter_output_parses_with_prometheus_clients_own_parser() -> None:
    registry = Registry("1MiB", windows=0)
    registry.record_many("batch_seconds", [0.1, 0.2, 0.3, 2.0])
    numbers = RunNumbers(
        items={"success": 7, "oom_killed": 1},
        oom_kills=2,
        job_bytes=100,
        worker_bytes=80,
        supervisor_bytes=30,
        budget_bytes=1000,
        backend_restarts=1,
    )
    exporter = Exporter(lambda: numbers, registry, port=0)
    try:
        assert exporter.addr == "127.0.0.1"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{exporter.port}/metrics", timeout=10
        ) as response:
            text = response.read().decode()
    finally:
        exporter.close()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("oomguard_items_total", (("status", "oom_killed"),))] == 1
    assert samples[("oomguard_oom_kills_total", ())] == 2
    assert samples[("oomguard_memory_bytes", (("scope", "job"),))] == 100
    assert samples[("oomguard_memory_budget_bytes", ())] == 1000
    assert samples[("oomguard_batch_seconds_count", ())] == 4
    assert samples[("oomguard_batch_seconds", (("quantile", "0.5"),))] == pytest.approx(
        0.2, rel=0.01
    )
    assert samples[("oomguard_backend_restarts_total", ())] == 1
    assert ("oomguard_metrics_sketch_bytes", ()) in samples and (
        "oomguard_label_overflow_total",
        (),
    ) in samples
    assert any(name.startswith("process_") for name in families)


def test_the_exporter_adds_per_node_metrics_only_for_a_cluster_run() -> None:
    registry = Registry("1MiB", windows=0)
    one_machine = RunNumbers(items={"success": 3}, oom_kills=1)
    figures = {
        "tcp://10.0.0.2:4000": {
            "name": "b", "connected": False, "batches": 4, "items_done": 7, "oom_kills": 1,
            "batches_lost": 2, "in_flight": 0, "left": "worker-close",
        },
        "tcp://10.0.0.1:4000": {
            "name": "a", "connected": True, "batches": 9, "items_done": 30, "oom_kills": 0,
            "batches_lost": 0, "in_flight": 3, "left": None,
        },
    }  # fmt: skip
    cluster = RunNumbers(items={"success": 37}, oom_kills=1, nodes=figures)
    samples = {}
    for numbers in (one_machine, cluster):
        exporter = Exporter(lambda numbers=numbers: numbers, registry, port=0)
        try:
            samples[numbers is cluster] = scrape(exporter.port)
        finally:
            exporter.close()
    alone, nodes = samples[False], samples[True]
    assert not [name for name, _ in alone if name.startswith(("oomguard_node", "oomguard_nodes"))]
    assert set(alone) <= set(nodes)  # the single-machine metrics, the same on a cluster
    assert nodes[("oomguard_nodes_connected", ())] == 1
    a = (("address", "tcp://10.0.0.1:4000"), ("node", "a"))
    b = (("address", "tcp://10.0.0.2:4000"), ("node", "b"))
    assert nodes[("oomguard_node_connected", a)] == 1 and nodes[("oomguard_node_connected", b)] == 0
    assert nodes[("oomguard_node_batches_total", b)] == 4
    assert nodes[("oomguard_node_items_total", a)] == 30
    assert nodes[("oomguard_node_oom_kills_total", b)] == 1
    assert nodes[("oomguard_node_batches_lost_total", b)] == 2
    assert nodes[("oomguard_node_in_flight", a)] == 3
    assert by_node(nodes, "oomguard_node_in_flight") == {"a": 3, "b": 0}


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        Registry("1KiB")
    with pytest.raises(ConfigError):
        Registry("1MiB", percentiles="maybe")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="overflow"):
        Registry("1MiB").count("never-seen")


def test_the_grafana_dashboard_only_asks_for_metrics_the_exporter_serves() -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).parents[2] / "examples/grafana/oomguard-dashboard.json").read_text()
    )
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:oomguard|process)_[a-z_]+", target["expr"])
    }
    registry = Registry("1MiB", windows=0)
    registry.record("batch_seconds", 1.0)
    exporter = Exporter(lambda: RunNumbers(items={"success": 1}), registry, port=0)
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{exporter.port}/metrics", timeout=10
        ) as response:
            served = {
                s.name
                for f in text_string_to_metric_families(response.read().decode())
                for s in f.samples
            }
    finally:
        exporter.close()
    assert wanted <= served, wanted - served
    assert any("memory" in panel["title"].lower() for panel in dashboard["panels"])
