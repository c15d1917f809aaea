"""Kill -9 the supervisor at many random moments: is every item still output exactly once?

The long form of tests/journal/test_torture.py: the same job of 2,000 items (three of
them poison), SIGKILLed (supervisor and workers together) N times at seeded random
moments and resumed each time, for each kind of sink.

    python benchmarks/torture.py [--kills 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/ is reused

from tests.journal.test_torture import ITEMS, POISON, make_source, output_indices, start


def torture(suffix: str, kills: int, seed: int) -> dict[str, object]:
    rng = random.Random(f"{seed}{suffix}")
    with tempfile.TemporaryDirectory(prefix="oomguard-torture-") as tmp:
        source = make_source(Path(tmp) / "items.jsonl")
        sink = Path(tmp) / f"out{suffix}"
        run_dir = Path(tmp) / "run"
        landed = 0
        begin = time.monotonic()
        for _ in range(kills):
            proc = start(run_dir, source, sink)
            time.sleep(rng.uniform(0.25, 0.75))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                landed += 1
            proc.wait()
        final = start(run_dir, source, sink)
        code = final.wait()
        counts = collections.Counter(output_indices(sink))
        expected = set(range(ITEMS)) - POISON
        return {
            "sink": suffix,
            "kills": landed,
            "exit": code,
            "lost": len(expected - set(counts)),
            "duplicated": sum(1 for n in counts.values() if n > 1),
            "wall": time.monotonic() - begin,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"# torture: {ITEMS} items, up to {args.kills} SIGKILLs each, seed {args.seed}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("| sink | kills landed mid-run | final exit | lost | duplicated | wall s |")
    print("|---|---|---|---|---|---|")
    for suffix in (".jsonl", ".parquet", ".db"):
        row = torture(suffix, args.kills, args.seed)
        print(
            f"| {row['sink']} | {row['kills']} | {row['exit']} | {row['lost']} "
            f"| {row['duplicated']} | {row['wall']:.0f} |"
        )


if __name__ == "__main__":
    main()
