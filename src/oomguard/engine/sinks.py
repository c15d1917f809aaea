"""Where results go, exactly once: JSONL, Parquet, a two-phase sink of your own, a callable.

Every sink speaks the same two-phase protocol with the journal:

1. ``write(results)`` stages results (a batch at a time, as the worker reported them);
2. ``prepare(final)`` makes what is staged durable but not yet trusted, and returns a
   :class:`Prepared` (its indices and a token: the sink's durable position);
3. the journal commits those indices with the token, in one transaction;
4. ``commit(prepared)`` makes them final;
5. on resume, ``recover(tokens)`` undoes whatever was prepared but never committed.

So a result is in the sink if and only if the journal says it is committed, whoever dies
in between. JSONL appends, flushes and fsyncs, and records the end offset; resume
truncates to the last committed offset. Parquet (engine/parquet_sink.py) writes part files
under hidden temporary names and renames them on commit; resume removes uncommitted parts. A plain callable gets
each batch once it ends — at least once across a supervisor crash; implement
:class:`TwoPhaseSink` (``prepare``/``commit``/``recover`` keyed by batch id) for exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from oomguard.engine.worker import encode_line
from oomguard.errors import ConfigError, SinkError
from oomguard.journal.ranges import RangeSet


@dataclass(slots=True)
class Results:
    """Items that succeeded, in the order they ran, as a worker reported them together: a
    group of results is moved and written whole, never an object per item (the
    supervisor's cost per item is what bounds the throughput of fast items).

    ``lines``: their JSONL text, a line each, when the worker encoded them (``wants_json``);
    else ``values``.
    """

    indices: list[int]
    values: list[Any] | None = None
    lines: str | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def pairs(self) -> list[tuple[int, Any]]:
        """``(input_index, result)`` for each item (of results not sent as lines)."""
        assert self.values is not None, "results sent as JSONL lines"
        return list(zip(self.indices, self.values, strict=True))

    def text(self) -> str:
        """The JSONL lines, made here where the worker sent values."""
        if self.lines is not None:
            return self.lines
        return "".join(f"{encode_line(index, value)}\n" for index, value in self.pairs())

    def one_by_one(self) -> list[tuple[int, Any, str | None]]:
        """``(index, value, line)`` for each item (``line`` without its newline)."""
        if self.lines is not None:
            lines = self.lines.split("\n")[:-1]  # JSON escapes every newline within a value
            return [(index, None, line) for index, line in zip(self.indices, lines, strict=True)]
        return [(index, value, None) for index, value in self.pairs()]

    @staticmethod
    def join(items: list[tuple[int, Any, str | None]]) -> Results:
        """One group of ``(index, value, line)`` entries, the inverse of :meth:`one_by_one`."""
        indices = [index for index, _, _ in items]
        if items and items[0][2] is not None:
            return Results(indices, lines="".join(f"{line}\n" for _, _, line in items))
        return Results(indices, values=[value for _, value, _ in items])


@dataclass
class Prepared:
    indices: list[int]
    token: str | None
    parts: list[str] = field(default_factory=list)


class Sink(Protocol):
    wants_json: bool  # ask workers to encode each result as a JSONL line

    def write(self, results: list[Results]) -> None: ...

    def prepare(self, final: bool) -> Prepared | None: ...

    def commit(self, prepared: Prepared) -> None: ...

    def recover(self, tokens: list[str]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class TwoPhaseSink(Protocol):
    """Implement this for exactly-once output to a store of your own (see examples/).

    ``prepare(batch_id, records)`` stores the records as pending under ``batch_id``;
    ``commit(batch_id)`` makes them visible; ``recover(committed)`` is called on resume with
    every batch id the journal committed: commit those (idempotently) and drop all other
    pending ones. Every call must be idempotent by batch id.
    """

    def prepare(self, batch_id: int, records: list[tuple[int, Any]]) -> None: ...

    def commit(self, batch_id: int) -> None: ...

    def recover(self, committed: set[int]) -> None: ...


def fail(action: str, path: Path, err: OSError) -> SinkError:
    return SinkError(
        f"cannot {action} {path}: {err.strerror or err}; nothing committed is lost, "
        "fix it and resume the run",
        path,
    )


class JsonlSink:
    wants_json = True

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
        except OSError as err:
            raise fail("open", path, err) from err
        self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
        self._staged: list[int] = []

    def write(self, results: list[Results]) -> None:
        try:
            self._file.writelines(group.text() for group in results)
        except OSError as err:
            raise fail("write to", self.path, err) from err
        for group in results:
            self._staged.extend(group.indices)

    def prepare(self, final: bool) -> Prepared | None:
        if not self._staged:
            return None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as err:
            raise fail("write to", self.path, err) from err
        prepared = Prepared(self._staged, str(os.fstat(self._file.fileno()).st_size))
        self._staged = []
        return prepared

    def commit(self, prepared: Prepared) -> None:
        pass  # appended lines are final once the journal holds their offset

    def recover(self, tokens: list[str]) -> None:
        """Cut off whatever was written after the last committed offset."""
        committed = max((int(t) for t in tokens), default=0)
        self._file.flush()
        if os.fstat(self._file.fileno()).st_size > committed:
            os.truncate(self.path, committed)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as err:
            raise fail("close", self.path, err) from err


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TwoPhaseAdapter:
    """Drives a user's :class:`TwoPhaseSink`: one prepare/commit per checkpoint group."""

    wants_json = False

    def __init__(self, target: TwoPhaseSink) -> None:
        self.target = target
        self._staged: list[tuple[int, Any]] = []
        self._next_id: int | None = None

    def write(self, results: list[Results]) -> None:
        for group in results:
            self._staged.extend(group.pairs())

    def prepare(self, final: bool) -> Prepared | None:
        if not self._staged:
            return None
        assert self._next_id is not None, "recover() runs before the first prepare()"
        group = self._next_id
        self._next_id += 1
        self.target.prepare(group, self._staged)
        prepared = Prepared([index for index, _ in self._staged], str(group))
        self._staged = []
        return prepared

    def commit(self, prepared: Prepared) -> None:
        assert prepared.token is not None
        self.target.commit(int(prepared.token))

    def recover(self, tokens: list[str]) -> None:
        committed = {int(t) for t in tokens}
        self.target.recover(committed)
        self._next_id = max(committed, default=0) + 1

    def close(self) -> None:
        close = getattr(self.target, "close", None)
        if callable(close):
            close()


class CallableSink:
    """Calls ``function([(input_index, result), ...])`` once per finished batch (at least once)."""

    wants_json = False

    def __init__(self, function: Callable[[list[tuple[int, Any]]], object]) -> None:
        self.function = function
        self._staged: list[int] = []

    def write(self, results: list[Results]) -> None:
        self.function([pair for group in results for pair in group.pairs()])
        for group in results:
            self._staged.extend(group.indices)

    def prepare(self, final: bool) -> Prepared | None:
        if not self._staged:
            return None
        prepared = Prepared(self._staged, None)
        self._staged = []
        return prepared

    def commit(self, prepared: Prepared) -> None:
        pass

    def recover(self, tokens: list[str]) -> None:
        pass

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
            from oomguard.engine.parquet_sink import ParquetSink

            return ParquetSink(path, parquet_buffer_bytes)
        raise ConfigError(f"output {str(path)!r}: expected a .jsonl or .parquet file name")
    if isinstance(spec, TwoPhaseSink):
        return TwoPhaseAdapter(spec)
    if callable(spec):
        return CallableSink(spec)
    raise ConfigError(
        f"invalid sink {spec!r}: expected a .jsonl or .parquet path, a two-phase sink or a callable"
    )


class OrderedWriter:
    """Holds results until every earlier input index is done (``ordered=True``)."""

    def __init__(self, sink: Sink, done: RangeSet) -> None:
        self.sink = sink
        self.next_index = 0
        self._held: dict[int, tuple[int, Any, str | None] | None] = {}
        self._done = done.ranges()  # indices done in earlier sessions never come again
        self._skip_done()

    def _skip_done(self) -> None:
        while self._done and self._done[0][0] <= self.next_index:
            _, stop = self._done.pop(0)
            self.next_index = max(self.next_index, stop)

    def write(self, results: list[Results]) -> None:
        for group in results:
            for entry in group.one_by_one():
                self._held[entry[0]] = entry
        self._release()

    def skip(self, index: int) -> None:
        self._held[index] = None
        self._release()

    def _release(self) -> None:
        ready: list[tuple[int, Any, str | None]] = []
        while self.next_index in self._held:
            entry = self._held.pop(self.next_index)
            if entry is not None:
                ready.append(entry)
            self.next_index += 1
            self._skip_done()
        if ready:
            self.sink.write([Results.join(ready)])
