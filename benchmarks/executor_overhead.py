"""oomguard.Executor against ProcessPoolExecutor, loky and pebble: throughput, and the gauntlet.

    python benchmarks/executor_overhead.py [--part throughput|gauntlet|both] [--seconds 2]

throughput: items of 1 ms and 0.1 ms of CPU (benchmarks/workloads.py:spin), one worker per
core, each executor already started; ``submit`` per item (then every result), and ``map``
with ``chunksize`` (PPE's own default of 1, and 20). Items per second, and as a ratio to
ProcessPoolExecutor's in the same run. The target: at least PPE's throughput on 1 ms items,
within 10% of it on 0.1 ms items.

gauntlet: the OOM gauntlet's items (benchmarks/oom_gauntlet.py: heavy-tailed, 4 poison
items larger than the cap) through each executor, 4 workers, each in a fresh 2 GiB cgroup:
finished / aborted / hung, survivable results, peak % of the cap.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.workloads import spin  # noqa: E402

WORKERS = os.cpu_count() or 1


def make_executor(name: str) -> Any:
    if name == "oomguard.Executor":
        from oomguard import Executor as OomguardExecutor

        return OomguardExecutor(WORKERS)
    if name == "ProcessPoolExecutor":
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(WORKERS)
    if name == "loky":
        from loky import get_reusable_executor

        return get_reusable_executor(max_workers=WORKERS)
    from pebble import ProcessPool

    return ProcessPool(max_workers=WORKERS)


def submit_each(pool: Any, items: list[dict[str, Any]]) -> None:
    if type(pool).__name__ == "ProcessPool":  # pebble
        futures = [pool.schedule(spin, args=[item]) for item in items]
    else:
        futures = [pool.submit(spin, item) for item in items]
    for future in futures:
        future.result()


def map_chunks(chunksize: int) -> Callable[[Any, list[dict[str, Any]]], None]:
    def run(pool: Any, items: list[dict[str, Any]]) -> None:
        if type(pool).__name__ == "ProcessPool":
            results = pool.map(spin, items, chunksize=chunksize).result()
        else:
            results = pool.map(spin, items, chunksize=chunksize)
        for _ in results:
            pass

    return run


def rate(
    pool: Executor, how: Callable[[Any, list[dict[str, Any]]], None], ms: float, n: int
) -> float:
    items = [{"ms": ms, "i": i} for i in range(n)]
    how(pool, items[: max(10, n // 20)])  # warm: workers started, code paths taken
    start = time.perf_counter()
    how(pool, items)
    return n / (time.perf_counter() - start)


def throughput(seconds: float) -> None:
    names = ["oomguard.Executor", "ProcessPoolExecutor", "loky", "pebble"]
    ways = [
        ("submit per item", submit_each),
        ("map, chunksize 1", map_chunks(1)),
        ("map, chunksize 20", map_chunks(20)),
    ]
    print(f"\n### Throughput: {WORKERS} workers, items/s (ratio to ProcessPoolExecutor)\n")
    print("| item | way | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for ms in (1.0, 0.1):
        n = int(seconds * WORKERS * 1000 / ms)
        for label, how in ways:
            rates = {}
            for name in names:
                pool = make_executor(name)
                try:
                    rates[name] = rate(pool, how, ms, n)
                finally:
                    if name == "pebble":
                        pool.close()
                        pool.join()
                    else:
                        pool.shutdown()
            base = rates["ProcessPoolExecutor"]
            cells = [f"{rates[name]:,.0f} ({rates[name] / base:.2f})" for name in names]
            print(f"| {ms:g} ms | {label} | " + " | ".join(cells) + " |")


def gauntlet(items: int, timeout: float) -> None:
    from benchmarks.oom_gauntlet import table

    peers = ["oomguard.Executor", "ProcessPoolExecutor", "loky", "pebble"]
    for mix in ("normal", "coinciding"):
        table(mix, items, timeout, peers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["throughput", "gauntlet", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=2.0, help="of work per cell, per core")
    parser.add_argument("--items", type=int, default=200, help="gauntlet items")
    parser.add_argument("--timeout", type=float, default=120, help="gauntlet: per contender")
    args = parser.parse_args()
    print(f"# oomguard.Executor and its peers, {WORKERS} cores, {time.strftime('%Y-%m-%d')}")
    if args.part in ("throughput", "both"):
        throughput(args.seconds)
    if args.part in ("gauntlet", "both"):
        gauntlet(args.items, args.timeout)


if __name__ == "__main__":
    main()
