"""How fast does oomguard hear of a kernel OOM kill?

For each round a child in a fresh 64 MiB cgroup allocates until the kernel kills it. We
wait on two descriptors at once: the child's pidfd (readable when it has died) and the
limiter's OOM event source. The latency is event time minus death time (negative: the
event came first, as v1's eventfd fires when the OOM starts).

    python benchmarks/oom_notify_latency.py [--rounds 50]

Needs root and a writable cgroup memory controller.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import statistics
import subprocess
import sys
import time

from oomguard.limits import open_limiter

MiB = 1024**2
CHILD = r"""
import sys
sys.stdin.readline()
chunks = []
while True:
    chunks.append(bytearray(8 * 1024 * 1024))
"""


def one_round(limiter, index: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    group = limiter.create_group(f"bench-{index}", 64 * MiB)
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, text=True)
    pidfd = os.pidfd_open(child.pid)
    try:
        group.add_pid(child.pid)
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        died = heard = None
        while died is None or heard is None:
            ready, _, _ = select.select([pidfd, limiter.events], [], [], 30)
            now = time.monotonic()
            if not ready:
                raise TimeoutError("no kill within 30 s")
            if pidfd in ready and died is None:
                died = now
            events = limiter.events.drain() if limiter.events in ready else []
            if heard is None and any(e.group == group.key for e in events):
                heard = now
        child.wait()
        return died, heard
    finally:
        os.close(pidfd)
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdin is not None
        try:
            child.stdin.close()
        except BrokenPipeError:
            pass
        group.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    print(f"# OOM-kill notification latency, {args.rounds} kills per enforcer")
    print(f"# {os.cpu_count()} cores, kernel {platform.release()}, {time.strftime('%Y-%m-%d')}")
    print("| enforcer | kills | p50 ms | p99 ms | max ms | min ms |")
    print("|---|---|---|---|---|---|")
    for mode in ("cgroup", "watchdog"):
        with open_limiter(mode) as limiter:
            latencies = []
            for index in range(args.rounds):
                died, heard = one_round(limiter, index)
                latencies.append((heard - died) * 1000)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"| {limiter.kind} | {len(latencies)} | {statistics.median(latencies):.1f} "
            f"| {p99:.1f} | {max(latencies):.1f} | {min(latencies):.1f} |"
        )
    print("(latency = event seen - death seen through the child's pidfd; target: under 50 ms)")


if __name__ == "__main__":
    main()
