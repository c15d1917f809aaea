"""An exactly-once sink of your own: results into a SQLite table, two-phase by batch id.

oomguard calls ``prepare(batch_id, records)`` with a group of results, commits the group
in its journal, then calls ``commit(batch_id)``. If the supervisor dies anywhere in
between, the next run calls ``recover(committed_ids)`` first: groups the journal
committed are made final (again, harmlessly), all others are thrown away. Every call is
idempotent by batch id, so nothing is written twice and nothing committed is lost.

The same shape works for PostgreSQL: a ``pending`` column (or a staging table) written
in ``prepare`` and flipped in ``commit``, in one transaction each.

    from oomguard import Job
    Job("mypkg.work:process", source="items.jsonl", sink=SqliteSink("results.db")).run()
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any


class SqliteSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results ("
            " input_index INTEGER PRIMARY KEY, result TEXT NOT NULL,"
            " batch_id INTEGER NOT NULL, pending INTEGER NOT NULL)"
        )

    def prepare(self, batch_id: int, records: list[tuple[int, Any]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO results(input_index, result, batch_id, pending) "
                "VALUES(?, ?, ?, 1)",
                ((index, json.dumps(result), batch_id) for index, result in records),
            )

    def commit(self, batch_id: int) -> None:
        self.db.execute("UPDATE results SET pending = 0 WHERE batch_id = ?", (batch_id,))

    def recover(self, committed: set[int]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            pending = [
                b
                for (b,) in self.db.execute(
                    "SELECT DISTINCT batch_id FROM results WHERE pending = 1"
                )
            ]
            for batch_id in pending:
                if batch_id in committed:
                    self.db.execute(
                        "UPDATE results SET pending = 0 WHERE batch_id = ?", (batch_id,)
                    )
                else:
                    self.db.execute("DELETE FROM results WHERE batch_id = ?", (batch_id,))

    def close(self) -> None:
        self.db.close()
