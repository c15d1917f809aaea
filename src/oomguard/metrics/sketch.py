"""A quantile sketch with a guaranteed relative error, in a bounded number of bytes.

DDSketch's idea (Masson, Rim & Lee, VLDB 2019): a positive value v falls in the bucket
i = ceil(log_gamma(v)) with gamma = (1 + a) / (1 - a); every value in bucket i lies in
(gamma^(i-1), gamma^i], and reporting 2 gamma^i / (gamma + 1) for it is within a relative
error a of any of them. So a quantile is exact to within +-a (1% by default) whatever the
distribution, and buckets are mergeable by adding counts.

Buckets are a dense numpy array over the range of indices seen, grown in chunks. Growth
asks a :class:`ByteBudget`; when the budget says no (or ``max_bins`` is reached), the
lowest buckets are collapsed into one, so high quantiles - the ones latency work is about
- keep their guarantee, and memory never grows past what was granted. count, sum, min and
max are kept exactly. Negative values and zero go to their own exact-count bucket
(latencies and sizes are never negative; the bucket keeps the totals honest if they are).

Written by hand: the ``ddsketch`` package stores buckets in Python dicts (about 100 bytes
a bucket) with no shared budget, and has no vectorised insert; numpy makes both cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

CHUNK = 64  # bins are added this many at a time
DEFAULT_MAX_BINS = 2048  # 1% accuracy over ~18 orders of magnitude before any collapse
MIN_POSITIVE = 1e-12  # smaller positive values count in the lowest bucket


class BudgetExhausted(MemoryError):
    """Not one more bin fits in the budget (the registry drops the value from this sketch)."""


class ByteBudget(Protocol):
    def reserve(self, nbytes: int) -> bool: ...

    def release(self, nbytes: int) -> None: ...


class Unlimited:
    def reserve(self, nbytes: int) -> bool:
        return True

    def release(self, nbytes: int) -> None:
        pass


UNLIMITED = Unlimited()


@dataclass(frozen=True)
class Mapping:
    relative_accuracy: float

    @property
    def gamma(self) -> float:
        return (1 + self.relative_accuracy) / (1 - self.relative_accuracy)

    @property
    def log_gamma(self) -> float:
        return math.log(self.gamma)


class QuantileSketch:
    __slots__ = (
        "_budget",
        "_counts",
        "_log_gamma",
        "_multiplier",
        "_offset",
        "_view",
        "count",
        "max",
        "max_bins",
        "min",
        "nonpositive",
        "relative_accuracy",
        "sum",
    )

    def __init__(
        self,
        relative_accuracy: float = 0.01,
        max_bins: int = DEFAULT_MAX_BINS,
        budget: ByteBudget = UNLIMITED,
    ) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError(f"relative_accuracy {relative_accuracy!r}: expected 0 < a < 1")
        self.relative_accuracy = relative_accuracy
        mapping = Mapping(relative_accuracy)
        self._log_gamma = mapping.log_gamma
        self._multiplier = 1.0 / mapping.log_gamma
        self.max_bins = max_bins
        self._budget = budget
        self._counts: np.ndarray[Any, np.dtype[np.int64]] = np.zeros(0, dtype=np.int64)
        self._view = memoryview(self._counts)  # type: ignore[arg-type]  # ~2x faster item increments
        self._offset = 0  # the bucket index of _counts[0]
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.nonpositive = 0

    # ------------------------------------------------------------- recording

    def add(self, value: float, weight: int = 1) -> None:
        """Record ``value`` (``weight`` times: sampling counts each kept value N times)."""
        if value > 0:
            self.add_indexed(
                value, math.ceil(math.log(max(value, MIN_POSITIVE)) * self._multiplier), weight
            )
            return
        self.count += weight
        self.sum += value * weight
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.nonpositive += weight

    def add_indexed(self, value: float, index: int, weight: int) -> None:
        """``add`` for a positive value whose bucket index the caller computed (hot path)."""
        self.count += weight
        self.sum += value * weight
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        position = index - self._offset
        if 0 <= position < len(self._view):
            self._view[position] += weight
        else:
            self._add_outside(index, weight)

    @property
    def multiplier(self) -> float:
        return self._multiplier

    def add_many(self, values: np.ndarray[Any, Any], weight: int = 1) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        self.count += int(values.size) * weight
        self.sum += float(values.sum()) * weight
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        positive = values[values > 0]
        self.nonpositive += int(values.size - positive.size) * weight
        if positive.size == 0:
            return
        indices = np.ceil(np.log(np.maximum(positive, MIN_POSITIVE)) * self._multiplier).astype(
            np.int64
        )
        low, high = int(indices.min()), int(indices.max())
        self._ensure(low, high)
        low_kept = self._offset
        if low < low_kept:  # collapsed: everything below the kept range lands in its first bin
            indices = np.maximum(indices, low_kept)
        counts = np.bincount(indices - self._offset, minlength=0)
        self._counts[: counts.size] += counts * weight

    def _add_outside(self, index: int, weight: int) -> None:
        self._ensure(index, index)
        position = max(index, self._offset) - self._offset
        self._counts[position] += weight

    # ------------------------------------------------------------- storage

    def _ensure(self, low: int, high: int) -> None:
        """Make bins [low, high] addressable, growing within budget or collapsing the bottom."""
        size = len(self._counts)
        if size == 0:
            want = min(self.max_bins, _round_up(high - low + 1))
            for fallback in (want, CHUNK, 8, 1):
                if fallback <= want and self._budget.reserve(fallback * 8):
                    want = fallback
                    break
            else:
                raise BudgetExhausted("the metrics budget cannot hold one more bin")
            self._set(np.zeros(want, dtype=np.int64))
            self._offset = high - want + 1 if high - low + 1 > want else low
            return
        new_low = min(low, self._offset)
        new_high = max(high, self._offset + size - 1)
        want = new_high - new_low + 1
        if want <= size:
            return
        grow = min(self.max_bins, _round_up(want)) - size
        new_size = size + grow if grow > 0 and self._budget.reserve(grow * 8) else size
        if want <= new_size:
            # fits: place the old bins so that both ends are covered
            counts = np.zeros(new_size, dtype=np.int64)
            start = self._offset - new_low if low < self._offset else 0
            new_offset = new_low if low < self._offset else self._offset
            if new_offset + new_size - 1 < new_high:
                new_offset = new_high - new_size + 1
                start = self._offset - new_offset
            counts[start : start + size] = self._counts
            self._set(counts)
            self._offset = new_offset
            return
        # does not fit: keep the top new_size bins, collapse everything below into the first
        new_offset = new_high - new_size + 1
        counts = np.zeros(new_size, dtype=np.int64)
        old_indices = np.arange(self._offset, self._offset + size)
        keep = old_indices >= new_offset
        counts[old_indices[keep] - new_offset] = self._counts[keep]
        counts[0] += int(self._counts[~keep].sum())
        self._set(counts)
        self._offset = new_offset

    def _set(self, counts: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        self._counts = counts
        self._view = memoryview(counts)  # type: ignore[arg-type]

    # ------------------------------------------------------------- reading

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1), within the relative accuracy; None if empty."""
        if self.count == 0:
            return None
        if not 0 <= q <= 1:
            raise ValueError(f"quantile {q!r}: expected 0 <= q <= 1")
        rank = q * (self.count - 1)
        if rank < self.nonpositive:
            return self.min if self.nonpositive == self.count else min(self.min, 0.0)
        cumulative = np.cumsum(self._counts)
        position = int(np.searchsorted(cumulative, rank - self.nonpositive, side="right"))
        position = min(position, len(self._counts) - 1)
        index = self._offset + position
        gamma = math.exp(self._log_gamma)
        value = 2 * math.exp(index * self._log_gamma) / (gamma + 1)
        return min(max(value, self.min), self.max)  # the exact extremes bound every estimate

    @property
    def bins(self) -> int:
        return len(self._counts)

    def memory_bytes(self) -> int:
        """Bytes held for buckets (the object itself is accounted by the registry)."""
        return int(self._counts.nbytes)

    def merge(self, other: QuantileSketch) -> None:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("only sketches of the same relative accuracy merge without loss")
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.nonpositive += other.nonpositive
        if len(other._counts) == 0:
            return
        low, high = other._offset, other._offset + len(other._counts) - 1
        self._ensure(low, high)
        indices = np.maximum(np.arange(low, high + 1), self._offset) - self._offset
        np.add.at(self._counts, indices, other._counts)

    def clear(self) -> None:
        """Drop every value; the granted bytes are given back to the budget."""
        self._budget.release(self._counts.nbytes)
        self._set(np.zeros(0, dtype=np.int64))
        self._offset = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.nonpositive = 0

    def to_dict(self) -> dict[str, Any]:
        nonzero = np.nonzero(self._counts)[0]
        return {
            "relative_accuracy": self.relative_accuracy,
            "count": self.count,
            "sum": self.sum,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "nonpositive": self.nonpositive,
            "bins": {str(int(self._offset + i)): int(self._counts[i]) for i in nonzero},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], budget: ByteBudget = UNLIMITED) -> QuantileSketch:
        sketch = cls(data["relative_accuracy"], budget=budget)
        sketch.count = int(data["count"])
        sketch.sum = float(data["sum"])
        sketch.min = data["min"] if data["min"] is not None else math.inf
        sketch.max = data["max"] if data["max"] is not None else -math.inf
        sketch.nonpositive = int(data["nonpositive"])
        bins = {int(k): int(v) for k, v in data["bins"].items()}
        if bins:
            sketch._ensure(min(bins), max(bins))
            for index, count in bins.items():
                sketch._counts[max(index, sketch._offset) - sketch._offset] += count
        return sketch


def _round_up(n: int) -> int:
    return max(CHUNK, ((n + CHUNK - 1) // CHUNK) * CHUNK)
