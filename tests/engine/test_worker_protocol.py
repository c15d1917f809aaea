"""The worker's side of the protocol and the source reader, without a supervisor."""

from __future__ import annotations

import mmap
import queue
import select
import socket
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from oomguard.engine.items import Item
from oomguard.engine.reader import END, SourceReader
from oomguard.engine.worker import AFTER_ITEMS, SLOT, SLOT_SIZE, WorkerLoop

SPEC = {"function": "tests.engine.workloads:work", "batched": False, "encode_json": True}


def run_one_batch(
    items: list[dict[str, Any]], spec: dict[str, Any] = SPEC
) -> tuple[list[tuple[Any, ...]], mmap.mmap]:
    """Run one batch through a real WorkerLoop over a socket pair; return what it sent."""
    ours, theirs = socket.socketpair()
    supervisor_end, worker_end = Connection(ours.detach()), Connection(theirs.detach())
    slot = mmap.mmap(-1, SLOT_SIZE)
    loop = WorkerLoop(worker_end, spec, slot)
    supervisor_end.send(
        ("batch", 7, list(enumerate(items)), {"pressure": ("normal", ""), "attempt": 1})
    )
    supervisor_end.send(("stop",))
    thread = threading.Thread(target=loop.serve)
    thread.start()
    messages = []
    while True:
        message = supervisor_end.recv()
        messages.append(message)
        if message[0] == "done":
            break
    thread.join(timeout=30)
    supervisor_end.close()
    worker_end.close()
    return messages, slot


def test_results_travel_in_groups_in_order_with_per_item_failures() -> None:
    items: list[dict[str, Any]] = [{"kind": "ok", "value": i} for i in range(2500)]
    items[3] = {"kind": "raise", "value": 3}
    items[4] = {"kind": "unpicklable"}
    messages, slot = run_one_batch(items)
    assert messages[-1][0] == "done"
    results = [entry for message in messages for entry in message[2]]
    assert [entry[0] for entry in results] == list(range(2500))
    assert len(messages) < len(items)  # grouped: not one message per item
    assert max(len(message[2]) for message in messages) <= 1000
    by_index = {entry[0]: entry for entry in results}
    assert by_index[0][1] == "success" and '"input_index": 0' in by_index[0][3]
    assert by_index[3][1] == "error" and by_index[3][4]["type"] == "ValueError"
    assert by_index[4][1] == "error" and "not JSON-serializable" in by_index[4][4]["message"]
    assert SLOT.unpack_from(slot) == (7, AFTER_ITEMS)  # past the last item


def test_an_unpicklable_result_fails_alone_and_its_group_still_arrives() -> None:
    items: list[dict[str, Any]] = [{"kind": "ok", "value": i} for i in range(5)]
    items[2] = {"kind": "unpicklable"}
    messages, _ = run_one_batch(items, {**SPEC, "encode_json": False})
    results = {entry[0]: entry for message in messages for entry in message[2]}
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert results[2][1] == "error" and "cannot be pickled" in results[2][4]["message"]
    assert all(results[i][1] == "success" for i in (0, 1, 3, 4))


class SlowSource:
    """One item, then nothing until released: a live source that stalls."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __iter__(self) -> Iterator[Item]:
        yield Item(0, "first", 5)
        self.release.wait(timeout=60)
        yield Item(1, "second", 6)


def next_item(reader: SourceReader) -> Any:
    while True:
        try:
            (item,) = reader.take(1)
            return item
        except queue.Empty:
            reader.waiting.set()
            if reader.empty():
                ready, _, _ = select.select([reader], [], [], 30)
                assert ready, "the reader never woke the supervisor"
                reader.drain_wakeups()


def test_the_reader_never_holds_an_item_back_to_fill_a_chunk() -> None:
    source = SlowSource()
    reader = SourceReader(source, capacity=1024, wanted=lambda index: True)  # type: ignore[arg-type]
    reader.start()
    try:
        # the chunk is far from full and the source is stalled: the item comes anyway
        assert next_item(reader).index == 0
        source.release.set()
        assert next_item(reader).index == 1
        assert next_item(reader) is END
    finally:
        source.release.set()
        reader.close()


def test_the_reader_moves_items_in_chunks_in_order() -> None:
    items = [Item(i, i, 1) for i in range(1000)]
    reader = SourceReader(items, capacity=4096, wanted=lambda index: index % 3 != 0)  # type: ignore[arg-type]
    reader.start()
    try:
        got = []
        while (item := next_item(reader)) is not END:
            got.append(item.index)
    finally:
        reader.close()
    assert got == [i for i in range(1000) if i % 3 != 0]
