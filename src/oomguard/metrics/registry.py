"""A registry of per-label statistics in a hard memory budget.

A load tester's HDR histograms at 2-4 MB per label, no bound, no rotation, no visibility, and a
24-hour test dies at 4 GB. Here every label has exact count/sum/min/max and (unless
``percentiles="off"``) a cumulative quantile sketch plus a ring of interval sketches for
recent percentiles; the whole registry lives within ``budget`` bytes:

- every byte is granted by the registry's :class:`Accountant`; a sketch that is refused
  more bytes collapses its lowest buckets instead (high quantiles keep their guarantee);
- a new label is only admitted if its fixed cost fits; otherwise its values fold into the
  ``__overflow__`` label, so totals stay exact, and ``label_overflow_total`` counts it;
  with ``keep="active"`` the least recently used label is folded into overflow instead, so
  the labels kept are the ones in use;
- the window ring rotates on the recording path in O(1) (one interval sketch cleared), so
  24 hours cost what 1 hour costs;
- ``sample_every=N`` puts one value in N into the sketches, with weight N (count, sum,
  min and max stay exact).

``memory_bytes()`` is the accountant's total and never exceeds the budget; a test checks
it against tracemalloc.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from oomguard.errors import ConfigError
from oomguard.metrics.sketch import DEFAULT_MAX_BINS, MIN_POSITIVE, BudgetExhausted, QuantileSketch
from oomguard.sizes import parse_size

OVERFLOW = "__overflow__"
# Measured with tracemalloc (tests/metrics): the Python objects of one label without its
# bucket arrays. Rounded up; the accountant charges it when a label is admitted.
LABEL_OVERHEAD = 1024
SKETCH_OVERHEAD = 320  # one QuantileSketch object (slots) with its empty array


class Accountant:
    """Grants bytes against the budget; thread-safe."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> bool:
        with self._lock:
            if self.used + nbytes > self.budget:
                return False
            self.used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


@dataclass
class _Totals:
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf


class _Label:
    __slots__ = ("cumulative", "current_interval", "seen", "totals", "windows")

    def __init__(self) -> None:
        self.totals = _Totals()
        self.cumulative: QuantileSketch | None = None
        self.windows: list[QuantileSketch | None] = []
        self.current_interval = -1
        self.seen = 0  # values offered, for 1-in-N sampling


