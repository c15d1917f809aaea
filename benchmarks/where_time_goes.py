"""Where does a run of short items lose its time: in the workers, between batches, or to
the supervisor's CPU on the same cores?

    python benchmarks/where_time_goes.py [--ms 0.1] [--seconds 4]

Runs the defaults on items of ``--ms`` of CPU (benchmarks.workloads:spin), each worker
given ``--seconds`` of work: with 2 workers (every core a worker's) and with 1 (a core left
to the supervisor), from a Python list and from a JSONL file, and with ``max_batch_size``
1000 (the default) and 4000. From each run's manifest: how long each worker's batches took
against the work it was given ("busy / work"), the gaps between its batches, and the
supervisor's own CPU (this process, every thread) from the Job's start to its end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(workers: int, ms: float, seconds: float, source: str, max_batch: int) -> list[Any]:
    from oomguard import Job

    count = int(seconds / (ms / 1000) * workers)
    items = [{"i": i, "ms": ms} for i in range(count)]
    with tempfile.TemporaryDirectory(prefix="oomguard-where-") as tmp_name:
        tmp = Path(tmp_name)
        spec: Any = items
        if source == "jsonl":
            spec = tmp / "in.jsonl"
            spec.write_text("".join(json.dumps(item) + "\n" for item in items))
        cpu, start = cpu_now(), time.monotonic()
        Job(
            "benchmarks.workloads:spin",
            source=spec if source == "list" else str(spec),
            sink=tmp / "out.jsonl",
            run_dir=tmp / "run",
            workers=workers,
            max_batch_size=max_batch,
            log_format="quiet",
        ).run()
        wall, cpu = time.monotonic() - start, cpu_now() - cpu
        manifest = json.loads((tmp / "run" / "ingest_manifest.json").read_text())
    by_worker: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in manifest:
        if "batch_id" in entry:
            by_worker[entry["worker_pid"]].append(entry)
    busy, gaps = [], []
    for entries in by_worker.values():
        entries.sort(key=lambda entry: entry["start"])
        busy.append(sum(entry["duration_sec"] for entry in entries))
        gaps.append(sum(b["start"] - a["end"] for a, b in itertools.pairwise(entries)))
    work = count * ms / 1000 / workers  # each worker's share: the ideal wall time too
    return [
        workers,
        source,
        max_batch,
        f"{wall:.2f}",
        f"{work / wall:.3f}",
        f"{max(busy):.2f} / {work:.2f}",
        f"{max(gaps):.2f}",
        f"{cpu:.2f}",
        f"{cpu / count * 1e6:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ms", type=float, default=0.1, help="CPU per item")
    parser.add_argument("--seconds", type=float, default=4.0, help="work per worker")
    args = parser.parse_args()
    import oomguard.engine.job  # noqa: F401  (imported before any clock starts)

    print(f"# where a run of {args.ms} ms items loses time, {time.strftime('%Y-%m-%d')}\n")
    heading = (
        "workers",
        "source",
        "max_batch_size",
        "wall s",
        "share of ideal",
        "a worker's batches: busy / work s",
        "a worker's gaps between batches s",
        "supervisor CPU s",
        "supervisor CPU per item µs",
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


if __name__ == "__main__":
    main()
