"""How many item-state changes per second can the journal take?

Each checkpoint is one SQLite transaction (WAL, synchronous=FULL, as the engine uses it)
holding a group of committed items, their batch attempts (one per 10 items) and, in the
last case, one quarantine row per item.

    python benchmarks/journal_throughput.py [--items 1000000] [--group 1000]

Target (issue: journal): at least 100,000 item-state changes per second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from oomguard.journal import Checkpoint, Journal


def run_case(name: str, items: int, group: int, make) -> tuple[str, float, float]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory(prefix="oomguard-journal-") as tmp:
        journal = Journal.open(Path(tmp))
        changes = 0
        start = time.perf_counter()
        for first in range(0, items, group):
            checkpoint = make(first, min(items, first + group))
            journal.checkpoint(checkpoint)
            changes += len(checkpoint.committed) + len(checkpoint.quarantined)
        elapsed = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        journal.close()
    return name, changes / elapsed, size / 2**20


def attempts(first: int, stop: int) -> list[dict[str, object]]:
    return [
        {"batch_id": b, "status": "success", "input_indices": list(range(b, min(stop, b + 10)))}
        for b in range(first, stop, 10)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--group", type=int, default=1000)
    args = parser.parse_args()
    cases = [
        (
            "commits, contiguous indices, with attempts",
            lambda a, b: Checkpoint(list(range(a, b)), str(b), [], attempts(a, b), []),
        ),
        (
            "commits, scattered indices (every third one missing), with attempts",
            lambda a, b: Checkpoint(
                [i for i in range(a, b) if i % 3], str(b), [], attempts(a, b), []
            ),
        ),
        (
            "quarantine rows, one per item",
            lambda a, b: Checkpoint(
                [], None, [(i, "error", {"message": "bad"}) for i in range(a, b)], [], []
            ),
        ),
    ]
    print(
        f"# journal throughput: {args.items:,} items in checkpoints of {args.group:,}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    print("| case | item-state changes/s | journal MiB |")
    print("|---|---|---|")
    for name, make in cases:
        label, rate, size = run_case(name, args.items, args.group, make)
        print(f"| {label} | {rate:,.0f} | {size:.1f} |")


if __name__ == "__main__":
    main()
