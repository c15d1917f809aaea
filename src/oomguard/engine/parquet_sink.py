"""The Parquet sink: a directory of part files, each renamed into place on commit.

What the supervisor holds is one row group of rows, never a part or the output: the rest
is on disk under a hidden temporary name until the journal commits it (engine/sinks.py
describes the two-phase protocol every sink speaks).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

from oomguard.engine.sinks import Prepared, Results, fail, fsync_dir
from oomguard.errors import ConfigError

ROW_GROUP_BYTES = 1024 * 1024  # rows held as Python objects before they go to the part file


class ParquetSink:
    """A directory of part files; rows ``input_index`` + the result's keys (or ``result``).

    Rows are held as Python objects only until about ``ROW_GROUP_BYTES`` of them (by their
    pickled size; ``buffer_bytes`` if smaller), then written to the open part file as a row
    group; a part takes about ``buffer_bytes`` of rows and is then closed under its hidden
    temporary name, to be renamed on commit. So the supervisor holds one row group, not a
    part (a writer buffer that cannot explode, as a chemistry pipeline's did). A row group
    whose types differ from its part's is cast to them, or starts a part of its own.
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
        self.row_group_bytes = min(buffer_bytes, ROW_GROUP_BYTES)
        path.mkdir(mode=0o700, exist_ok=True)
        self._rows: list[dict[str, Any]] = []
        self._buffered = 0
        self.max_buffered = 0  # the most row bytes ever held in memory at once
        self.row_groups = 0
        self._part: _OpenPart | None = None
        self._pending: list[tuple[str, list[int]]] = []  # (part name, indices) written as .tmp
        self._next_part = self._first_free_part()

    def _first_free_part(self) -> int:
        names = [
            p.name.lstrip(".").removesuffix(".tmp") for p in self.path.glob("*part-*.parquet*")
        ]
        return 1 + max((int(n[5:-8]) for n in names), default=-1)

    def write(self, results: list[Results]) -> None:
        for index, value in (pair for group in results for pair in group.pairs()):
            row: dict[str, Any] = {"input_index": index}
            if isinstance(value, dict):
                row.update(value)
            else:
                row["result"] = value
            self._rows.append(row)
            self._buffered += len(pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL))
            self.max_buffered = max(self.max_buffered, self._buffered)
            if self._buffered >= self.row_group_bytes:
                self._write_row_group()

    def _tmp(self, name: str) -> Path:
        return self.path / f".{name}.tmp"  # hidden: readers of the directory skip it

    def _write_row_group(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa

        table = pa.Table.from_pylist(self._rows)
        if self._part is not None:
            fitted = self._part.fit(table)
            if fitted is None:
                self._close_part()
            table = fitted if fitted is not None else table
        if self._part is None:
            name = f"part-{self._next_part:06d}.parquet"
            self._next_part += 1
            self._part = _OpenPart(name, self._tmp(name), table.schema)
        self._part.write(table, [row["input_index"] for row in self._rows], self._buffered)
        self.row_groups += 1
        self._rows = []
        self._buffered = 0
        if self._part.bytes >= self.buffer_bytes:
            self._close_part()

    def _close_part(self) -> None:
        if self._part is not None:
            part, self._part = self._part, None
            part.close()
            self._pending.append((part.name, part.indices))

    def prepare(self, final: bool) -> Prepared | None:
        if final:
            self._write_row_group()
            self._close_part()
        if not self._pending:
            return None
        parts = [name for name, _ in self._pending]
        indices = [i for _, part in self._pending for i in part]
        self._pending = []
        return Prepared(indices, json.dumps(parts), parts)

    def commit(self, prepared: Prepared) -> None:
        for name in prepared.parts:
            os.replace(self._tmp(name), self.path / name)
        fsync_dir(self.path)

    def recover(self, tokens: list[str]) -> None:
        committed = {name for token in tokens for name in json.loads(token)}
        for tmp in self.path.glob(".part-*.parquet.tmp"):
            name = tmp.name[1:-4]
            if name in committed:
                os.replace(tmp, self.path / name)  # committed, renamed before the crash? now
            else:
                tmp.unlink()
        for part in self.path.glob("part-*.parquet"):
            if part.name not in committed:
                part.unlink()
        fsync_dir(self.path)
        self._next_part = self._first_free_part()

    def close(self) -> None:
        """A part still open (a run that stopped) is closed as it is: uncommitted, its
        temporary file is removed on resume."""
        part, self._part = self._part, None
        if part is not None:
            part.close()


class _OpenPart:
    """A part file being written under its temporary name, a row group at a time."""

    def __init__(self, name: str, tmp: Path, schema: Any) -> None:
        import pyarrow.parquet as pq

        self.name, self.tmp = name, tmp
        self.indices: list[int] = []
        self.bytes = 0  # the rows' pickled size, as the buffer counts them
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self._handle = os.fdopen(os.open(tmp, flags, 0o600), "wb")
            self._writer = pq.ParquetWriter(self._handle, schema)
        except OSError as err:
            raise fail("write", tmp, err) from err

    def fit(self, table: Any) -> Any:
        """``table`` in this part's schema, or None where it cannot be (other columns, or
        values the part's types cannot hold)."""
        import pyarrow as pa

        schema = self._writer.schema
        if table.schema.equals(schema):
            return table
        if set(table.column_names) != set(schema.names):
            return None
        try:
            return table.select(schema.names).cast(schema)
        except pa.ArrowException:
            return None

    def write(self, table: Any, indices: list[int], size: int) -> None:
        try:
            self._writer.write_table(table)
        except OSError as err:
            raise fail("write", self.tmp, err) from err
        self.indices.extend(indices)
        self.bytes += size

    def close(self) -> None:
        try:
            self._writer.close()
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        except OSError as err:
            raise fail("write", self.tmp, err) from err