class Registry:
    def __init__(
        self,
        budget: str | int = "32MiB",
        relative_accuracy: float = 0.01,
        *,
        percentiles: Literal["on", "off"] = "on",
        windows: int = 60,
        window_seconds: float = 60.0,
        sample_every: int = 1,
        keep: Literal["first", "active"] = "first",
        max_bins: int = DEFAULT_MAX_BINS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = parse_size(budget, what="budget")
        if percentiles not in ("on", "off"):
            raise ConfigError(f"invalid percentiles {percentiles!r}: expected 'on' or 'off'")
        if keep not in ("first", "active"):
            raise ConfigError(f"invalid keep {keep!r}: expected 'first' or 'active'")
        if sample_every < 1 or windows < 0 or window_seconds <= 0:
            raise ConfigError("sample_every must be >= 1, windows >= 0 and window_seconds > 0")
        self.relative_accuracy = relative_accuracy
        self.percentiles = percentiles
        self.windows = windows
        self.window_seconds = window_seconds
        self.sample_every = sample_every
        self.keep = keep
        self.max_bins = max_bins
        self.clock = clock
        self.accountant = Accountant(self.budget)
        self._multiplier = QuantileSketch(relative_accuracy).multiplier
        self.overflow_total = 0  # values folded into the overflow label
        self.overflow_labels = 0  # distinct labels refused or evicted
        # values a sketch could not take because the budget was full (totals still count them)
        self.dropped = 0
        self._labels: collections.OrderedDict[str, _Label] = collections.OrderedDict()
        self._lock = threading.Lock()
        # the overflow label is reserved up front, so there is always somewhere to count
        if self.label_cost > self.budget:
            raise ConfigError(f"budget {budget!r} is too small for even one label")
        overflow = self._new_label()
        assert overflow is not None
        self._overflow: _Label = overflow
        self._labels[OVERFLOW] = overflow

    # ------------------------------------------------------------- capacity

    @property
    def label_cost(self) -> int:
        sketches = 0 if self.percentiles == "off" else 1 + self.windows
        return LABEL_OVERHEAD + sketches * SKETCH_OVERHEAD

    @property
    def max_labels(self) -> int:
        """Distinct labels the budget admits at least (more if their sketches stay small)."""
        return max(1, self.budget // (self.label_cost + 8 * 64 * 2))

    def _new_sketch(self) -> QuantileSketch:
        return QuantileSketch(self.relative_accuracy, self.max_bins, self.accountant)

    def _new_label(self) -> _Label | None:
        # admit only with headroom for the first bins of its cumulative sketch
        headroom = 64 * 8 if self.percentiles == "on" else 0
        if self.accountant.used + self.label_cost + headroom > self.budget:
            return None
        if not self.accountant.reserve(self.label_cost):
            return None
        label = _Label()
        if self.percentiles == "on":
            label.cumulative = self._new_sketch()
            label.windows = [None] * self.windows
        return label

    def _free_label(self, label: _Label) -> None:
        for sketch in [label.cumulative, *label.windows]:
            if sketch is not None:
                sketch.clear()
        self.accountant.release(self.label_cost)

    def _slot(self, name: str) -> _Label:
        label = self._labels.get(name)
        if label is not None:
            if self.keep == "active":
                self._labels.move_to_end(name)
            return label
        label = self._new_label()
        if label is None and self.keep == "active":
            label = self._evict_then_admit()
        if label is None:
            self.overflow_labels += 1
            return self._overflow
        self._labels[name] = label
        return label

    def _evict_then_admit(self) -> _Label | None:
        for victim_name in list(self._labels):
            if victim_name == OVERFLOW:
                continue
            victim = self._labels.pop(victim_name)
            self._fold(victim, self._overflow)
            self._free_label(victim)
            self.overflow_labels += 1
            label = self._new_label()
            if label is not None:
                return label
        return None

    def _fold(self, source: _Label, target: _Label) -> None:
        totals, into = source.totals, target.totals
        into.count += totals.count
        into.sum += totals.sum
        into.min = min(into.min, totals.min)
        into.max = max(into.max, totals.max)
        self.overflow_total += totals.count
        if source.cumulative is not None and target.cumulative is not None:
            target.cumulative.merge(source.cumulative)

    # ------------------------------------------------------------- recording

    def _window(self, label: _Label) -> QuantileSketch | None:
        if not label.windows:
            return None
        interval = int(self.clock() // self.window_seconds)
        slot = interval % self.windows
        if interval != label.current_interval:
            # rotate: clear every slot skipped since the last value (O(windows) at most)
            steps = (
                min(self.windows, interval - label.current_interval)
                if label.current_interval >= 0
                else self.windows
            )
            for back in range(steps):
                stale = label.windows[(slot - back) % self.windows]
                if stale is not None:
                    stale.clear()
            label.current_interval = interval
        sketch = label.windows[slot]
        if sketch is None:
            sketch = label.windows[slot] = self._new_sketch()
        return sketch

    def record(self, label: str, value: float) -> None:
        with self._lock:
            slot = self._labels.get(label)
            if slot is None or self.keep == "active":
                slot = self._slot(label)
            if slot is self._overflow and label != OVERFLOW:
                self.overflow_total += 1
            totals = slot.totals
            totals.count += 1
            totals.sum += value
            if value < totals.min:
                totals.min = value
            if value > totals.max:
                totals.max = value
            if slot.cumulative is None:
                return
            slot.seen += 1
            weight = self.sample_every
            if weight > 1 and slot.seen % weight:
                return
            window = self._window(slot) if slot.windows else None
            try:
                if value > 0:
                    index = math.ceil(
                        math.log(value if value > MIN_POSITIVE else MIN_POSITIVE) * self._multiplier
                    )
                    slot.cumulative.add_indexed(value, index, weight)
                    if window is not None:
                        window.add_indexed(value, index, weight)
                else:
                    slot.cumulative.add(value, weight)
                    if window is not None:
                        window.add(value, weight)
            except BudgetExhausted:
                self.dropped += weight

    def record_many(self, label: str, values: Iterable[float] | np.ndarray[Any, Any]) -> None:
        array = np.asarray(
            values if isinstance(values, np.ndarray) else list(values), dtype=np.float64
        )
        if array.size == 0:
            return
        with self._lock:
            slot = self._slot(label)
            if slot is self._overflow and label != OVERFLOW:
                self.overflow_total += int(array.size)
            totals = slot.totals
            totals.count += int(array.size)
            totals.sum += float(array.sum())
            totals.min = min(totals.min, float(array.min()))
            totals.max = max(totals.max, float(array.max()))
            if slot.cumulative is None:
                return
            start = (-slot.seen) % self.sample_every
            slot.seen += int(array.size)
            kept = array[start :: self.sample_every] if self.sample_every > 1 else array
            for sketch in (slot.cumulative, self._window(slot)):
                if sketch is None:
                    continue
                try:
                    sketch.add_many(kept, self.sample_every)
                except BudgetExhausted:
                    self.dropped += int(kept.size) * self.sample_every

    # ------------------------------------------------------------- reading

    def labels(self) -> list[str]:
        with self._lock:
            return [
                name for name in self._labels if name != OVERFLOW or self._overflow.totals.count
            ]

    def _get(self, label: str) -> _Label:
        slot = self._labels.get(label)
        if slot is None:
            raise KeyError(f"no label {label!r} (it may have been folded into {OVERFLOW!r})")
        return slot

    def count(self, label: str) -> int:
        with self._lock:
            return self._get(label).totals.count

    def sum(self, label: str) -> float:
        with self._lock:
            return self._get(label).totals.sum

    def min(self, label: str) -> float | None:
        with self._lock:
            totals = self._get(label).totals
            return totals.min if totals.count else None

    def max(self, label: str) -> float | None:
        with self._lock:
            totals = self._get(label).totals
            return totals.max if totals.count else None

    def quantile(self, label: str, q: float, *, window: float | None = None) -> float | None:
        """The q-quantile of all values, or of the last ``window`` seconds of them."""
        with self._lock:
            slot = self._get(label)
            if slot.cumulative is None:
                raise ConfigError("percentiles are off in this registry")
            if window is None:
                return slot.cumulative.quantile(q)
            if not slot.windows:
                raise ConfigError("this registry keeps no windows (windows=0)")
            recent = QuantileSketch(self.relative_accuracy, self.max_bins)
            now = int(self.clock() // self.window_seconds)
            wanted = min(self.windows, max(1, math.ceil(window / self.window_seconds)))
            if slot.current_interval >= 0 and now - slot.current_interval < self.windows:
                for back in range(wanted - (now - slot.current_interval)):
                    sketch = slot.windows[(slot.current_interval - back) % self.windows]
                    if sketch is not None:
                        recent.merge(sketch)
            return recent.quantile(q)

    def memory_bytes(self) -> int:
        return self.accountant.used

    # ------------------------------------------------------------- merging and saving

    def merge(self, other: Registry) -> None:
        """Add ``other``'s labels into this one (same accuracy); windows stay local."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ConfigError("registries of different relative accuracy cannot merge without loss")
        with self._lock, other._lock:
            for name, source in other._labels.items():
                if source.totals.count == 0:
                    continue
                target = self._slot(name)
                totals, into = source.totals, target.totals
                into.count += totals.count
                into.sum += totals.sum
                into.min = min(into.min, totals.min)
                into.max = max(into.max, totals.max)
                if target is self._overflow and name != OVERFLOW:
                    self.overflow_total += totals.count
                if source.cumulative is not None and target.cumulative is not None:
                    target.cumulative.merge(source.cumulative)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "relative_accuracy": self.relative_accuracy,
                "overflow_total": self.overflow_total,
                "labels": {
                    name: {
                        "count": slot.totals.count,
                        "sum": slot.totals.sum,
                        "min": slot.totals.min if slot.totals.count else None,
                        "max": slot.totals.max if slot.totals.count else None,
                        "sketch": slot.cumulative.to_dict()
                        if slot.cumulative is not None
                        else None,
                    }
                    for name, slot in self._labels.items()
                    if slot.totals.count
                },
            }

    @classmethod
    def from_dict(cls, data: dict[str, Any], **options: Any) -> Registry:
        registry = cls(relative_accuracy=data["relative_accuracy"], **options)
        for name, entry in data["labels"].items():
            slot = registry._slot(name)
            slot.totals.count += entry["count"]
            slot.totals.sum += entry["sum"]
            if entry["count"]:
                slot.totals.min = min(slot.totals.min, entry["min"])
                slot.totals.max = max(slot.totals.max, entry["max"])
            if entry["sketch"] is not None and slot.cumulative is not None:
                slot.cumulative.merge(QuantileSketch.from_dict(entry["sketch"]))
        registry.overflow_total += data.get("overflow_total", 0)
        return registry
