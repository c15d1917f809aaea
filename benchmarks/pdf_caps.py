"""PDF ingestion under a cap: does oomguard finish wherever ProcessPoolExecutor finishes, at
its speed?

The corpus is benchmarks/pdf_work.py's: 31 PDFs (28 readable; one encrypted, one truncated,
one no PDF at all), and ``--many`` copies of them (distinct files, about 200 KB each). The
function is pypdf's text extraction (``pdf_work.extract_text``). Each cap in ``--caps`` runs
both sides with ``--workers`` processes: ``ProcessPoolExecutor.submit`` per file in a fresh
cgroup of that cap (its parent and its workers), and ``oomguard run --input DIR --memory
CAP``, which makes its own. The page cache is dropped before every run, so each reads its
files cold, as a first pass over a new directory does. Wall time is the whole command's,
start-up included; a run still going after ``--timeout`` seconds is killed and called hung.

    python benchmarks/pdf_caps.py [--caps 16m 64m 72m 80m 300m 1g] [--many 1800] [--rounds 2]

Needs ``pip install '.[test]'`` (pypdf, fpdf2) and a writable cgroup memory controller (root).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.pdf_work, run from anywhere

from benchmarks.pdf_work import UNREADABLE, write_corpus, write_many  # noqa: E402
from oomguard.limits import open_limiter  # noqa: E402
from oomguard.sizes import format_size, parse_size  # noqa: E402

MiB = 1024 * 1024

POOL = r"""
import json, sys, time
sys.stdin.readline()
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from benchmarks.pdf_work import extract_text
directory, workers = sys.argv[1], int(sys.argv[2])
done, failed, broke = [], 0, None
with ProcessPoolExecutor(workers) as pool:
    futures = [pool.submit(extract_text, {"path": str(p), "size": p.stat().st_size})
               for p in sorted(Path(directory).iterdir())]
    for future in as_completed(futures):
        try:
            done.append(future.result()["path"])
        except BrokenProcessPool as err:
            broke = broke or f"BrokenProcessPool: {err}"[:60]
        except Exception:
            failed += 1
print(json.dumps({"done": done, "failed": failed, "broke": broke}))
"""


def drop_page_cache() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as handle:
        handle.write("3\n")


def run_pool(directory: Path, cap: int, args: argparse.Namespace) -> dict[str, Any]:
    drop_page_cache()
    with open_limiter("cgroup") as limiter:
        group = limiter.create_group("pdf-pool", cap)
        start = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-c", POOL, str(directory), str(args.workers)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        group.add_pid(child.pid)
        try:
            out, _ = child.communicate("go\n", timeout=args.timeout)
        except subprocess.TimeoutExpired:
            group.kill_all()
            child.communicate()
            out = ""
        wall = time.monotonic() - start
        peak = group.peak()
    report = json.loads(out) if out.strip() else None
    if report is None:
        outcome = "hung" if wall >= args.timeout else f"died (exit {child.returncode})"
        return {"outcome": outcome, "done": [], "quarantined": "n/a", "wall": wall, "peak": peak,
                "working_set": None}  # fmt: skip
    outcome = f"broke: {report['broke']}" if report["broke"] else "finished"
    return {
        "outcome": outcome, "done": report["done"], "quarantined": f"{report['failed']} raised",
        "wall": wall, "peak": peak, "working_set": None,
    }  # fmt: skip


def run_oomguard(directory: Path, cap: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    out, run_dir = work / "out.jsonl", work / "run"
    command = [
        *(sys.executable, "-m", "oomguard.cli", "run", "benchmarks.pdf_work:extract_text"),
        *("--input", str(directory), "--output", str(out), "--run-dir", str(run_dir)),
        *("--memory", str(cap), "--workers", str(args.workers), "--log-format", "quiet"),
    ]
    drop_page_cache()
    start = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = child.communicate(timeout=args.timeout)
        # 3: finished, with items quarantined (here: the unreadable files, as pypdf's errors)
        outcome = "finished" if child.returncode in (0, 3) else f"exit {child.returncode}"
    except subprocess.TimeoutExpired:
        child.terminate()  # SIGTERM: oomguard stops its workers and removes its groups
        _, stderr = child.communicate()
        outcome = "hung"
    wall = time.monotonic() - start
    if child.returncode == 2:
        outcome = "refused: " + stderr.strip().splitlines()[-1][:90]
    done = [json.loads(line)["result"]["path"] for line in out.open()] if out.exists() else []
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    counts = summary.get("counts", {})
    quarantined = ", ".join(f"{n} {why}" for why, n in counts.items() if why != "success")
    peak, working_set = summary.get("peak_cgroup_mb"), summary.get("peak_working_set_mb")
    return {
        "outcome": outcome, "done": done, "quarantined": quarantined or "0", "wall": wall,
        "peak": peak * MiB if peak is not None else None,
        "working_set": working_set * MiB if working_set is not None else None,
    }  # fmt: skip


def row(label: str, cap: int, round_: int, who: str, result: dict[str, Any],
        readable: set[str], pool_wall: float | None) -> str:  # fmt: skip
    done = Counter(result["done"])
    once = len(set(done) & readable)
    twice = sum(1 for n in done.values() if n > 1)
    finished = result["outcome"] == "finished"
    ratio = f"{pool_wall / result['wall']:.2f}" if finished and pool_wall else "n/a"

    def mib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / MiB:.0f}"

    return (
        f"| {label} | {format_size(cap)} | {round_} | {who} | {result['outcome']} "
        f"| {once}/{len(readable)} | {twice} | {result['quarantined']} | {result['wall']:.1f} "
        f"| {ratio} | {mib(result['peak'])} | {mib(result['working_set'])} |"
    )


def compare(label: str, directory: Path, caps: list[int], tmp: Path,
            args: argparse.Namespace) -> None:  # fmt: skip
    readable = {str(p) for p in sorted(directory.iterdir()) if not p.name.endswith(UNREADABLE)}
    for cap in caps:
        for round_ in range(1, args.rounds + 1):
            pool = run_pool(directory, cap, args)
            pool_wall = pool["wall"] if pool["outcome"] == "finished" else None
            print(row(label, cap, round_, "ProcessPoolExecutor", pool, readable, pool_wall),
                  flush=True)  # fmt: skip
            work = Path(tempfile.mkdtemp(dir=tmp))
            ours = run_oomguard(directory, cap, work, args)
            print(row(label, cap, round_, "oomguard", ours, readable, pool_wall), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", nargs="+", default=["16m", "64m", "72m", "80m", "300m", "1g"])
    parser.add_argument("--many", type=int, default=1800, help="copies for the big run (0: none)")
    parser.add_argument("--many-caps", nargs="+", default=["300m", "1g"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="pool and oomguard, side by side")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print(f"# pypdf text extraction, {args.workers} workers, {os.cpu_count()} cores, "
          f"cold page cache, {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print("| files | cap | round | runner | outcome | readable done | done twice | quarantined "
          "| wall s | pool's wall / this | charged peak MiB | working-set peak MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="oomguard-pdf-") as name:
        tmp = Path(name)
        corpus = write_corpus(tmp / "corpus")
        compare(f"{len(corpus)} PDFs", tmp / "corpus", [parse_size(c) for c in args.caps], tmp,
                args)  # fmt: skip
        if args.many:
            many = write_many(tmp / "many", corpus, args.many)
            megabytes = sum(p.stat().st_size for p in many) / 1e6
            compare(f"{len(many)} PDFs ({megabytes:.0f} MB)", tmp / "many",
                    [parse_size(c) for c in args.many_caps], tmp, args)  # fmt: skip


if __name__ == "__main__":
    main()
