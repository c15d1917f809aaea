"""The records that flow through the engine: items, batches, attempts."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload


@dataclass(slots=True)
class Item:
    """One unit of work. ``index`` is its position in the input (0-based) and its identity.

    Not frozen: one is made per input item, and a frozen dataclass's ``__init__`` costs
    three times as much. Nothing changes an item once made."""

    index: int
    value: Any
    size: int  # bytes: the serialized size, or the file size for a directory source
    error: str | None = None  # set when the input itself could not be read (bad line)
    label: str | None = None  # its name for a person: a file's path, a label field's value
    # what costs alike: admission learns a cost model per kind (an executor's task: its
    # function's name); a Job's items are all of one kind, ""
    kind: str = ""


class Run(Sequence[Item]):
    """Items ``start, start + 1, ...`` with no error, label or kind, held as two lists (their
    values and sizes) instead of an object each: how a block of a source read at once (a
    JSONL file's lines, a list's values) travels through intake, dispatch and the worker.

    A sequence of :class:`Item`, so every path that walks a batch's items (recovery,
    quarantine, a death's accounting) works on it unchanged; those items are made on the
    first such walk, and only then. The paths every batch takes (its size, its indices,
    the message to its worker) read the lists themselves."""

    __slots__ = ("_items", "sizes", "start", "values")

    def __init__(self, start: int, values: list[Any], sizes: list[int]) -> None:
        self.start = start
        self.values = values
        self.sizes = sizes
        self._items: list[Item] | None = None

    @property
    def stop(self) -> int:
        return self.start + len(self.values)

    def _made(self) -> list[Item]:
        if self._items is None:
            self._items = list(map(Item, range(self.start, self.stop), self.values, self.sizes))
        return self._items

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._made())

    @overload
    def __getitem__(self, position: int) -> Item: ...
    @overload
    def __getitem__(self, position: slice) -> Run: ...
    def __getitem__(self, position: int | slice) -> Item | Run:
        if isinstance(position, slice):
            begin, end, step = position.indices(len(self.values))
            if step != 1:
                raise ValueError("a run is sliced contiguously")
            end = max(begin, end)
            return Run(self.start + begin, self.values[begin:end], self.sizes[begin:end])
        return self._made()[position]

    def joined(self, other: Run) -> Run | None:
        """This run and ``other``, which starts where this one stops, as one (else None)."""
        if other.start != self.stop:
            return None
        return Run(self.start, self.values + other.values, self.sizes + other.sizes)

    def __repr__(self) -> str:
        return f"Run({self.start}..{self.stop - 1})" if self.values else f"Run({self.start}, empty)"


def total_size(items: Sequence[Item]) -> int:
    """The items' bytes: a run's sizes summed in C, else each item's."""
    if isinstance(items, Run):
        return sum(items.sizes)
    return sum(item.size for item in items)


_batch_ids = itertools.count(1)


def next_batch_id() -> int:
    return next(_batch_ids)


@dataclass
class Batch:
    """Items sent to a worker together, with the history the recovery ladder needs."""

    items: Sequence[Item]  # a list, or a :class:`Run`
    batch_id: int = field(default_factory=next_batch_id)
    attempt: int = 0  # attempts started so far
    memory_deaths: int = 0  # oom_killed / memory_error attempts counted against it
    crash_deaths: int = 0  # timeout / worker_crash attempts counted against it
    error_retries: int = 0
    alone: bool = False  # must run with every other worker idle
    known_cost: int = 0  # bytes it is known to need: its peak when it was last OOM-killed
    suspect: bool = False  # stopped as a runaway: never in flight beside another suspect
    parent_id: int | None = None  # the batch it was split from

    @functools.cached_property
    def size_bytes(self) -> int:
        return total_size(self.items)

    @functools.cached_property
    def largest_item_bytes(self) -> int:
        if isinstance(self.items, Run):
            return max(self.items.sizes, default=0)
        return max((item.size for item in self.items), default=0)

    def index_span(self) -> range | list[int]:
        """The indices as cheaply as they can be held: a run's as a range."""
        if isinstance(self.items, Run):
            return range(self.items.start, self.items.stop)
        return [item.index for item in self.items]

    @property
    def indices(self) -> list[int]:
        return list(self.index_span())

    @property
    def kind(self) -> str:
        """What the batch's work costs alike (its first item's kind; a run's is "")."""
        if isinstance(self.items, Run) or not self.items:
            return ""
        return self.items[0].kind

    def labels(self) -> dict[int, str]:
        """Each labelled item's label, by index (a run's items have none)."""
        if isinstance(self.items, Run):
            return {}
        return {item.index: item.label for item in self.items if item.label is not None}

    def wire_items(self) -> tuple[int, list[Any]] | list[tuple[int, Any]]:
        """The items as the worker takes them (engine/protocol.py): a run as its first
        index and its values, other items as (index, value) pairs."""
        if isinstance(self.items, Run):
            return self.items.start, self.items.values
        return [(item.index, item.value) for item in self.items]

    def split(self) -> tuple[Batch, Batch]:
        """Two halves for bisection; the history starts afresh for each."""
        middle = len(self.items) // 2
        return (
            Batch(self.items[:middle], parent_id=self.batch_id),
            Batch(self.items[middle:], parent_id=self.batch_id),
        )

    def only(self, items: Sequence[Item], **history: int | bool) -> Batch:
        """A new batch of some of these items (the rest of a per-item batch, one pinned item)."""
        batch = Batch(items, parent_id=self.batch_id)
        for key, value in history.items():
            setattr(batch, key, value)
        return batch
