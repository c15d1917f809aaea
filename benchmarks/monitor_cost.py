"""CPU used by the memory monitor sampling at 0.2 s with 16 workers.

    python benchmarks/monitor_cost.py [--seconds 30] [--workers 16]

16 idle worker processes, each in its own cgroup under a job cgroup, sampled by the
engine's Monitor (job cgroup, every worker's RSS and cgroup usage, MemAvailable, PSI,
GPU) into memory_log.csv; the monitor thread's own CPU time is measured.
Target (issue: admission): under 1% of one core.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oomguard.engine.artifacts import MemoryLog
from oomguard.engine.monitor import Monitor, WorkerView
from oomguard.limits import open_limiter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    with open_limiter() as limiter, tempfile.TemporaryDirectory(prefix="oomguard-monitor-") as tmp:
        job = limiter.create_group("job", 4 * 1024**3)
        children, views = [], []
        for slot in range(args.workers):
            group = limiter.create_group(f"w{slot}", None, parent=job)
            child = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
            )
            group.add_pid(child.pid)
            children.append(child)
            views.append(WorkerView(slot, child.pid, group))
        monitor = Monitor(
            MemoryLog(Path(tmp) / "memory_log.csv", args.workers),
            job,
            lambda: views,
            lambda: 0,
            0.2,
            args.workers,
        )
        cpu: dict[str, float] = {}
        original = monitor._run

        def measured() -> None:
            start = time.thread_time()
            original()
            cpu["seconds"] = time.thread_time() - start

        monitor._run = measured  # type: ignore[method-assign]
        monitor._thread = threading.Thread(target=monitor._run, daemon=True)
        start = time.monotonic()
        monitor.start()
        time.sleep(args.seconds)
        monitor.stop()
        wall = time.monotonic() - start
        for child in children:
            child.kill()
            child.wait()
            assert child.stdin is not None
            child.stdin.close()
        share = cpu["seconds"] / wall
        print(
            f"# monitor cost, {args.workers} workers, 0.2 s interval, {args.seconds:.0f} s, {time.strftime('%Y-%m-%d')}"
        )
        print(
            "| workers | samples | monitor CPU s | wall s | share of one core |\n|---|---|---|---|---|"
        )
        print(
            f"| {args.workers} | {monitor.samples} | {cpu['seconds']:.3f} | {wall:.1f} | {share:.2%} |"
        )
        print(f"({limiter.kind}; target under 1% of one core)")


if __name__ == "__main__":
    main()
