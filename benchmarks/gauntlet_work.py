"""The gauntlet's item: allocate ``mb`` MiB, touch it ``passes`` times (CPU-bound), return."""

from __future__ import annotations

from typing import Any

MiB = 1024 * 1024


def process(item: dict[str, Any]) -> dict[str, Any]:
    block = bytearray(item["mb"] * MiB)
    view = memoryview(block)
    for turn in range(item.get("passes", 3)):
        view[::4096] = bytes([turn + 1]) * len(view[::4096])  # every page, every pass
    return {"index": item["index"], "mb": item["mb"]}
