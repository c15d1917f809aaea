"""Reading a JSONL file fast: lines a block at a time, each decoded by the C scanner.

The reader thread is the supervisor's busiest part on small items: ``json.loads`` on a
line of bytes pays for encoding detection, a decode and two Python calls before the C
scanner runs. Here a block of lines is read at once and decoded as one text, and the
scanner is mapped over the lines' starts in C; when every line is one value that ends at
its newline the block is a :class:`Run` (no object per item). Otherwise each line of the
block goes to the scanner on its own, and a line that path cannot take as it is (leading
whitespace, a byte-order mark, bytes that are not UTF-8, anything invalid) goes through
``json.loads``, so every value, and every error message, is exactly what ``json.loads``
gives.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from oomguard.engine.items import Item, Run

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


_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_plus_one = (1).__add__  # a value's end, plus its newline


def block_run(lines: list[bytes], index: int) -> Run | None:
    """The block's items from ``index`` on as a run, when every line holds exactly one JSON
    value that ends at its newline (no blank line, no padding, no ``\r``); else None.

    Where the scanner stopped is checked against each line's end, so no value can run into
    the next line: a value is taken only where its line is that value and nothing else."""
    try:
        text = b"".join(lines).decode()
    except UnicodeDecodeError:
        return None
    sizes = list(map(len, lines))
    # where each line starts in the text and one past its end (the next line's start):
    # bytes are characters in ASCII text; otherwise each line's characters are counted
    widths = sizes if text.isascii() else list(map(len, text.splitlines(keepends=True)))
    if len(widths) != len(lines):
        return None  # a character that splitlines() breaks at inside a line: per line
    bounds = list(itertools.accumulate(widths, initial=0))
    starts = bounds[:-1]
    if not text.endswith("\n"):
        bounds[-1] += 1  # the last line has no newline: its value ends the text
    try:
        # a position the scanner cannot start at stops the map early (StopIteration)
        found = list(map(_scan, itertools.repeat(text, len(starts)), starts))
    except (ValueError, RecursionError):
        return None
    if len(found) != len(starts) or list(map(_plus_one, map(_second, found))) != bounds[1:]:
        return None
    return Run(index, list(map(_first, found)), sizes)


def jsonl_chunks(path: Path) -> Iterator[Sequence[Item]]:
    """The file's items, a block of lines at a time (a :class:`Run` where the block is
    clean). Blank lines are no item; a line that is not JSON is an item carrying the error
    (its line number and json's message)."""
    index = 0
    line_number = 0
    with open(path, "rb") as handle:
        while lines := handle.readlines(BLOCK_BYTES):
            run = block_run(lines, index)
            if run is not None:
                yield run
                index += len(lines)
                line_number += len(lines)
                continue
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
