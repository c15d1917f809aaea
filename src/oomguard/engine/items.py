"""The records that flow through the engine: items, batches, attempts."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any


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


_batch_ids = itertools.count(1)


def next_batch_id() -> int:
    return next(_batch_ids)


@dataclass
class Batch:
    """Items sent to a worker together, with the history the recovery ladder needs."""

    items: list[Item]
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
        return sum(item.size for item in self.items)

    @functools.cached_property
    def largest_item_bytes(self) -> int:
        return max((item.size for item in self.items), default=0)

    @property
    def indices(self) -> list[int]:
        return [item.index for item in self.items]

    def split(self) -> tuple[Batch, Batch]:
        """Two halves for bisection; the history starts afresh for each."""
        middle = len(self.items) // 2
        return (
            Batch(self.items[:middle], parent_id=self.batch_id),
            Batch(self.items[middle:], parent_id=self.batch_id),
        )

    def only(self, items: list[Item], **history: int | bool) -> Batch:
        """A new batch of some of these items (the rest of a per-item batch, one pinned item)."""
        batch = Batch(items, parent_id=self.batch_id)
        for key, value in history.items():
            setattr(batch, key, value)
        return batch
