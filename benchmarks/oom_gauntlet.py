"""The OOM gauntlet: a heavy-tailed workload with poison items, in a 2 GiB cgroup, side by side.

    python benchmarks/oom_gauntlet.py [--items 200] [--timeout 240] [--mix MIX|both|all] [--rounds 3]
    python benchmarks/oom_gauntlet.py --only oomguard "oomguard (side_lane=False)"   # the side lane's worth

Every contender runs the same items (most tens of MiB, some hundreds, a few larger than the
whole cap; four mixes: ``normal``, ``coinciding`` (more big items), ``burst`` (the poison
items one after another) and ``big`` (no poison; a third of the items 450-700 MiB: any four of
them together overrun the job's cap, three of the larger ones the cgroup's)) with 4 workers inside its own fresh 2 GiB cgroup on this 2-core machine (through
``oomguard repro``, which also measures the cgroup's peak and collects the kernel's OOM
lines). The oracle runs the survivable items only, uncapped (in the same harness, under a
cap it never reaches), one process per core. Columns:
outcome (finished / aborted / hung at the timeout), survivable items done (of how many),
items done twice, kernel OOM kills in the cgroup, peak as % of the cap, wall time as a
ratio to the oracle's. Before each contender the script touches 3 GiB once and frees it, so
that none pays alone for memory the machine has not touched in a while (``warm_memory``).

The oracle pays nothing for the poison items; any tool that must see a poison item killed
with the whole budget to itself before it can say "poison" pays at least the time that
item takes to grow to the cap. The floor row measures exactly that: each poison item run
alone in a cgroup of the job's cap until the kernel kills it. Poison items cannot grow side
by side (each must have the budget to itself), so the floor is the larger of their summed
times and the oracle's work spread with them over every core.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oomguard.memory.kernel_log import find_oom_kills, parse_kernel_log  # noqa: E402
from oomguard.repro import reproduce  # noqa: E402

CAP = 2 * 1024**3
UNBOUND = 16 * 1024**3  # the oracle's cap: never reached by its two processes
JOB_CAP = int(CAP * 0.9)  # oomguard's job cap inside the cgroup (its default: 90% of the budget)
PEERS = [
    "oomguard",
    "ProcessPoolExecutor",
    "multiprocessing.Pool",
    "joblib",
    "pebble",
    "dask.distributed",
    "ray",
]


MIXES = {
    # mix: (share of big items, their MiB range, poison items and how they come)
    "normal": (0.12, (200, 450), "spread"),
    "coinciding": (0.30, (350, 600), "spread"),
    "burst": (0.12, (200, 450), "burst"),  # the four poison items one after another
    "big": (1 / 3, (450, 700), "none"),  # no poison: any four big items overrun the job cap
}


def make_items(count: int, mix: str, seed: int = 7) -> list[dict[str, int]]:
    rng = random.Random(f"{seed}-{mix}")
    big_share, (low, high), poison = MIXES[mix]
    items = []
    for index in range(count):
        roll = rng.random()
        if roll < big_share:
            mb = rng.randint(low, high)
        else:
            mb = int(min(120, rng.paretovariate(1.6) * 12))
        items.append({"index": index, "mb": mb, "passes": 3})
    if poison == "spread":
        chosen = rng.sample(range(count), 4)
    elif poison == "burst":
        start = rng.randrange(count // 4, count // 2)
        chosen = list(range(start, start + 4))
    else:
        chosen = []
    for index in chosen:  # poison: larger than the whole cap
        items[index]["mb"] = 3000
    return items


def kills_in(run_dir: Path, summary: dict) -> int:  # type: ignore[type-arg]
    excerpt = run_dir / "dmesg_excerpt.txt"
    group = (summary.get("cgroup_path") or "").split("/")[-1]
    if not excerpt.exists() or not group:
        return -1
    kills = find_oom_kills(parse_kernel_log(excerpt.read_text()))
    return sum(1 for kill in kills if kill.task_memcg and group in kill.task_memcg)


def warm_memory(size: int = 3 * 1024**3) -> None:
    """Touch ``size`` bytes once and free them, before each contender: on this virtual
    machine the first touch of memory that has been idle a while costs up to three times
    the next one (the host backs it lazily), which the first contender of a mix would
    otherwise pay alone."""
    block = bytearray(size)
    block[::4096] = b"\x01" * len(block[::4096])
    del block


def run_contender(
    name: str,
    items_path: Path,
    tmp: Path,
    timeout: float,
    capped: bool = True,
    cap: int = CAP,
) -> dict:  # type: ignore[type-arg]
    warm_memory()
    result_path = tmp / f"{name}.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gauntlet_contenders.py"),
        name,
        str(items_path),
        str(result_path),
    ]
    start = time.monotonic()
    if capped:
        run_dir = tmp / f"{name}-repro"
        repro = reproduce(command, cap, output_dir=run_dir, timeout=timeout, interval=0.1)
        summary = repro.summary
        wall = time.monotonic() - start
        kills = kills_in(run_dir, summary)
        peak = summary["peak_percent_of_cap"]
        timed_out = summary["timed_out"]
    else:
        subprocess.run(command, cwd=ROOT, timeout=timeout, check=False, stdout=subprocess.DEVNULL)
        wall, kills, peak, timed_out = time.monotonic() - start, 0, None, False
    outcome = (
        json.loads(result_path.read_text())
        if result_path.exists()
        else {"status": "no result", "done": []}
    )
    status = "hung" if timed_out else outcome["status"]
    if status == "running":  # its own process was killed before it could say how it ended
        status = "died (killed)"
    return {
        "name": name,
        "status": status,
        "done": outcome["done"],
        "killed": outcome.get("killed"),
        "error": outcome.get("error"),
        "kills": kills,
        "peak": peak,
        "wall": wall,
    }


def one_round(
    tmp: Path, items: list[dict[str, int]], poison: set[int], peers: list[str], timeout: float
) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    """Every contender once, the oracle twice (in the harness and outside it), each poison
    item alone: one round's runs by name."""
    # the oracle goes through the same harness as every contender (its own cgroup,
    # sampled, its kernel log read), under a cap it never reaches: what the harness
    # costs (about 0.2 s here) is then in every wall time, the oracle's included
    survivable = tmp / "survivable.json"
    runs = {
        "oracle": [run_contender("oracle", survivable, tmp, timeout * 2, cap=UNBOUND)],
        "outside": [run_contender("oracle", survivable, tmp, timeout * 2, capped=False)],
    }
    for name in peers:
        runs[name] = [run_contender(name, tmp / "items.json", tmp, timeout)]
    runs["poison"] = []
    for item in items:
        if item["index"] in poison:
            (tmp / "poison.json").write_text(json.dumps([item]))
            runs["poison"].append(
                run_contender("poison", tmp / "poison.json", tmp, timeout, cap=JOB_CAP)
            )
    return runs


