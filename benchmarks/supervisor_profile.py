"""Where does the supervisor's time go over a long run of trivial items?

    python benchmarks/supervisor_profile.py [--items 10000000] [--rate 50]

Runs ``oomguard run benchmarks.workloads:double`` (integers doubled, JSONL to JSONL, the
defaults, 2 workers) under py-spy (``pip install py-spy``, in the ``bench`` extra) and
prints, for each part of the supervisor, its share of the samples: a thread counts when it
runs or waits for the interpreter lock; a part's share includes what it calls, except
where the row says "its own lines". The run's
own items/s come from its summary.json (under the profiler: a little slower than without).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.supervisor_memory import write_input  # noqa: E402

# (what the row says, a function as py-spy names it, whether only its own time counts)
PARTS = [
    ("reader thread: all", "SourceReader._run", False),
    ("· decoding a block as a run (jsonl_read.block_run)", "block_run", False),
    ("· decoding lines one at a time (jsonl_read.decode_line)", "decode_line", False),
    ("· its own lines: building items, waiting for the GIL (jsonl_chunks)", "jsonl_chunks", True),
    ("· handing blocks over (Queue.put)", "Queue.put", False),
    ("main loop: all (Supervisor.run)", "Supervisor.run", False),
    ("· dispatch (Dispatch.fill)", "Dispatch.fill", False),
    ("· · pickling and sending a batch (Dispatch.send)", "Dispatch.send", False),
    ("· · taking a batch from intake (Intake.next_batch)", "Intake.next_batch", False),
    ("· · reading workers' cgroups (Dispatch.predicted_total)", "Dispatch.predicted_total", False),
    ("· reading results (Outcomes.read)", "Outcomes.read", False),
    ("· checkpoints (Ledger.maybe_checkpoint)", "Ledger.maybe_checkpoint", False),
    ("· the final manifest (write_manifest)", "write_manifest", False),
]


def shares(raw: Path) -> tuple[int, dict[str, int]]:
    """Samples in all, and each part's count, from py-spy's raw output."""
    total = 0
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        names = [frame.partition(" (")[0] for frame in stack.split(";")]
        total += int(number)
        for label, function, own in PARTS:
            if (names[-1] == function) if own else (function in names):
                counts[label] += int(number)
    return total, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install py-spy (or the bench extra)")
    with tempfile.TemporaryDirectory(prefix="oomguard-bench-") as tmp:
        source, raw, run_dir = (
            Path(tmp) / "ints.jsonl",
            Path(tmp) / "profile.txt",
            Path(tmp) / "run",
        )
        write_input(source, "jsonl", args.items, trivial=True)
        command = [
            *("py-spy", "record", "-r", str(args.rate), "--format", "raw", "-o", str(raw), "--"),
            *(sys.executable, "-m", "oomguard.cli", "run", "benchmarks.workloads:double"),
            *("-i", str(source), "-o", str(Path(tmp) / "out.jsonl"), "--run-dir", str(run_dir)),
            *("--log-format", "quiet"),
        ]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        summary = json.loads((run_dir / "summary.json").read_text())
        total, counts = shares(raw)
    seconds = summary["duration_sec"]
    print(
        f"# the supervisor's time over {args.items:,} trivial items, defaults, 2 workers, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}: run {seconds:.1f} s under "
        f"py-spy, {args.items / seconds:,.0f} items/s, {total:,} samples"
    )
    print("| part | share of samples |")
    print("|---|---|")
    for label, _, _ in PARTS:
        print(f"| {label} | {100 * counts[label] / total:.1f}% |")


if __name__ == "__main__":
    main()
