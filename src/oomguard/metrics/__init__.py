"""Bounded-memory metrics: quantile sketches, a budgeted registry, the Prometheus exporter."""

from oomguard.metrics.registry import OVERFLOW, Registry
from oomguard.metrics.sketch import QuantileSketch

__all__ = ["OVERFLOW", "QuantileSketch", "Registry"]