def floor_of(oracle: float, poison_walls: list[float]) -> float:
    """Poison items cannot grow side by side (each must have the budget to itself): their
    growth is serial, and the survivable work overlaps it on the other cores at best."""
    return max(sum(poison_walls), oracle + sum(poison_walls) / (os.cpu_count() or 1))


def median_run(runs: list[dict]) -> dict:  # type: ignore[type-arg]
    return sorted(runs, key=lambda run: run["wall"])[len(runs) // 2]


def table(mix: str, count: int, timeout: float, peers: list[str], rounds: int = 1) -> None:
    items = make_items(count, mix)
    poison = {item["index"] for item in items if item["mb"] * 1024**2 > CAP}
    survivable = [item for item in items if item["index"] not in poison]
    all_runs: dict[str, list[list[dict]]] = collections.defaultdict(list)  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="oomguard-gauntlet-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "items.json").write_text(json.dumps(items))
        (tmp / "survivable.json").write_text(json.dumps(survivable))
        for k in range(rounds):  # the contenders take turns within each round
            here = tmp / f"round-{k + 1}"  # each round's own run directories: none resumes
            here.mkdir()
            for name in ("items.json", "survivable.json"):
                (here / name).write_text((tmp / name).read_text())
            for name, runs in one_round(here, items, poison, peers, timeout).items():
                all_runs[name].append(runs)
    oracle = median_run([runs[0] for runs in all_runs["oracle"]])
    outside = median_run([runs[0] for runs in all_runs["outside"]])
    rows = [median_run([runs[0] for runs in all_runs[name]]) for name in peers]
    # each poison item's median over the rounds
    poison_walls = [
        median_run([runs[k] for runs in all_runs["poison"]])["wall"] for k in range(len(poison))
    ]
    floor = floor_of(oracle["wall"], poison_walls)
    if not poison:
        print(f"\n(mix {mix}: no poison, so the floor is the oracle; target <= 1.05)")
    mbs = sorted(item["mb"] for item in survivable)
    print(
        f"\n### mix: {mix} — {count} items ({len(poison)} poison of 3000 MiB; survivable: median "
        f"{mbs[len(mbs) // 2]} MiB, max {mbs[-1]} MiB), 4 workers, 2 GiB cgroup\n"
    )
    print(
        "| contender | outcome | survivable done | done twice | poison quarantined | kernel OOM kills "
        "| survivable items OOM-killed | peak % of cap | wall / oracle | wall / floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        counts = collections.Counter(row["done"])
        done = len(set(counts) - poison)
        twice = sum(1 for n in counts.values() if n > 1)
        quarantined = "n/a"
        if row["name"].startswith("oomguard") and row["error"]:
            named = {
                int(part.split(":")[0])
                for part in row["error"].split(": ", 1)[1].split(", ")
                if ":" in part
            }
            quarantined = f"{len(named & poison)}/{len(poison)}"
        finished = row["status"] == "finished"
        ratio = f"{row['wall'] / oracle['wall']:.2f}"
        to_floor = f"{row['wall'] / floor:.2f}"
        if not finished:
            ratio, to_floor = f"({ratio})", f"({to_floor})"
        hit = "n/a" if row["killed"] is None else str(len(set(row["killed"]) - poison))
        outcome = row["status"] + (
            f": {row['error'][:60]}"
            if row["error"] and not row["name"].startswith("oomguard")
            else ""
        )
        print(
            f"| {row['name']} | {outcome} | {done}/{len(survivable)} | {twice} | {quarantined} | {row['kills']} "
            f"| {hit} | {row['peak']}% | {ratio} | {to_floor} |"
        )
    print(
        f"| oracle (survivable only, uncapped, {os.cpu_count()} processes) | {oracle['status']} "
        f"| {len(set(oracle['done']))}/{len(survivable)} | 0 | n/a | 0 | n/a | n/a "
        f"| 1.00 ({oracle['wall']:.1f} s) | {oracle['wall'] / floor:.2f} |"
    )
    print(
        f"| oracle outside the harness (for reference: not a ratio's base) | {outside['status']} "
        f"| {len(set(outside['done']))}/{len(survivable)} | 0 | n/a | 0 | n/a | n/a "
        f"| {outside['wall'] / oracle['wall']:.2f} ({outside['wall']:.1f} s) "
        f"| {outside['wall'] / floor:.2f} |"
    )
    if rounds > 1:
        print_rounds(all_runs, peers)
    if not poison_walls:
        return  # no poison: the floor is the oracle's row
    walls = ", ".join(f"{wall:.1f}" for wall in poison_walls)
    print(
        f"| floor: each poison item grown alone to the {JOB_CAP / 1024**3:.1f} GiB job cap ({walls} s), "
        f"one after another, the oracle's work beside them on {os.cpu_count()} cores "
        f"| | | | | | | | {floor / oracle['wall']:.2f} "
        f"({floor:.1f} s) | 1.00 |"
    )


def print_rounds(all_runs: dict[str, list[list[dict]]], peers: list[str]) -> None:  # type: ignore[type-arg]
    """Each round's wall time over that round's oracle (and floor), under the table."""
    print()
    for k, oracle_runs in enumerate(all_runs["oracle"]):
        oracle = oracle_runs[0]["wall"]
        floor = floor_of(oracle, [run["wall"] for run in all_runs["poison"][k]])
        walls = {name: all_runs[name][k][0]["wall"] for name in peers}
        ratios = ", ".join(
            f"{name} {wall / oracle:.2f} (floor {wall / floor:.2f})" for name, wall in walls.items()
        )
        print(f"- round {k + 1}: oracle {oracle:.1f} s; wall / oracle: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument(
        "--mix", choices=[*MIXES, "both", "all"], default="all", help="both: normal, coinciding"
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run these contenders only (also: 'oomguard (side_lane=False)' and "
        "'oomguard (target=0.85)', not in the default set)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every contender this many times: medians"
    )
    args = parser.parse_args()
    peers = args.only or PEERS
    print(f"# OOM gauntlet, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    mixes = {"all": list(MIXES), "both": ["normal", "coinciding"]}.get(args.mix, [args.mix])
    for mix in mixes:
        table(mix, args.items, args.timeout, peers, args.rounds)


if __name__ == "__main__":
    main()
