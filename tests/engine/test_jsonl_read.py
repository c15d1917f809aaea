"""The JSONL fast path gives exactly what json.loads gives: every value, every error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oomguard.engine.jsonl_read import decode_line, jsonl_chunks
from oomguard.engine.sources import JsonlSource

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def loads_or_error(raw: bytes, decode: Any) -> tuple[str, Any]:
    try:
        return "value", decode(raw)
    except (ValueError, RecursionError) as err:
        return "error", f"{type(err).__name__}: {err}"


def same(a: Any, b: Any) -> bool:
    """Equal, NaN included (json reads NaN, and NaN != NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(values, st.sampled_from(["\n", "\r\n", "", "  \n", " x\n", ",1\n"]), st.booleans())
def test_a_line_of_any_json_value_decodes_as_json_loads_decodes_it(
    value: Any, end: str, pad: bool
) -> None:
    raw = ((" " if pad else "") + json.dumps(value) + end).encode()
    fast, slow = loads_or_error(raw, decode_line), loads_or_error(raw, json.loads)
    assert fast[0] == slow[0] and same(fast[1], slow[1]), (raw, fast, slow)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_decode_or_fail_as_json_loads_does(raw: bytes) -> None:
    fast, slow = loads_or_error(raw, decode_line), loads_or_error(raw, json.loads)
    assert fast[0] == slow[0] and same(fast[1], slow[1]), (raw, fast, slow)


def test_blocks_keep_indices_line_numbers_and_sizes_across_block_edges(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"i": i, "pad": "x" * (i % 50)}) for i in range(20_000)]
    lines[7] = "{not json"
    lines[12_345] = ""  # a blank line is no item
    lines[15_000] = "\ufeff1"  # a byte-order mark: json.loads takes it from bytes
    path.write_text("\n".join(lines) + "\n")
    chunks = list(jsonl_chunks(path))
    assert len(chunks) > 1  # the file spans several blocks
    items = [item for chunk in chunks for item in chunk]
    assert [item.index for item in items] == list(range(len(lines) - 1))
    assert items[7].error is not None and items[7].error.startswith(f"line 8 of {path} ")
    assert items[12_345].value == {"i": 12_346, "pad": "x" * (12_346 % 50)}
    assert items[14_999].value == 1 and items[14_999].error is None
    sizes = [len(line.encode()) + 1 for line in lines if line]
    assert [item.size for item in items] == sizes
    assert [item.index for item in JsonlSource(path)] == list(range(len(lines) - 1))
