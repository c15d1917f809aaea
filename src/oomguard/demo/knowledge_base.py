"""The knowledge base: SQLite with an FTS5 index of document chunks, written exactly once.

It is a two-phase sink (see :class:`oomguard.engine.sinks.TwoPhaseSink`): ``prepare``
stages a group of documents' chunks under its batch id, ``commit`` moves them into the
searchable table in one transaction, ``recover`` finishes committed groups and drops the
rest after a crash. Search works on the file afterwards with plain SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    input_index INTEGER PRIMARY KEY, path TEXT NOT NULL, pages INTEGER, images INTEGER, chunks INTEGER);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(text, path UNINDEXED, chunk UNINDEXED);
CREATE TABLE IF NOT EXISTS staged (batch_id INTEGER NOT NULL, input_index INTEGER NOT NULL, document TEXT NOT NULL);
"""


class KnowledgeBase:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    # ---- the two-phase sink protocol

    def prepare(self, batch_id: int, records: list[tuple[int, Any]]) -> None:
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM staged WHERE batch_id = ?", (batch_id,))
        self.db.executemany(
            "INSERT INTO staged(batch_id, input_index, document) VALUES (?, ?, ?)",
            ((batch_id, index, json.dumps(document)) for index, document in records),
        )
        self.db.execute("COMMIT")

    def commit(self, batch_id: int) -> None:
        self.db.execute("BEGIN")
        rows = self.db.execute(
            "SELECT input_index, document FROM staged WHERE batch_id = ?", (batch_id,)
        ).fetchall()
        for index, text in rows:
            document = json.loads(text)
            if self.db.execute(
                "SELECT 1 FROM documents WHERE input_index = ?", (index,)
            ).fetchone():
                continue  # already in: commit is idempotent
            self.db.execute(
                "INSERT INTO documents(input_index, path, pages, images, chunks) VALUES (?, ?, ?, ?, ?)",
                (
                    index,
                    document["path"],
                    document["pages"],
                    document["images"],
                    len(document["chunks"]),
                ),
            )
            self.db.executemany(
                "INSERT INTO chunks(text, path, chunk) VALUES (?, ?, ?)",
                (
                    (chunk, document["path"], number)
                    for number, chunk in enumerate(document["chunks"])
                ),
            )
        self.db.execute("DELETE FROM staged WHERE batch_id = ?", (batch_id,))
        self.db.execute("COMMIT")

    def recover(self, committed: set[int]) -> None:
        for (batch_id,) in self.db.execute("SELECT DISTINCT batch_id FROM staged").fetchall():
            if batch_id in committed:
                self.commit(batch_id)
            else:
                self.db.execute("DELETE FROM staged WHERE batch_id = ?", (batch_id,))

    def close(self) -> None:
        self.db.close()

    # ---- using it

    def search(self, query: str, limit: int = 3) -> list[tuple[str, str]]:
        """(path, snippet) of the best chunks for ``query`` (FTS5 ranking)."""
        rows = self.db.execute(
            "SELECT path, snippet(chunks, 0, '[', ']', '…', 12) FROM chunks WHERE chunks MATCH ? "
            "ORDER BY rank LIMIT ?",
            (query, limit),
        ).fetchall()
        return [(Path(path).name, snippet) for path, snippet in rows]

    def counts(self) -> tuple[int, int]:
        documents = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(documents), int(chunks)

    def paths(self) -> list[str]:
        return [p for (p,) in self.db.execute("SELECT path FROM documents ORDER BY path")]
