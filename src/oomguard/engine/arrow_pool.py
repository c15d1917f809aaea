"""The supervisor's Arrow allocations come from the system allocator while a run lasts.

pyarrow's default pool (mimalloc or jemalloc) keeps the pages it freed for its own reuse,
in per-thread segments: a supervisor that reads a Parquet source and writes a Parquet sink
a row group at a time held about 20 MiB more for each than the bytes Arrow had allocated
(``pa.total_allocated_bytes()`` stayed near 1 MiB while RSS grew; BENCHMARKS.md,
"Supervisor memory"). The system pool returns large blocks to the kernel when they are
freed, so what the supervisor holds is what it uses. Buffers allocated before the switch
still go back to their own pool, so switching while other threads use Arrow is safe; the
caller's pool is restored when the run ends (a job run from Python leaves its process as
it was).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet(spec: Any) -> bool:
    """Whether a source or sink spec names a Parquet file (or a Parquet output directory)."""
    return isinstance(spec, str | os.PathLike) and Path(spec).suffix.lower() in PARQUET_SUFFIXES


@contextlib.contextmanager
def system_arrow_pool(needed: bool) -> Iterator[None]:
    """Make the system allocator Arrow's default pool inside the block, when ``needed``."""
    if not needed:
        yield
        return
    try:
        import pyarrow as pa
    except ImportError:  # the source or sink says what to install when it opens
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
