"""Child processes for tests: they wait for a word on stdin, so tests synchronise on pipes.

No sleeps: a child prints ``ready`` when it has done its part, and acts on ``go``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Waits for "go", then allocates 8 MiB chunks (touched, so they are resident) until it has
# MAX bytes; then prints "done" and waits for stdin to close.
ALLOCATE = r"""
import sys
limit = int(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
chunks = []
total = 0
while total < limit:
    chunks.append(bytearray(8 * 1024 * 1024))
    total += 8 * 1024 * 1024
print("done", total, flush=True)
sys.stdin.read()
"""


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "ready", f"child said {line!r}"
    return proc


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


@contextmanager
def allocator(limit_bytes: int) -> Iterator[subprocess.Popen[str]]:
    """A child that will allocate ``limit_bytes`` once told ``go``; always cleaned up."""
    proc = spawn(ALLOCATE, str(limit_bytes))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass


# Waits for "go", then reads the file argv[1] once, 1 MiB at a time (each page of it
# enters the page cache, charged to the reader's cgroup); prints "done", waits for stdin.
READ_FILE = r"""
import sys
print("ready", flush=True)
sys.stdin.readline()
total = 0
with open(sys.argv[1], "rb", buffering=0) as handle:
    while chunk := handle.read(1 << 20):
        total += len(chunk)
print("done", total, flush=True)
sys.stdin.read()
"""


@contextmanager
def file_reader(path: str) -> Iterator[subprocess.Popen[str]]:
    """A child that will read ``path`` once told ``go``; always cleaned up."""
    proc = spawn(READ_FILE, path)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass


# One "batch" per line on stdin: allocates that many MiB (zero-filled, so resident), frees
# them and prints "freed"; a peak a sampler between two reads would never see.
PULSE = r"""
import sys
print("ready", flush=True)
for line in sys.stdin:
    block = bytearray(int(line) * 1024 * 1024)
    del block
    print("freed", flush=True)
"""


@contextmanager
def pulser() -> Iterator[subprocess.Popen[str]]:
    """A child that allocates and frees N MiB each time it is sent N (see :func:`pulse`)."""
    # a fixed mmap threshold: every block is mapped and unmapped, never kept in the heap
    proc = subprocess.Popen(
        [sys.executable, "-c", PULSE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass


def pulse(proc: subprocess.Popen[str], mib: int) -> None:
    """One allocate-and-free of ``mib`` MiB, waited for."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{mib}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "freed"
