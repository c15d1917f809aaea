"""The worker's side of the protocol and the source reader, without a supervisor."""

from __future__ import annotations

import json
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


def successes(messages: list[tuple[Any, ...]]) -> list[int]:
    return [index for message in messages for index in message[2]]


def failures(messages: list[tuple[Any, ...]]) -> dict[int, tuple[Any, ...]]:
    return {entry[0]: entry for message in messages for entry in message[4]}


def test_results_travel_in_groups_in_order_with_per_item_failures() -> None:
    items: list[dict[str, Any]] = [{"kind": "ok", "value": i} for i in range(2500)]
    items[3] = {"kind": "raise", "value": 3}
    items[4] = {"kind": "json_unfriendly"}
    messages, slot = run_one_batch(items)
    assert messages[-1][0] == "done"
    assert successes(messages) == [i for i in range(2500) if i not in (3, 4)]  # as they ran
    assert len(messages) < len(items)  # grouped: not one message per item
    assert max(len(message[2]) + len(message[4]) for message in messages) <= 1000
    # a group's successes are one JSONL text, a line each, in the order of its indices
    for message in messages:
        lines = message[3].splitlines()
        assert [json.loads(line)["input_index"] for line in lines] == message[2]
    assert json.loads(messages[0][3].splitlines()[0]) == {
        "input_index": 0,
        "result": {"value": 0},
    }
    failed = failures(messages)
    assert sorted(failed) == [3, 4]
    assert failed[3][1] == "error" and failed[3][2]["type"] == "ValueError"
    assert failed[4][1] == "error" and "not JSON-serializable" in failed[4][2]["message"]
    assert SLOT.unpack_from(slot) == (7, AFTER_ITEMS)  # past the last item


def test_an_unpicklable_result_fails_alone_and_its_group_still_arrives() -> None:
    items: list[dict[str, Any]] = [{"kind": "ok", "value": i} for i in range(5)]
    items[2] = {"kind": "unpicklable"}
    messages, _ = run_one_batch(items, {**SPEC, "encode_json": False})
    assert successes(messages) == [0, 1, 3, 4]
    values = [value for message in messages for value in message[3]]
    assert values == [{"value": 2 * i} for i in (0, 1, 3, 4)]
    failed = failures(messages)
    assert list(failed) == [2] and "cannot be pickled" in failed[2][2]["message"]


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
