"""Functions the Dask tests run on their nodes (importable there: the nodes' working
directory is the repository's)."""

from __future__ import annotations

import os


def hog(mib: int) -> int:
    """Touch ``mib`` MiB, page by page, and return how many bytes that was."""
    block = bytearray(mib * 2**20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    return len(block)


def pid() -> int:
    return os.getpid()


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def crash() -> None:
    os._exit(3)
