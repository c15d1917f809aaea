"""From an OOM kill to the batch being re-dispatched: how long?

    python benchmarks/recovery_latency.py [--kills 60]

Each item OOMs on its first attempt (it allocates 400 MiB in a worker capped at 256 MiB,
inside a 1 GiB job: killed by the kernel, retried, not quarantined) and succeeds on the
retry. For every kill: the time the supervisor saw the OOM event, and the time the retry
was sent to a worker (from the journal's attempts). The kernel-to-event part is measured
by oom_notify_latency.py (it is negative: the event comes before the victim's exit).
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
    deaths = {a["input_indices"][0]: a["end"] for a in attempts if a["status"] == "oom_killed"}
    retries = {a["input_indices"][0]: a["start"] for a in attempts if a["status"] == "success"}
    latencies = sorted((retries[i] - deaths[i]) * 1000 for i in deaths if i in retries)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"# OOM kill -> re-dispatch, {len(latencies)} kills, {time.strftime('%Y-%m-%d')}")
    print("| kills | done | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    print(
        f"| {len(latencies)} | {result.succeeded}/{args.kills} | {statistics.median(latencies):.1f} | {p99:.1f} "
        f"| {max(latencies):.1f} |"
    )
    print(
        "(from the attempt's end, when the supervisor classified the death, to the retry's dispatch)"
    )


if __name__ == "__main__":
    main()
