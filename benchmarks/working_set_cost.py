"""What does one reading of a group's memory cost: usage, working set, the full read?

    python benchmarks/working_set_cost.py [--calls 100000] [--workers 8]

A job cgroup with ``--workers`` idle child groups, each holding a process that read a
32 MiB file of its own (so memory.stat has page cache to report), is read ``--calls`` times by each
of ``usage()`` (one number file through a kept descriptor), ``working_set()`` (that plus
memory.stat through a kept descriptor, one line of it parsed) and ``read()`` (every file
opened afresh). The supervisor reads the job's working set once a loop turn and every
50 ms while busy (engine/supervisor.py), so its cost per call is what matters.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oomguard.limits import open_limiter

READER = "import sys; open(sys.argv[1], 'rb').read(); print('ready', flush=True); sys.stdin.read()"


def uncached_file(path: Path, size: int) -> Path:
    """A file none of whose pages is cached: its reader's cgroup is charged for each page
    (one file per reader: a page read twice is active, and in the working set)."""
    with open(path, "wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


def per_call(function: object, calls: int) -> float:
    assert callable(function)
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with open_limiter() as limiter, tempfile.TemporaryDirectory(prefix="oomguard-ws-") as tmp:
        job = limiter.create_group("job", 4 * 1024**3)
        children = []
        for slot in range(args.workers):
            data = uncached_file(Path(tmp) / f"data{slot}.bin", 32 * 1024 * 1024)
            group = limiter.create_group(f"w{slot}", None, parent=job)
            child = subprocess.Popen(
                [sys.executable, "-c", READER, str(data)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            group.add_pid(child.pid)
            children.append(child)
            assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        reading = job.read()
        rows = [
            ("usage()", per_call(job.usage, args.calls)),
            ("working_set()", per_call(job.working_set, args.calls)),
            ("read()", per_call(job.read, max(1, args.calls // 10))),
        ]
        for child in children:
            child.kill()
            child.wait()
    print(
        f"# one reading of a job group ({limiter.kind}, {args.workers} child groups, "
        f"{reading.usage / 2**20:.0f} MiB charged, working set "
        f"{reading.working_set / 2**20:.0f} MiB), {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("| call | us per call |")
    print("|---|---|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} |")


if __name__ == "__main__":
    main()
