"""The journal: one SQLite database (WAL) per run, in the run directory.

It records where the run stands, never copies of the items: which input indices are
committed to the sink (as compact ranges, with the sink's durable position), which are
quarantined and why, every batch attempt, and events. Writes are grouped: the supervisor
checkpoints a group of commits in one transaction every ``commit_interval``.

Tables::

    meta        key -> JSON value: the job's configuration, the source and its fingerprint
    commits     id, indices ("0-9,12"), count, token (the sink's durable position), time
    quarantine  input index -> status, evidence, label (the item's name, if it has one)
    attempts    one row per batch attempt (the manifest's entries)
    events      time, event, detail
    sessions    one row per supervisor that ran on this directory
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError, OomguardError
from oomguard.journal.ranges import RangeSet, decode_ranges, encode_ranges
from oomguard.safe_files import check_own_file

JOURNAL_NAME = "journal.sqlite"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits (
    id INTEGER PRIMARY KEY, indices TEXT NOT NULL, count INTEGER NOT NULL,
    token TEXT, committed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    idx INTEGER PRIMARY KEY, status TEXT NOT NULL, evidence TEXT NOT NULL, at REAL NOT NULL,
    label TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, batch_id INTEGER, status TEXT NOT NULL, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, pid INTEGER, started REAL, ended REAL, status TEXT);
"""


# a quarantined item: input index, status, evidence and, if it has one, its label
Quarantined = tuple[int, str, dict[str, Any]] | tuple[int, str, dict[str, Any], str | None]


@dataclass(frozen=True)
class Checkpoint:
    """One grouped transaction's worth of state changes."""

    committed: list[int]
    token: str | None
    quarantined: list[Quarantined]
    attempts: list[dict[str, Any]]
    events: list[dict[str, Any]]


class JournalLost(OomguardError):
    """The journal file was deleted or replaced during the run: nothing more can be recorded."""


SIDE_FILES = ("-wal", "-shm")  # SQLite's own files beside the journal (WAL mode)


