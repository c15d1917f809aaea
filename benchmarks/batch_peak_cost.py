"""The per-item memory cost admission learns on this kernel, for items of a known size.

    python benchmarks/batch_peak_cost.py [--small-mb 24] [--items 30]

Two 96 MiB items, then small ones (``grow``: allocate, touch, free at once), one item a
batch, two workers, under a 512 MiB cap: the cost learned per item (summary.json's
``item_cost_mb``) against the item's size. On cgroup v2 before Linux 6.12 (memory.peak not
resettable) it also runs the job as the peak would be read without oomguard.limits.peak:
``memory.peak`` as it is (the lifetime peak), and ``memory.current`` samples alone. Run it
on cgroup v1 and in the v2 lane (``tests/vm/run-v2-lane --run "python3 benchmarks/..."``).
Last, what following a batch's peak costs where the kernel cannot reset it (BatchPeak's
reset and read for one worker process: /proc/PID/clear_refs and /proc/PID/status).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oomguard import Job
from oomguard.limits import open_limiter
from oomguard.limits.cgroup_v2 import CgroupV2Group
from oomguard.limits.cgroupfs import CgroupGroup
from oomguard.limits.peak import BatchPeak


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    if name == "lifetime memory.peak, as read":
        with mock.patch.object(CgroupV2Group, "peak", CgroupGroup.peak):
            yield
    elif name == "memory.current samples alone":
        with mock.patch("oomguard.limits.peak.hwm", lambda pid: None):
            yield
    else:
        yield


def run(items: list[dict[str, int | str]], tmp: Path, name: str) -> dict[str, float]:
    source = tmp / "items.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    run_dir = tmp / name.replace(" ", "-").replace(",", "")
    with variant(name):
        result = Job(
            "tests.engine.workloads:work",
            source=source,
            sink=run_dir.with_suffix(".jsonl"),
            run_dir=run_dir,
            workers=2,
            batch_size=1,
            memory="512m",
            log_format="quiet",
        ).run()
    cost: dict[str, float] = result.summary["item_cost_mb"]
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-mb", type=int, default=24)
    parser.add_argument("--items", type=int, default=30)
    args = parser.parse_args()
    with open_limiter() as limiter:
        kind = limiter.kind
        method = getattr(limiter, "peak_method", None)
    items: list[dict[str, int | str]] = [{"kind": "grow", "mb": 96}] * 2
    items += [{"kind": "grow", "mb": args.small_mb}] * args.items
    names = ["oomguard.limits.peak"]
    if method in ("v2-lifetime", "v2-none"):
        names += ["lifetime memory.peak, as read", "memory.current samples alone"]
    print(f"kernel {platform.release()}, {kind}, peak method {method}")
    print(f"items: 2 x 96 MiB, then {args.items} x {args.small_mb} MiB; one a batch")
    print()
    print(f"| {'batch peak read by':<32} | p50 MiB | p90 MiB | p50 / item size |")
    print(f"|{'-' * 34}|---------|---------|-----------------|")
    with tempfile.TemporaryDirectory(prefix="oomguard-bench-") as tmp:
        for name in names:
            cost = run(items, Path(tmp), name)
            print(
                f"| {name:<32} | {cost['p50']:7.1f} | {cost['p90']:7.1f} |"
                f" {cost['p50'] / args.small_mb:15.2f} |"
            )
    print()
    print(f"BatchPeak reset + read, one worker process: {bookkeeping_us():.1f} us a batch")


def bookkeeping_us(batches: int = 20000) -> float:
    batch, pid = BatchPeak(), os.getpid()
    start = time.perf_counter()
    for _ in range(batches):
        batch.reset(0, None, [pid])
        batch.peak(0, None, [pid])
    return (time.perf_counter() - start) / batches * 1e6


if __name__ == "__main__":
    main()
