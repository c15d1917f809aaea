"""What does oomguard cost when there is no memory pressure at all?

    python benchmarks/overhead.py [--seconds 10] [--rounds 3] [--ms 1 0.1]

Items of 1 ms (and 0.1 ms) of CPU, side by side: oomguard (monitoring and journal on,
cgroups; its defaults, that is adaptive batch size from 10; a fixed batch size of 10 and of
100), ProcessPoolExecutor (chunked), joblib, pebble, and the ideal (cores x items per
second of one core). Each case holds ``--seconds`` of ideal wall time (so 0.1 ms items are
ten times as many as 1 ms items, and a run's fixed start-up weighs the same in both); add
``--items N`` to fix the count instead. Targets: >= 0.97 x ideal at 1 ms, and at 0.1 ms at
least ProcessPoolExecutor's figure, with the defaults.
For oomguard, "share, first batch to last" leaves out the run's fixed start-up (the fork
server's interpreter start, the first workers) and teardown: its steady throughput. A job
uses the fork server an earlier job of the process left idle (as joblib reuses loky's
workers from one call to the next); "first job of its process" closes it first, so that
run starts one, as a command-line run does.
Timings here are noisy: every contender runs ``--rounds`` times, the contenders taking
turns within each round (so a slow spell of the machine falls on all of them), and each
row is that contender's median run by wall time; the spread of its runs is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workloads import spin

CORES = os.cpu_count() or 1


@dataclass
class Timing:
    wall: float
    parent_cpu: float  # this process: the supervisor, or the pool's parent
    child_cpu: float  # processes it waited for (workers; for oomguard through its fork server)
    batches: float | None = None  # oomguard: from the first batch's start to the last's end


def batch_span(manifest: Path) -> float:
    """From the first batch's start to the last batch's end, from the run's manifest:
    the run less its fixed start-up and teardown."""
    attempts = [entry for entry in json.loads(manifest.read_text()) if "start" in entry]
    return max(a["end"] for a in attempts) - min(a["start"] for a in attempts)


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(run) -> Timing:  # type: ignore[no-untyped-def]
    parent, child = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    return Timing(
        wall,
        cpu_seconds(resource.RUSAGE_SELF) - parent,
        cpu_seconds(resource.RUSAGE_CHILDREN) - child,
    )


def contenders(items: list[dict[str, float]]) -> dict[str, Timing]:
    from concurrent.futures import ProcessPoolExecutor

    from joblib import Parallel, delayed
    from pebble import ProcessPool

    from oomguard import Job
    from oomguard.engine.fork_server import close_idle

    chunk = max(1, len(items) // (CORES * 20))
    results: dict[str, Timing] = {}

    def run_oomguard(batch_size: int | None, cold: bool = False, **options: Any) -> Timing:
        """Timed from the Job's construction to the end of its run; the temporary
        directory's making and removal, and reading the manifest, are the harness's.
        ``cold``: no idle fork server from an earlier job (the job starts its own)."""
        if cold:
            close_idle()
        with tempfile.TemporaryDirectory(prefix="oomguard-overhead-") as tmp:
            timing = timed(
                lambda: Job(
                    "benchmarks.workloads:spin",
                    source=items,
                    sink=Path(tmp) / "out.jsonl",
                    run_dir=Path(tmp) / "run",
                    workers=CORES,
                    log_format="quiet",
                    **({} if batch_size is None else {"batch_size": batch_size}),
                    **options,
                ).run()
            )
            timing.batches = batch_span(Path(tmp) / "run" / "ingest_manifest.json")
        return timing

    results["oomguard (defaults: adaptive batch size)"] = run_oomguard(None)
    results["oomguard (defaults, first job of its process)"] = run_oomguard(None, cold=True)
    results["oomguard (--batch-size 10, fixed)"] = run_oomguard(10)
    results["oomguard (--batch-size 100, fixed)"] = run_oomguard(100)

    def run_ppe() -> None:
        with ProcessPoolExecutor(CORES) as pool:
            list(pool.map(spin, items, chunksize=chunk))

    results[f"ProcessPoolExecutor (chunksize {chunk})"] = timed(run_ppe)
    results["joblib (loky, auto batching)"] = timed(
        lambda: Parallel(n_jobs=CORES)(delayed(spin)(i) for i in items)
    )

    def run_pebble() -> None:
        with ProcessPool(max_workers=CORES) as pool:
            list(pool.map(spin, items, chunksize=chunk).result())

    results[f"pebble (chunksize {chunk})"] = timed(run_pebble)
    return results


def interpreter_start_ms() -> float:
    """What one fresh interpreter costs to start here (median of 5): loky and oomguard's
    fork server pay it once per run; ProcessPoolExecutor and pebble fork instead."""
    import statistics
    import subprocess

    walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls) * 1000


def fixed_cost_s(cold: bool) -> float:
    """What an oomguard run costs whatever its work: a job of 2 empty items, end to end
    (median of 3): set-up, the first worker, teardown, and with ``cold`` the fork server's
    start (else the one the last job left idle is used)."""
    import statistics

    from oomguard import Job
    from oomguard.engine.fork_server import close_idle

    items = [{"i": i, "ms": 0.0} for i in range(2)]
    walls = []
    for _ in range(3):
        if cold:
            close_idle()
        with tempfile.TemporaryDirectory(prefix="oomguard-overhead-") as tmp:
            job = Job(
                "benchmarks.workloads:spin",
                source=items,
                sink=Path(tmp) / "out.jsonl",
                run_dir=Path(tmp) / "run",
                workers=CORES,
                log_format="quiet",
            )
            walls.append(timed(job.run).wall)
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="ideal wall time per case")
    parser.add_argument("--items", type=int, default=None, help="items per case instead")
    parser.add_argument("--ms", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"# overhead without pressure, {CORES} cores, {time.strftime('%Y-%m-%d')}")
    print(f"\n`{sys.executable} -c pass` takes {interpreter_start_ms():.0f} ms here")
    print(
        f"an oomguard job of 2 empty items takes {fixed_cost_s(cold=True):.3f} s end to end "
        f"as its process's first, {fixed_cost_s(cold=False):.3f} s after another"
    )
    for ms in args.ms:
        count = args.items or round(args.seconds * CORES * 1000 / ms)
        items = [{"i": i, "ms": ms} for i in range(count)]
        ideal = count * ms / 1000 / CORES
        print(f"\n### {count:,} items of {ms} ms CPU; ideal {ideal:.1f} s ({CORES} cores)\n")
        runs: dict[str, list[Timing]] = {}
        for _ in range(args.rounds):
            for name, timing in contenders(items).items():
                runs.setdefault(name, []).append(timing)
        print(
            f"median of {args.rounds} rounds\n\n"
            "| contender | wall s | items/s | share of ideal | share, first batch to last "
            "| parent CPU s | worker CPU s | share of ideal, all runs |\n"
            "|---|---|---|---|---|---|---|---|"
        )
        for name, timings in runs.items():
            t = sorted(timings, key=lambda timing: timing.wall)[len(timings) // 2]
            steady = f"{ideal / t.batches:.3f}" if t.batches else "n/a"
            spread = ", ".join(f"{ideal / run.wall:.3f}" for run in timings)
            print(
                f"| {name} | {t.wall:.2f} | {count / t.wall:,.0f} | {ideal / t.wall:.3f} "
                f"| {steady} | {t.parent_cpu:.2f} | {t.child_cpu:.2f} | {spread} |"
            )
        work = count * ms / 1000
        print(f"| ideal | {ideal:.2f} | {count / ideal:,.0f} | 1.000 | 1.000 | 0 | {work:.2f} | |")
        print(
            "\n(worker CPU counts processes reaped within the run: loky keeps its workers for "
            "reuse and oomguard its fork server (whose workers' CPU is counted when it ends), "
            "so theirs show only what was reaped)"
        )


if __name__ == "__main__":
    main()
