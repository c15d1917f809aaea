"""Bad input gets a clear answer: bad items are quarantined, configuration errors stop early."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from oomguard.engine import Job
from oomguard.errors import ConfigError
from tests.engine.conftest import WORK, write_jsonl


def test_unparsable_line_is_quarantined_and_the_run_goes_on(tmp_path: Path) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text('{"kind": "ok", "value": 1}\n{not json\n\n{"kind": "ok", "value": 2}\n')
    result = Job(
        WORK,
        source=source,
        sink=tmp_path / "out.jsonl",
        run_dir=tmp_path / "run",
        workers=1,
        log_format="quiet",
    ).run()
    assert result.succeeded == 2
    (entry,) = result.quarantined
    assert entry["input_index"] == 1 and entry["status"] == "error"
    assert (
        "line 2" in entry["evidence"]["message"]
        and "not valid JSON" in entry["evidence"]["message"]
    )


def test_missing_input_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Job(WORK, source=tmp_path / "nope.jsonl", run_dir=tmp_path / "run").run()


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("no_such_module_xyz:work", "no module named"),
        ("tests.engine.workloads:no_such_function", "has no attribute 'no_such_function'"),
        ("just-a-name", "expected 'package.module:function'"),
    ],
)
def test_function_that_cannot_be_imported_stops_before_work(
    tmp_path: Path, function: str, message: str
) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [{"kind": "ok"}])
    with pytest.raises(ConfigError, match=message):
        Job(function, source=source, run_dir=tmp_path / "run", workers=1, log_format="quiet").run()


def test_lambda_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be imported by a worker"):
        Job(lambda x: x, source=[1])


def test_wrong_number_of_results_is_an_error_per_item(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [1, 2, 3, 4])
    result = Job(
        "tests.engine.workloads:short_batch",
        source=source,
        sink=tmp_path / "o.jsonl",
        run_dir=tmp_path / "run",
        batched=True,
        workers=1,
        log_format="quiet",
    ).run()
    assert sorted(q["input_index"] for q in result.quarantined) == [0, 1, 2, 3]
    assert all(
        "returned 0 results for 1 items" in q["evidence"]["message"] for q in result.quarantined
    )


def test_result_that_is_not_json_is_named(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "items.jsonl", [{"kind": "json_unfriendly"}, {"kind": "ok", "value": 1}]
    )
    result = Job(
        WORK,
        source=source,
        sink=tmp_path / "o.jsonl",
        run_dir=tmp_path / "run",
        workers=1,
        log_format="quiet",
    ).run()
    (entry,) = result.quarantined
    assert "result of item 0 is not JSON-serializable" in entry["evidence"]["message"]


def test_unpicklable_result_is_named(tmp_path: Path) -> None:
    got: list[tuple[int, object]] = []
    result = Job(
        WORK,
        source=[{"kind": "unpicklable"}, {"kind": "ok", "value": 3}],
        sink=got.extend,
        run_dir=tmp_path / "run",
        workers=1,
        log_format="quiet",
    ).run()
    assert got == [(1, {"value": 6})]
    (entry,) = result.quarantined
    assert "result of item 0 cannot be pickled" in entry["evidence"]["message"]


def test_unpicklable_input_item_is_quarantined(tmp_path: Path) -> None:
    got: list[tuple[int, object]] = []
    result = Job(
        WORK,
        source=[threading.Lock(), {"kind": "ok", "value": 2}],
        sink=got.extend,
        run_dir=tmp_path / "run",
        workers=1,
        log_format="quiet",
    ).run()
    assert got == [(1, {"value": 4})]
    assert "cannot be pickled" in result.quarantined[0]["evidence"]["message"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("workers", 0),
        ("batch_size", -1),
        ("timeout", 0),
        ("limiter", "magic"),
        ("crash_retries", -1),
    ],
)
def test_bad_options_are_config_errors(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        Job(WORK, source=[1], **{option: value})


def test_bad_memory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'lots'"):
        Job(WORK, source=[1], memory="lots", run_dir=tmp_path / "r").run()
    with pytest.raises(ConfigError, match="more than the effective budget"):
        Job(WORK, source=[1], memory="100TiB", run_dir=tmp_path / "r").run()


def test_a_bad_byte_in_a_csv_costs_its_row_only(tmp_path: Path) -> None:
    rows = [f"ok,{i}\n".encode() for i in range(100)]
    rows[49] = b"ok,caf\xe9\n"  # Latin-1, not UTF-8
    source = tmp_path / "items.csv"
    source.write_bytes(b"kind,value\n" + b"".join(rows))
    out = tmp_path / "o.jsonl"
    result = Job(
        WORK, source=source, sink=out, run_dir=tmp_path / "run", workers=1, log_format="quiet"
    ).run()
    assert result.succeeded == 99  # every row after the bad one ran
    (entry,) = result.quarantined
    assert entry["input_index"] == 49 and entry["status"] == "error"
    assert "line 51" in entry["evidence"]["message"]
    assert "not valid UTF-8" in entry["evidence"]["message"]
    done = sorted(json.loads(line)["input_index"] for line in out.read_text().splitlines())
    assert done == [i for i in range(100) if i != 49]


def test_nan_and_infinity_never_reach_the_output(tmp_path: Path) -> None:
    items = [
        {"kind": "ok", "value": 1},
        *({"kind": "not_finite", "value": v} for v in ("nan", "inf", "-inf")),
    ]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    out = tmp_path / "o.jsonl"
    result = Job(
        WORK, source=source, sink=out, run_dir=tmp_path / "run", workers=1, log_format="quiet"
    ).run()

    def strict(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    lines = [json.loads(line, parse_constant=strict) for line in out.read_text().splitlines()]
    assert lines == [{"input_index": 0, "result": {"value": 2}}]  # valid JSON, every line
    assert [q["input_index"] for q in result.quarantined] == [1, 2, 3]
    assert all("NaN or Infinity" in q["evidence"]["message"] for q in result.quarantined)
