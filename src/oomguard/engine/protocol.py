"""The messages between the supervisor and a worker: their names and shapes, in one place.

The wire format is pickled tuples over a :class:`multiprocessing.connection.Connection`,
the kind first (a tuple pickles in a fraction of what an object costs, and a batch of
fast items costs one or two of them)::

    supervisor -> worker   (INIT, spec)
                           (BATCH, batch_id, [(index, value), ...], extra)
                           (BATCH, batch_id, (first_index, [value, ...]), extra)
                               the second form: items first_index, first_index + 1, ...
                               (a run: no (index, value) pair to build and pickle per item)
                               extra: {"pressure": (level, reason), "attempt": n}
                           (STOP,)
    worker -> supervisor   (READY,) | (FATAL, message)
                           (ITEMS, batch_id, indices, results, failures)
                           (BATCH_ERROR, batch_id, status, error)
                           (DONE, batch_id, indices, results, failures, stats)

``indices``: the items that succeeded, in the order they ran; ``results``: their JSONL
lines as one text (``spec["encode_json"]``) or their values, a list; ``failures``: an
:class:`ItemFailure` per item that failed. ``stats``: what the worker measured after the
batch (:data:`RSS_AFTER`, :data:`TRIMMED`).

Which item is running is not a message: the worker writes ``(batch_id, index)`` into a
shared 16-byte slot (:data:`SLOT`) before each item, and ``(batch_id, AFTER_ITEMS)`` once
the items are over, so a worker that dies names its item without saying anything.

This module is imported by every worker: it imports nothing but the standard library.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

INIT = "init"
BATCH = "batch"
STOP = "stop"
READY = "ready"
FATAL = "fatal"
ITEMS = "items"
BATCH_ERROR = "batch_error"
DONE = "done"

RSS_AFTER = "rss_after"  # stats: the worker's RSS after the batch (and after trimming)
TRIMMED = "trimmed"  # stats: malloc_trim gave memory back

SLOT = struct.Struct("qq")  # (batch_id, index of the running item)
SLOT_SIZE = SLOT.size
AFTER_ITEMS = -1  # the slot's index once a batch's items are over


class ItemFailure(NamedTuple):
    """One item that failed inside a batch that went on."""

    input_index: int
    status: str  # a :class:`oomguard.classify.Status` value
    error: dict[str, str]  # type, message, traceback


class BatchFailure(NamedTuple):
    """A batched function's whole batch failed (it raised, or returned the wrong count)."""

    status: str
    error: dict[str, str]


Payload = str | list[Any]  # JSONL text, a line per item, or the values themselves
# a batch's items on the wire: (index, value) pairs, or a run's first index and its values
WireItems = list[tuple[int, Any]] | tuple[int, list[Any]]
Group = tuple[list[int], Payload, list[ItemFailure]]  # (indices, results, failures)


def pairs(items: WireItems) -> list[tuple[int, Any]] | enumerate[Any]:
    """The (index, value) pairs of a batch's items, whichever form they came in."""
    if isinstance(items, tuple):
        first, values = items
        return enumerate(values, first)
    return items


def first_index(items: WireItems) -> int | None:
    if isinstance(items, tuple):
        return items[0] if items[1] else None
    return items[0][0] if items else None


def item_values(items: WireItems) -> list[Any]:
    if isinstance(items, tuple):
        return items[1]
    return [value for _, value in items]


def batch_message(
    batch_id: int, items: WireItems, pressure: tuple[str, str], attempt: int
) -> tuple[Any, ...]:
    return (BATCH, batch_id, items, {"pressure": pressure, "attempt": attempt})


def results_message(
    batch_id: int, group: Group, stats: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """ITEMS (results so far), or DONE with the batch's ``stats``."""
    return (ITEMS, batch_id, *group) if stats is None else (DONE, batch_id, *group, stats)
