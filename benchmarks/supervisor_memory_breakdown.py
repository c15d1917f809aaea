"""Where does the supervisor's memory go on a Parquet-to-Parquet run?

    python benchmarks/supervisor_memory_breakdown.py [--items 50000] [--batch-size 10]

Writes the supervisor-memory benchmark's Parquet input (benchmarks/supervisor_memory.py),
then runs ``Job(benchmarks.workloads:features)`` over it, Parquet out, inside a fresh
Python per row: as it comes; with pyarrow's default pool the system allocator from the
start (``ARROW_DEFAULT_MEMORY_POOL=system``, set before pyarrow is imported); with one
malloc arena (``MALLOC_ARENA_MAX=1``); and with tracemalloc on, for the Python heap it
traces. Each row: the process's RSS after importing oomguard and pyarrow, after the run,
and after ``malloc_trim(0)``; the bytes Arrow still holds; the run's resident anonymous
mappings and ``[heap]`` from /proc/self/smaps.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.supervisor_memory import write_input  # noqa: E402

MiB = 2**20
VARIANTS = [
    ("as it comes", {}),
    ("ARROW_DEFAULT_MEMORY_POOL=system", {"ARROW_DEFAULT_MEMORY_POOL": "system"}),
    ("MALLOC_ARENA_MAX=1", {"MALLOC_ARENA_MAX": "1"}),
    ("tracemalloc on", {"OOMGUARD_BENCH_TRACEMALLOC": "1"}),
]


def rss() -> float:
    return psutil.Process().memory_info().rss / MiB


def mappings() -> dict[str, float]:
    """Resident MiB of the anonymous mappings and of ``[heap]``."""
    totals = {"anon": 0.0, "heap": 0.0}
    kind = "anon"
    with open("/proc/self/smaps") as handle:
        for line in handle:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's first line
                kind = "heap" if fields[-1] == "[heap]" else "anon" if len(fields) == 5 else ""
            elif fields[0] == "Rss:" and kind:
                totals[kind] += int(fields[1]) / 1024
    return totals


def child(source: Path, out: Path, batch_size: int) -> dict[str, float]:
    """One measured run, in this process."""
    import pyarrow as pa
    import pyarrow.parquet

    from oomguard import Job

    figures = {"imported": rss()}
    tracing = os.environ.get("OOMGUARD_BENCH_TRACEMALLOC") == "1"
    if tracing:
        import tracemalloc

        tracemalloc.start()
    Job(
        "benchmarks.workloads:features",
        source=source,
        sink=out,
        run_dir=out.with_suffix(".run"),
        workers=2,
        batch_size=batch_size,
        log_format="quiet",
    ).run()
    figures.update(after=rss(), arrow=pa.total_allocated_bytes() / MiB, **mappings())
    if tracing:
        figures["traced"] = tracemalloc.get_traced_memory()[0] / MiB
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    figures["trimmed"] = rss()
    return figures


def measure(source: Path, tmp: Path, batch_size: int, n: int, env: dict[str, str]) -> dict:
    out = tmp / f"out-{n}.parquet"
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(source), str(out), str(batch_size)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        source, out, batch = sys.argv[2:5]
        print(json.dumps(child(Path(source), Path(out), int(batch))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    print(
        f"# the supervisor's memory, {args.items:,} items Parquet to Parquet, batch "
        f"{args.batch_size}, 2 workers, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| variant | RSS after imports MiB | RSS after the run MiB | Arrow holds MiB "
        "| after malloc_trim MiB | anonymous MiB | [heap] MiB | Python traced MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="oomguard-bench-") as tmp:
        source = Path(tmp) / "in.parquet"
        write_input(source, "parquet", args.items)
        for n, (label, env) in enumerate(VARIANTS):
            f = measure(source, Path(tmp), args.batch_size, n, env)
            traced = f"{f['traced']:.1f}" if "traced" in f else "n/a"
            print(
                f"| {label} | {f['imported']:.1f} | {f['after']:.1f} | {f['arrow']:.1f} "
                f"| {f['trimmed']:.1f} | {f['anon']:.1f} | {f['heap']:.1f} | {traced} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
