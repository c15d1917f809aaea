"""Where does a run of short items lose its time: in the workers, between batches, or to
the supervisor's CPU on the same cores?

    python benchmarks/where_time_goes.py [--ms 0.1] [--seconds 4]

Runs the defaults on items of ``--ms`` of CPU (benchmarks.workloads:spin), each worker
given ``--seconds`` of work: with 2 workers (every core a worker's) and with 1 (a core left
to the supervisor), from a Python list and from a JSONL file, and with ``max_batch_size``
1000 (the default) and 4000. From each run's manifest: how long each worker's batches took
against the work it was given ("busy / work"), the gaps between its batches, the time from
the run's start to its first batch, and the supervisor's own CPU (this process, every
thread) from the Job's start to its end. Beside them, ProcessPoolExecutor with the same
workers and ``map`` in chunks (benchmarks/overhead.py's chunk size), timed the same way.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from benchmarks.overhead import timed  # noqa: E402


def items_for(workers: int, ms: float, seconds: float) -> list[dict[str, Any]]:
    count = int(seconds / (ms / 1000) * workers)
    return [{"i": i, "ms": ms} for i in range(count)]


def one_run(workers: int, ms: float, seconds: float, source: str, max_batch: int) -> list[Any]:
    from oomguard import Job

    items = items_for(workers, ms, seconds)
    with tempfile.TemporaryDirectory(prefix="oomguard-where-") as tmp_name:
        tmp = Path(tmp_name)
        spec: Any = items
        if source == "jsonl":
            spec = tmp / "in.jsonl"
            spec.write_text("".join(json.dumps(item) + "\n" for item in items))
            spec = str(spec)
        started = time.time()
        timing = timed(
            lambda: Job(
                "benchmarks.workloads:spin",
                source=spec,
                sink=tmp / "out.jsonl",
                run_dir=tmp / "run",
                workers=workers,
                max_batch_size=max_batch,
                log_format="quiet",
            ).run()
        )
        manifest = json.loads((tmp / "run" / "ingest_manifest.json").read_text())
    by_worker: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in manifest:
        if "batch_id" in entry:
            by_worker[entry["worker_pid"]].append(entry)
    busy, gaps, first = [], [], min(e["start"] for e in manifest if "batch_id" in e)
    for entries in by_worker.values():
        entries.sort(key=lambda entry: entry["start"])
        busy.append(sum(entry["duration_sec"] for entry in entries))
        gaps.append(sum(b["start"] - a["end"] for a, b in itertools.pairwise(entries)))
    work = len(items) * ms / 1000 / workers  # each worker's share: the ideal wall time too
    return [
        "oomguard",
        workers,
        source,
        max_batch,
        f"{timing.wall:.2f}",
        f"{work / timing.wall:.3f}",
        f"{max(busy):.2f} / {work:.2f}",
        f"{max(gaps):.2f}",
        f"{first - started:.3f}",
        f"{timing.parent_cpu:.2f}",
        f"{timing.parent_cpu / len(items) * 1e6:.1f}",
    ]


def pool_run(workers: int, ms: float, seconds: float) -> list[Any]:
    from concurrent.futures import ProcessPoolExecutor

    from benchmarks.workloads import spin

    items = items_for(workers, ms, seconds)
    chunk = max(1, len(items) // (workers * 20))
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(spin, items[:workers]))  # started before the clock, as oomguard's server
        timing = timed(lambda: list(pool.map(spin, items, chunksize=chunk)))
    work = len(items) * ms / 1000 / workers
    cpu = timing.parent_cpu
    return ["ProcessPoolExecutor", workers, "list", f"chunksize {chunk}", f"{timing.wall:.2f}",
            f"{work / timing.wall:.3f}", "n/a", "n/a", "n/a", f"{cpu:.2f}",
            f"{cpu / len(items) * 1e6:.1f}"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ms", type=float, default=0.1, help="CPU per item")
    parser.add_argument("--seconds", type=float, default=4.0, help="work per worker")
    args = parser.parse_args()
    import oomguard.engine.job  # noqa: F401  (imported before any clock starts)

    print(f"# where a run of {args.ms} ms items loses time, {time.strftime('%Y-%m-%d')}\n")
    heading = (
        "runner",
        "workers",
        "source",
        "max_batch_size",
        "wall s",
        "share of ideal",
        "a worker's batches: busy / work s",
        "a worker's gaps between batches s",
        "run start to first batch s",
        "supervisor (pool parent) CPU s",
        "its CPU per item µs",
    )
    print("| " + " | ".join(heading) + " |")
    print("|" + "---|" * len(heading))
    for workers, source, max_batch in (
        (2, "list", 1000),
        (2, "jsonl", 1000),
        (2, "list", 4000),
        (1, "list", 1000),
    ):
        row = one_run(workers, args.ms, args.seconds, source, max_batch)
        print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)
    for workers in (2, 1):
        row = pool_run(workers, args.ms, args.seconds)
        print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)


if __name__ == "__main__":
    main()
