"""One contender of the OOM gauntlet, run inside the benchmark's capped cgroup.

    python benchmarks/gauntlet_contenders.py NAME ITEMS.json RESULT.json

Writes {"status", "done": [indices, with repeats], "error"} as it goes, so that what a
contender finished before it hung or died is still counted.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gauntlet_work import process

WORKERS = 4


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: list[int] = []
        self.status = "running"
        self.error: str | None = None
        self.killed: list[int] | None = None  # items hit by OOM kills, where the contender knows
        self.last = 0.0

    def add(self, index: int) -> None:
        self.done.append(index)
        if time.monotonic() - self.last > 0.5:
            self.save()

    def save(self) -> None:
        self.last = time.monotonic()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "status": self.status,
                    "done": self.done,
                    "error": self.error,
                    "killed": self.killed,
                }
            )
        )
        tmp.replace(self.path)


def run_ppe(items: list[dict[str, Any]], rec: Recorder, workers: int = WORKERS) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(process, item) for item in items]
        for future in as_completed(futures):
            rec.add(future.result()["index"])


def run_mp_pool(items: list[dict[str, Any]], rec: Recorder) -> None:
    import multiprocessing

    with multiprocessing.Pool(WORKERS) as pool:
        for result in pool.imap_unordered(process, items):
            rec.add(result["index"])


def run_joblib(items: list[dict[str, Any]], rec: Recorder) -> None:
    from joblib import Parallel, delayed

    for result in Parallel(n_jobs=WORKERS, return_as="generator_unordered")(
        delayed(process)(i) for i in items
    ):
        rec.add(result["index"])


def run_pebble(items: list[dict[str, Any]], rec: Recorder) -> None:
    from concurrent.futures import as_completed

    from pebble import ProcessPool

    lost = 0
    with ProcessPool(max_workers=WORKERS) as pool:
        futures = [pool.schedule(process, args=[item]) for item in items]
        for future in as_completed(futures):
            try:
                rec.add(future.result()["index"])
            except Exception:  # ProcessExpired and friends: the item is simply gone
                lost += 1
    rec.error = f"{lost} futures failed (ProcessExpired etc.); no retry"


def run_dask(items: list[dict[str, Any]], rec: Recorder) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    with (
        LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(process, items, pure=False)
        failed = 0
        for future in as_completed(futures):
            try:
                rec.add(future.result()["index"])
            except Exception:
                failed += 1
        rec.error = f"{failed} tasks failed" if failed else None


def run_ray(items: list[dict[str, Any]], rec: Recorder) -> None:
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(max_retries=3)(process)
    pending = [remote.remote(item) for item in items]
    failed = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            rec.add(ray.get(ready[0])["index"])
        except Exception:
            failed += 1
    rec.error = f"{failed} tasks failed" if failed else None
    ray.shutdown()


def run_oomguard(items: list[dict[str, Any]], rec: Recorder, **options: Any) -> None:
    from oomguard import Job

    out = rec.path.with_suffix(".out.jsonl")
    result = Job(
        "benchmarks.gauntlet_work:process",
        source=items,
        sink=out,
        run_dir=rec.path.with_suffix(".run"),
        batch_size=1,
        log_format="quiet",
        **{"workers": WORKERS, **options},
    ).run()
    for line in out.read_text().splitlines():
        rec.done.append(json.loads(line)["result"]["index"])
    # which item each OOM kill hit (batch size 1: an attempt is one item), from the manifest
    manifest = json.loads((rec.path.with_suffix(".run") / "ingest_manifest.json").read_text())
    rec.killed = [
        index
        for entry in manifest
        if entry.get("status") == "oom_killed"
        for index in entry["input_indices"]
    ]
    rec.error = f"{len(result.quarantined)} quarantined: " + ", ".join(
        f"{q['input_index']}:{q['status']}" for q in result.quarantined
    )


def run_oomguard_executor(items: list[dict[str, Any]], rec: Recorder) -> None:
    """The same items through oomguard.Executor, as a ProcessPoolExecutor program would
    submit them (only the import changed)."""
    from concurrent.futures import as_completed

    from oomguard import Executor, OomKilled

    given_up = []
    with Executor(max_workers=WORKERS) as pool:
        futures = {pool.submit(process, item): item["index"] for item in items}
        for future in as_completed(futures):
            try:
                rec.add(future.result()["index"])
            except OomKilled:
                given_up.append(futures[future])
    rec.error = f"{len(given_up)} quarantined: " + ", ".join(f"{i}:oom_killed" for i in given_up)


def run_loky(items: list[dict[str, Any]], rec: Recorder) -> None:
    from concurrent.futures import as_completed

    from loky import get_reusable_executor

    pool = get_reusable_executor(max_workers=WORKERS)
    futures = [pool.submit(process, item) for item in items]
    for future in as_completed(futures):
        rec.add(future.result()["index"])
    pool.shutdown()


def run_poison(items: list[dict[str, Any]], rec: Recorder) -> None:
    """One poison item alone, in-process: how long it takes to grow to the cap and be killed."""
    for item in items:
        process(item)
        rec.add(item["index"])


def run_oracle(items: list[dict[str, Any]], rec: Recorder) -> None:
    import os

    run_ppe(items, rec, workers=os.cpu_count() or 1)


def run_oomguard_without_side_lane(items: list[dict[str, Any]], rec: Recorder) -> None:
    """The side lane off (on by default): nothing runs beside a runaway."""
    run_oomguard(items, rec, side_lane=False)


def run_oomguard_with_target_85(items: list[dict[str, Any]], rec: Recorder) -> None:
    """A trial of less headroom: admission's target 0.85 (default 0.80), high water 0.90."""
    run_oomguard(items, rec, target=0.85, high_water=0.90)


def run_oomguard_on_local_cluster(items: list[dict[str, Any]], rec: Recorder) -> None:
    """Two Dask nodes on this machine, the job's workers and cap shared out between them."""
    run_oomguard(items, rec, cluster="local:2", workers=WORKERS // 2)


CONTENDERS = {
    "oomguard --cluster local:2": run_oomguard_on_local_cluster,
    "oomguard": run_oomguard,
    "oomguard (side_lane=False)": run_oomguard_without_side_lane,
    "oomguard (target=0.85)": run_oomguard_with_target_85,
    "oomguard.Executor": run_oomguard_executor,
    "ProcessPoolExecutor": run_ppe,
    "loky": run_loky,
    "multiprocessing.Pool": run_mp_pool,
    "joblib": run_joblib,
    "pebble": run_pebble,
    "dask.distributed": run_dask,
    "ray": run_ray,
    "oracle": run_oracle,
    "poison": run_poison,
}


def main() -> None:
    name, items_path, result_path = sys.argv[1:4]
    items = json.loads(Path(items_path).read_text())
    rec = Recorder(Path(result_path))
    rec.save()
    try:
        CONTENDERS[name](items, rec)
        rec.status = "finished"
    except BaseException as err:
        rec.status = "aborted"
        rec.error = f"{type(err).__name__}: {str(err)[:300]}"
        traceback.print_exc()
    rec.save()


if __name__ == "__main__":
    main()
