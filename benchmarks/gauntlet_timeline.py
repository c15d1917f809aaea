"""Where a gauntlet run's time goes: what ran beside each poison item while it grew.

    python benchmarks/gauntlet_timeline.py --mix burst [--contender oomguard] [--item-cost]

Runs one contender (oomguard, or "oomguard (side_lane=False)") over one mix of
benchmarks/oom_gauntlet.py in its own 2 GiB cgroup, keeps its run directory, and prints
from the run's manifest: every poison item's attempt that did not finish (its growth time, the gap
after the death before it), how many attempts ended how (and how many ran in the side
lane), and in windows of 0.25 s the attempt-seconds of poison and of survivable items
(on 2 cores, survivable 0 beside a growing poison item is a core left idle). Also what a
side lane can hold at all: the share of the survivable megabytes in items of 80 MiB or
less. ``--item-cost``: 12 items of 600 MiB in a plain loop, in ProcessPoolExecutor and in
oomguard's batches, to tell the cgroup's cost from the schedule's.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gauntlet_work import process  # noqa: E402
from benchmarks.oom_gauntlet import CAP, MIXES, make_items, run_contender  # noqa: E402

WINDOW = 0.25


def run(mix: str, contender: str, out: Path) -> tuple[list[dict[str, Any]], dict[int, int], float]:
    """The contender over the mix, as the gauntlet runs it; its attempts, sorted by start."""
    items = make_items(200, mix)
    (out / "items.json").write_text(json.dumps(items))
    wall = run_contender(contender, out / "items.json", out, timeout=120)["wall"]
    manifest = json.loads((out / f"{contender}.run" / "ingest_manifest.json").read_text())
    attempts = sorted((e for e in manifest if "start" in e), key=lambda e: e["start"])
    return attempts, {item["index"]: item["mb"] for item in items}, wall


def poison_chain(attempts: list[dict[str, Any]], mb: dict[int, int], t0: float) -> None:
    """Every poison item's attempts that did not finish: killed (with the gap after the
    death before), or stopped short of the cap (with what it had reached)."""
    previous = None
    for attempt in attempts:
        sizes = [mb[i] for i in attempt["input_indices"]]
        if attempt["status"] == "success" or max(sizes) <= CAP // 2**20:
            continue
        gap = ""
        if attempt["status"] == "oom_killed":
            gap = (
                "" if previous is None else f", {attempt['start'] - previous:.2f} s after the last"
            )
            previous = attempt["end"]
        print(
            f"- {attempt['status']} {attempt['input_indices']} ({sizes} MiB) at "
            f"{attempt['end'] - t0:.2f} s, peak {attempt['peak_mb']} MiB: grew "
            f"{attempt['end'] - attempt['start']:.2f} s{gap}"
        )


def windows(attempts: list[dict[str, Any]], mb: dict[int, int], t0: float, end: float) -> None:
    print("\n| from s | poison attempt-s / s | survivable attempt-s / s |\n|---|---|---|")
    k = 0
    while k * WINDOW < end:
        low, high = k * WINDOW, (k + 1) * WINDOW
        poison = survivable = 0.0
        for a in attempts:
            overlap = max(0.0, min(high, a["end"] - t0) - max(low, a["start"] - t0))
            if any(mb[i] > CAP // 2**20 for i in a["input_indices"]):
                poison += overlap
            else:
                survivable += overlap
        print(f"| {low:.2f} | {poison / WINDOW:.2f} | {survivable / WINDOW:.2f} |")
        k += 1


def small_shares() -> None:
    print("\nshare of the survivable megabytes in items of 80 MiB or less:")
    for mix in MIXES:
        sizes = [item["mb"] for item in make_items(200, mix) if item["mb"] * 2**20 <= CAP]
        share = sum(size for size in sizes if size <= 80) / sum(sizes)
        print(f"- {mix}: {share:.0%}")


def item_cost() -> None:
    from concurrent.futures import ProcessPoolExecutor

    from oomguard import Job

    items = [{"index": i, "mb": 600, "passes": 3} for i in range(12)]
    start = time.perf_counter()
    for item in items:
        process(item)
    plain = time.perf_counter() - start
    with ProcessPoolExecutor(1) as pool:
        list(pool.map(process, items[:1]))  # the worker started before the clock
        start = time.perf_counter()
        list(pool.map(process, items))
        pooled = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        Job(
            "benchmarks.gauntlet_work:process",
            source=items,
            sink=Path(tmp) / "out.jsonl",
            run_dir=Path(tmp) / "run",
            batch_size=1,
            workers=1,
            log_format="quiet",
        ).run()
        manifest = json.loads((Path(tmp) / "run" / "ingest_manifest.json").read_text())
    batches = sum(e["duration_sec"] for e in manifest if "start" in e)
    print(
        f"\n12 items of 600 MiB, 3 passes: plain loop {plain:.2f} s, ProcessPoolExecutor "
        f"{pooled:.2f} s, oomguard's batches {batches:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", choices=list(MIXES), default="burst")
    parser.add_argument("--contender", default="oomguard")
    parser.add_argument("--item-cost", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oomguard-timeline-") as tmp:
        attempts, mb, wall = run(args.mix, args.contender, Path(tmp))
    t0 = attempts[0]["start"]
    end = max(a["end"] for a in attempts) - t0
    print(f"# {args.contender}, mix {args.mix}, {time.strftime('%Y-%m-%d')}: wall {wall:.2f} s")
    print(f"first batch to last {end:.2f} s\n")
    poison_chain(attempts, mb, t0)
    ends = collections.Counter((a["status"], a["side"]) for a in attempts)
    print(
        "\nattempts: "
        + ", ".join(f"{s}{' (side)' if side else ''} {n}" for (s, side), n in ends.items())
    )
    windows(attempts, mb, t0, end)
    small_shares()
    if args.item_cost:
        item_cost()


if __name__ == "__main__":
    main()
