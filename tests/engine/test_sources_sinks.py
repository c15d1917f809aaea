"""Sources stream, sinks write: CSV, Parquet, directories, iterables; order; buffer bounds."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oomguard.engine import Job
from oomguard.engine.parquet_sink import ParquetSink
from oomguard.engine.sinks import Results
from oomguard.engine.sources import open_source
from oomguard.engine.worker import encode_line
from oomguard.errors import ConfigError, OomguardWarning
from tests.engine.conftest import WORK, manifest, read_output, write_jsonl


@pytest.mark.parametrize(
    "value", [7, -1.5, None, True, 'naïve "quoted"\n', [1, {"a": "é"}], {"k": [None, 2.0]}]
)
def test_a_result_line_is_the_json_of_index_and_result(value: object) -> None:
    line = encode_line(12, value)
    assert line == json.dumps({"input_index": 12, "result": value}, ensure_ascii=False)
    assert json.loads(line) == {"input_index": 12, "result": value}


def test_a_result_that_is_not_json_is_refused_and_the_encoder_recovers() -> None:
    value: dict[str, list[object]] = {"inner": [1, object()]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_line(0, value)
    value["inner"].pop()  # the same containers, now encodable: no stale circularity marks
    assert encode_line(0, value) == '{"input_index": 0, "result": {"inner": [1]}}'
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        encode_line(1, circular)


def test_csv_source(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "value"])
        writer.writerow(["ok", "1"])
        writer.writerow(["ok", "2", "extra"])
    items = list(open_source(path))
    assert items[0].value == {"kind": "ok", "value": "1"}
    assert items[1].error is not None and "more fields than the header" in items[1].error
    assert open_source(path).count() == 2


def test_parquet_source_streams_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"kind": ["ok"] * 1000, "value": list(range(1000))}), path, row_group_size=100
    )
    source = open_source(path)
    items = list(source)
    assert source.count() == 1000
    assert [i.index for i in items] == list(range(1000))
    assert items[999].value == {"kind": "ok", "value": 999}


def test_directory_source_gives_path_and_size(tmp_path: Path) -> None:
    (tmp_path / "b.pdf").write_bytes(b"x" * 10)
    (tmp_path / "a.pdf").write_bytes(b"y" * 3)
    (tmp_path / "sub").mkdir()
    with pytest.warns(OomguardWarning, match="subdirectories"):  # not read: said so
        items = list(open_source(tmp_path))
    assert [(Path(i.value["path"]).name, i.size) for i in items] == [("a.pdf", 3), ("b.pdf", 10)]


def test_unknown_suffix_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(ConfigError, match=r"'\.xml'"):
        open_source(tmp_path / "x.xml")


def test_parquet_sink_buffer_is_bounded(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "out.parquet", buffer_bytes=4096)
    row_size = len(
        pickle.dumps({"input_index": 999, "text": "x" * 50}, protocol=pickle.HIGHEST_PROTOCOL)
    )
    for start in range(0, 1000, 10):
        indices = list(range(start, start + 10))
        sink.write([Results(indices, values=[{"text": "x" * 50} for _ in indices])])
    prepared = sink.prepare(final=True)
    assert prepared is not None and sorted(prepared.indices) == list(range(1000))
    assert list((tmp_path / "out.parquet").glob("part-*")) == [], "nothing visible before commit"
    sink.commit(prepared)
    sink.close()
    assert sink.max_buffered <= 4096 + row_size
    assert sink.row_groups > 10
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 1000
    assert sorted(table.column("input_index").to_pylist()) == list(range(1000))


def test_parquet_sink_through_a_job(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [{"kind": "ok", "value": i} for i in range(50)])
    out = tmp_path / "out.parquet"
    result = Job(
        WORK,
        source=source,
        sink=out,
        run_dir=tmp_path / "run",
        workers=2,
        parquet_buffer_bytes=512,
        log_format="quiet",
    ).run()
    assert result.succeeded == 50
    table = pq.read_table(out)
    assert sorted(
        zip(table.column("input_index").to_pylist(), table.column("value").to_pylist(), strict=True)
    ) == [(i, 2 * i) for i in range(50)]


@pytest.mark.parametrize("ordered", [False, True])
def test_ordered_keeps_input_order(tmp_path: Path, ordered: bool) -> None:
    items = [{"kind": "slow", "seconds": 1.0}] + [{"kind": "ok", "value": i} for i in range(1, 12)]
    items[6] = {"kind": "raise", "value": 6}  # a quarantined item must not stall the order
    source = write_jsonl(tmp_path / "items.jsonl", items)
    out = tmp_path / "out.jsonl"
    Job(
        WORK,
        source=source,
        sink=out,
        run_dir=tmp_path / "run",
        workers=2,
        batch_size=1,
        ordered=ordered,
        log_format="quiet",
    ).run()
    order = [line["input_index"] for line in read_output(out)]
    assert sorted(order) == [i for i in range(12) if i != 6]
    if ordered:
        assert order == sorted(order)
    else:
        assert order != sorted(order), "the slow first item should have finished last"


def test_iterable_source_and_callable_sink(tmp_path: Path) -> None:
    got: list[tuple[int, object]] = []
    items = ({"kind": "ok", "value": i} for i in range(25))
    result = Job(
        WORK, source=items, sink=got.extend, run_dir=tmp_path / "run", workers=2, log_format="quiet"
    ).run()
    assert result.exit_code == 0
    assert sorted(got) == [(i, {"value": 2 * i}) for i in range(25)]


def test_max_bytes_splits_batches(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "items.jsonl", [{"kind": "ok", "value": i, "pad": "x" * 100} for i in range(20)]
    )
    result = Job(
        WORK,
        source=source,
        sink=tmp_path / "o.jsonl",
        run_dir=tmp_path / "run",
        workers=1,
        batch_size=10,
        max_bytes=400,
        log_format="quiet",
    ).run()
    sizes = [len(a["input_indices"]) for a in manifest(result.run_dir)]
    assert max(sizes) <= 3 and sum(sizes) == 20


SLOW_SOURCE = r"""
import sys, json
from oomguard.engine import Job

