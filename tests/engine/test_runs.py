"""Runs: a clean block of input travels as two lists, and means exactly what its items do.

The JSONL block path gives the same items as reading each line on its own, whatever the
lines hold; intake forms the same batches from runs as from the same items one by one;
a run behaves as the sequence of its items wherever recovery walks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oomguard.engine.config import JobConfig
from oomguard.engine.handles import close_worker, one_moment, start_worker
from oomguard.engine.intake import Intake
from oomguard.engine.items import Batch, Item, Run
from oomguard.engine.jsonl_read import block_run, jsonl_chunks
from oomguard.engine.protocol import STOP, first_index, item_values, pairs
from oomguard.journal import Checkpoint, Journal
from oomguard.journal.ranges import RangeSet
from oomguard.limits import CgroupLimiter
from oomguard.report.load import attempts
from tests.engine.test_jsonl_read import same, values

# lines that are no value alone, or are one only with help from a neighbour
TRICKY = [
    "[1",
    "2], 5",
    "",
    "   ",
    " 1",
    "1 ",
    "1\r",
    "\ufeff1",
    '"a\u2028b"',
    '"naïve"',
    "1 2",
    "{",
    "}",
    '"unterminated',
    "NaN",
    "-Infinity",
]


def reference(data: bytes) -> list[tuple[int, Any, int, bool]]:
    """Each line read alone by json.loads: (index, value, size, failed)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    rows: list[tuple[int, Any, int, bool]] = []
    for raw in lines:
        if not raw.strip():
            continue  # a blank line is no item
        try:
            rows.append((len(rows), json.loads(raw), len(raw), False))
        except ValueError:
            rows.append((len(rows), None, len(raw), True))
    return rows


def read_back(path: Path) -> list[tuple[int, Any, int, bool]]:
    return [
        (item.index, item.value, item.size, item.error is not None)
        for chunk in jsonl_chunks(path)
        for item in chunk
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(values.map(json.dumps) | st.sampled_from(TRICKY), min_size=1, max_size=30),
    st.booleans(),
)
def test_a_block_reads_as_each_line_read_alone(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], final_newline: bool
) -> None:
    path = tmp_path_factory.mktemp("runs") / "in.jsonl"
    data = ("\n".join(lines) + ("\n" if final_newline else "")).encode()
    path.write_bytes(data)
    got, want = read_back(path), reference(data)
    assert len(got) == len(want), (lines, got, want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0] and g[2] == w[2] and g[3] == w[3], (lines, g, w)
        assert w[3] or same(g[1], w[1]), (lines, g, w)


def test_a_clean_block_is_a_run_and_a_neighbour_cannot_complete_a_line() -> None:
    clean = [b'{"a": 1}\n', b"2\n", '"é"\n'.encode()]
    run = block_run(clean, 5)
    assert isinstance(run, Run)
    assert (run.start, run.values, run.sizes) == (5, [{"a": 1}, 2, "é"], [9, 2, 5])
    assert block_run([b"[1\n", b"2], 5\n"], 0) is None  # one array across two lines
    assert block_run([b"1\r\n", b"2\r\n"], 0) is None  # left to the per-line path
    assert block_run([b"1\n", b"\n", b"2\n"], 0) is None  # a blank line is no item


def test_a_run_is_the_sequence_of_its_items() -> None:
    run = Run(10, ["a", "b", "c", "d"], [1, 2, 3, 4])
    assert list(run) == [Item(10, "a", 1), Item(11, "b", 2), Item(12, "c", 3), Item(13, "d", 4)]
    assert run[1] == Item(11, "b", 2) and run[-1].index == 13
    half = run[2:]
    assert isinstance(half, Run) and (half.start, half.values, half.sizes) == (
        12,
        ["c", "d"],
        [3, 4],
    )
    assert len(run[4:]) == 0 and run[1:3].stop == 13
    assert run[:2].joined(run[2:]) is not None and run[:1].joined(run[2:]) is None
    batch = Batch(run)
    assert batch.indices == [10, 11, 12, 13] and batch.size_bytes == 10
    assert batch.largest_item_bytes == 4 and batch.kind == "" and batch.labels() == {}
    left, right = batch.split()
    assert left.indices == [10, 11] and right.indices == [12, 13]
    wire = batch.wire_items()
    assert list(pairs(wire)) == [(10, "a"), (11, "b"), (12, "c"), (13, "d")]
    assert first_index(wire) == 10 and item_values(wire) == ["a", "b", "c", "d"]
    listed = Batch(list(run)).wire_items()
    assert list(pairs(listed)) == list(pairs(wire)) and first_index(listed) == 10


