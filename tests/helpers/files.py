"""Files for tests that watch the page cache."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

MiB = 1024 * 1024


def uncached_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes (whole MiB) that was never in the page cache: written with
    O_DIRECT, so a reader's cgroup is charged for every page it reads, on the inactive list
    (a file written through the cache and then dropped leaves shadow entries behind, and
    the kernel may count the reader's first read as a refault and activate the pages)."""
    block = mmap.mmap(-1, MiB)  # page-aligned, as O_DIRECT wants
    block.write(b"\x01" * MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        for _ in range(size // MiB):
            os.write(fd, block)
    finally:
        os.close(fd)
        block.close()
    return path
