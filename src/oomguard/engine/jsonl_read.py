"""Reading a JSONL file fast: lines a block at a time, each decoded by the C scanner.

The reader thread is the supervisor's busiest part on small items: ``json.loads`` on a
line of bytes pays for encoding detection, a decode and two Python calls before the C
scanner runs. Here a block of lines is read at once and each line goes to the scanner
directly; a line the fast path cannot take as it is (leading whitespace, a byte-order
mark, bytes that are not UTF-8, anything invalid) goes through ``json.loads``, so every
value, and every error message, is exactly what ``json.loads`` gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oomguard.engine.items import Item

BLOCK_BYTES = 1 << 16  # lines read per block: about 64 KiB of input
# the C scanner (json's own, with its defaults): (value, end) from a position in a text
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_TRAILING = frozenset(("\n", "\r\n", ""))


def decode_line(raw: bytes) -> object:
    """One line's value, as ``json.loads(raw)`` would give it (raises ``ValueError`` the
    same way)."""
    try:
        text = raw.decode()
        value, end = _scan(text, 0)
    except (UnicodeDecodeError, StopIteration, ValueError):
        return json.loads(raw)
    if text[end:] not in _TRAILING and text[end:].strip():
        return json.loads(raw)  # something after the value: json.loads says what
    return value


def jsonl_chunks(path: Path) -> Iterator[list[Item]]:
    """The file's items, a block of lines at a time. Blank lines are no item; a line that
    is not JSON is an item carrying the error (its line number and json's message)."""
    index = 0
    line_number = 0
    with open(path, "rb") as handle:
        while lines := handle.readlines(BLOCK_BYTES):
            chunk: list[Item] = []
            add = chunk.append
            for raw in lines:
                line_number += 1
                if not raw.strip():
                    continue
                try:
                    add(Item(index, decode_line(raw), len(raw)))
                except ValueError as err:
                    error = f"line {line_number} of {path} is not valid JSON: {err}"
                    add(Item(index, None, len(raw), error))
                index += 1
            if chunk:
                yield chunk
