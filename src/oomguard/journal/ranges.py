"""Sets of input indices as sorted, merged ranges: 10,000,000 done items in a few bytes."""

from __future__ import annotations

import bisect
from collections.abc import Iterable


def to_ranges(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted half-open ranges ``[(start, stop), ...]`` covering ``indices``.

    In numpy, one pass in C: a checkpoint covers every item finished since the last one
    (hundreds of thousands for fast items), too many for a Python step per item."""
    import numpy as np  # imported by the engine already; not by every reader of a journal

    # a stable sort is timsort: linear on indices that come mostly in order, as they do
    values = np.sort(np.fromiter(indices, dtype=np.int64), kind="stable")
    if not values.size:
        return []
    steps = np.diff(values)
    if not steps.all():  # a repeated index
        values = values[np.concatenate(([True], steps != 0))]
        steps = np.diff(values)
    breaks = np.flatnonzero(steps != 1) + 1  # where a new range starts
    starts = values[np.concatenate(([0], breaks))]
    stops = values[np.concatenate((breaks - 1, [values.size - 1]))] + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def encode_ranges(indices: Iterable[int]) -> str:
    """``"0-9,12,15-17"``: compact text for the journal."""
    return ",".join(
        str(start) if stop == start + 1 else f"{start}-{stop - 1}"
        for start, stop in to_ranges(indices)
    )


def decode_ranges(text: str) -> list[tuple[int, int]]:
    ranges = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        ranges.append((int(first), int(last or first) + 1))
    return ranges


class RangeSet:
    """A set of non-negative ints kept as merged ranges; ``in`` is a binary search."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []

    def add_range(self, start: int, stop: int) -> None:
        if start >= stop:
            return
        i = bisect.bisect_left(self._stops, start)  # first range that may touch [start, stop)
        j = bisect.bisect_right(self._starts, stop)  # ranges from i to j-1 touch it
        if i < j:
            start = min(start, self._starts[i])
            stop = max(stop, self._stops[j - 1])
        self._starts[i:j] = [start]
        self._stops[i:j] = [stop]

    def add(self, index: int) -> None:
        self.add_range(index, index + 1)

    def update(self, ranges: Iterable[tuple[int, int]]) -> None:
        for start, stop in ranges:
            self.add_range(start, stop)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        i = bisect.bisect_right(self._starts, index) - 1
        return i >= 0 and index < self._stops[i]

    def __len__(self) -> int:
        return sum(stop - start for start, stop in zip(self._starts, self._stops, strict=True))

    @property
    def range_count(self) -> int:
        return len(self._starts)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._stops, strict=True))