class Blocks:
    """A source of the same items either way: blocks as runs, or as lists of items."""

    description = "blocks"

    def __init__(self, sizes: list[list[int]], as_runs: bool) -> None:
        self.sizes = sizes
        self.as_runs = as_runs

    def _blocks(self) -> Iterator[Sequence[Item]]:
        start = 0
        for block in self.sizes:
            run = Run(start, [f"v{start + k}" for k in range(len(block))], list(block))
            yield run if self.as_runs else list(run)
            start += len(block)

    def chunks(self) -> Iterator[Sequence[Item]]:
        return self._blocks()

    def __iter__(self) -> Iterator[Item]:
        for block in self._blocks():
            yield from block

    def count(self) -> int:
        return sum(map(len, self.sizes))


def batches_of(source: Blocks, batch_size: int, max_bytes: int) -> list[list[int]]:
    config = JobConfig(
        "tests.engine.workloads:work",
        batch_size=batch_size,
        adaptive_batch=False,  # sizes by the source's count would depend on a thread's timing
        max_bytes=max_bytes,
        max_wait_ms=60_000,
    )
    intake = Intake(config, source, None, done=RangeSet(), only=None)  # type: ignore[arg-type]
    intake.start()
    formed = []
    try:
        while not intake.exhausted():
            batch = intake.next_batch(suspect_in_flight=False, fitting=lambda size: size)
            if batch is not None:
                assert batch.size_bytes == sum(item.size for item in batch.items)
                formed.append(batch.indices)
    finally:
        intake.close()
    return formed


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=12), min_size=1, max_size=6),
    st.integers(1, 9),
    st.integers(1, 120),
)
def test_intake_forms_the_same_batches_from_runs_as_from_items(
    sizes: list[list[int]], batch_size: int, max_bytes: int
) -> None:
    from_runs = batches_of(Blocks(sizes, as_runs=True), batch_size, max_bytes)
    from_items = batches_of(Blocks(sizes, as_runs=False), batch_size, max_bytes)
    assert from_runs == from_items
    assert [i for batch in from_runs for i in batch] == list(range(sum(map(len, sizes))))


def test_a_runs_attempt_is_journaled_as_its_range_and_read_back_as_its_indices(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path)
    try:
        ran = {
            "batch_id": 1,
            "status": "success",
            "input_indices": Batch(Run(5, [0] * 1000, [1] * 1000)).index_span(),
        }
        listed = {"batch_id": 2, "status": "success", "input_indices": [1, 3]}
        journal.checkpoint(Checkpoint([], None, [], [ran, listed], []))
        rows = [text for (text,) in journal._db.execute("SELECT entry FROM attempts ORDER BY id")]
        assert len(rows[0]) < 100  # one range, not a thousand numbers
        assert [entry["input_indices"] for entry in journal.attempts()] == [
            list(range(5, 1005)),
            [1, 3],
        ]
        assert [entry["input_indices"] for entry in attempts(tmp_path)] == [
            list(range(5, 1005)),
            [1, 3],
        ]  # the report's reading of a journal without a manifest
    finally:
        journal.close()


def test_a_loop_turn_reads_a_workers_cgroup_once_and_the_next_turn_afresh(
    cgroup_limiter: CgroupLimiter,
) -> None:
    # a real worker in a real cgroup: each read of its group is a new (charge, working) tuple
    job = cgroup_limiter.create_group("turns", 256 * 1024 * 1024)
    spec = {"function": "tests.engine.workloads:work", "batched": False, "encode_json": True}
    handle = start_worker(cgroup_limiter, job, 0, 0, {**spec, "sys_path": []}, None)
    try:
        assert handle.charge() is not handle.charge()  # no turn open: every read is fresh
        with one_moment():
            first = handle.charge()
            assert handle.charge() is first and handle.working_set() == first[1]
        with one_moment():
            assert handle.charge() is not first  # a new turn reads again
        assert handle.charge() is not first
    finally:
        handle.conn.send((STOP,))
        close_worker(handle)
        job.remove()
