"""Where items come from: JSONL, CSV, Parquet, a directory of files, any iterable.

Every source streams: it yields :class:`Item` s one at a time and never holds the whole
input, so a 10,000,000-line file costs the supervisor no more memory than a 10-line one.
A line that cannot be parsed becomes an item carrying ``error`` (it is quarantined, the
run goes on); a missing file is a :class:`ConfigError` before any work starts.
"""

from __future__ import annotations

import csv
import functools
import itertools
import os
import pickle
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from oomguard.engine.items import Item, Run
from oomguard.engine.jsonl_read import jsonl_chunks
from oomguard.errors import ConfigError, OomguardWarning


class Source(Protocol):
    description: str

    def __iter__(self) -> Iterator[Item]: ...

    def count(self) -> int | None:
        """How many items there are, if that can be known cheaply (for progress)."""


def count_up_to(source: Source, limit: int) -> int | None:
    """``min(the source's item count, limit)``, reading no more than needed to know it;
    None where it cannot be told without running the source (an iterable without len)."""
    bounded = getattr(source, "count_up_to", None)
    if callable(bounded):
        result = bounded(limit)
        return None if result is None else int(result)
    return None


def _count_lines(path: Path, limit: int | None = None) -> int:
    """Lines in ``path`` (a last line without its newline counts); past ``limit``, stop."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            if limit is not None and lines > limit:
                return lines
    return lines + (0 if last == b"\n" else 1)


class JsonlSource:
    """One JSON value per line; blank lines are skipped (they are no item)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"JSONL file {path}"

    def __iter__(self) -> Iterator[Item]:
        for chunk in self.chunks():
            yield from chunk

    def chunks(self) -> Iterator[Sequence[Item]]:
        """The items a block of lines at a time (the reader thread's fast path)."""
        return jsonl_chunks(self.path)

    def count(self) -> int | None:
        return _count_lines(self.path)

    def count_up_to(self, limit: int) -> int:
        return min(limit, _count_lines(self.path, limit))


class CsvSource:
    """One item per row, a dict keyed by the header row.

    Bytes that are not UTF-8 are read as lone surrogates (``surrogateescape``), so one bad
    byte costs its row (quarantined, with its line number), never the rest of the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"CSV file {path}"
        with open(path, "rb") as handle:
            header = handle.readline()
        try:
            header.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"the header (line 1) of {path} is not valid UTF-8: {err}") from err

    def __iter__(self) -> Iterator[Item]:
        with open(self.path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            reader = csv.DictReader(handle)
            for index, row in enumerate(reader):
                values = [v for v in row.values() if isinstance(v, str)]
                size = sum(map(len, values))
                if None in row:
                    problem = "more fields than the header"
                elif _not_utf8(*values):
                    problem = "not valid UTF-8"
                else:
                    yield Item(index, row, size)
                    continue
                yield Item(
                    index, None, size, error=f"line {reader.line_num} of {self.path}: {problem}"
                )

    def count(self) -> int | None:
        return max(0, _count_lines(self.path) - 1)

    def count_up_to(self, limit: int) -> int:
        return min(limit, max(0, _count_lines(self.path, limit + 1) - 1))


def _not_utf8(*texts: str) -> bool:
    """Whether any of ``texts`` holds a byte that was not UTF-8 (a lone surrogate)."""
    for text in texts:
        if text.isascii():
            continue  # the common case, checked in C
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return False


class ParquetSource:
    """One item per row (a dict), read a record batch at a time (needs oomguard[parquet]).

    Batches are small and read on this thread: the supervisor holds one batch's rows, not a
    row group's (engine/arrow_pool.py says where the rest of its Arrow memory went)."""

    def __init__(self, path: Path, batch_rows: int = 1024) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ConfigError(
                f"reading {path} needs pyarrow: pip install 'oomguard[parquet]'"
            ) from err
        self.path = path
        self.batch_rows = batch_rows
        self.description = f"Parquet file {path}"
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise ConfigError(f"input {str(path)!r} is not a readable Parquet file: {err}") from err

    def __iter__(self) -> Iterator[Item]:
        import pyarrow.parquet as pq

        index = 0
        # a reader of its own: it allocates from the Arrow pool that is the default now, in
        # the run, not from the one there was when the source was opened
        reader = pq.ParquetFile(self.path)
        for record_batch in reader.iter_batches(batch_size=self.batch_rows, use_threads=False):
            row_size = max(1, record_batch.nbytes // max(1, record_batch.num_rows))
            for row in record_batch.to_pylist():
                yield Item(index, row, row_size)
                index += 1

    def count(self) -> int | None:
        return int(self._file.metadata.num_rows)

    def count_up_to(self, limit: int) -> int:
        return min(limit, int(self._file.metadata.num_rows))


class DirectorySource:
    """One item per regular file matching ``pattern`` (sorted by path): ``{"path",
    "size"}``, labelled with its path relative to the directory.

    The default pattern, ``*``, takes the files directly in the directory; a pattern
    with ``**`` (``**/*.pdf``) recurses into subdirectories, as :meth:`Path.glob` does.
    Subdirectories a pattern does not reach are named in a warning, never silently
    skipped."""

    def __init__(self, path: Path, pattern: str | None = None) -> None:
        self.path = path
        self.pattern = pattern or DEFAULT_GLOB
        self.description = f"directory {path}" + (f" ({pattern})" if pattern else "")
        if Path(self.pattern).is_absolute() or ".." in Path(self.pattern).parts:
            raise ConfigError(
                f"invalid glob {self.pattern!r}: expected a pattern inside the input directory "
                "(such as '*.pdf' or '**/*.pdf')"
            )
        if "**" not in self.pattern:
            _warn_unread_subdirectories(path, self.pattern)

    def _files(self) -> Iterator[Path]:
        for entry in sorted(self.path.glob(self.pattern)):
            if entry.is_file():
                yield entry

    def __iter__(self) -> Iterator[Item]:
        for index, entry in enumerate(self._files()):
            size = entry.stat().st_size
            label = str(entry.relative_to(self.path))
            yield Item(index, {"path": str(entry), "size": size}, size, label=label)

    def count(self) -> int | None:
        return sum(1 for _ in self._files())

    def count_up_to(self, limit: int) -> int:
        return sum(1 for _ in itertools.islice(self._files(), limit))


DEFAULT_GLOB = "*"  # the files directly in the directory


def _warn_unread_subdirectories(path: Path, pattern: str) -> None:
    """A pattern that does not recurse, over a directory with subdirectories: say so."""
    if "/" in pattern:
        return  # a pattern naming its own subdirectories ("scans/*.pdf") knows the tree
    try:
        subdirectories = [e.name for e in os.scandir(path) if e.is_dir()]
    except OSError:
        return
    if subdirectories:
        warnings.warn(
            OomguardWarning(
                f"input {str(path)!r}: {len(subdirectories)} subdirectories (such as "
                f"{sorted(subdirectories)[0]!r}) are not read; --glob '**/{pattern}' recurses"
            ),
            stacklevel=3,
        )


class LabelledSource:
    """Another source whose items are labelled by one field of theirs (``label_field``):
    ``str(value[field])`` for a dict (a JSONL object, a CSV or Parquet row) that has it."""

    def __init__(self, source: Source, label_field: str) -> None:
        self.source = source
        self.label_field = label_field
        self.description = source.description
        if callable(getattr(source, "chunks", None)):
            self.chunks = self._chunks  # a block reader stays one

    def _label(self, item: Item) -> Item:
        value = item.value
        if isinstance(value, dict) and value.get(self.label_field) is not None:
            item.label = str(value[self.label_field])
        return item

    def __iter__(self) -> Iterator[Item]:
        return map(self._label, self.source)

    def _chunks(self) -> Iterator[list[Item]]:
        for chunk in self.source.chunks():  # type: ignore[attr-defined]
            yield [self._label(item) for item in chunk]

    def count(self) -> int | None:
        return self.source.count()

    def count_up_to(self, limit: int) -> int | None:
        return count_up_to(self.source, limit)


_pickled = functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)


