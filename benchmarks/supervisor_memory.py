"""Does the supervisor's memory stay flat over a very long input?

Writes a JSONL file of N tiny items, runs ``oomguard run`` over it in a child process and
samples the supervisor's own RSS (not its workers') every half second.

    python benchmarks/supervisor_memory.py [--items 10000000] [--batch-size N]

With the engine's defaults (adaptive batch size) unless ``--batch-size`` fixes one.
Targets: RSS under 200 MB for 10,000,000 items, and flat; at least 250,000 items/s.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--batch-size", type=int, default=None, help="fixed (default: adaptive)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oomguard-bench-") as tmp:
        source = Path(tmp) / "items.jsonl"
        with open(source, "w") as handle:
            for index in range(args.items):
                handle.write(f"{index}\n")
        out, run_dir = Path(tmp) / "out.jsonl", Path(tmp) / "run"
        command = [
            *(sys.executable, "-m", "oomguard.cli", "run", "benchmarks.workloads:double"),
            *("-i", str(source), "-o", str(out), "--run-dir", str(run_dir)),
            *("--workers", str(args.workers)),
            *(("--batch-size", str(args.batch_size)) if args.batch_size else ()),
            *("--log-format", "quiet"),
        ]
        start = time.monotonic()
        proc = subprocess.Popen(command, cwd=ROOT)
        supervisor = psutil.Process(proc.pid)
        samples: list[tuple[float, int]] = []
        while proc.poll() is None:
            try:
                samples.append((time.monotonic() - start, supervisor.memory_info().rss))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.5)
        wall = time.monotonic() - start
        summary = json.loads((run_dir / "summary.json").read_text())
        with open(out) as handle:
            lines = sum(1 for _ in handle)
    rss = [r for _, r in samples]
    tenth = max(1, len(rss) // 10)
    print(
        f"# supervisor memory over {args.items:,} items, batch size {args.batch_size or 'adaptive'}, "
        f"{args.workers} workers, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| items | results | exit | wall s | items/s "
        "| RSS first 10% MB | RSS last 10% MB | RSS max MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.items:,} | {lines:,} | {proc.returncode} | {wall:.0f} | {args.items / wall:,.0f} "
        f"| {max(rss[:tenth]) / 2**20:.1f} | {max(rss[-tenth:]) / 2**20:.1f} "
        f"| {max(rss) / 2**20:.1f} |"
    )
    assert summary["counts"]["success"] == args.items


if __name__ == "__main__":
    main()
