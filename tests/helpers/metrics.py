"""Scrape an oomguard Prometheus endpoint and read it with prometheus_client's own parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, addr: str = "127.0.0.1") -> Samples:
    """Every sample served on ``addr:port``, by name and sorted labels."""
    with urllib.request.urlopen(f"http://{addr}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_node(samples: Samples, name: str) -> dict[str, float]:
    """A per-node metric's values, by its ``node`` label (the Dask worker's name)."""
    return {
        dict(labels)["node"]: value
        for (sample, labels), value in samples.items()
        if sample == name and "node" in dict(labels)
    }