class Journal:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        # an empty file is what a supervisor killed as it created the journal leaves
        self.is_new = not path.exists() or (_empty(path) and not _has_content(_side(path, "-wal")))
        self.lost = False  # the file was found deleted or replaced (see ensure_present)
        self._db = self._connect(read_only)
        try:
            if not read_only:
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk before the sink's matching data may be trusted
                self._db.execute("PRAGMA synchronous=FULL")
            tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master")}
            if not tables and not read_only:
                # a database with nothing in it at all is what a supervisor killed as it
                # created the journal leaves (its header written, its schema not): it holds
                # nothing to lose, and the run starts afresh in it
                self.is_new = True
            if not self.is_new and "meta" not in tables:
                raise sqlite3.DatabaseError("a SQLite database, but not a journal")
            if not read_only:
                self._create_schema()
        except BaseException as err:
            self._db.close()
            if isinstance(err, sqlite3.DatabaseError) and not isinstance(
                err,
                sqlite3.OperationalError,  # a full disk, a lock: not the file's fault
            ):
                raise ConfigError(
                    f"{str(path)!r} is not an oomguard journal ({err}); use another --run-dir"
                ) from err
            raise
        info = os.stat(path)
        self._identity = (info.st_dev, info.st_ino)
        for suffix in SIDE_FILES:
            side = _side(path, suffix)
            if not read_only and side.exists():
                os.chmod(side, 0o600)

    def _create_schema(self) -> None:
        """The tables (those a later version added, in an older journal), and a new
        journal's version in the same transaction: a kill leaves all of it or none. The
        transaction is deferred: an existing journal's tables are all there, nothing is
        written, and a live run's writer is not waited for."""
        version = json.dumps(SCHEMA_VERSION)
        stamp = f"INSERT INTO meta(key, value) VALUES('schema_version', '{version}');"
        self._db.executescript(f"BEGIN;{SCHEMA}{stamp if self.is_new else ''}COMMIT;")
        if not self.is_new and not self._has_labels():  # a journal from before labels
            self._db.execute("ALTER TABLE quarantine ADD COLUMN label TEXT")

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        path = self.path
        if read_only:
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        sides = [_side(path, suffix) for suffix in SIDE_FILES]
        if self.is_new:
            for side in sides:  # a deleted journal's WAL would be replayed into the new one
                side.unlink(missing_ok=True)
            if not os.path.lexists(path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                os.close(fd)
        # SQLite opens these itself, following links: they must be ours before it does
        for each in (path, *sides):
            if os.path.lexists(each):
                check_own_file(each)
        return sqlite3.connect(path, timeout=10, isolation_level=None)

    def ensure_present(self) -> None:
        """Raise :class:`JournalLost` if the journal's file is no longer the one this object
        has open (deleted, or replaced by another file): writing on would record nothing
        anyone can read, and the run would end with results no journal vouches for."""
        try:
            info = os.stat(self.path)
            present = (info.st_dev, info.st_ino) == self._identity
        except FileNotFoundError:
            present = False
        if not present:
            self.lost = True
            raise JournalLost(
                f"the journal {str(self.path)!r} was deleted or replaced during the run: the run "
                "stops, as nothing more can be recorded; the output now holds results no journal "
                "vouches for, so start the job again in a new run directory (--overwrite)"
            )

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        return cls(run_dir / JOURNAL_NAME)

    @staticmethod
    def exists(run_dir: Path) -> bool:
        return (run_dir / JOURNAL_NAME).exists()

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------- meta

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value, default=str)),
        )

    def set_metas(self, values: dict[str, Any]) -> None:
        """Several keys at once: a run killed while recording its job leaves all or none."""
        with self._transaction():
            for key, value in values.items():
                self.set_meta(key, value)

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # ------------------------------------------------------------- writing

    def checkpoint(self, state: Checkpoint) -> None:
        """Everything in ``state`` becomes durable together, or none of it does.

        Raises :class:`JournalLost` if the journal's file is gone; once lost, a checkpoint
        records nothing (the run is stopping: what it writes could never be read back)."""
        if self.lost:
            return
        self.ensure_present()
        now = time.time()
        with self._transaction():
            if state.committed:
                self._db.execute(
                    "INSERT INTO commits(indices, count, token, committed_at) VALUES(?, ?, ?, ?)",
                    (encode_ranges(state.committed), len(state.committed), state.token, now),
                )
            self._db.executemany(
                "INSERT OR REPLACE INTO quarantine(idx, status, evidence, at, label) "
                "VALUES(?, ?, ?, ?, ?)",
                (
                    (entry[0], entry[1], json.dumps(entry[2], default=str), now, _label(entry))
                    for entry in state.quarantined
                ),
            )
            self._db.executemany(
                "INSERT INTO attempts(batch_id, status, entry) VALUES(?, ?, ?)",
                (
                    (a.get("batch_id"), a.get("status"), json.dumps(_stored(a), default=str))
                    for a in state.attempts
                ),
            )
            self._db.executemany(
                "INSERT INTO events(at, event, detail) VALUES(?, ?, ?)",
                (
                    (e.get("time", now), e.get("event", ""), json.dumps(e, default=str))
                    for e in state.events
                ),
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def remove_quarantined(self, indices: Iterable[int]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM quarantine WHERE idx=?", ((i,) for i in indices))

    def begin_session(self) -> int:
        cursor = self._db.execute(
            "INSERT INTO sessions(pid, started, status) VALUES(?, ?, 'running')",
            (os.getpid(), time.time()),
        )
        return int(cursor.lastrowid or 0)

    def end_session(self, session: int, status: str) -> None:
        self._db.execute(
            "UPDATE sessions SET ended=?, status=? WHERE id=?", (time.time(), status, session)
        )

    # ------------------------------------------------------------- reading

    def committed_set(self) -> RangeSet:
        done = RangeSet()
        for (text,) in self._db.execute("SELECT indices FROM commits"):
            done.update(decode_ranges(text))
        return done

    def done_set(self) -> RangeSet:
        """Every input index that is committed or quarantined: skipped on resume."""
        done = self.committed_set()
        for (index,) in self._db.execute("SELECT idx FROM quarantine"):
            done.add(index)
        return done

    def tokens(self) -> list[str]:
        return [
            t
            for (t,) in self._db.execute(
                "SELECT token FROM commits WHERE token IS NOT NULL ORDER BY id"
            )
        ]

    def committed_count(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(count), 0) FROM commits").fetchone()
        return int(row[0])

    def quarantine_counts(self) -> dict[str, int]:
        return {
            s: n
            for s, n in self._db.execute("SELECT status, COUNT(*) FROM quarantine GROUP BY status")
        }

    def _has_labels(self) -> bool:
        columns = self._db.execute("PRAGMA table_info(quarantine)").fetchall()
        return any(column[1] == "label" for column in columns)

    def quarantined(self, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """``{"input_index", "status", "evidence"}`` per quarantined item, with ``"label"``
        beside its index where the item has one."""
        query = (
            "SELECT idx, label, status, evidence FROM quarantine ORDER BY idx"
            if self._has_labels()
            else "SELECT idx, NULL, status, evidence FROM quarantine ORDER BY idx"  # read-only
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        for index, name, status, evidence in self._db.execute(query):
            entry: dict[str, Any] = {"input_index": index}
            if name is not None:
                entry["label"] = name
            entry.update(status=status, evidence=json.loads(evidence))
            yield entry

    def attempts(self) -> Iterator[dict[str, Any]]:
        """Every attempt's manifest entry, its ``input_indices`` a list of them all."""
        for (text,) in self._db.execute("SELECT entry FROM attempts ORDER BY id"):
            yield attempt_from_row(text)

    def attempt_counts(self) -> dict[str, int]:
        return {
            s: n
            for s, n in self._db.execute("SELECT status, COUNT(*) FROM attempts GROUP BY status")
        }

    def events(self) -> Iterator[dict[str, Any]]:
        for (detail,) in self._db.execute("SELECT detail FROM events ORDER BY id"):
            yield json.loads(detail)

    def recent_events(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [json.loads(detail) for (detail,) in reversed(rows)]

    def sessions(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, pid, started, ended, status FROM sessions ORDER BY id")
        return [
            dict(zip(("id", "pid", "started", "ended", "status"), row, strict=True)) for row in rows
        ]


def _label(entry: Quarantined) -> str | None:
    return entry[3] if len(entry) > 3 else None


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _empty(path: Path) -> bool:
    return os.lstat(path).st_size == 0


def _has_content(path: Path) -> bool:
    try:
        return os.lstat(path).st_size > 0
    except FileNotFoundError:
        return False


def attempt_from_row(text: str) -> dict[str, Any]:
    """An attempt's entry as the attempts table holds it, its indices listed again."""
    entry: dict[str, Any] = json.loads(text)
    span = entry.get("input_indices")
    if isinstance(span, dict):
        entry["input_indices"] = list(range(*span["range"]))
    return entry


def _stored(entry: dict[str, Any]) -> dict[str, Any]:
    """An attempt's entry as journaled: a batch of consecutive items (a run's, held as a
    range) as ``{"range": [start, stop]}``, not a number per item."""
    span = entry.get("input_indices")
    if isinstance(span, range):
        return {**entry, "input_indices": {"range": [span.start, span.stop]}}
    return entry


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
