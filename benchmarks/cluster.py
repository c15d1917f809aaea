"""A job on a Dask cluster against the same job on one machine, side by side.

    python benchmarks/cluster.py [--items 60] [--fast-items 10000] [--deaths 5]

1. The OOM gauntlet (benchmarks/oom_gauntlet.py, its "normal" mix) under the same 2 GiB
   cgroup: oomguard on one machine, ``--cluster local:2`` (two Dask nodes, two workers
   each), and Dask alone (LocalCluster, four workers).
2. Overhead per batch: 1 ms items, single-machine oomguard with 2 workers against
   ``--cluster local:2`` with 1 worker per node (the same 2 workers): with the defaults
   (adaptive batch size), and with batches fixed at 10 and at 100 items; and 1 worker
   against ``local:1`` with 1 worker, where a core is left for Dask's own processes.
3. From a node's death to its batches running elsewhere: a real ``dask scheduler`` and
   two ``dask worker`` processes, a node's process tree SIGKILLed while it runs batches;
   the time until the driver has its lost batches back and until each has finished on
   the other node (from the manifest: the re-run's start and end).
4. The scheduler's rate of empty tasks (``--part scheduler``), and what a ``local:2``
   cluster holds outside every node's cap against what the default cap reserves for it
   (``--part memory``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import oom_gauntlet  # noqa: E402


class OutsideCpu:
    """CPU seconds used by this process (driver, client, a local scheduler) and its
    children other than oomguard's workers (Dask's nodes), sampled every 50 ms, so that
    the part of a window can be read afterwards."""

    def __init__(self) -> None:
        import threading

        import psutil

        self._me = psutil.Process()
        self._stop = threading.Event()
        self._series: dict[int, list[tuple[float, float]]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.05):
            now = time.time()
            for proc in [self._me, *self._me.children(recursive=True)]:
                try:
                    if proc.pid != self._me.pid and "fork_server" in " ".join(proc.cmdline()):
                        continue  # a worker, or the fork server it came from
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                self._series.setdefault(proc.pid, []).append((now, times.user + times.system))

    def between(self, first: float, last: float) -> float:
        self._stop.set()
        self._thread.join()

        def at(points: list[tuple[float, float]], moment: float) -> float:
            before = [cpu for when, cpu in points if when <= moment]
            return before[-1] if before else points[0][1]

        return sum(at(points, last) - at(points, first) for points in self._series.values())


def overhead(count: int) -> None:
    from oomguard import Job

    items = [{"i": i, "ms": 1} for i in range(count)]
    rows = []
    pairs = (
        ("the defaults (adaptive batch size)", {}),
        ("batch 10", {"batch_size": 10}),
        ("batch 100", {"batch_size": 100}),
    )
    cases = []
    for label, size in pairs:
        cases.append((f"oomguard, one machine, 2 workers, {label}", {"workers": 2, **size}))
        cluster = {"workers": 1, "cluster": "local:2", **size}
        cases.append((f"oomguard --cluster local:2, 1 worker per node, {label}", cluster))
    # one worker in all: a core is left for Dask's own processes (scheduler, client, node)
    cases.append(("oomguard, one machine, 1 worker, the defaults", {"workers": 1}))
    cases.append(
        ("oomguard --cluster local:1, 1 worker, the defaults", {"workers": 1, "cluster": "local:1"})
    )
    for name, options in cases:
        with tempfile.TemporaryDirectory(prefix="oomguard-cluster-bench-") as tmp:
            outside = OutsideCpu()
            start = time.monotonic()
            Job(
                "benchmarks.workloads:spin",
                source=items,
                sink=Path(tmp) / "out.jsonl",
                run_dir=Path(tmp) / "run",
                log_format="quiet",
                **options,
            ).run()
            wall = time.monotonic() - start
            manifest = json.loads((Path(tmp) / "run" / "ingest_manifest.json").read_text())
            manifest = [entry for entry in manifest if "start" in entry]  # attempts, not events
            first = min(entry["start"] for entry in manifest)
            last = max(entry["end"] for entry in manifest)
        cpu = outside.between(first, last)
        rows.append((name, wall, count / (last - first), len(manifest), cpu / (last - first)))
    print(f"\n### overhead: {count} items of 1 ms CPU\n")
    print(
        "| contender | wall (s) | items/s (first batch start to last batch end) | batches "
        "| cores used outside the workers (driver, scheduler, nodes) | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for number, (name, wall, rate, batches, cores) in enumerate(rows):
        base = rows[number - number % 2][2]  # each cluster row against the row above it
        print(f"| {name} | {wall:.2f} | {rate:.0f} | {batches} | {cores:.2f} | {rate / base:.2f} |")


def node_death(trials: int) -> None:
    from tests.dask.cluster import dask_cluster

    detect, rerun_start, rerun_end = [], [], []
    for _ in range(trials):
        with tempfile.TemporaryDirectory(prefix="oomguard-cluster-bench-") as tmp_name:
            tmp = Path(tmp_name)
            items = tmp / "items.jsonl"
            lines = [json.dumps({"kind": "hold", "mb": 10, "seconds": 0.3}) for _ in range(60)]
            items.write_text("\n".join(lines) + "\n")
            with dask_cluster(tmp) as cluster:
                argv = [
                    sys.executable, "-m", "oomguard.cli", "run", "tests.engine.workloads:work",
                    "--input", str(items), "--run-dir", str(tmp / "run"), "--cluster",
                    cluster.address, "--workers", "2", "--memory", "400m", "--batch-size", "1",
                    "--log-format", "quiet",
                ]  # fmt: skip
                driver = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL)
                journal = tmp / "run" / "journal.sqlite"
                while not _committed(journal, 6):  # the run is well under way
                    time.sleep(0.05)
                killed_at = time.time()
                cluster.kill_node("node0")
                driver.wait(timeout=300)
            times = _recovery(tmp / "run", killed_at)
            if times is not None:
                detect.append(times[0])
                rerun_start.append(times[1])
                rerun_end.append(times[2])
    print(f"\n### node death: {trials} trials, a node SIGKILLed with 3 batches in flight\n")
    print("| from the SIGKILL to | median (s) | max (s) |")
    print("|---|---|---|")
    for what, values in (
        ("the driver's batch_lost event (Dask: connection closed)", detect),
        ("the lost batches started on the other node (the last of them)", rerun_start),
        ("the lost batches finished there", rerun_end),
    ):
        if values:
            print(f"| {what} | {statistics.median(values):.2f} | {max(values):.2f} |")


def node_memory(count: int) -> None:
    """What a ``local:N`` cluster holds on this machine outside every node's cap (what the
    default cap reserves: engine/default_cap.py): each Dask node process and its fork
    server, at their largest during a run, and the driver's growth (Dask's client and the
    in-process scheduler), sampled every 50 ms."""
    import threading

    import psutil

    from oomguard import Job
    from oomguard.engine.default_cap import DASK_DRIVER_GROWTH, LOCAL_NODE_RSS
    from oomguard.memory.own import own_rss

    me, stop = psutil.Process(), threading.Event()
    nodes: dict[int, list[int]] = {}  # a node's pid -> [its RSS max, its fork server's max]
    driver_max = before = own_rss()

    def sample() -> None:
        nonlocal driver_max
        while not stop.wait(0.05):
            driver_max = max(driver_max, own_rss())
            for node in me.children():
                try:
                    if "spawn_main" not in " ".join(node.cmdline()):
                        continue  # not a Dask worker process (the resource tracker)
                    peaks = nodes.setdefault(node.pid, [0, 0])
                    peaks[0] = max(peaks[0], node.memory_info().rss)
                    servers = [c for c in node.children() if "fork_server" in " ".join(c.cmdline())]
                    held = sum(server.memory_info().rss for server in servers)
                    peaks[1] = max(peaks[1], held)
                except psutil.Error:
                    continue

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="oomguard-cluster-bench-") as tmp:
        Job(
            "benchmarks.workloads:spin",
            source=[{"i": i, "ms": 1} for i in range(count)],
            sink=Path(tmp) / "out.jsonl",
            run_dir=Path(tmp) / "run",
            workers=1,
            cluster="local:2",
            log_format="quiet",
        ).run()
    stop.set()
    sampler.join()
    mib = 1024 * 1024
    print(f"\n### memory outside the caps: local:2, {count} items of 1 ms\n")
    print("| process | RSS max (MiB) | reserved by the default cap (MiB) |")
    print("|---|---|---|")
    for number, (node, fork_server) in enumerate(nodes.values()):
        print(f"| node {number}: Dask worker process | {node / mib:.0f} | |")
        print(f"| node {number}: its fork server | {fork_server / mib:.0f} | |")
        print(
            f"| node {number}: both | {(node + fork_server) / mib:.0f} | {LOCAL_NODE_RSS / mib:.0f} |"
        )
    growth = (driver_max - before) / mib
    print(
        f"| the driver's growth (client, scheduler) | {growth:.0f} | {DASK_DRIVER_GROWTH / mib:.0f} |"
    )


def scheduler_rate(count: int) -> None:
    """What the driver's other bound costs: empty tasks through a real scheduler (in
    process, as ``local:2`` runs it), submitted as the driver does, one at a time."""
    from distributed import Client, LocalCluster, wait

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.submit(abs, -1).result()
        start = time.monotonic()
        futures = [client.submit(abs, -i, pure=False) for i in range(count)]
        wait(futures)
        wall = time.monotonic() - start
    print(f"\n### scheduler: {count} empty tasks submitted one by one, 2 nodes\n")
    print("| tasks/s | per task (ms) |")
    print("|---|---|")
    print(f"| {count / wall:.0f} | {wall / count * 1000:.2f} |")


def _committed(journal: Path, count: int) -> bool:
    import sqlite3

    if not journal.exists():
        return False
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("select count(*) from attempts").fetchone()
    except sqlite3.Error:
        return False
    return bool(row and row[0] >= count)


def _recovery(run_dir: Path, killed_at: float) -> tuple[float, float, float] | None:
    summary = json.loads((run_dir / "summary.json").read_text())
    manifest = json.loads((run_dir / "ingest_manifest.json").read_text())
    manifest = [entry for entry in manifest if "start" in entry]
    lost = [e for e in summary["events"] if e["event"] == "batch_lost"]
    if not lost:
        return None
    lost_at = max(event["time"] for event in lost)
    ids = {event["batch_id"] for event in lost}  # a lost batch goes again as itself
    again = [entry for entry in manifest if entry["batch_id"] in ids]
    if not again:
        return None
    start = max(entry["start"] for entry in again) - killed_at
    end = max(entry["end"] for entry in again) - killed_at
    return lost_at - killed_at, start, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=60, help="gauntlet items")
    parser.add_argument("--fast-items", type=int, default=10000, help="1 ms items")
    parser.add_argument("--deaths", type=int, default=5, help="node-death trials")
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--tasks", type=int, default=5000, help="empty scheduler tasks")
    parser.add_argument(
        "--part",
        choices=["all", "gauntlet", "overhead", "death", "scheduler", "memory"],
        default="all",
    )
    args = parser.parse_args()
    os.environ.setdefault("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")
    print(f"# oomguard on a Dask cluster, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    peers = ["oomguard", "oomguard --cluster local:2", "dask.distributed"]
    if args.part in ("all", "gauntlet"):
        oom_gauntlet.table("normal", args.items, args.timeout, peers)
    if args.part in ("all", "overhead"):
        overhead(args.fast_items)
    if args.part in ("all", "death"):
        node_death(args.deaths)
    if args.part in ("all", "scheduler"):
        scheduler_rate(args.tasks)
    if args.part in ("all", "memory"):
        node_memory(args.fast_items)


if __name__ == "__main__":
    main()