def items():
    yield {"kind": "ok", "value": 1}
    sys.stdin.readline()  # the next item only comes when the test says so
    yield {"kind": "ok", "value": 2}

got = []
def sink(records):
    got.extend(records)
    print(json.dumps(records), flush=True)

Job("tests.engine.workloads:work", source=items(), sink=sink, run_dir=sys.argv[1], workers=1,
    batch_size=10, max_wait_ms=50, log_format="quiet").run()
"""


def test_max_wait_flushes_a_partial_batch_from_a_slow_source(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SOURCE, str(tmp_path / "run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        # the first item is written while the source is still blocked on the second
        assert json.loads(proc.stdout.readline()) == [[0, {"value": 2}]]
        proc.stdin.write("more\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == [[1, {"value": 4}]]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_group_of_results_splits_into_items_and_joins_back() -> None:
    """What the ordered writer does with a group: one item at a time, then a group again."""
    values = [{"text": "two\nlines"}, "\u2028", None, [1.5]]
    indices = [4, 9, 2, 7]
    as_lines = Results(
        indices,
        lines="".join(f"{encode_line(i, v)}\n" for i, v in zip(indices, values, strict=True)),
    )
    as_values = Results(indices, values=values)
    for group in (as_lines, as_values):
        items = group.one_by_one()
        assert [index for index, _, _ in items] == indices
        assert Results.join(items) == group
    assert as_values.text() == as_lines.text()  # a JSONL sink given values encodes them alike
    assert [json.loads(line)["result"] for line in as_lines.text().split("\n")[:-1]] == values


def test_parquet_sink_streams_row_groups_into_parts(tmp_path: Path) -> None:
    """Rows go to the open part a row group at a time: the sink holds one row group, a part
    holds many, and nothing is visible before commit."""
    sink = ParquetSink(tmp_path / "out.parquet", buffer_bytes=64 * 1024)
    sink.row_group_bytes = 4096
    for start in range(0, 2000, 10):
        indices = list(range(start, start + 10))
        sink.write([Results(indices, values=[{"text": "y" * 60} for _ in indices])])
    assert sink.max_buffered < 4096 + 200
    prepared = sink.prepare(final=True)
    assert prepared is not None
    sink.commit(prepared)
    sink.close()
    parts = sorted((tmp_path / "out.parquet").glob("part-*.parquet"))
    assert 1 < len(parts) < sink.row_groups
    assert max(pq.ParquetFile(p).metadata.num_row_groups for p in parts) > 1
    table = pq.read_table(tmp_path / "out.parquet")
    assert sorted(table.column("input_index").to_pylist()) == list(range(2000))


def test_parquet_sink_keeps_rows_whose_types_change(tmp_path: Path) -> None:
    """Integers then floats are cast to the part's type where they fit; new columns, or
    values the part's type cannot hold, start a part of their own. Every row is kept."""
    sink = ParquetSink(tmp_path / "out.parquet", buffer_bytes=1024 * 1024)
    sink.row_group_bytes = 1  # a row group per write
    sink.write([Results([0, 1], values=[{"x": 1.5}, {"x": 2.5}])])
    sink.write([Results([2, 3], values=[{"x": 3}, {"x": 4}])])  # int64 cast into double
    sink.write([Results([4], values=[{"x": "text"}])])  # a string: a part of its own
    sink.write([Results([5], values=[{"x": 1.0, "extra": True}])])  # new column: new part
    prepared = sink.prepare(final=True)
    assert prepared is not None and sorted(prepared.indices) == list(range(6))
    sink.commit(prepared)
    sink.close()
    rows = {}
    for part in sorted((tmp_path / "out.parquet").glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            rows[row["input_index"]] = row["x"]
    assert rows == {0: 1.5, 1: 2.5, 2: 3.0, 3: 4.0, 4: "text", 5: 1.0}
    assert len(list((tmp_path / "out.parquet").glob("part-*.parquet"))) == 3


def test_a_stopped_parquet_sink_leaves_only_an_uncommitted_part(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "out.parquet", buffer_bytes=1024 * 1024)
    sink.row_group_bytes = 1
    sink.write([Results([0, 1], values=[1, 2])])
    sink.close()  # the run stopped: the open part is closed, never renamed
    assert list((tmp_path / "out.parquet").glob("part-*.parquet")) == []
    again = ParquetSink(tmp_path / "out.parquet")
    again.recover([])
    assert list((tmp_path / "out.parquet").iterdir()) == []
