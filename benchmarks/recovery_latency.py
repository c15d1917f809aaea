"""From an OOM kill to the batch being re-dispatched: how long?

    python benchmarks/recovery_latency.py [--kills 60]

Each item OOMs on its first attempt (it allocates 400 MiB in a worker capped at 256 MiB,
inside a 1 GiB job: killed by the kernel, retried, not quarantined) and succeeds on the
retry. For every kill, the time from the kernel's kill (the stamp of its log line, matched
by the victim's pid) and from the supervisor's classification of the death (the killed
attempt's end in the journal) to the retry's dispatch (the retry attempt's start).
Target (issue: admission): p99 under 250 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from oomguard import Job

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oomguard-latency-") as tmp:
        items = [{"i": i} for i in range(args.kills)]
        result = Job(
            "benchmarks.workloads:die_once",
            source=items,
            sink=Path(tmp) / "o.jsonl",
            run_dir=Path(tmp) / "run",
            memory="1g",
            worker_memory="256m",
            admission=False,
            workers=2,
            batch_size=1,
            log_format="quiet",
        ).run()
        attempts = json.loads((Path(tmp) / "run" / "ingest_manifest.json").read_text())
    attempts = [a for a in attempts if "batch_id" in a]  # the manifest's other entries are events
    killed = {a["input_indices"][0]: a for a in attempts if a["status"] == "oom_killed"}
    retries = {a["input_indices"][0]: a["start"] for a in attempts if a["status"] == "success"}
    # the kernel's own time of each kill (its log stamp, on the uptime clock), by victim pid
    from oomguard.memory.kernel_log import find_oom_kills, read_kernel_log, uptime

    offset = time.time() - uptime()
    kernel = {kill.pid: kill.uptime + offset for kill in find_oom_kills(read_kernel_log() or [])}
    from_kill = sorted(
        (retries[i] - kernel[a["worker_pid"]]) * 1000
        for i, a in killed.items()
        if i in retries and a["worker_pid"] in kernel
    )
    from_death = sorted((retries[i] - a["end"]) * 1000 for i, a in killed.items() if i in retries)

    def row(name: str, latencies: list[float]) -> str:
        if not latencies:
            return f"| {name} | 0 | | | |"
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        return (
            f"| {name} | {len(latencies)} | {statistics.median(latencies):.1f} | {p99:.1f} "
            f"| {max(latencies):.1f} |"
        )

    print(
        f"# OOM kill -> re-dispatch, {result.succeeded}/{args.kills} done, {time.strftime('%Y-%m-%d')}"
    )
    print("| from | kills | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    print(row("the kernel's kill (its log stamp)", from_kill))
    print(row("the supervisor's classification of the death", from_death))


if __name__ == "__main__":
    main()
