"""Does the supervisor's memory stay flat over a very long input, for every source and sink?

Writes an input of N items (an index and a SMILES-like string each, as JSONL lines or
Parquet rows), runs ``oomguard run`` over it in a child process with a function that
returns what a chemistry pipeline's does (a 2048-bit fingerprint as hex text and ten
descriptors, ``benchmarks.workloads:features``) and samples the supervisor's own RSS (not
its workers') every half second.

    python benchmarks/supervisor_memory.py [--items 10000000] [--batch-size N] [--max-batch-size N]
        [--source jsonl|parquet] [--sink jsonl|parquet] [--all]

``--all`` runs the four source/sink pairs, side by side in one table. "wall" is seen from
outside (interpreter start and the input's check included); "run" is the run's own time
from its summary.json.
Target: RSS at most 100 MiB for every pair, and flat. ``--trivial`` (integers doubled)
measures the supervisor's own throughput instead: target 250,000 items/s, RSS under 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("jsonl", "parquet")


def smiles(index: int) -> str:
    return f"CC(=O)Oc1ccccc1C(=O)O{index}"


def write_input(path: Path, kind: str, items: int, trivial: bool = False) -> None:
    if trivial:  # the supervisor's own throughput: an integer a line, doubled
        with open(path, "w") as handle:
            handle.writelines(f"{index}\n" for index in range(items))
        return
    if kind == "jsonl":
        with open(path, "w") as handle:
            for index in range(items):
                handle.write(f'{{"i": {index}, "smiles": "{smiles(index)}"}}\n')
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    step = 100_000
    schema = pa.schema([("i", pa.int64()), ("smiles", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, items, step):
            rows = range(start, min(items, start + step))
            writer.write_table(
                pa.table(
                    {"i": list(rows), "smiles": [smiles(i) for i in rows]},
                    schema=schema,
                )
            )


def count_results(out: Path, kind: str) -> int:
    if kind == "jsonl":
        with open(out) as handle:
            return sum(1 for _ in handle)
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in out.glob("part-*.parquet"))


def sample(command: list[str]) -> tuple[int, float, list[int], list[int]]:
    """Run the supervisor; its exit status, wall seconds, RSS samples and private samples
    (RSS less file-backed pages: what is its own, not shared libraries' text)."""
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT)
    supervisor = psutil.Process(proc.pid)
    rss: list[int] = []
    private: list[int] = []
    while proc.poll() is None:
        try:
            info = supervisor.memory_info()
            rss.append(info.rss)
            private.append(info.rss - info.shared)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    return proc.wait(), time.monotonic() - start, rss or [0], private or [0]


def one(args: argparse.Namespace, source_kind: str, sink_kind: str) -> str:
    with tempfile.TemporaryDirectory(prefix="oomguard-bench-") as tmp:
        source = Path(tmp) / f"items.{source_kind}"
        write_input(source, source_kind, args.items, args.trivial)
        function = "double" if args.trivial else "features"
        out, run_dir = Path(tmp) / f"out.{sink_kind}", Path(tmp) / "run"
        command = [
            *(sys.executable, "-m", "oomguard.cli", "run", f"benchmarks.workloads:{function}"),
            *("-i", str(source), "-o", str(out), "--run-dir", str(run_dir)),
            *("--workers", str(args.workers)),
            *(("--batch-size", str(args.batch_size)) if args.batch_size else ()),
            *(("--max-batch-size", str(args.max_batch_size)) if args.max_batch_size else ()),
            *("--log-format", "quiet"),
        ]
        code, wall, rss, private = sample(command)
        summary = json.loads((run_dir / "summary.json").read_text())
        results = count_results(out, sink_kind)
    assert summary["counts"]["success"] == args.items, summary["counts"]
    tenth = max(1, len(rss) // 10)
    return (
        f"| {source_kind} | {sink_kind} | {args.items:,} | {results:,} | {code} | {wall:.0f} "
        f"| {args.items / wall:,.0f} | {summary['duration_sec']:.1f} "
        f"| {args.items / summary['duration_sec']:,.0f} | {max(rss[:tenth]) / 2**20:.1f} "
        f"| {max(rss[-tenth:]) / 2**20:.1f} | {max(rss) / 2**20:.1f} "
        f"| {max(private) / 2**20:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--batch-size", type=int, default=None, help="fixed (default: adaptive)")
    parser.add_argument(
        "--max-batch-size", type=int, default=None, help="adaptive batching's bound (default: its)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--source", choices=KINDS, default="jsonl")
    parser.add_argument("--sink", choices=KINDS, default="jsonl")
    parser.add_argument("--all", action="store_true", help="every source/sink pair")
    parser.add_argument(
        "--trivial",
        action="store_true",
        help="integers doubled, JSONL to JSONL: the supervisor's throughput (target 250,000/s)",
    )
    args = parser.parse_args()
    if args.trivial and (args.all or args.source != "jsonl"):
        parser.error("--trivial reads JSONL")
    pairs = [(a, b) for a in KINDS for b in KINDS] if args.all else [(args.source, args.sink)]
    print(
        f"# supervisor memory over {args.items:,} items, batch size {args.batch_size or 'adaptive'}"
        f"{f' up to {args.max_batch_size}' if args.max_batch_size else ''}, "
        f"{args.workers} workers, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| source | sink | items | results | exit | wall s | items/s (wall) | run s | items/s (run) "
        "| RSS first 10% MiB | RSS last 10% MiB | RSS max MiB | private max MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for source_kind, sink_kind in pairs:
        print(one(args, source_kind, sink_kind), flush=True)


if __name__ == "__main__":
    main()
