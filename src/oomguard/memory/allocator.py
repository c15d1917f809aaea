"""Which malloc this process uses and how it is tuned (for worker hygiene and doctor)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class AllocatorInfo(NamedTuple):  # not a dataclass: workers import this module at start
    glibc: bool  # malloc_trim is available
    jemalloc: bool  # jemalloc is loaded (LD_PRELOAD or linked): trim is pointless there
    malloc_arena_max: str | None
    malloc_trim_threshold: str | None


def jemalloc_loaded(maps_path: Path = Path("/proc/self/maps")) -> bool:
    try:
        return "jemalloc" in maps_path.read_text()
    except OSError:
        return "jemalloc" in os.environ.get("LD_PRELOAD", "")


def glibc_malloc_trim_available() -> bool:
    import ctypes.util  # runs ldconfig: for doctor, never on a worker's path

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return hasattr(ctypes.CDLL(name), "malloc_trim")
    except OSError:
        return False


def read_allocator() -> AllocatorInfo:
    return AllocatorInfo(
        glibc=glibc_malloc_trim_available(),
        jemalloc=jemalloc_loaded(),
        malloc_arena_max=os.environ.get("MALLOC_ARENA_MAX"),
        malloc_trim_threshold=os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    )