class IterableSource:
    """Any Python iterable; an item's size is its pickled size.

    A list or a tuple, whose items are all there already, is read in runs of
    ``RUN_ITEMS`` (the reader's fast path, as a JSONL file's blocks); any other iterable an
    item at a time, so a slow generator's item goes as soon as it comes."""

    RUN_ITEMS = 1024

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable
        self.description = f"iterable {type(iterable).__name__}"
        if isinstance(iterable, list | tuple):
            self.chunks = self._runs

    def __iter__(self) -> Iterator[Item]:
        return self._items(self.iterable, 0)

    @staticmethod
    def _items(values: Iterable[Any], start: int) -> Iterator[Item]:
        for index, value in enumerate(values, start):
            try:
                size = len(_pickled(value))
            except Exception as err:
                yield Item(index, None, 0, error=f"item {index} cannot be pickled: {err}")
                continue
            yield Item(index, value, size)

    def _runs(self) -> Iterator[Sequence[Item]]:
        values = iter(self.iterable)  # not by len(): a sequence's may be wrong
        start = 0
        while block := list(itertools.islice(values, self.RUN_ITEMS)):
            start, first = start + len(block), start
            try:
                sizes = list(map(len, map(_pickled, block)))
            except Exception:
                yield list(self._items(block, first))  # the item that cannot be pickled says so
            else:
                yield Run(first, block, sizes)

    def count(self) -> int | None:
        try:
            return len(self.iterable)  # type: ignore[arg-type]
        except TypeError:
            return None

    def count_up_to(self, limit: int) -> int | None:
        count = self.count()
        return None if count is None else min(limit, count)


def check_readable(path: Path) -> None:
    """Open the input once now: a file that cannot be read is a one-line error before any
    work, not a traceback from the reader thread."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb") as handle:
                handle.read(1)
    except OSError as err:
        raise ConfigError(f"input {str(path)!r} cannot be read: {err.strerror or err}") from err


def open_source(spec: Any, *, glob: str | None = None, label_field: str | None = None) -> Source:
    """A source for a path (by its suffix, or a directory: the files matching ``glob``)
    or for any iterable; with ``label_field``, its items are labelled by that field."""
    source = _open(spec, glob)
    return LabelledSource(source, label_field) if label_field else source


def _open(spec: Any, glob: str | None) -> Source:
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        if not path.exists():
            raise ConfigError(f"input {str(path)!r} does not exist")
        check_readable(path)
        if path.is_dir():
            return DirectorySource(path, glob)
        if glob is not None:
            raise ConfigError(
                f"glob {glob!r} picks the files of a directory input; {str(path)!r} is a file"
            )
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return ParquetSource(path)
        if suffix in (".jsonl", ".ndjson"):
            return JsonlSource(path)
        if suffix == ".csv":
            return CsvSource(path)
        raise ConfigError(
            f"input {str(path)!r}: cannot tell its format from the suffix {suffix!r}; expected "
            ".jsonl, .ndjson, .csv, .parquet or a directory"
        )
    if glob is not None:
        raise ConfigError(f"glob {glob!r} picks the files of a directory input, not of {spec!r}")
    if isinstance(spec, Iterable):
        return IterableSource(spec)
    raise ConfigError(
        f"invalid source {spec!r}: expected a path (.jsonl, .csv, .parquet, a directory) "
        "or an iterable"
    )
