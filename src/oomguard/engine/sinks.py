"""Where results go: a JSONL file, a Parquet file, or a callable (a database, anything).

A sink receives results a batch at a time as :class:`Record` s. The JSONL sink writes the
line the worker already encoded (``{"input_index": i, "result": r}``), so the supervisor
does no per-item encoding; the Parquet sink buffers rows up to a byte bound and then
writes a row group (seeds/003: a writer buffer that cannot explode).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oomguard.errors import ConfigError


@dataclass(frozen=True)
class Record:
    index: int
    value: Any
    line: str | None  # the JSONL line, when the worker encoded one


class Sink(Protocol):
    wants_json: bool  # ask workers to encode each result as a JSONL line

    def write(self, records: list[Record]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    wants_json = True

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)

    def write(self, records: list[Record]) -> None:
        self._file.writelines(
            (r.line if r.line is not None else encode_line(r.index, r.value)) + "\n"
            for r in records
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def encode_line(index: int, value: Any) -> str:
    return json.dumps({"input_index": index, "result": value}, ensure_ascii=False)


class ParquetSink:
    """Rows ``input_index`` + the result's keys (a dict result) or ``result``.

    At most ``buffer_bytes`` of rows (as estimated from their pickled size) are held before
    a row group is written.
    """

    wants_json = False

    def __init__(self, path: Path, buffer_bytes: int = 8 * 1024 * 1024) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise ConfigError(
                f"writing {path} needs pyarrow: pip install 'oomguard[parquet]'"
            ) from err
        self.path = path
        self.buffer_bytes = buffer_bytes
        self._rows: list[dict[str, Any]] = []
        self._buffered = 0
        self.max_buffered = 0  # the largest the buffer ever was, in bytes (for tests/summary)
        self.row_groups = 0
        self._writer: Any = None

    def write(self, records: list[Record]) -> None:
        for record in records:
            row = {"input_index": record.index}
            if isinstance(record.value, dict):
                row.update(record.value)
            else:
                row["result"] = record.value
            self._rows.append(row)
            self._buffered += len(pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL))
            self.max_buffered = max(self.max_buffered, self._buffered)
            if self._buffered >= self.buffer_bytes:
                self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._rows)
        if self._writer is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.close(fd)
            self._writer = pq.ParquetWriter(self.path, table.schema)
        else:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)
        self.row_groups += 1
        self._rows = []
        self._buffered = 0

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()


class CallableSink:
    """Calls ``function([(input_index, result), ...])`` once per finished batch."""

    wants_json = False

    def __init__(self, function: Callable[[list[tuple[int, Any]]], object]) -> None:
        self.function = function

    def write(self, records: list[Record]) -> None:
        self.function([(r.index, r.value) for r in records])

    def close(self) -> None:
        close = getattr(self.function, "close", None)
        if callable(close):
            close()


def open_sink(spec: Any, parquet_buffer_bytes: int = 8 * 1024 * 1024) -> Sink:
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        if not path.parent.exists():
            raise ConfigError(
                f"output {str(path)!r}: the directory {str(path.parent)!r} does not exist"
            )
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            return JsonlSink(path)
        if suffix in (".parquet", ".pq"):
            return ParquetSink(path, parquet_buffer_bytes)
        raise ConfigError(f"output {str(path)!r}: expected a .jsonl or .parquet file name")
    if callable(spec):
        return CallableSink(spec)
    raise ConfigError(f"invalid sink {spec!r}: expected a .jsonl or .parquet path, or a callable")
